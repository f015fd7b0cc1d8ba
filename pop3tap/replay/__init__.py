"""The replay server: a fake POP3 server that answers with the bytes a real one sent.

Theory of operation
-------------------
Captures are loaded once, into :class:`RecordedSession` values: the greeting bytes, and
for each command/response pair re-derived by the protocol core, the recorded command, the
raw response bytes (sliced from the recorded server stream, so dot-stuffing, bare LF and
every other quirk come back unchanged) and its recorded timing.

Each connection is given one recorded session (``cycle``: the next one in order, wrapping;
``once``: each at most once; ``by_user``: the one whose USER/APOP/AUTH user the client
names). It gets the recorded greeting, then every client line is matched against the
session's exchanges and answered with the recorded bytes:

* ``default``: the first not yet played exchange with the same verb and arguments, so
  repeated identical commands are answered in recorded order;
* ``strict``: the client must send exactly the next recorded command, else the session
  fails (``-ERR``, then close);
* ``any``: like default, but once they are all played the last matching one is reused.

Secrets masked in the capture (PASS, the APOP digest, an AUTH initial response, SASL
lines; RFC 1939 §7, RFC 5034 §4) match any value; secrets kept in the capture must be
equal. A command without a recorded answer gets one ``-ERR`` line naming pop3tap and the
command, and a log event lists the closest recorded commands and what differed.

Client input is read line by line with a bounded buffer: one line may hold at most
``max_line`` bytes (RFC 2449 §4 allows 255 for commands; SASL lines are longer), so
overlong lines, binary junk and floods cost bounded memory; every wait is bounded by the
idle timeout. Each connection runs in its own task and every error in it is caught and
logged, so one client can never stop the server or disturb another.

Where the recorded server closed the connection (after a failed login, inside a body, after
an unsolicited ``-ERR``), the replay sends the recorded bytes up to that point and closes.

TLS (see docs/replay.md, "TLS"): a capture whose STLS was intercepted (RFC 2595 §4) holds
the decrypted session after a ``tls`` record, so it replays with STLS: the recorded ``+OK``,
then a TLS handshake as server with a leaf from pop3tap's CA (or ``--cert/--key``), then
the exchanges recorded after the switch. Before the switch only the exchanges recorded
before it can match, after it only the later ones. Plaintext the client sent after STLS
and before its handshake is dropped, never answered (the CVE-2011-0411 class). With
``listen_tls`` every connection is TLS from its first byte (RFC 8314 §3). What cannot be
replayed (opaque TLS bytes) is decided in :func:`tls_refusal`.
"""

from __future__ import annotations

import bisect
import contextlib
import difflib
import functools
import itertools
import re
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import trio

from pop3tap._fastio import plain_fd, receive_some, reset_on_close, send_now
from pop3tap._faultio import Delivery, deliver
from pop3tap.capture import (
    Capture,
    CaptureError,
    CloseRecord,
    DataRecord,
    EventRecord,
    derive_events,
    expand_capture_args,
    read_capture,
)
from pop3tap.certs import normalize_names
from pop3tap.faults import ConnectionFaults, Fault, FaultAction, FaultError, FaultPlan, parse_fault
from pop3tap.log import get_logger
from pop3tap.protocol import (
    SECRET_PLACEHOLDER,
    Exchange,
    Flag,
    Greeting,
    StartTls,
    Status,
    describe_command,
    is_known_command,
    opens_auth,
    parse_status,
    split_command,
)
from pop3tap.relay import Endpoint, format_peer
from pop3tap.tls import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    ServerTls,
    build_server_tls,
    describe_failure,
    send_close_notify,
    server_handshake,
    tls_info,
    warn_if_ca_created,
)
from pop3tap.workers import open_listeners

if TYPE_CHECKING:
    from pop3tap.model import ModelStore

logger = get_logger("pop3tap.replay")

__all__ = [
    "RecordedExchange",
    "RecordedSession",
    "ReplayConfig",
    "ReplayError",
    "ReplayServer",
    "ReplayServerHandle",
    "UnmatchedCommand",
    "UnplayedExchange",
    "load_sessions",
    "open_replay_server",
    "replay_server",
    "serve_replay",
    "server_tls_for",
    "tls_mismatch",
    "tls_refusal",
]

SessionsMode = Literal["cycle", "once"]
ModelMissing = Literal["err", "synth"]
MatchMode = Literal["default", "strict", "any"]

#: Commands whose arguments carry secrets (RFC 1939 §7, RFC 5034 §4).
_SECRET_VERBS = frozenset({"PASS", "APOP", "AUTH"})
#: Bytes asked of the kernel per receive.
_RECEIVE_SIZE = 64 * 1024
#: At most this many unmatched commands are kept for the report (the rest are counted).
_MAX_UNMATCHED_KEPT = 1000
#: At most this many pre-login commands are remembered for a ``by_user`` switch.
_MAX_PRELOGIN = 64
#: The first byte of a TLS handshake record (RFC 8446 §5.1, content type 22).
_TLS_HANDSHAKE_RECORD = 0x16
#: At most this much plaintext is dropped between an STLS answer and the ClientHello.
_MAX_INJECTED = 64 * 1024


class ReplayError(Exception):
    """A capture cannot be replayed; the message is one line naming the path."""


################################################################
# Recorded sessions
################################################################


class _Timeline:
    """When each byte of one recorded direction was received (from the data records)."""

    def __init__(self, records: Iterable[DataRecord]) -> None:
        self.starts: list[int] = []
        self.times: list[float] = []
        offset = 0
        for record in records:
            if record.data:
                self.starts.append(offset)
                self.times.append(record.t)
                offset += len(record.data)
        self.size = offset

    def time_at(self, offset: int) -> float:
        """Time of the record holding byte ``offset`` (clamped to the stream)."""
        if not self.starts:
            return 0.0
        index = bisect.bisect_right(self.starts, max(0, min(offset, self.size - 1))) - 1
        return self.times[max(0, index)]

    def schedule(self, start: int, end: int) -> tuple[tuple[int, float], ...]:
        """``(offset from start, seconds after the first byte)`` where each record begins."""
        if start >= end or not self.starts:
            return ((0, 0.0),)
        first = bisect.bisect_right(self.starts, start) - 1
        first = max(first, 0)
        base = self.times[first]
        out = [(0, 0.0)]
        for index in range(first + 1, len(self.starts)):
            begin = self.starts[index]
            if begin >= end:
                break
            out.append((begin - start, max(0.0, self.times[index] - base)))
        return tuple(out)


@dataclass(frozen=True, slots=True)
class Segment:
    """Server bytes sent in one go (a response, or the part of one up to a SASL ``+``)."""

    data: bytes
    #: Recorded seconds between the client's line and the first byte.
    delay: float
    #: ``(offset, seconds after the first byte)`` pacing of the recorded data records.
    pacing: tuple[tuple[int, float], ...]


@dataclass(frozen=True, slots=True)
class RecordedExchange:
    """One recorded command and the raw bytes the server answered it with."""

    index: int
    seq: int
    verb: str
    #: Arguments as logs show them (secrets masked).
    args: str
    #: Argument bytes as recorded (masked bytes when the capture masks secrets).
    raw_args: bytes
    #: The recorded command line without its line ending.
    line: bytes
    status: Status | None
    flags: frozenset[Flag]
    #: The response, split after each SASL ``+`` continuation (RFC 5034 §4).
    segments: tuple[Segment, ...]
    #: The recorded client SASL lines (without line endings), one per challenge.
    sasl_lines: tuple[bytes, ...]
    #: The keyword a client command must have to match (upper-cased, as
    #: :func:`~pop3tap.protocol.split_command` gives it), or the placeholder when masked.
    match_verb: str = ""
    #: The recorded server closed the connection right after (or inside) this response.
    closes: bool = False
    #: Recorded after the STLS switch (decrypted), so only answered inside TLS.
    after_tls: bool = False
    #: The accepted STLS (RFC 2595 §4) at which TLS came up: the handshake follows.
    starts_tls: bool = False
    #: The accepted STLS after which the recorded TLS handshake failed: close after it.
    tls_failed: bool = False
    #: A fault the relay injected into this answer when it was recorded (a fault spec).
    fault: str | None = None

    @property
    def command(self) -> str:
        """``VERB args`` with secrets masked."""
        return f"{self.verb} {self.args}".rstrip()

    @property
    def response(self) -> bytes:
        """Every byte of the recorded response."""
        return b"".join(s.data for s in self.segments)

    @property
    def answered(self) -> bool:
        """Whether the recorded server answered (or began to answer) this command."""
        return self.status is not None


@dataclass(frozen=True, slots=True)
class RecordedSession:
    """One capture, ready to be served."""

    path: Path
    session: str
    #: ``masked`` or ``kept`` (capture header).
    secrets: str
    greeting: Segment
    exchanges: tuple[RecordedExchange, ...]
    #: The user this session logged in as (USER/APOP, or AUTH when the capture keeps it).
    user: str | None
    #: The SASL mechanism, for AUTH sessions.
    auth_mechanism: str | None
    #: The recorded server closed the connection right after its greeting.
    closes_after_greeting: bool
    #: The capture file was cut short; it is served up to its last complete exchange.
    truncated: bool
    #: The client leg was implicit TLS (capture option ``listen_tls``, RFC 8314 §3).
    listen_tls: bool = False
    #: The recorded upstream host (a name the replay certificate also covers).
    upstream_host: str = ""
    #: A fault the relay injected into the greeting when it was recorded (a fault spec).
    greeting_fault: str | None = None
    #: Where the recorded server ended the connection, it did so with a TCP reset.
    server_reset: bool = False
    #: pop3tap's CA directory the recording relay used (capture option ``ca_dir``).
    ca_dir: str | None = None

    @property
    def stls(self) -> bool:
        """The session upgraded with STLS (RFC 2595 §4) and its TLS part was recorded."""
        return any(ex.starts_tls for ex in self.exchanges)

    @property
    def name(self) -> str:
        """The capture file name."""
        return self.path.name


def tls_refusal(capture: Capture) -> str | None:
    """Why a capture cannot be replayed because of TLS, or None.

    Implicit TLS (RFC 8314 §3) on either leg is recorded decrypted, and so is an
    intercepted STLS (RFC 2595 §4, a ``tls`` record at the switch): both replay. Refused:
    an STLS the relay let through without intercepting it (an ``stls`` record with
    ``intercepted: false``), whose later bytes are opaque TLS records, not POP3.
    An accepted STLS whose handshake failed (``tls_failed``) is replayed up to the STLS
    answer, then the connection closes (see :func:`session_from_capture`).
    """
    for record in capture.records:
        if (
            isinstance(record, EventRecord)
            and record.name == "stls"
            and record.fields.get("intercepted") is False
        ):
            return (
                "the session used STLS without interception (intercept_stls off), so "
                "what follows the upgrade is encrypted; it cannot be replayed"
            )
    return None


def tls_mismatch(session: RecordedSession, listen_tls: bool) -> str | None:
    """A one-line warning when the replay listener's TLS differs from the recorded one.

    The recorded bytes are plaintext POP3 either way, so the session is served anyway.
    """
    if session.listen_tls and not listen_tls:
        return (
            f"{session.path}: recorded with implicit TLS on the client leg (RFC 8314); "
            "serving it in plaintext because of --no-listen-tls"
        )
    if listen_tls and not session.listen_tls:
        more = " (its STLS is refused inside TLS)" if session.stls else ""
        return (
            f"{session.path}: recorded with a plaintext client leg; serving it over "
            f"implicit TLS anyway because of --listen-tls{more}"
        )
    return None


def _upstream_host(upstream: str) -> str:
    """The host of a capture header's ``host:port`` (``[v6]:port`` too)."""
    text = upstream.strip()
    if text.startswith("["):
        return text[1 : text.find("]")] if "]" in text else text.strip("[]")
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


def _stls_outcome(capture: Capture) -> tuple[bool, bool]:
    """(TLS came up after STLS, a handshake failed): from the ``tls``/``tls_failed`` records."""
    came_up = failed = False
    for record in capture.records:
        if isinstance(record, EventRecord):
            if record.name == "tls" and record.fields.get("mode", "stls") == "stls":
                came_up = True
            elif record.name == "tls_failed":
                failed = True
    return came_up, failed


def _split_lines(data: bytes, start: int, count: int) -> list[tuple[bytes, int]]:
    """Up to ``count`` lines of ``data`` from ``start``: (line without ending, end offset)."""
    out: list[tuple[bytes, int]] = []
    pos = start
    while len(out) < count and pos < len(data):
        newline = data.find(b"\n", pos)
        end = len(data) if newline < 0 else newline + 1
        out.append((data[pos:end].rstrip(b"\r\n"), end))
        pos = end
    return out


def _server_reset(capture: Capture) -> bool:
    """Whether the recorded server's stream ended with a reset rather than a clean close."""
    for record in capture.records:
        if (
            isinstance(record, EventRecord)
            and record.name in ("eof", "reset")
            and record.fields.get("dir") in ("s2c", None)
        ):
            return record.name == "reset"
    return False


def _server_closed_first(capture: Capture) -> bool:
    """Whether the recorded server ended its stream before the client did."""
    for record in capture.records:
        if isinstance(record, EventRecord) and record.name in ("eof", "reset"):
            direction = record.fields.get("dir")
            if direction == "s2c":
                return True
            if direction == "c2s":
                return False
            return False
        if isinstance(record, CloseRecord):
            return record.reason in ("server closed", "server_eof", "server reset")
    return False


def _session_user(
    exchanges: Sequence[RecordedExchange], kept: bool
) -> tuple[str | None, str | None]:
    """The user name and SASL mechanism of a recorded session (see docs/replay.md)."""
    for ex in exchanges:
        if ex.verb == "USER" and ex.args:
            return ex.args, None
        if ex.verb == "APOP" and ex.args:
            return ex.args.split(" ", 1)[0], None
        if ex.verb == "AUTH" and ex.args:
            mechanism = ex.args.split(" ", 1)[0].upper()
            user = None
            if kept:
                parts = ex.raw_args.split(None, 1)
                answer = parts[1] if len(parts) == 2 else (ex.sasl_lines[:1] or [b""])[0]
                user = sasl_user(mechanism, answer)
            return user, mechanism
    return None, None


def sasl_user(mechanism: str, answer: bytes) -> str | None:
    """The user named by the first SASL answer of PLAIN (RFC 4616 §2) or LOGIN."""
    import base64
    import binascii

    try:
        decoded = base64.b64decode(answer.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    if mechanism == "PLAIN":
        parts = decoded.split(b"\0")
        if len(parts) == 3:
            return parts[1].decode("utf-8", "replace")
        return None
    if mechanism == "LOGIN":
        return decoded.decode("utf-8", "replace") or None
    return None


def session_from_capture(capture: Capture) -> RecordedSession:
    """Turn a capture into a :class:`RecordedSession`.

    Raises:
        ReplayError: a TLS capture, or one without a greeting.
    """
    refusal = tls_refusal(capture)
    if refusal is not None:
        raise ReplayError(f"{capture.path}: {refusal}")
    s2c = capture.stream("s2c")
    c2s = capture.stream("c2s")
    server = _Timeline(r for r in capture.records if isinstance(r, DataRecord) and r.dir == "s2c")
    client = _Timeline(r for r in capture.records if isinstance(r, DataRecord) and r.dir == "c2s")
    # Only the events replay serves are kept: a hostile capture can hold millions of others.
    events = [
        e
        for _record, batch in derive_events(capture.records)
        for e in batch
        if isinstance(e, Greeting | Exchange | StartTls)
    ]
    greeting = next((e for e in events if isinstance(e, Greeting)), None)
    if greeting is None:
        raise ReplayError(f"{capture.path}: no server greeting in the capture; nothing to replay")
    raw_exchanges = [e for e in events if isinstance(e, Exchange)]
    start_tls = next((e for e in events if isinstance(e, StartTls)), None)
    tls_came_up, _tls_failed = _stls_outcome(capture)
    recorded_faults = _recorded_faults(capture)
    cut_short = capture.truncated or not capture.complete
    server_closed = _server_closed_first(capture)
    if cut_short and not server_closed:
        # A torn capture: keep only the exchanges that were completely recorded.
        while raw_exchanges and (
            raw_exchanges[-1].status is None or Flag.TRUNCATED in raw_exchanges[-1].flags
        ):
            raw_exchanges.pop()
    answered = [e for e in raw_exchanges if e.status is not None]
    last_answered = answered[-1].seq if answered else None
    exchanges: list[RecordedExchange] = []
    previous_end = greeting.end
    previous_done = server.time_at(greeting.end - 1)
    for index, ex in enumerate(raw_exchanges):
        line = c2s[ex.request_start : ex.request_end].rstrip(b"\r\n")
        line_verb, raw_args = split_command(line)
        challenges = sum(1 for kind, _ in ex.sasl if kind == "+")
        sasl = _split_lines(c2s, ex.request_end, challenges) if challenges else []
        closes = server_closed and (
            ex.status is None or (last_answered is not None and ex.seq == last_answered)
        )
        segments: list[Segment] = []
        if ex.status is not None:
            start = min(previous_end, ex.response_start)
            end = ex.response_end
            if closes:
                end = len(s2c)  # what the server sent after it, before it closed
            cuts = _sasl_cuts(s2c, ex.response_start, ex.response_end)
            bounds = [start, *cuts, end]
            refs = [max(client.time_at(ex.request_end - 1), previous_done)]
            refs += [client.time_at(sasl_end - 1) for _line, sasl_end in sasl]
            for number, (a, b) in enumerate(itertools.pairwise(bounds)):
                ref = refs[min(number, len(refs) - 1)]
                segments.append(
                    Segment(
                        data=s2c[a:b],
                        delay=max(0.0, server.time_at(a) - ref),
                        pacing=server.schedule(a, b),
                    )
                )
            previous_end = max(previous_end, ex.response_end)
            previous_done = server.time_at(ex.response_end - 1)
        is_switch = start_tls is not None and ex.seq == start_tls.seq
        exchanges.append(
            RecordedExchange(
                index=index,
                seq=ex.seq,
                verb=ex.verb,
                args=ex.args,
                raw_args=raw_args,
                line=line,
                status=ex.status,
                flags=ex.flags,
                segments=tuple(segments),
                sasl_lines=tuple(text for text, _end in sasl),
                match_verb=ex.verb if ex.verb == SECRET_PLACEHOLDER else line_verb,
                closes=closes,
                after_tls=start_tls is not None and ex.seq > start_tls.seq,
                starts_tls=is_switch and tls_came_up,
                tls_failed=is_switch and not tls_came_up,
                fault=recorded_faults.get(ex.seq),
            )
        )
    greeting_end = greeting.end
    closes_after_greeting = server_closed and not answered
    if closes_after_greeting:
        greeting_end = len(s2c)
    kept = capture.header.secrets == "kept"
    user, mechanism = _session_user(exchanges, kept)
    return RecordedSession(
        path=capture.path,
        session=capture.header.session,
        secrets=capture.header.secrets,
        greeting=Segment(
            data=s2c[greeting.start : greeting_end],
            delay=server.time_at(greeting.start),
            pacing=server.schedule(greeting.start, greeting_end),
        ),
        exchanges=tuple(exchanges),
        user=user,
        auth_mechanism=mechanism,
        closes_after_greeting=closes_after_greeting,
        truncated=cut_short and not server_closed,
        listen_tls=capture.header.options.get("listen_tls") is True,
        upstream_host=_upstream_host(capture.header.upstream),
        greeting_fault=recorded_faults.get(0),
        server_reset=server_closed and _server_reset(capture),
        ca_dir=_text_option(capture.header.options.get("ca_dir")),
    )


def _recorded_faults(capture: Capture) -> dict[int, str]:
    """Faults the relay injected (``fault`` records): exchange seq (0: greeting) -> spec."""
    found: dict[int, str] = {}
    dropped: set[int] = set()
    for record in capture.records:
        if isinstance(record, EventRecord) and record.name in ("fault", "fault_dropped"):
            seq, spec = record.fields.get("seq"), record.fields.get("spec")
            if not isinstance(seq, int) or not isinstance(spec, str):
                continue
            if record.name == "fault":
                found.setdefault(seq, spec)
            else:  # armed, then dropped when the pairing was lost: it never happened
                dropped.add(seq)
    return {seq: spec for seq, spec in found.items() if seq not in dropped}


def _text_option(value: object) -> str | None:
    return value if isinstance(value, str) and value and "\0" not in value else None


def _sasl_cuts(s2c: bytes, start: int, end: int) -> list[int]:
    """Offsets just after each ``+`` continuation line inside a response."""
    cuts: list[int] = []
    pos = start
    while pos < end:
        newline = s2c.find(b"\n", pos, end)
        if newline < 0:
            break
        token, _rest = parse_status(s2c[pos:newline].rstrip(b"\r"))
        if token == "+":
            cuts.append(newline + 1)
        elif token in ("+OK", "-ERR"):
            break
        pos = newline + 1
    return [c for c in cuts if c < end]


def load_sessions(
    captures: Iterable[str | Path] | str | Path,
    *,
    on_warning: Callable[[str], None] | None = None,
) -> tuple[list[RecordedSession], list[str]]:
    """Load capture files and directories; return the sessions and one-line warnings.

    A file found in a directory that cannot be served (not a capture, no greeting, a
    TLS session that was not intercepted) is skipped with a warning naming it and why.
    ``on_warning`` sees each warning as it happens (also those before an error).

    Raises:
        CaptureError: a named file that is missing, unreadable, corrupt or of a newer format.
        ReplayError: a named TLS capture or one without a greeting, or nothing left to serve.
    """
    if isinstance(captures, str | Path):
        captures = [captures]
    args = list(captures)
    entries = expand_capture_args(args)
    if not entries:
        raise ReplayError(f"no capture files in {' '.join(str(a) for a in args)}")
    sessions: list[RecordedSession] = []
    warnings: list[str] = []

    def warn(text: str) -> None:
        warnings.append(text)
        if on_warning is not None:
            on_warning(text)

    for entry in entries:
        path = entry.path
        try:
            capture = read_capture(path)
            session = session_from_capture(capture)
        except (CaptureError, ReplayError) as exc:
            if not entry.from_directory:
                raise
            warn(f"skipped {exc}")
            continue
        if capture.truncated:
            why = capture.problem or f"{capture.trailing_bytes} trailing bytes"
            warn(
                f"{path}: capture is truncated ({why}); serving it up to its last complete exchange"
            )
        elif not capture.complete and session.truncated:
            warn(
                f"{path}: capture has no close record; serving it up to its last complete exchange"
            )
        sessions.append(session)
    if not sessions:
        raise ReplayError(
            f"nothing left to serve: no replayable capture in {' '.join(str(a) for a in args)}"
        )
    return sessions, warnings


################################################################
# Configuration and results
################################################################


def parse_timing(value: str | float) -> float:
    """``fast`` → 0 (no delays), ``recorded`` → 1, or a positive speed factor."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        factor = float(value)
    elif isinstance(value, str) and value.strip().lower() == "fast":
        return 0.0
    elif isinstance(value, str) and value.strip().lower() == "recorded":
        return 1.0
    else:
        try:
            factor = float(str(value))
        except ValueError:
            raise ValueError(
                f"timing must be 'fast', 'recorded' or a positive speed factor, not {value!r}"
            ) from None
    if not factor > 0 or factor == float("inf"):
        raise ValueError(f"timing factor must be a positive number, not {value!r}")
    return factor



def _positive_number(value: object) -> bool:
    """A number of seconds above 0 (not a bool, not a string from a hand-written dict)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


@dataclass(frozen=True, slots=True)
class ReplayConfig:
    """Everything a replay server needs; defaults are what ``pop3tap replay`` uses."""

    #: Capture files and directories (each ``*.p3cap`` inside is one session).
    captures: tuple[str | Path, ...] = ()
    listen: Endpoint = field(default_factory=lambda: Endpoint("127.0.0.1", 1110))
    #: ``cycle``: each connection takes the next session, wrapping; ``once``: each at most once.
    sessions: SessionsMode = "cycle"
    #: Pick the session whose USER/APOP/AUTH user matches the client's.
    by_user: bool = False
    match: MatchMode = "default"
    #: ``fast`` (no delays), ``recorded``, or a speed factor (2 = twice as fast).
    timing: str | float = "fast"
    #: Close a connection that sends nothing (or reads nothing) for this long; None: never.
    idle_timeout: float | None = 600.0
    #: The longest client line accepted, line ending included.
    max_line: int = 8192
    #: Close after this many commands in a row without a recorded answer.
    max_errors: int = 20
    #: Implicit TLS from the first byte (RFC 8314 §3); None: as the captures were recorded.
    listen_tls: bool | None = None
    #: Present this certificate chain and key instead of a leaf from pop3tap's CA.
    cert: Path | None = None
    key: Path | None = None
    #: pop3tap's CA directory (created if missing); None: the one the captures were
    #: recorded with when it is still there, else as ``pop3tap ca`` (config home).
    ca_dir: Path | None = None
    #: Seconds allowed for each TLS handshake with a client.
    tls_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    #: Serve a mailbox model built from the captures (see docs/model.md), not byte replay.
    model: bool = False
    #: A message whose body was never recorded: ``err`` (one -ERR) or ``synth`` (made up).
    model_missing: ModelMissing = "err"
    #: Deletions made by one session's QUIT are seen by the next (until ``reset``).
    model_persist: bool = False
    #: Let several sessions hold one mailbox at once (else ``-ERR [IN-USE]``).
    model_shared: bool = False
    #: Serve these message files (a directory of .eml files, a Maildir or an mbox).
    messages: Path | None = None
    #: ``(user, password)`` pairs the model checks logins against.
    passwords: tuple[tuple[str, str], ...] = ()
    #: Fault specs (docs/faults.md) applied to the answers this server sends.
    faults: tuple[str, ...] = ()
    #: After :meth:`ReplayServer.shutdown`, open connections get this long to finish.
    grace: float = 10.0

    def __post_init__(self) -> None:
        if self.sessions not in ("cycle", "once"):
            raise ValueError(f"sessions must be 'cycle' or 'once', not {self.sessions!r}")
        if self.match not in ("default", "strict", "any"):
            raise ValueError(f"match must be 'default', 'strict' or 'any', not {self.match!r}")
        parse_timing(self.timing)
        if self.idle_timeout is not None and not _positive_number(self.idle_timeout):
            raise ValueError("idle_timeout must be a positive number of seconds")
        if self.max_line < 64:
            raise ValueError("max_line must be at least 64 bytes")
        if (self.cert is None) != (self.key is None):
            raise ValueError("--cert and --key go together")
        if not _positive_number(self.tls_timeout):
            raise ValueError("tls_timeout must be a positive number of seconds")
        if self.model_missing not in ("err", "synth"):
            raise ValueError(f"model_missing must be 'err' or 'synth', not {self.model_missing!r}")
        for spec in self.faults:
            parse_fault(spec)  # FaultError is a ValueError: one line naming the bad part
        model_only = self.messages is not None or self.model_persist or self.model_shared
        if model_only and not self.model:
            raise ValueError("--messages, --model-persist and --model-shared need --model")
        if not self.grace >= 0:
            raise ValueError("grace must be a number of seconds, not negative")

    @property
    def speed(self) -> float:
        """0 for no delays, else the factor recorded delays are divided by."""
        return parse_timing(self.timing)


@dataclass(frozen=True, slots=True)
class UnplayedExchange:
    """A recorded exchange no client asked for."""

    capture: str
    seq: int
    command: str

    def __str__(self) -> str:
        return f"{self.capture} #{self.seq}: {self.command}"


@dataclass(frozen=True, slots=True)
class UnmatchedCommand:
    """A client command that had no recorded answer."""

    capture: str
    command: str
    #: The closest recorded commands and what differed, e.g. ``LIST 2 (arguments differ)``.
    candidates: tuple[str, ...]

    def __str__(self) -> str:
        near = f" (closest: {'; '.join(self.candidates)})" if self.candidates else ""
        return f"{self.capture}: {self.command}{near}"


def _display(data: bytes, limit: int = 120) -> str:
    """Printable, bounded text for a client line in an -ERR line or a log."""
    text = data.decode("utf-8", "backslashreplace")
    text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
    text = text.replace('"', "'")
    return text if len(text) <= limit else text[: limit - 3] + "..."


#: The longest recorded pause reproduced when there is no idle limit (seconds).
_MAX_RECORDED_PAUSE = 600.0

def masked_command(line: bytes, *, after_auth: bool = False) -> str:
    """A client line as it may be shown: secrets masked, printable, bounded.

    The protocol core decides (:func:`~pop3tap.protocol.describe_command`): after an AUTH
    only a known command with valid arguments is shown, since anything else may be SASL
    data (RFC 5034 §4); an unknown keyword is never case-folded.
    """
    if after_auth and not is_known_command(line):
        return SECRET_PLACEHOLDER
    verb, args = describe_command(line)
    shown = _display(args.encode("utf-8", "backslashreplace"))
    verb_shown = _display(verb.encode("utf-8", "backslashreplace"), 40)
    return f"{verb_shown} {shown}".rstrip()  # shown_command(), made printable and bounded


################################################################
# Matching
################################################################


def _args_key(verb: str, args: bytes, masked: bool) -> bytes:
    """What must be equal for a client command to match a recorded one.

    Masked secrets match any value; the SASL mechanism name is case-insensitive
    (RFC 5034 §4); everything else must be equal byte for byte.
    """
    if verb == "AUTH":
        parts = args.split(None, 1)
        if not parts:
            return b""
        mechanism = parts[0].upper()
        if len(parts) == 1:
            return mechanism
        return mechanism + b" " + (SECRET_PLACEHOLDER.encode() if masked else parts[1])
    if masked and verb == "PASS":
        return SECRET_PLACEHOLDER.encode() if args else b""
    if masked and verb == "APOP":
        parts = args.split(None, 1)
        if not parts:  # only whitespace after APOP (a \x0c, say): nothing to match
            return b""
        return parts[0] + (b" " + SECRET_PLACEHOLDER.encode() if len(parts) == 2 else b"")
    return args


class _Accounting:
    """Which recorded exchanges were played, and which commands had no answer."""

    def __init__(self, sessions: Sequence[RecordedSession]) -> None:
        self.sessions = sessions
        self.counts = [[0] * len(s.exchanges) for s in sessions]
        self.unmatched: list[UnmatchedCommand] = []
        self.unmatched_total = 0

    def unplayed(self) -> list[UnplayedExchange]:
        out: list[UnplayedExchange] = []
        for session, counts in zip(self.sessions, self.counts, strict=True):
            for ex, count in zip(session.exchanges, counts, strict=True):
                if count == 0 and ex.answered:
                    out.append(UnplayedExchange(session.name, ex.seq, ex.command))
        return out


class _Play:
    """Matching state of one connection against one recorded session."""

    def __init__(self, server: ReplayServer, session_index: int) -> None:
        self.server = server
        self.index = session_index
        self.session = server.sessions[session_index]
        self.played = [False] * len(self.session.exchanges)
        #: Whether the STLS phase matters (see :meth:`in_phase`), worked out once.
        self.phased = not server.config.listen_tls and self.session.stls
        self.cursor = 0  # strict mode: the next exchange expected
        #: The connection is past its STLS upgrade (RFC 2595 §4).
        self.after_tls = False

    def switch(self, session_index: int, answered: Sequence[tuple[str, bytes]]) -> None:
        """Continue with another session (``by_user``), replaying the accounting so far."""
        after_tls = self.after_tls
        self.__init__(self.server, session_index)  # type: ignore[misc]
        for verb, args in answered:
            found = self.find(verb, args)
            if found is not None:
                self.mark(found)
                self.after_tls = self.after_tls or found.starts_tls
        self.after_tls = after_tls

    def in_phase(self, ex: RecordedExchange) -> bool:
        """Whether ``ex`` belongs to the current side of the recorded STLS switch.

        Exchanges recorded before STLS answer only before the upgrade, later ones only
        after it. Off for sessions without STLS and on implicit-TLS listeners.
        """
        return not self.phased or ex.after_tls == self.after_tls

    def keys(self, ex: RecordedExchange) -> tuple[str, bytes]:
        masked = self.session.secrets == "masked"
        return ex.match_verb, _args_key(ex.match_verb, ex.raw_args, masked)

    def find(self, verb: str, args: bytes) -> RecordedExchange | None:
        """The exchange that answers this command under the configured match mode."""
        masked = self.session.secrets == "masked"
        wanted = (verb, _args_key(verb, args, masked))
        exchanges = self.session.exchanges
        mode = self.server.config.match
        if mode == "strict":
            while self.cursor < len(exchanges) and self.played[self.cursor]:
                self.cursor += 1
            if self.cursor < len(exchanges):
                ex = exchanges[self.cursor]
                # The recorded client may have left before its last command was answered.
                if (ex.answered or ex.closes) and self.in_phase(ex) and self.keys(ex) == wanted:
                    return ex
            return None
        last: RecordedExchange | None = None
        for ex in exchanges:
            if not ex.answered and not ex.closes:
                continue  # the client left before the recorded server answered
            if not self.in_phase(ex):
                continue
            if self.keys(ex) == wanted:
                if not self.played[ex.index]:
                    return ex
                last = ex
        return last if mode == "any" else None

    def mark(self, ex: RecordedExchange) -> None:
        self.played[ex.index] = True
        self.server.accounting.counts[self.index][ex.index] += 1

    def candidates(self, verb: str, args: bytes, shown: str, limit: int = 3) -> list[str]:
        """The closest recorded commands and what differed (vcrpy best matches)."""
        masked = self.session.secrets == "masked"
        key = _args_key(verb, args, masked)
        scored: list[tuple[float, int, str]] = []
        for ex in self.session.exchanges:
            ex_verb, ex_key = self.keys(ex)
            if ex_verb == verb and ex_key == key and not self.in_phase(ex):
                why = "recorded after STLS" if ex.after_tls else "recorded before STLS"
                score = 3.5
            elif ex_verb == verb and ex_key == key:
                why = "already played"
                score = 3.0
            elif ex_verb == verb:
                why = "arguments differ"
                score = 2.0 + difflib.SequenceMatcher(None, ex_key, key).ratio()
            else:
                why = "verb differs"
                score = difflib.SequenceMatcher(None, ex.command, shown).ratio()
            if self.server.config.match == "strict" and ex.index == self.cursor:
                why += ", expected next"
                score += 10
            scored.append((score, -ex.index, f"#{ex.seq} {ex.command} ({why})"))
        scored.sort(reverse=True)
        return [text for _score, _index, text in scored[:limit]]

    def unplayed(self) -> list[str]:
        return [
            f"#{ex.seq} {ex.command}"
            for ex in self.session.exchanges
            if ex.answered and not self.played[ex.index]
        ]


################################################################
# Connections
################################################################


class _LineTooLong(Exception):
    pass


class _Idle(Exception):
    pass


class _Closed(Exception):
    pass


class _LineReader:
    """Client lines from a stream, with at most ``max_line`` bytes buffered per line."""

    def __init__(self, stream: trio.abc.Stream, max_line: int, idle: float | None) -> None:
        self.stream = stream
        self.max_line = max_line
        self.idle = idle
        self.buffer = bytearray()
        self.scanned = 0
        self.eof = False

    async def readline(self) -> bytes | None:
        """The next line without its ending (LF or CRLF); None at end of stream."""
        while True:
            newline = self.buffer.find(b"\n", self.scanned)
            if newline >= 0:
                if newline + 1 > self.max_line:
                    raise _LineTooLong
                line = bytes(self.buffer[:newline])
                del self.buffer[: newline + 1]
                self.scanned = 0
                return line[:-1] if line.endswith(b"\r") else line
            self.scanned = len(self.buffer)
            if self.scanned > self.max_line:
                raise _LineTooLong
            if self.eof:
                if self.buffer:
                    line = bytes(self.buffer)
                    self.buffer.clear()
                    self.scanned = 0
                    return line.rstrip(b"\r")
                return None
            data = await self._receive()
            if not data:
                self.eof = True
            self.buffer += data

    async def _receive(self) -> bytes:
        with trio.move_on_after(self.idle if self.idle is not None else float("inf")):
            try:
                return await receive_some(self.stream, plain_fd(self.stream), _RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return b""
        raise _Idle


class _DropPlaintext(trio.abc.HalfCloseableStream):
    """A client transport right after an STLS ``+OK``: plaintext before the first TLS
    record is dropped and counted (RFC 2595 §4; the CVE-2011-0411 injection class).

    A ClientHello begins with byte 0x16, which POP3 command lines never hold.
    """

    def __init__(self, inner: trio.abc.Stream, limit: int = _MAX_INJECTED) -> None:
        self.inner = inner
        self.limit = limit
        self.dropped = 0
        self.skipping = True

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        while self.skipping:
            data = bytes(await self.inner.receive_some(max_bytes))
            if not data:
                return b""
            start = data.find(_TLS_HANDSHAKE_RECORD)
            if start < 0:
                self.dropped += len(data)
                if self.dropped > self.limit:
                    raise trio.BrokenResourceError("too much plaintext after STLS")
                continue
            self.skipping = False
            self.dropped += start
            return data[start:]
        return await self.inner.receive_some(max_bytes)

    @property
    def socket(self) -> Any:
        """The socket under (so a reset can be set on it), or None."""
        return getattr(self.inner, "socket", None)

    async def send_eof(self) -> None:
        """Half-close the TCP stream under (after a TLS ``close_notify``)."""
        if isinstance(self.inner, trio.abc.HalfCloseableStream):
            await self.inner.send_eof()

    async def aclose(self) -> None:
        await self.inner.aclose()


class _Connection:
    """One client of the replay server."""

    def __init__(self, server: ReplayServer, stream: trio.abc.Stream, number: int) -> None:
        self.server = server
        self.config = server.config
        self.stream = stream
        self.number = number
        self.reader = _LineReader(stream, self.config.max_line, self.config.idle_timeout)
        self.play: _Play | None = None
        self.errors_in_a_row = 0
        #: A line holding AUTH was read: any later line may be SASL data (RFC 5034 §4).
        self.auth_seen = False
        self.authenticated = False
        self.prelogin: list[tuple[str, bytes]] = []
        self.user_chosen = False
        self.reason = "client closed"
        #: The recorded server closed the connection here (so close as it did).
        self.recorded_close = False
        #: The client leg is TLS (implicit, or after STLS).
        self.tls_up = False
        self.log = logger.bind(connection=number, client=format_peer(stream))
        self.faults = ConnectionFaults(server.faults, number)
        #: A fault asked for a reset: close without the linger (which would send a FIN).
        self.reset_on_close = False

    # -- sending --------------------------------------------------------------------------

    async def send(self, segment: Segment) -> None:
        """Send recorded bytes, with the recorded delay and pacing unless timing is fast."""
        speed = self.config.speed
        if speed == 0 or (segment.delay == 0 and len(segment.pacing) <= 1):
            await self._send_all(segment.data)
            return
        start = trio.current_time()
        # A recorded pause never holds a client longer than the idle limit.
        idle = self.config.idle_timeout
        latest = start + (idle if idle is not None else _MAX_RECORDED_PAUSE)
        await trio.sleep_until(min(start + segment.delay / speed, latest))
        offsets = [offset for offset, _t in segment.pacing] + [len(segment.data)]
        for (offset, at), end in zip(segment.pacing, offsets[1:], strict=True):
            await trio.sleep_until(min(start + (segment.delay + at) / speed, latest))
            await self._send_all(segment.data[offset:end])

    async def _send_all(self, data: bytes) -> None:
        if not data:
            return
        try:
            sent = send_now(self.stream, data)
        except trio.BrokenResourceError:
            raise _Closed from None
        if sent == len(data):
            return
        idle = self.config.idle_timeout
        with trio.move_on_after(idle if idle is not None else float("inf")):
            try:
                await self.stream.send_all(memoryview(data)[sent:])
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise _Closed from None
            return
        raise _Idle

    async def send_error(self, text: str) -> None:
        """One ``-ERR`` line naming pop3tap (RFC 1939 §3 status indicator)."""
        line = f"-ERR pop3tap replay: {text}\r\n".encode("utf-8", "backslashreplace")
        await self._send_all(line)

    # -- session -------------------------------------------------------------------------

    async def run(self) -> None:
        if self.config.listen_tls and not await self.start_tls(self.stream, mode="implicit"):
            return
        try:
            await self.serve()
        except _LineTooLong:
            self.reason = "line too long"
            self.log.warning("replay.line_too_long", max_line=self.config.max_line)
            with contextlib.suppress(_Closed, _Idle):
                await self.send_error(f"line too long (limit {self.config.max_line} bytes)")
        except _Idle:
            self.reason = "idle timeout"
            self.log.info("replay.idle_timeout", seconds=self.config.idle_timeout)
            with contextlib.suppress(_Closed, _Idle), trio.move_on_after(5):
                await self.send_error("idle timeout, closing")
        except _Closed:
            self.reason = "client gone"

    async def serve(self) -> None:
        """Byte replay: pick a recorded session, send its greeting, answer commands."""
        index = self.server.assign_session()
        if index is None:
            self.log.warning("replay.sessions_exhausted", sessions=len(self.server.sessions))
            self.reason = "no session left"
            await self.send_error("every recorded session was played already (--sessions once)")
            return
        self.play = _Play(self.server, index)
        session = self.play.session
        self.log.info("replay.session.open", capture=session.name, session=session.session)
        if not await self.greet(session.greeting, _recorded_fault(session.greeting_fault)):
            return
        if session.closes_after_greeting:
            self.reason = "recorded server closed after its greeting"
            self.recorded_close = True
            return
        await self.serve_commands()

    async def greet(self, greeting: Segment, recorded: Fault | None = None) -> bool:
        """Send the greeting, or what a greeting fault makes of it; False: the session ends."""
        fault = self.faults.choose("greeting") or recorded
        if fault is None:
            await self.send(greeting)
            return True
        ended = await self.deliver(greeting.data, fault, 0, "greeting")
        if ended is not None:
            self.reason = ended
            return False
        return True

    async def serve_commands(self) -> None:
        assert self.play is not None
        while True:
            line = await self.reader.readline()
            if line is None:
                self.reason = "client closed"
                return
            verb, args = split_command(line)
            after_auth = self.auth_seen
            self.auth_seen = after_auth or opens_auth(line)
            if self.config.by_user and not self.user_chosen:
                self.maybe_choose_session(verb, args, line)
            ex = self.play.find(verb, args)
            if ex is None:
                if await self.no_answer(line, verb, args, after_auth=after_auth):
                    return
                continue
            self.errors_in_a_row = 0
            self.play.mark(ex)
            if (ex.starts_tls or ex.tls_failed) and self.tls_up:
                # An implicit-TLS listener serving an STLS capture: no TLS inside TLS.
                self.log.warning("replay.stls_in_tls", capture=self.play.session.name)
                await self.send_error("STLS refused: this connection is already TLS")
                continue
            if not self.user_chosen and len(self.prelogin) < _MAX_PRELOGIN:
                self.prelogin.append((verb, args))
            self.log.debug("replay.exchange", seq=ex.seq, command=ex.command)
            fault = self.faults.choose(verb, args) or _recorded_fault(ex.fault)
            if not await self.answer(ex, fault):
                return
            if ex.closes:
                self.reason = "recorded server closed here"
                self.recorded_close = True
                return
            if ex.tls_failed:
                self.reason = "the recorded TLS handshake after STLS failed"
                return
            if ex.starts_tls and not await self.upgrade():
                return
            if verb == "QUIT" and ex.status is not None:
                self.reason = "quit"
                return

    async def upgrade(self) -> bool:
        """TLS after the recorded STLS ``+OK`` (RFC 2595 §4); False when the session ends.

        Client bytes already read past the STLS line, or sent before the ClientHello,
        are dropped and logged, never answered.
        """
        buffered = len(self.reader.buffer)
        self.reader.buffer.clear()
        self.reader.scanned = 0
        transport = _DropPlaintext(self.stream)
        ok = await self.start_tls(transport, mode="stls")
        injected = buffered + transport.dropped
        if injected:
            self.log.warning(
                "replay.stls_injection",
                client_bytes=injected,
                note="plaintext sent after STLS before TLS (CVE-2011-0411 class): dropped",
            )
        if ok:
            self.tls_started()
        return ok

    def tls_started(self) -> None:
        """TLS came up after STLS: only the exchanges recorded inside TLS match now."""
        assert self.play is not None
        self.play.after_tls = True

    async def start_tls(self, transport: trio.abc.Stream, *, mode: str) -> bool:
        """A bounded TLS handshake as server with the client; logs which leg failed and why."""
        server_tls = self.server.tls
        if server_tls is None:  # pragma: no cover - the server builds it when needed
            self.reason = "TLS needed but not configured"
            return False
        timeout = self.config.tls_timeout
        try:
            with trio.fail_after(timeout):
                tls = await server_handshake(transport, server_tls.context)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError) as exc:
            reason = describe_failure(
                exc, leg="client", own_ca=server_tls.ca is not None, timeout=timeout
            )
            self.log.warning("replay.tls_failed", leg="client", mode=mode, reason=reason)
            self.reason = f"TLS failed (client): {reason}"
            return False
        self.log.info("replay.tls", leg="client", mode=mode, **tls_info(tls, server=server_tls))
        self.stream = tls
        self.reader = _LineReader(tls, self.config.max_line, self.config.idle_timeout)
        self.tls_up = True
        return True

    async def deliver(self, data: bytes, fault: Fault, seq: int, command: str) -> str | None:
        """Send one answer as ``fault`` says; the reason the session ends, or None."""
        delivery = Delivery(
            self._send_all, self.stream, self.log, wait_for_client_close=self._wait_client_gone
        )
        ended = await deliver(delivery, data, fault, seq=seq, command=command)
        if fault.action is FaultAction.RESET:
            self.reset_on_close = True
        return ended

    async def _wait_client_gone(self) -> None:
        """Read and drop what the client sends until it leaves (or the idle limit)."""
        idle = self.config.idle_timeout
        with trio.move_on_after(idle if idle is not None else float("inf")):
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                while await self.stream.receive_some(_RECEIVE_SIZE):
                    pass

    async def answer(self, ex: RecordedExchange, fault: Fault | None = None) -> bool:
        """Send the recorded response; for AUTH, read a SASL line after each ``+``.

        A ``fault`` applies to the first part of the answer (the whole of it, or the
        first SASL challenge); where it lets the session go on, the rest is as recorded.
        """
        if not ex.segments:
            # The recorded server never answered this command: it closed the connection.
            self.reason = "recorded server closed without answering"
            self.recorded_close = True
            return False
        for number, segment in enumerate(ex.segments):
            if number == 0 and fault is not None:
                ended = await self.deliver(segment.data, fault, ex.seq, ex.command)
                if ended is not None:
                    self.reason = ended
                    return False
                if fault.action is FaultAction.ERR:
                    return True  # the -ERR took the place of the whole answer
            else:
                await self.send(segment)
            if number + 1 < len(ex.segments):
                sasl = await self.reader.readline()
                if sasl is None:
                    self.reason = "client closed during SASL"
                    return False
                recorded = ex.sasl_lines[number] if number < len(ex.sasl_lines) else b""
                if not self.sasl_line_matches(sasl, recorded):
                    assert self.play is not None
                    self.log.warning(
                        "replay.no_match",
                        capture=self.play.session.name,
                        command=f"{ex.command} (SASL answer {number + 1})",
                        differs="SASL answer differs from the recorded one",
                    )
                    self.server.note_unmatched(
                        self.play.session.name,
                        f"{ex.command} (SASL answer {number + 1})",
                        ("SASL answer differs",),
                    )
                    await self.send_error(f'no recorded response for "{ex.command}" (SASL answer)')
                    return True
        return True

    def sasl_line_matches(self, sasl: bytes, recorded: bytes) -> bool:
        """Masked SASL lines match anything; kept ones must be equal (``*`` always counts)."""
        assert self.play is not None
        if sasl.strip() == b"*" or recorded.strip() == b"*":
            return sasl.strip() == recorded.strip()
        if self.play.session.secrets == "masked":
            return True
        return sasl == recorded

    async def no_answer(
        self, line: bytes, verb: str, args: bytes, *, after_auth: bool = False
    ) -> bool:
        """Answer a command nothing was recorded for; True when the session must end.

        After an AUTH, a line that is not a known command with valid arguments may be SASL
        data: it is never echoed or logged (see :func:`masked_command`).
        """
        assert self.play is not None
        shown = masked_command(line, after_auth=after_auth)
        candidates = self.play.candidates(verb, args, shown)
        self.server.note_unmatched(self.play.session.name, shown, tuple(candidates))
        self.log.warning(
            "replay.no_match",
            capture=self.play.session.name,
            command=shown,
            match=self.config.match,
            closest=candidates,
        )
        if self.config.match == "strict":
            self.reason = "strict match failed"
            await self.send_error(f'strict match failed: "{shown}" is not the next command')
            return True
        await self.send_error(f'no recorded response for "{shown}"')
        if verb == "QUIT":
            self.reason = "quit without a recorded answer"
            return True  # the client asked to end the session (RFC 1939 §6)
        self.errors_in_a_row += 1
        if self.errors_in_a_row >= self.config.max_errors:
            self.reason = "too many unmatched commands"
            await self.send_error("too many commands without a recorded response, closing")
            return True
        return False

    async def _linger(self) -> None:
        """End the connection the way the recorded server did, then drop what the client
        still sends for a moment.

        An orderly close over TLS sends ``close_notify`` first (RFC 8446 §6.1), so a client
        such as ``openssl s_client`` sees a clean end, not a truncation; a plain one sends
        FIN. Where the recorded server reset the connection, so does the replay. Closing a
        TCP socket with unread input sends a reset, which can destroy our last line before
        the client reads it; reading a bounded amount (for one second) avoids that.
        """
        stream = self.stream
        if self.recorded_close and self.play is not None and self.play.session.server_reset:
            reset_on_close(stream)
            return
        with trio.move_on_after(1):
            try:
                if isinstance(stream, trio.SSLStream):
                    if not await send_close_notify(stream):
                        return
                elif isinstance(stream, trio.abc.HalfCloseableStream):
                    await stream.send_eof()
                else:
                    return
                discarded = 0
                while discarded < (1 << 20):
                    data = await stream.receive_some(_RECEIVE_SIZE)
                    if not data:
                        return
                    discarded += len(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return

    def maybe_choose_session(self, verb: str, args: bytes, line: bytes) -> None:
        """``by_user``: on the first USER/APOP/AUTH, move to the session of that user."""
        assert self.play is not None
        user: str | None = None
        mechanism: str | None = None
        if verb == "USER":
            user = args.decode("utf-8", "replace")
        elif verb == "APOP":
            user = args.split(None, 1)[0].decode("utf-8", "replace") if args.split() else None
        elif verb == "AUTH":
            parts = args.split(None, 1)
            if not parts:
                return
            mechanism = parts[0].decode("ascii", "replace").upper()
            if len(parts) == 2:
                user = sasl_user(mechanism, parts[1])
        else:
            return
        self.user_chosen = True
        index = self.server.session_for_user(user, mechanism, current=self.play.index)
        if index is not None and index != self.play.index:
            self.log.info(
                "replay.by_user",
                user=user,
                capture=self.server.sessions[index].name,
                was=self.play.session.name,
            )
            self.play.switch(index, self.prelogin)

    async def finish(self) -> None:
        # A second stop signal (abort) closes at once, without the linger.
        if not self.reset_on_close and not self.server.aborted:
            await self._linger()
        with trio.move_on_after(1):
            await trio.aclose_forcefully(self.stream)
        if self.play is None:
            return
        unplayed = self.play.unplayed()
        fields: dict[str, Any] = {"capture": self.play.session.name, "reason": self.reason}
        if unplayed:
            self.log.warning("replay.session.close", unplayed=unplayed, **fields)
        else:
            self.log.info("replay.session.close", unplayed=[], **fields)


def _recorded_fault(spec: str | None) -> Fault | None:
    """The fault a capture's ``fault`` record names (None if none, or not parseable)."""
    if spec is None:
        return None
    try:
        return parse_fault(spec)
    except FaultError:
        logger.warning("replay.bad_fault_record", spec=spec[:200])
        return None


################################################################
# Server
################################################################


class ReplayServer:
    """Serve recorded sessions to every client that connects.

    Use ``await nursery.start(server.run)`` to get the listeners once they accept.
    """

    def __init__(
        self,
        config: ReplayConfig,
        sessions: Sequence[RecordedSession] | None = None,
        *,
        tls: ServerTls | None = None,
        model: ModelStore | None = None,
    ) -> None:
        """Load the captures (unless ``sessions`` are given) and the TLS certificate.

        ``tls`` is what :func:`server_tls_for` returned (built here when None and needed);
        ``model`` the mailbox store of ``config.model`` (built here when None and needed).

        Raises:
            CaptureError, ReplayError: a capture cannot be read or replayed.
            TlsSetupError: the certificate, key or CA cannot be used.
        """
        #: Listening sockets bound beforehand (``--workers``); None: bind ``config.listen``.
        self.sockets: list[socket.socket] | None = None
        self.config = config
        self.warnings: list[str] = []
        if sessions is None:
            loaded: list[RecordedSession] = []
            if config.captures or config.messages is None:
                loaded, self.warnings = load_sessions(config.captures)
            sessions = loaded
        if not sessions and config.messages is None:
            raise ReplayError("no recorded sessions to replay")
        config, self.tls_notes = resolve_tls(config, sessions)
        self.config = config
        for note in self.tls_notes:
            logger.info("replay.tls_choice", note=note)
        self.sessions: tuple[RecordedSession, ...] = tuple(sessions)
        #: One-line warnings about captures whose client-leg TLS differs from the listener.
        self.tls_warnings = [
            w for w in (tls_mismatch(s, bool(config.listen_tls)) for s in self.sessions) if w
        ]
        for warning in self.tls_warnings:
            logger.warning("replay.tls_mismatch", note=warning)
        self.tls = tls if tls is not None else server_tls_for(config, self.sessions)
        #: The mailbox model (``config.model``), else None.
        self.model: ModelStore | None = model
        if config.model and model is None:
            from pop3tap.replay_model import build_store

            self.model = build_store(config, self.sessions, tls_available=self.tls is not None)
        self.accounting = _Accounting(self.sessions)
        #: The faults every connection is subject to; tests may change them while it runs.
        self.faults = FaultPlan(config.faults)
        self.listeners: list[trio.SocketListener] = []
        self.connections = 0
        #: Connections being served right now.
        self.active_connections = 0
        self.shutting_down = False
        #: True once :meth:`abort` closed the open connections without waiting.
        self.aborted = False
        self._accept_scope = trio.CancelScope()
        self._handlers: trio.Nursery | None = None
        self._next_session = 0
        self._used: set[int] = set()

    @property
    def address(self) -> Endpoint:
        """Where the first listener accepts connections."""
        host, port = self.listeners[0].socket.getsockname()[:2]
        return Endpoint(str(host), int(port))

    @property
    def ca_file(self) -> Path | None:
        """The CA certificate (PEM) clients must trust; None without TLS or with --cert."""
        if self.tls is None or self.tls.ca is None:
            return None
        return self.tls.ca.cert_path

    @property
    def unplayed(self) -> list[UnplayedExchange]:
        """Recorded exchanges (in every loaded session) that no client asked for."""
        return self.accounting.unplayed()

    @property
    def unmatched(self) -> list[UnmatchedCommand]:
        """Client commands that had no recorded answer (the first 1000)."""
        return list(self.accounting.unmatched)

    @property
    def all_played(self) -> bool:
        """Every recorded exchange was played."""
        return not self.unplayed

    def note_unmatched(self, capture: str, command: str, candidates: tuple[str, ...]) -> None:
        self.accounting.unmatched_total += 1
        if len(self.accounting.unmatched) < _MAX_UNMATCHED_KEPT:
            self.accounting.unmatched.append(UnmatchedCommand(capture, command, candidates))

    def assign_session(self) -> int | None:
        """The session for a new connection (``cycle`` or ``once``)."""
        count = len(self.sessions)
        if self.config.sessions == "once":
            free = [i for i in range(count) if i not in self._used]
            if not free:
                return None
            # With by_user this is provisional: the user's first command may move the
            # connection to another session, which then takes this one's place.
            index = free[0]
            self._used.add(index)
            return index
        index = self._next_session % count
        self._next_session += 1
        return index

    def session_for_user(self, user: str | None, mechanism: str | None, current: int) -> int | None:
        """``by_user``: the session recorded for ``user`` (AUTH: see docs/replay.md)."""
        once = self.config.sessions == "once"
        order = [
            current,
            *(
                i
                for i in range(len(self.sessions))
                if i != current and not (once and i in self._used)
            ),
        ]
        chosen: int | None = None
        if user is not None:
            chosen = next((i for i in order if self.sessions[i].user == user), None)
        if chosen is None and mechanism is not None:
            chosen = next(
                (
                    i
                    for i in order
                    if self.sessions[i].user is None
                    and self.sessions[i].auth_mechanism == mechanism
                ),
                None,
            )
        if chosen is not None and chosen != current and once:
            self._used.discard(current)
            self._used.add(chosen)
        return chosen

    async def run(
        self, *, task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen and serve until cancelled or :meth:`shutdown`, then drain within the grace."""
        listen = self.config.listen
        self.listeners = await open_listeners(listen.host, listen.port, self.sockets)
        async with trio.open_nursery() as handlers:
            self._handlers = handlers
            with self._accept_scope:
                task_status.started(self.listeners)
                await trio.serve_listeners(self.handle, self.listeners, handler_nursery=handlers)
            for listener in self.listeners:
                await listener.aclose()
            logger.info(
                "replay.draining", sessions=self.active_connections, grace_s=self.config.grace
            )
            handlers.cancel_scope.deadline = trio.current_time() + self.config.grace

    def shutdown(self) -> None:
        """Stop accepting new clients; open connections get the grace period."""
        self.shutting_down = True
        self._accept_scope.cancel()

    def abort(self) -> None:
        """Close every open connection now."""
        self.aborted = True
        self.shutdown()
        if self._handlers is not None:
            self._handlers.cancel_scope.cancel()

    async def handle(self, stream: trio.abc.Stream) -> None:
        """Serve one client on any trio stream; errors are logged, never raised."""
        self.connections += 1
        self.active_connections += 1
        connection: _Connection
        if self.model is not None:
            from pop3tap.replay_model import ModelConnection

            connection = ModelConnection(self, stream, self.connections)
        else:
            connection = _Connection(self, stream, self.connections)
        try:
            await connection.run()
        except Exception:
            connection.log.exception("replay.connection_crashed")
        finally:
            self.active_connections -= 1
            with trio.CancelScope(shield=True):
                try:
                    await connection.finish()
                except Exception:
                    connection.log.exception("replay.connection_crashed")


def resolve_tls(
    config: ReplayConfig, sessions: Sequence[RecordedSession]
) -> tuple[ReplayConfig, list[str]]:
    """``config`` with the TLS choices the captures make where the caller made none.

    ``listen_tls`` None becomes the recorded client leg (POP3S captures are served over
    TLS); ``ca_dir`` None becomes the CA directory the recording relay used, when its
    CA is still there. Returns the config and one note per choice made.

    Raises:
        ReplayError: the captures mix implicit-TLS and plaintext client legs.
    """
    import dataclasses

    from pop3tap.certs import CA_CERT_FILE

    notes: list[str] = []
    changes: dict[str, Any] = {}
    if config.listen_tls is None:
        modes = {s.listen_tls for s in sessions}
        if len(modes) > 1:
            implicit = next(s.path for s in sessions if s.listen_tls)
            plain = next(s.path for s in sessions if not s.listen_tls)
            raise ReplayError(
                f"{implicit} was recorded with implicit TLS (POP3S) and {plain} without: "
                "replay them separately, or pass --listen-tls or --no-listen-tls to serve "
                "all of them one way"
            )
        changes["listen_tls"] = modes == {True}
        if changes["listen_tls"]:
            notes.append(
                "the captures were recorded with implicit TLS (POP3S): serving them over "
                "TLS (--no-listen-tls serves them in plaintext)"
            )
    needs_ca = (changes.get("listen_tls") or config.listen_tls or any(s.stls for s in sessions))
    if config.ca_dir is None and config.cert is None and needs_ca:
        recorded = {s.ca_dir for s in sessions if s.ca_dir}
        if len(recorded) == 1:
            directory = Path(recorded.pop())
            if (directory / CA_CERT_FILE).is_file() and _private_ca_dir(directory):
                changes["ca_dir"] = directory
                notes.append(f"using the CA the captures were recorded with: {directory}")
    if not changes:
        return config, notes
    return dataclasses.replace(config, **changes), notes


def _private_ca_dir(directory: Path) -> bool:
    """A CA directory named by a capture is used only when it is this user's own and no
    one else can write it or read its key: a capture is input, and may be hostile."""
    import os

    from pop3tap.certs import CA_KEY_FILE

    try:
        folder = os.stat(directory)
        key = os.stat(directory / CA_KEY_FILE)
    except OSError:
        return False
    uid = os.getuid()
    return (
        folder.st_uid == uid
        and key.st_uid == uid
        and not folder.st_mode & 0o022
        and not key.st_mode & 0o077
    )


def server_tls_for(config: ReplayConfig, sessions: Sequence[RecordedSession]) -> ServerTls | None:
    """What TLS clients are shown, or None when no session and no option needs TLS.

    ``--cert/--key`` when given; else a leaf from pop3tap's CA (created if missing, as
    the relay does) for the listen host, ``127.0.0.1``, ``localhost`` and every recorded
    upstream host; a client asking (SNI) for another name gets a leaf for it too.

    Raises:
        TlsSetupError: unreadable or mismatched certificate files, or a broken CA.
    """
    config, _notes = resolve_tls(config, sessions)
    needed = config.listen_tls or config.cert is not None or any(s.stls for s in sessions)
    # A model serves the recorded CAPA; when it offers STLS, the model must be able to do it.
    needed = needed or (config.model and any(_offers_stls(s) for s in sessions))
    if not needed:
        return None
    hosts = [config.listen.host, "127.0.0.1", "localhost"]
    hosts += [s.upstream_host for s in sessions]
    server_tls = build_server_tls(
        names=normalize_names(hosts)[:100], cert=config.cert, key=config.key, ca_dir=config.ca_dir
    )
    if server_tls.ca is not None:
        warn_if_ca_created(logger, server_tls)
        logger.info(
            "tls.certificate", subject=server_tls.cert_subject, ca=str(server_tls.ca.cert_path)
        )
    return server_tls


def _offers_stls(session: RecordedSession) -> bool:
    """Whether the recorded server listed STLS in a CAPA answer (RFC 2595 §4)."""
    return any(
        ex.verb == "CAPA" and re.search(rb"\nSTLS\r?\n", ex.response) is not None
        for ex in session.exchanges
    )


async def serve_replay(
    config: ReplayConfig,
    *,
    sessions: Sequence[RecordedSession] | None = None,
    tls: ServerTls | None = None,
    model: ModelStore | None = None,
    task_status: trio.TaskStatus[ReplayServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a replay server until cancelled; ``task_status.started`` gets the server."""
    server = ReplayServer(config, sessions, tls=tls, model=model)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        task_status.started(server)


################################################################
# Python API
################################################################


class ReplayServerHandle:
    """What :func:`replay_server` and :func:`open_replay_server` yield."""

    def __init__(self, server: ReplayServer) -> None:
        self.server = server
        self.address = server.address
        #: The capture file (set by the pytest plugin).
        self.capture_path: Path | None = None
        #: False: this is a replay (the pytest plugin yields a recording relay otherwise).
        self.recording = False
        #: The CA certificate (PEM) TLS clients must trust; None without TLS or with --cert.
        self.ca_file: Path | None = server.ca_file

    def ssl_context(self) -> ssl.SSLContext:
        """A client context trusting :attr:`ca_file` (the system store with --cert/--key)."""
        return ssl.create_default_context(
            cafile=None if self.ca_file is None else str(self.ca_file)
        )

    @property
    def host(self) -> str:
        return self.address.host

    @property
    def port(self) -> int:
        return self.address.port

    @property
    def unplayed(self) -> list[UnplayedExchange]:
        """Recorded exchanges no client asked for."""
        return self.server.unplayed

    @property
    def unmatched(self) -> list[UnmatchedCommand]:
        """Client commands without a recorded answer."""
        return self.server.unmatched

    @property
    def all_played(self) -> bool:
        """Every recorded exchange was played."""
        return self.server.all_played

    def add_fault(self, spec: str) -> Fault:
        """Add a fault while the server runs (docs/faults.md); new answers are subject to it.

        Raises:
            FaultError: the spec cannot be parsed (a ValueError).
        """
        return self.server.faults.add(spec)

    def clear_faults(self) -> None:
        """Remove every fault; answers are as recorded again."""
        self.server.faults.clear()

    def reset_model(self) -> None:
        """Restore the modelled mailboxes as recorded (undo deletions that persisted)."""
        if self.server.model is None:
            raise ReplayError("reset_model() needs a model server (model=True)")
        self.server.model.reset()

    def message_count(self, user: str | None = None) -> int:
        """How many messages the model's mailbox (of ``user``) holds now."""
        if self.server.model is None:
            raise ReplayError("message_count() needs a model server (model=True)")
        return self.server.model.message_count(user)

    def report(self) -> str:
        """A few lines naming unplayed exchanges and unmatched commands ('' when clean)."""
        lines: list[str] = []
        if self.unmatched:
            lines.append(f"{len(self.unmatched)} command(s) had no recorded response:")
            lines += [f"  {u}" for u in self.unmatched[:20]]
        if self.unplayed:
            lines.append(f"{len(self.unplayed)} recorded exchange(s) were never played:")
            lines += [f"  {u}" for u in self.unplayed[:20]]
        return "\n".join(lines)


def _config(captures: Any, options: dict[str, Any]) -> ReplayConfig:
    if isinstance(captures, str | Path):
        captures = (captures,)
    listen = options.pop("listen", Endpoint("127.0.0.1", 0))
    if isinstance(listen, tuple):
        listen = Endpoint(*listen)
    if isinstance(options.get("faults"), str):
        options["faults"] = (options["faults"],)
    elif options.get("faults") is not None:
        options["faults"] = tuple(options["faults"])
    if isinstance(options.get("passwords"), dict):
        options["passwords"] = tuple(options["passwords"].items())
    for name in ("cert", "key", "ca_dir", "messages"):
        if isinstance(options.get(name), str):
            options[name] = Path(options[name])
    return ReplayConfig(captures=tuple(captures), listen=listen, **options)


@contextlib.contextmanager
def replay_server(
    captures: str | Path | Iterable[str | Path], **options: Any
) -> Iterator[ReplayServerHandle]:
    """A replay server on a free loopback port, run in a background thread.

    Example: ``with replay_server("captures/user-pass.p3cap") as s: poplib.POP3(s.host, s.port)``.
    ``options`` are :class:`ReplayConfig` fields (``match``, ``timing``, ``sessions``,
    ``listen_tls``, ``cert``, ``key``, ``ca_dir``, ``tls_timeout``...); ``s.ca_file`` and
    ``s.ssl_context()`` are what TLS clients trust.
    """
    from pop3tap.background import BackgroundServer

    config = _config(captures, dict(options))
    sessions: list[RecordedSession] = []
    if config.captures or config.messages is None:
        sessions, _warnings = load_sessions(config.captures)  # errors surface in this thread
    tls = server_tls_for(config, sessions)  # so do TLS setup errors
    model: ModelStore | None = None
    if config.model:  # and model errors; built once (message files are measured at start)
        from pop3tap.replay_model import build_store

        model = build_store(config, sessions, tls_available=tls is not None)
    background: BackgroundServer[ReplayServer] = BackgroundServer(
        functools.partial(serve_replay, config, sessions=sessions, tls=tls, model=model),
        name="pop3tap-replay",
    )
    with background as server:
        yield ReplayServerHandle(server)


@contextlib.asynccontextmanager
async def open_replay_server(
    captures: str | Path | Iterable[str | Path], **options: Any
) -> AsyncIterator[ReplayServerHandle]:
    """Async version of :func:`replay_server` for trio code (runs in the current trio run)."""
    config = _config(captures, dict(options))
    async with trio.open_nursery() as nursery:
        server: ReplayServer = await nursery.start(serve_replay, config)
        try:
            yield ReplayServerHandle(server)
        finally:
            nursery.cancel_scope.cancel()
