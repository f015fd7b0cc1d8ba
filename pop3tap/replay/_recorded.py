"""Recorded sessions: a capture turned into what replay serves (pure: no trio, no I/O).

A :class:`RecordedSession` holds the greeting bytes and, for each command/response pair the
protocol core re-derives from the capture, the recorded command line and the raw response
bytes sliced from the recorded server stream (so dot-stuffing, bare LF and every other quirk
come back unchanged), split at each SASL ``+`` continuation (RFC 5034 §4) and paced by the
recorded data records. What cannot be replayed (opaque TLS bytes) is decided in
:func:`tls_refusal`.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pop3tap.capture import (
    Capture,
    CaptureError,
    DataRecord,
    Direction,
    derive_events,
    expand_capture_args,
    read_capture,
)
from pop3tap.protocol import (
    SECRET_PLACEHOLDER,
    Exchange,
    Flag,
    Greeting,
    StartTls,
    Status,
    login_identity,
    parse_status,
    printable_shown,
    split_command,
)
from pop3tap.replay._capture_facts import (
    recorded_faults,
    server_closed_first,
    server_reset,
    stls_came_up,
    text_option,
    tls_refusal,
    upstream_host,
)


class ReplayError(Exception):
    """A capture cannot be replayed; the message is one line naming the path."""


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
        """``VERB args`` with secrets masked, printable and bounded as every ``-ERR`` line,
        report and log shows a command (:func:`~pop3tap.protocol.printable_shown`): the
        capture is hostile input, and its bytes must not reach a client or a terminal."""
        return printable_shown(self.verb, self.args)

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


def _session_user(
    exchanges: Sequence[RecordedExchange], kept: bool
) -> tuple[str | None, str | None]:
    """The user name and SASL mechanism of a recorded session (see docs/replay.md).

    The first login command that names someone decides (the core's
    :func:`~pop3tap.protocol.login_identity`); a SASL answer counts only when the capture
    keeps secrets, since a masked one names nobody.
    """
    for ex in exchanges:
        first_answer = ex.sasl_lines[0] if ex.sasl_lines and kept else None
        found = login_identity(ex.verb, ex.raw_args, first_answer)
        if found is None or found == (None, None):
            continue
        user, mechanism = found
        return (user if kept or mechanism is None else None), mechanism
    return None, None


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


def _served_events(capture: Capture) -> list[Greeting | Exchange | StartTls]:
    """The events replay serves, re-derived by the protocol core.

    Only these are kept: a hostile capture can hold millions of others.
    """
    return [
        e
        for _record, batch in derive_events(capture.records)
        for e in batch
        if isinstance(e, Greeting | Exchange | StartTls)
    ]


def _complete_exchanges(exchanges: list[Exchange], torn: bool) -> list[Exchange]:
    """A torn capture keeps only the exchanges that were completely recorded."""
    while torn and exchanges and (
        exchanges[-1].status is None or Flag.TRUNCATED in exchanges[-1].flags
    ):
        exchanges.pop()
    return exchanges


class _ExchangeBuilder:
    """Slices the recorded streams into :class:`RecordedExchange` values, in order."""

    def __init__(self, capture: Capture, greeting: Greeting, server_closed: bool) -> None:
        self.s2c = capture.stream(Direction.SERVER)
        self.c2s = capture.stream(Direction.CLIENT)
        data = [r for r in capture.records if isinstance(r, DataRecord)]
        self.server = _Timeline(r for r in data if r.dir == Direction.SERVER)
        self.client = _Timeline(r for r in data if r.dir == Direction.CLIENT)
        self.server_closed = server_closed
        self.faults = recorded_faults(capture)
        self.tls_came_up = stls_came_up(capture)
        #: Where the previous response ended, and when its last byte came.
        self.previous_end = greeting.end
        self.previous_done = self.server.time_at(greeting.end - 1)

    def segment(self, start: int, end: int, reference: float) -> Segment:
        return Segment(
            data=self.s2c[start:end],
            delay=max(0.0, self.server.time_at(start) - reference),
            pacing=self.server.schedule(start, end),
        )

    def segments(
        self, ex: Exchange, sasl: list[tuple[bytes, int]], closes: bool
    ) -> tuple[Segment, ...]:
        """The response of ``ex``, cut after each SASL ``+`` and timed as recorded."""
        if ex.status is None:
            return ()
        # What the server sent after it, before it closed, belongs to the last answer.
        end = len(self.s2c) if closes else ex.response_end
        bounds = [min(self.previous_end, ex.response_start)]
        bounds += _sasl_cuts(self.s2c, ex.response_start, ex.response_end)
        bounds.append(end)
        refs = [max(self.client.time_at(ex.request_end - 1), self.previous_done)]
        refs += [self.client.time_at(sasl_end - 1) for _line, sasl_end in sasl]
        out = [
            self.segment(a, b, refs[min(number, len(refs) - 1)])
            for number, (a, b) in enumerate(itertools.pairwise(bounds))
        ]
        self.previous_end = max(self.previous_end, ex.response_end)
        self.previous_done = self.server.time_at(ex.response_end - 1)
        return tuple(out)

    def exchange(
        self, index: int, ex: Exchange, *, closes: bool, start_tls: StartTls | None
    ) -> RecordedExchange:
        line = self.c2s[ex.request_start : ex.request_end].rstrip(b"\r\n")
        line_verb, raw_args = split_command(line)
        challenges = sum(1 for kind, _ in ex.sasl if kind == "+")
        sasl = _split_lines(self.c2s, ex.request_end, challenges) if challenges else []
        is_switch = start_tls is not None and ex.seq == start_tls.seq
        return RecordedExchange(
            index=index,
            seq=ex.seq,
            verb=ex.verb,
            args=ex.args,
            raw_args=raw_args,
            line=line,
            status=ex.status,
            flags=ex.flags,
            segments=self.segments(ex, sasl, closes),
            sasl_lines=tuple(text for text, _end in sasl),
            match_verb=ex.verb if ex.verb == SECRET_PLACEHOLDER else line_verb,
            closes=closes,
            after_tls=start_tls is not None and ex.seq > start_tls.seq,
            starts_tls=is_switch and self.tls_came_up,
            tls_failed=is_switch and not self.tls_came_up,
            fault=self.faults.get(ex.seq),
        )


def session_from_capture(capture: Capture) -> RecordedSession:
    """Turn a capture into a :class:`RecordedSession`.

    Raises:
        ReplayError: a TLS capture, or one without a greeting.
    """
    refusal = tls_refusal(capture)
    if refusal is not None:
        raise ReplayError(f"{capture.path}: {refusal}")
    events = _served_events(capture)
    greeting = next((e for e in events if isinstance(e, Greeting)), None)
    if greeting is None:
        raise ReplayError(f"{capture.path}: no server greeting in the capture; nothing to replay")
    start_tls = next((e for e in events if isinstance(e, StartTls)), None)
    cut_short = capture.truncated or not capture.complete
    server_closed = server_closed_first(capture)
    raw = _complete_exchanges(
        [e for e in events if isinstance(e, Exchange)], cut_short and not server_closed
    )
    answered = [e.seq for e in raw if e.status is not None]
    builder = _ExchangeBuilder(capture, greeting, server_closed)
    exchanges = tuple(
        builder.exchange(
            index,
            ex,
            closes=server_closed and (ex.status is None or ex.seq == answered[-1]),
            start_tls=start_tls,
        )
        for index, ex in enumerate(raw)
    )
    closes_after_greeting = server_closed and not answered
    greeting_end = len(builder.s2c) if closes_after_greeting else greeting.end
    user, mechanism = _session_user(exchanges, capture.header.secrets == "kept")
    return RecordedSession(
        path=capture.path,
        session=capture.header.session,
        secrets=capture.header.secrets,
        greeting=builder.segment(greeting.start, greeting_end, 0.0),
        exchanges=exchanges,
        user=user,
        auth_mechanism=mechanism,
        closes_after_greeting=closes_after_greeting,
        truncated=cut_short and not server_closed,
        listen_tls=capture.header.options.get("listen_tls") is True,
        upstream_host=upstream_host(capture.header.upstream),
        greeting_fault=builder.faults.get(0),
        server_reset=server_closed and server_reset(capture),
        ca_dir=text_option(capture.header.options.get("ca_dir")),
    )


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
