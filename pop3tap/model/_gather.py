"""Building a mailbox from recorded sessions: :func:`mailboxes_from_sessions` gathers what
one or more captures of the same mailbox say (message count and sizes from STAT and LIST,
RFC 1939 §5; unique ids from UIDL, §7; bodies from RETR, headers from TOP; the server's
wording) into a :class:`~pop3tap.model._mailbox.Mailbox` per user, and refuses captures
that contradict each other (two unique ids for one message number).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pop3tap.capture import Secrets
from pop3tap.model._mailbox import (
    MAILBOX_VERBS,
    STATELESS_VERBS,
    Mailbox,
    ModelError,
    ModelMessage,
    RecordedAnswer,
    StateKey,
    Wording,
    args_key,
    crlf_size,
    header_block,
    unstuff_body,
)
from pop3tap.protocol import Credential, Flag, Status, spec_of

__all__ = [
    "RecordedExchangeLike",
    "RecordedSessionLike",
    "SegmentLike",
    "mailboxes_from_sessions",
]


_NUMBER = re.compile(rb"\d+")


def _status_text(line: bytes) -> str:
    """The text after the status indicator of a status line, decoded."""
    text = line.rstrip(b"\r\n").decode("utf-8", "replace")
    parts = text.split(" ", 1)
    return parts[1] if len(parts) == 2 else ""


def _template(text: str, **values: int) -> str:
    """``text`` with whole-word numbers equal to a value replaced by ``{name}``.

    The result is a :meth:`str.format` template; ``text`` is a recorded server's (hostile
    capture input), so its own braces are doubled first and stay text.
    """
    out = text.replace("{", "{{").replace("}", "}}")
    for name, value in values.items():
        out = re.sub(rf"(?<![0-9]){value}(?![0-9])", "{" + name + "}", out, count=1)
    return out


def _message_number(args: bytes) -> int | None:
    parts = args.split()
    if not parts or not parts[0].isdigit() or len(parts[0]) > 9:
        return None
    number = int(parts[0])
    return number if number > 0 else None


@dataclass(slots=True)
class _Facts:
    """What one user's captures said, gathered before the mailbox is built."""

    user: str | None
    count: int | None = None
    total: int | None = None
    sizes: dict[int, int] = field(default_factory=dict)
    uids: dict[int, str] = field(default_factory=dict)
    bodies: dict[int, bytes] = field(default_factory=dict)
    headers: dict[int, bytes] = field(default_factory=dict)
    where: dict[tuple[str, int], str] = field(default_factory=dict)
    mailbox: Mailbox | None = None


class SegmentLike(Protocol):
    """A recorded run of server bytes (:class:`pop3tap.replay.Segment`)."""

    @property
    def data(self) -> bytes: ...


class RecordedExchangeLike(Protocol):
    """What the model reads of :class:`pop3tap.replay.RecordedExchange`."""

    @property
    def seq(self) -> int: ...
    @property
    def verb(self) -> str: ...
    @property
    def raw_args(self) -> bytes: ...
    @property
    def status(self) -> Status | None: ...
    @property
    def flags(self) -> frozenset[Flag]: ...
    @property
    def segments(self) -> Sequence[SegmentLike]: ...
    @property
    def response(self) -> bytes: ...
    @property
    def closes(self) -> bool: ...
    @property
    def starts_tls(self) -> bool: ...


class RecordedSessionLike(Protocol):
    """What the model reads of :class:`pop3tap.replay.RecordedSession` (kept pure here)."""

    @property
    def name(self) -> str: ...
    @property
    def user(self) -> str | None: ...
    @property
    def secrets(self) -> str: ...
    @property
    def listen_tls(self) -> bool: ...
    @property
    def greeting(self) -> SegmentLike: ...
    @property
    def exchanges(self) -> Sequence[RecordedExchangeLike]: ...


def _note(facts: _Facts, kind: str, number: int, value: str, where: str) -> None:
    """Remember one fact about message ``number``; two captures that disagree are refused."""
    if kind == "size":
        known = facts.sizes.get(number)
        if known is not None and known != int(value):
            raise ModelError(
                f"captures disagree about message {number} of {facts.user or 'the mailbox'}: "
                f"size {known} in {facts.where[(kind, number)]}, {value} in {where}; "
                "give captures of one mailbox state"
            )
        facts.sizes[number] = int(value)
    else:
        known_uid = facts.uids.get(number)
        if known_uid is not None and known_uid != value:
            raise ModelError(
                f"captures disagree about message {number} of {facts.user or 'the mailbox'}: "
                f"UID {known_uid!r} in {facts.where[(kind, number)]}, {value!r} in {where} "
                "(captures of different mailboxes?)"
            )
        facts.uids[number] = value
    facts.where.setdefault((kind, number), where)


def _gather_listing(facts: _Facts, verb: str, response: bytes, where: str) -> None:
    """LIST/UIDL without an argument: one ``n value`` line per message (RFC 1939 §5, §7)."""
    parsed = unstuff_body(response)
    if parsed is None:
        return
    _status, body = parsed
    numbers = []
    for line in body.splitlines():
        parts = line.split()
        if len(parts) < 2 or not parts[0].isdigit():
            continue
        number = int(parts[0])
        numbers.append(number)
        value = parts[1].decode("ascii", "replace")
        if verb == "LIST" and parts[1].isdigit():
            _note(facts, "size", number, value, where)
        elif verb == "UIDL":
            _note(facts, "uid", number, value, where)


def _gather(facts: _Facts, session: RecordedSessionLike) -> None:
    """Collect message facts and wording from one recorded session's exchanges."""
    mailbox = facts.mailbox
    assert mailbox is not None
    name = session.name
    logged_in = False
    tls_up = session.listen_tls
    deleted: set[int] = set()
    wording = mailbox.wording
    for ex in session.exchanges:
        verb = ex.verb
        raw_args = ex.raw_args
        status = ex.status
        response = ex.response
        complete = (
            status is not None
            and not ex.closes
            and Flag.TRUNCATED not in ex.flags
            and response.endswith(b"\n")
        )
        where = f"{name} #{ex.seq}"
        first_line = response.split(b"\n", 1)[0] + b"\n" if response else b""
        ok = status == Status.OK
        number = _message_number(raw_args)
        state: StateKey = (logged_in, tls_up, frozenset(deleted))
        if complete and (verb in MAILBOX_VERBS or verb in STATELESS_VERBS):
            key = (verb, args_key(verb, raw_args), state)
            mailbox.recorded.setdefault(key, RecordedAnswer(response, name, ex.seq))
        if complete and ok and not deleted:
            _gather_ok(facts, verb, raw_args, number, first_line, response, where)
        if complete:
            _gather_wording(wording, verb, number, ok, first_line, facts, deleted)
        if verb == "AUTH" and raw_args.split():
            mechanism = raw_args.split()[0].decode("ascii", "replace").upper()
            mailbox.mechanisms.add(mechanism)
            plus = [s.data for s in ex.segments[:-1]] if len(ex.segments) > 1 else []
            if plus and mechanism not in mailbox.challenges:
                mailbox.challenges[mechanism] = [p.splitlines(keepends=True)[-1] for p in plus]
        if ok and spec_of(verb).login:
            logged_in = True
        if ok and verb == "DELE" and number is not None:
            deleted.add(number)
        if ok and verb == "RSET":
            deleted.clear()
        if ex.starts_tls:
            tls_up = True


def _gather_ok(
    facts: _Facts,
    verb: str,
    raw_args: bytes,
    number: int | None,
    first_line: bytes,
    response: bytes,
    where: str,
) -> None:
    """Facts from one complete ``+OK`` answer given before any deletion in its session."""
    mailbox = facts.mailbox
    assert mailbox is not None
    words = first_line.split()
    if verb == "STAT" and len(words) >= 3 and words[1].isdigit() and words[2].isdigit():
        count, total = int(words[1]), int(words[2])
        if facts.count is not None and facts.count != count:
            raise ModelError(
                f"captures disagree about {facts.user or 'the mailbox'}: STAT says "
                f"{facts.count} messages in one capture and {count} in {where}"
            )
        facts.count, facts.total = count, total
    elif spec_of(verb).lists_messages and number is None and not raw_args.strip():
        _gather_listing(facts, verb, response, where)
    elif spec_of(verb).lists_messages and number is not None and len(words) >= 3:
        value = words[2].decode("ascii", "replace")
        if verb == "LIST" and words[2].isdigit():
            _note(facts, "size", number, value, where)
        elif verb == "UIDL":
            _note(facts, "uid", number, value, where)
    elif verb == "RETR" and number is not None:
        parsed = unstuff_body(response)
        if parsed is not None:
            facts.bodies.setdefault(number, parsed[1])
    elif verb == "TOP" and number is not None:
        parsed = unstuff_body(response)
        if parsed is not None:
            facts.headers.setdefault(number, header_block(parsed[1]))
    elif verb == "CAPA":
        parsed = unstuff_body(response)
        if parsed is not None and mailbox.capabilities is None:
            mailbox.capabilities = [line for line in parsed[1].splitlines() if line]
            for line in mailbox.capabilities:
                parts = line.split()
                if parts and parts[0].upper() == b"SASL":
                    names = (p.decode("ascii", "replace").upper() for p in parts[1:])
                    mailbox.mechanisms.update(names)
    elif verb == "LAST":
        mailbox.has_last = True


def _gather_wording(
    wording: Wording,
    verb: str,
    number: int | None,
    ok: bool,
    first_line: bytes,
    facts: _Facts,
    deleted: set[int],
) -> None:
    """The recorded server's wording for the answers the model may have to generate."""
    text = _status_text(first_line)
    spec = spec_of(verb)
    if ok:
        if verb == "RETR" and number is not None:
            size = facts.sizes.get(number)
            body = facts.bodies.get(number)
            if size is None and body is not None:
                size = crlf_size(body)
            wording.retr = _template(text, size=size) if size is not None else wording.retr
        elif verb == "TOP":
            wording.top = text
        elif verb == "LIST" and number is None:
            count = facts.count if facts.count is not None else len(facts.sizes)
            wording.list_all = _template(text, count=count) if text else ""
        elif verb == "UIDL" and number is None:
            wording.uidl_all = text
        elif verb == "DELE" and number is not None:
            wording.dele = _template(text, n=number)
        elif verb == "RSET":
            wording.rset = text
        elif verb == "NOOP":
            wording.noop = text
        elif verb == "USER":
            wording.user = text
        elif verb == "QUIT":
            if deleted:
                wording.quit_deleted = text
            else:
                wording.quit = text
        elif spec.login:
            wording.login = text
        elif verb == "STLS":
            wording.stls = text
    elif spec.message_argument and number is not None:
        if number in deleted:
            wording.deleted = _template(text, n=number)
        elif facts.count is not None and number > facts.count:
            wording.no_message = _template(text, n=number)
    elif spec.login and (spec.credential is not Credential.SASL or text):
        if "IN-USE" in text.upper():
            wording.in_use = text
        else:
            wording.login_failed = text


def _kept_password(session: RecordedSessionLike) -> str | None:
    """The PASS argument of a capture that kept its secrets (RFC 1939 §7), if it logged in."""
    for ex in session.exchanges:
        if ex.verb == "PASS" and ex.status == Status.OK:
            return ex.raw_args.decode("utf-8", "replace")
    return None


def _build(facts: _Facts) -> Mailbox:
    """The mailbox the facts describe; sizes come from LIST, then STAT, then the bodies."""
    mailbox = facts.mailbox
    assert mailbox is not None
    known = set(facts.sizes) | set(facts.uids) | set(facts.bodies) | set(facts.headers)
    count = facts.count if facts.count is not None else max(known, default=0)
    messages = []
    for number in range(1, count + 1):
        body = facts.bodies.get(number)
        size = facts.sizes.get(number)
        if size is None:
            size = crlf_size(body) if body is not None else 0
        messages.append(
            ModelMessage(
                size=size,
                uid=facts.uids.get(number),
                body=body,
                headers=facts.headers.get(number),
            )
        )
    if facts.total is not None and facts.sizes and len(facts.sizes) == count:
        listed = sum(m.size for m in messages)
        if listed != facts.total:
            raise ModelError(
                f"captures of {facts.user or 'the mailbox'} disagree: STAT says {facts.total} "
                f"octets, LIST adds up to {listed}"
            )
    mailbox.messages = messages
    return mailbox


def mailboxes_from_sessions(
    sessions: Iterable[RecordedSessionLike],
) -> dict[str | None, Mailbox]:
    """One mailbox per user from recorded sessions (see :mod:`pop3tap.replay`).

    Sessions whose user is unknown (a masked SASL login) belong to the only user there is,
    or to a mailbox of their own (key None) when there are several.

    Raises:
        ModelError: two captures disagree about a message (UID, size or count).
    """
    ordered = list(sessions)
    users = {s.user for s in ordered} - {None}
    facts_by_user: dict[str | None, _Facts] = {}
    for session in ordered:
        user = session.user
        if user is None and len(users) == 1:
            user = next(iter(users))
        facts = facts_by_user.get(user)
        if facts is None:
            facts = _Facts(user=user)
            data = session.greeting.data
            line = data.split(b"\n", 1)[0] + b"\n" if data else None
            facts.mailbox = Mailbox(user=user, messages=[], greeting=line)
            if line is not None and not line.endswith(b"\r\n"):
                facts.mailbox.wording.newline = b"\n"
            facts_by_user[user] = facts
        assert facts.mailbox is not None
        facts.mailbox.sources.append(session.name)
        if session.secrets == Secrets.KEPT and facts.mailbox.password is None:
            facts.mailbox.password = _kept_password(session)
        _gather(facts, session)
    return {user: _build(facts) for user, facts in facts_by_user.items()}
