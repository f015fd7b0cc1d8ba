"""Events produced by the sans-IO POP3 session observer.

Every event is an immutable value. Times (``at``) are seconds on whatever clock the
caller feeds in (the relay uses ``trio.current_time()`` relative to session start);
offsets are byte positions in the client (c2s) or server (s2c) stream since the
session began.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pop3tap.protocol._values import rebuild_by_fields


class Direction(StrEnum):
    """Which way bytes travelled."""

    #: Client to server: commands and SASL responses.
    CLIENT = "c2s"
    #: Server to client: greeting and responses.
    SERVER = "s2c"


class Flag(StrEnum):
    """Anomalies noticed while pairing (kept as strings in captures and logs)."""

    #: The stream ended inside a multi-line body (RFC 1939 §3 terminator never seen).
    TRUNCATED = "truncated"
    #: The command was still waiting for its response when the stream ended.
    NO_RESPONSE = "no_response"
    #: A server line arrived while no command was pending (RFC 2449 §6.6 pairs in order).
    UNSOLICITED = "unsolicited"
    #: A line that is not a status line arrived where one was due.
    STRAY = "stray"
    #: A line ended with LF alone instead of CRLF.
    BARE_LF = "bare_lf"
    #: A line was longer than the parser keeps; only its start was kept.
    OVERLONG = "overlong"
    #: The command was sent while earlier commands were still unanswered.
    PIPELINED = "pipelined"


class Status(StrEnum):
    """The status indicator that opens a server response (RFC 1939 §3, RFC 5034 §4)."""

    OK = "+OK"
    ERR = "-ERR"
    #: A SASL continuation ``+ [base64]`` (RFC 5034 §4).
    CONTINUE = "+"


@dataclass(frozen=True, slots=True, init=False)
class Event:
    """Base class: every event carries the time it was completed."""

    at: float

    def __init__(self, at: float) -> None:
        object.__setattr__(self, "at", at)

    def __reduce__(self) -> tuple[type[Any], tuple[object, ...]]:
        """Rebuilt through the constructor, in both builds (see :mod:`._values`)."""
        return rebuild_by_fields(self)


@dataclass(frozen=True, slots=True, init=False)
class Greeting(Event):
    """The server's first line (RFC 1939 §4)."""

    status: Status | None
    text: str
    resp_code: str | None
    apop_timestamp: str | None
    flags: frozenset[Flag] = frozenset()
    start: int = 0
    end: int = 0

    def __init__(
        self,
        at: float,
        status: Status | None,
        text: str,
        resp_code: str | None,
        apop_timestamp: str | None,
        flags: frozenset[Flag] = frozenset(),
        start: int = 0,
        end: int = 0,
    ) -> None:
        object.__setattr__(self, "at", at)
        object.__setattr__(self, "status", status)
        object.__setattr__(self, "text", text)
        object.__setattr__(self, "resp_code", resp_code)
        object.__setattr__(self, "apop_timestamp", apop_timestamp)
        object.__setattr__(self, "flags", flags)
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)


@dataclass(frozen=True, slots=True, init=False)
class CommandSent(Event):
    """A complete client command line (secrets already masked in ``args``)."""

    seq: int
    verb: str
    args: str
    pipelined: bool
    flags: frozenset[Flag] = frozenset()
    start: int = 0
    end: int = 0

    def __init__(
        self,
        at: float,
        seq: int,
        verb: str,
        args: str,
        pipelined: bool,
        flags: frozenset[Flag] = frozenset(),
        start: int = 0,
        end: int = 0,
    ) -> None:
        object.__setattr__(self, "at", at)
        object.__setattr__(self, "seq", seq)
        object.__setattr__(self, "verb", verb)
        object.__setattr__(self, "args", args)
        object.__setattr__(self, "pipelined", pipelined)
        object.__setattr__(self, "flags", flags)
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)


@dataclass(frozen=True, slots=True, init=False)
class SaslChallenge(Event):
    """A ``+`` continuation from the server inside AUTH (RFC 5034 §4); payload not kept."""

    seq: int
    length: int

    def __init__(self, at: float, seq: int, length: int) -> None:
        object.__setattr__(self, "at", at)
        object.__setattr__(self, "seq", seq)
        object.__setattr__(self, "length", length)


@dataclass(frozen=True, slots=True, init=False)
class SaslResponse(Event):
    """A client line answering a SASL challenge; ``text`` is masked unless it is ``*``."""

    seq: int
    text: str
    cancelled: bool

    def __init__(self, at: float, seq: int, text: str, cancelled: bool) -> None:
        object.__setattr__(self, "at", at)
        object.__setattr__(self, "seq", seq)
        object.__setattr__(self, "text", text)
        object.__setattr__(self, "cancelled", cancelled)


@dataclass(frozen=True, slots=True, init=False)
class StartTls(Event):
    """The server accepted STLS (RFC 2595 §4): the bytes after this point are TLS.

    ``client_trailing`` / ``server_trailing`` count plaintext already received after the
    switch point; it must not be forwarded as if it were part of the protected session.
    """

    seq: int
    client_trailing: int
    server_trailing: int
    #: Client-stream offset just after the STLS line: bytes beyond it were sent too early.
    client_switch: int = 0
    #: Server-stream offset just after the ``+OK`` line: TLS begins there.
    server_switch: int = 0

    def __init__(
        self,
        at: float,
        seq: int,
        client_trailing: int,
        server_trailing: int,
        client_switch: int = 0,
        server_switch: int = 0,
    ) -> None:
        object.__setattr__(self, "at", at)
        object.__setattr__(self, "seq", seq)
        object.__setattr__(self, "client_trailing", client_trailing)
        object.__setattr__(self, "server_trailing", server_trailing)
        object.__setattr__(self, "client_switch", client_switch)
        object.__setattr__(self, "server_switch", server_switch)


@dataclass(frozen=True, slots=True, init=False)
class UnsolicitedLine(Event):
    """A server status line with no command waiting for it (e.g. Dovecot's idle -ERR)."""

    text: str
    status: Status | None
    start: int = 0
    end: int = 0

    def __init__(
        self, at: float, text: str, status: Status | None, start: int = 0, end: int = 0
    ) -> None:
        object.__setattr__(self, "at", at)
        object.__setattr__(self, "text", text)
        object.__setattr__(self, "status", status)
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)


@dataclass(frozen=True, slots=True, init=False)
class StrayLine(Event):
    """A line that fits nowhere in the protocol (server non-status line, or bytes after
    the stream switched to opaque mode)."""

    direction: Direction
    text: str
    start: int = 0
    end: int = 0

    def __init__(
        self, at: float, direction: Direction, text: str, start: int = 0, end: int = 0
    ) -> None:
        object.__setattr__(self, "at", at)
        object.__setattr__(self, "direction", direction)
        object.__setattr__(self, "text", text)
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)


@dataclass(frozen=True, slots=True, init=False)
class Exchange(Event):
    """One command paired with its complete response: the unit of the session log.

    ``at`` is when the response completed (or the stream ended).
    """

    seq: int
    verb: str
    args: str
    status: Status | None
    first_line: str
    resp_code: str | None
    multiline: bool
    body_lines: int
    body_bytes: int
    sent_at: float
    first_byte_at: float | None
    pipelined: bool
    flags: frozenset[Flag]
    #: Byte span of the command line in the client stream.
    request_start: int
    request_end: int
    #: Byte span of the whole response (first line to terminator) in the server stream,
    #: including SASL challenges for AUTH.
    response_start: int
    response_end: int
    #: SASL steps for AUTH: ("+", length) for challenges, ("c", masked text) for answers.
    sasl: tuple[tuple[str, str], ...] = field(default=())

    def __init__(
        self,
        at: float,
        seq: int,
        verb: str,
        args: str,
        status: Status | None,
        first_line: str,
        resp_code: str | None,
        multiline: bool,
        body_lines: int,
        body_bytes: int,
        sent_at: float,
        first_byte_at: float | None,
        pipelined: bool,
        flags: frozenset[Flag],
        request_start: int,
        request_end: int,
        response_start: int,
        response_end: int,
        sasl: tuple[tuple[str, str], ...] = (),
    ) -> None:
        object.__setattr__(self, "at", at)
        object.__setattr__(self, "seq", seq)
        object.__setattr__(self, "verb", verb)
        object.__setattr__(self, "args", args)
        object.__setattr__(self, "status", status)
        object.__setattr__(self, "first_line", first_line)
        object.__setattr__(self, "resp_code", resp_code)
        object.__setattr__(self, "multiline", multiline)
        object.__setattr__(self, "body_lines", body_lines)
        object.__setattr__(self, "body_bytes", body_bytes)
        object.__setattr__(self, "sent_at", sent_at)
        object.__setattr__(self, "first_byte_at", first_byte_at)
        object.__setattr__(self, "pipelined", pipelined)
        object.__setattr__(self, "flags", flags)
        object.__setattr__(self, "request_start", request_start)
        object.__setattr__(self, "request_end", request_end)
        object.__setattr__(self, "response_start", response_start)
        object.__setattr__(self, "response_end", response_end)
        object.__setattr__(self, "sasl", sasl)

    @property
    def latency_first_byte(self) -> float | None:
        """Seconds from the command to the first byte of its response."""
        return None if self.first_byte_at is None else self.first_byte_at - self.sent_at

    @property
    def latency_complete(self) -> float | None:
        """Seconds from the command to the end of its response."""
        return None if self.status is None else self.at - self.sent_at


@dataclass(frozen=True, slots=True, init=False)
class PairingLost(Event):
    """The observer stopped pairing to keep its memory bounded (a command flood).

    Bytes are still relayed and captured; no exchanges are reported until pairing can
    safely resume (see ``_resync.py``), which ``final`` :class:`Suppressed` events mark.
    """

    reason: str

    def __init__(self, at: float, reason: str) -> None:
        object.__setattr__(self, "at", at)
        object.__setattr__(self, "reason", reason)


@dataclass(frozen=True, slots=True, init=False)
class Suppressed(Event):
    """Lines of one direction that were counted instead of reported one by one.

    Keeps the events (and log lines) of a session bounded whatever a peer sends: a run of
    stray or unsolicited server lines beyond the session's budget, or every byte after
    pairing was lost. Emitted once when suppression begins (``final`` False, counts so
    far) and once with the totals (``final`` True): at the end of that direction's
    stream, or, for ``"unpaired"``, when pairing resumes.
    """

    direction: Direction
    #: ``"anomalies"`` (stray/unsolicited lines past the budget) or ``"unpaired"``
    #: (bytes after pairing was lost).
    kind: str
    lines: int
    bytes: int
    final: bool

    def __init__(
        self, at: float, direction: Direction, kind: str, lines: int, bytes: int, final: bool
    ) -> None:
        object.__setattr__(self, "at", at)
        object.__setattr__(self, "direction", direction)
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "lines", lines)
        object.__setattr__(self, "bytes", bytes)
        object.__setattr__(self, "final", final)


@dataclass(frozen=True, slots=True, init=False)
class EndOfStream(Event):
    """One direction ended (EOF or reset)."""

    direction: Direction
    truncated: bool
    unanswered: int

    def __init__(self, at: float, direction: Direction, truncated: bool, unanswered: int) -> None:
        object.__setattr__(self, "at", at)
        object.__setattr__(self, "direction", direction)
        object.__setattr__(self, "truncated", truncated)
        object.__setattr__(self, "unanswered", unanswered)
