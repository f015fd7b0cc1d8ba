"""SASL steps inside an AUTH exchange (RFC 5034 §4).

After ``AUTH mechanism`` the server asks for each client line with a ``+`` continuation;
the client's next line then is SASL data whatever it looks like, or ``*`` to cancel. Steps
are kept per exchange up to :data:`MAX_SASL_STEPS`; a longer exchange keeps a count of the
rest, and a run of challenge lines past that is counted in one match.
"""

from __future__ import annotations

import re

from pop3tap.protocol._commands import SECRET_PLACEHOLDER
from pop3tap.protocol._events import Flag, SaslResponse
from pop3tap.protocol._lines import shared_flags
from pop3tap.protocol._masking import SecretMasker, Verdict
from pop3tap.protocol._pending import ClientLine, Pending, PendingQueue

#: SASL steps kept per AUTH exchange; a longer exchange keeps a count of the rest.
MAX_SASL_STEPS = 64
#: A run of whole SASL challenge lines (``+`` or ``+ data``, RFC 5034 §4) of ordinary
#: length, counted in one match once an exchange has more steps than are kept.
_CHALLENGE_RUN = re.compile(rb"(?:\+(?: [^\n]{0,4000}|\r)?\n)+")


def add_sasl_step(pending: Pending, kind: str, text: str) -> bool:
    """Keep a SASL step while there is room; False when it was only counted."""
    if pending.sasl is None:
        pending.sasl = []
    if len(pending.sasl) < MAX_SASL_STEPS:
        pending.sasl.append((kind, text))
        return True
    pending.sasl_omitted += 1
    return False


def sasl_steps(pending: Pending) -> tuple[tuple[str, str], ...]:
    """The steps as an :class:`~._events.Exchange` carries them."""
    steps = tuple(pending.sasl or ())
    if pending.sasl_omitted:
        steps += (("...", str(pending.sasl_omitted)),)
    return steps


def sasl_response(pending: Pending, line: ClientLine, masker: SecretMasker) -> SaslResponse | None:
    """A client line answering a challenge: masked (``*`` cancels), the event if kept."""
    cancelled = line.text.strip() == b"*"
    masker.resolve(line.end, Verdict.CANCEL if cancelled else Verdict.MASK)
    text = "*" if cancelled else (SECRET_PLACEHOLDER if line.text else "")
    if add_sasl_step(pending, "c", text):
        return SaslResponse(at=line.at, seq=pending.seq, text=text, cancelled=cancelled)
    return None


def count_challenges(
    queue: PendingQueue, data: bytes, pos: int, masker: SecretMasker, *, sasl: bool
) -> int:
    """An AUTH exchange past its kept steps, at a server line start: a run of challenge
    lines is counted in one match, each letting one held client line through as SASL data,
    as one line at a time would; returns where the run ends."""
    pending = queue.commands[0]
    run = _CHALLENGE_RUN.match(data, pos) if sasl else None
    if run is None:
        return pos
    end = run.end()
    challenges = data.count(b"\n", pos, end)
    if data.count(b"\r\n", pos, end) != challenges:
        pending.flags = shared_flags(pending.flags | {Flag.BARE_LF})
    answered = 0
    for _ in range(min(challenges, len(queue.held))):
        line = queue.take_held()
        cancelled = line.text.strip() == b"*"
        masker.resolve(line.end, Verdict.CANCEL if cancelled else Verdict.MASK)
        answered += 1
    pending.sasl_omitted += challenges + answered
    pending.awaiting_sasl = challenges > answered
    return end
