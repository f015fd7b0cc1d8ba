"""Events produced by the sans-IO POP3 session observer.

Every event is an immutable value. Times (``at``) are seconds on whatever clock the
caller feeds in (the relay uses ``trio.current_time()`` relative to session start);
offsets are byte positions in the client (c2s) or server (s2c) stream since the
session began.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


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


@dataclass(frozen=True, slots=True)
class Event:
    """Base class: every event carries the time it was completed."""

    at: float


@dataclass(frozen=True, slots=True)
class Greeting(Event):
    """The server's first line (RFC 1939 §4)."""

    status: Status | None
    text: str
    resp_code: str | None
    apop_timestamp: str | None
    flags: frozenset[Flag] = frozenset()
    start: int = 0
    end: int = 0


@dataclass(frozen=True, slots=True)
class CommandSent(Event):
    """A complete client command line (secrets already masked in ``args``)."""

    seq: int
    verb: str
    args: str
    pipelined: bool
    flags: frozenset[Flag] = frozenset()
    start: int = 0
    end: int = 0


@dataclass(frozen=True, slots=True)
class SaslChallenge(Event):
    """A ``+`` continuation from the server inside AUTH (RFC 5034 §4); payload not kept."""

    seq: int
    length: int


@dataclass(frozen=True, slots=True)
class SaslResponse(Event):
    """A client line answering a SASL challenge; ``text`` is masked unless it is ``*``."""

    seq: int
    text: str
    cancelled: bool


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class UnsolicitedLine(Event):
    """A server status line with no command waiting for it (e.g. Dovecot's idle -ERR)."""

    text: str
    status: Status | None
    start: int = 0
    end: int = 0


@dataclass(frozen=True, slots=True)
class StrayLine(Event):
    """A line that fits nowhere in the protocol (server non-status line, or bytes after
    the stream switched to opaque mode)."""

    direction: Direction
    text: str
    start: int = 0
    end: int = 0


@dataclass(frozen=True, slots=True)
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

    @property
    def latency_first_byte(self) -> float | None:
        """Seconds from the command to the first byte of its response."""
        return None if self.first_byte_at is None else self.first_byte_at - self.sent_at

    @property
    def latency_complete(self) -> float | None:
        """Seconds from the command to the end of its response."""
        return None if self.status is None else self.at - self.sent_at


@dataclass(frozen=True, slots=True)
class PairingLost(Event):
    """The observer stopped pairing to keep its memory bounded (a command flood).

    Bytes are still relayed and captured; no exchanges are reported until pairing can
    safely resume (see ``_resync.py``), which ``final`` :class:`Suppressed` events mark.
    """

    reason: str


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class EndOfStream(Event):
    """One direction ended (EOF or reset)."""

    direction: Direction
    truncated: bool
    unanswered: int
