"""The Pop3.log-style view of a capture (its JSON-lines form is in ``_json.py``).

Each protocol line becomes one log line, ``POP3: HH:MM:SS [tx] USER alice`` for what the
client sent, ``[rx]`` for what the server answered and ``[db]`` for transport events, in
the manner of the classic Outlook Express ``Pop3.log``. Multi-line bodies are summarised
unless ``bodies`` is set. Secrets are masked whatever the capture holds: the view is
built from the observer's events, whose arguments are always masked.

Views stream: records are read one at a time (a :class:`~pop3tap.capture.CaptureReader`)
and bodies are read back by a second, forward-only pass over the file, so memory does not
grow with the capture. Every text line passes through :func:`~pop3tap._text.printable`:
control characters a hostile server sent are shown escaped, never sent to the terminal.
Endings come only from recorded facts: a capture without a close record ends with one
line saying where the record stops.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Iterator
from datetime import UTC, datetime
from typing import Final

from pop3tap._text import printable
from pop3tap.capture import (
    Capture,
    CaptureReader,
    CloseRecord,
    DataRecord,
    Direction,
    EventName,
    EventRecord,
    Record,
    derive_events,
)
from pop3tap.protocol import (
    CommandSent,
    EndOfStream,
    Event,
    Exchange,
    Flag,
    Greeting,
    PairingLost,
    SaslChallenge,
    SaslResponse,
    StartTls,
    StrayLine,
    Suppressed,
    UnsolicitedLine,
)

#: Formats one view line from a time, a tag (tx, rx, db) and the text.
_Out = Callable[[float, str, str], str]
#: A capture in memory, or one streamed from its file.
CaptureSource = Capture | CaptureReader
#: Longest body line ``--bodies`` prints; the rest of the line is counted, not kept.
MAX_SHOWN_LINE: Final = 64 * 1024


def wall_time(capture: CaptureSource, t: float) -> datetime | None:
    """The wall-clock time of a record, or None when a damaged capture gives nonsense."""
    try:
        return datetime.fromtimestamp(capture.header.started_unix + t, UTC)
    except (OverflowError, ValueError, OSError):
        return None


def _clock(capture: CaptureSource, t: float) -> str:
    when = wall_time(capture, t)
    return "??:??:??" if when is None else when.strftime("%H:%M:%S")


class _ServerBytes:
    """Server bytes by stream offset, from a forward-only pass over the records."""

    def __init__(self, records: Iterator[Record]) -> None:
        self._records = records
        self._chunk = b""
        self._chunk_start = 0

    def read(self, start: int, end: int) -> Iterator[bytes]:
        """The bytes ``[start, end)`` in pieces; offsets before the last read are skipped."""
        pos = max(start, self._chunk_start)
        while pos < end:
            chunk_end = self._chunk_start + len(self._chunk)
            if pos >= chunk_end:
                if not self._advance():
                    return
                continue
            piece = self._chunk[pos - self._chunk_start : min(end, chunk_end) - self._chunk_start]
            yield piece
            pos += len(piece)

    def _advance(self) -> bool:
        for record in self._records:
            if isinstance(record, DataRecord) and record.dir == Direction.SERVER and record.data:
                self._chunk_start += len(self._chunk)
                self._chunk = record.data
                return True
        return False


def _body_lines(pieces: Iterable[bytes]) -> Iterator[str]:
    """Lines of a raw multi-line response after its first line, dot-unstuffed (RFC 1939 §3).

    At most :data:`MAX_SHOWN_LINE` bytes of a line are kept; the rest are counted.
    """
    first = True
    line = bytearray()
    dropped = 0
    ends_cr = False  # the last byte of the line so far (kept or dropped) is a CR

    def finish(raw: bytes, more: int) -> str | None:
        text = raw[:-1] if raw.endswith(b"\r") else raw
        if more and ends_cr:
            more -= 1  # the CR of the CRLF was among the dropped bytes
        if text == b"." and not more:
            return None
        if text.startswith(b"."):
            text = text[1:]
        shown = text.decode("utf-8", "backslashreplace")
        return f"{shown} ... ({more} more bytes)" if more else shown

    for piece in pieces:
        pos = 0
        while pos < len(piece):
            newline = piece.find(b"\n", pos)
            stop = len(piece) if newline < 0 else newline
            room = MAX_SHOWN_LINE - len(line)
            part = piece[pos:stop]
            line += part[: max(room, 0)]
            dropped += max(0, len(part) - max(room, 0))
            if part:
                ends_cr = part.endswith(b"\r")
            if newline < 0:
                break
            pos = newline + 1
            raw, more = bytes(line), dropped
            line.clear()
            dropped = 0
            if first:
                first = False
                ends_cr = False
                continue
            text = finish(raw, more)
            ends_cr = False
            if text is None:
                return
            yield text
    if not first and (line or dropped):
        text = finish(bytes(line), dropped)
        if text is not None:
            yield text


#: The side a direction comes from, by the value a capture records.
_SIDE_NAMES: Final[dict[str, str]] = {Direction.CLIENT: "client", Direction.SERVER: "server"}


def describe_transport_event(record: EventRecord, *, stable: bool = False) -> str | None:
    """The [db] text of a transport event record; None where a protocol line says it.

    ``stable`` leaves out what differs between recordings of the same conversation.
    """
    fields = record.fields
    if stable and record.name == EventName.UPSTREAM_CONNECTED:
        return "Connected to upstream"
    if stable and record.name == EventName.TLS_HANDSHAKE:
        return f"TLS {fields.get('version', '?')} with the {fields.get('leg', '?')}"
    side = _SIDE_NAMES.get(str(fields.get("dir")), "?")
    if record.name == EventName.EOF:
        return None  # the observer's end-of-stream line says it, with what was pending
    if record.name == EventName.RESET:
        return f"Connection reset by the {side}"
    if record.name == EventName.UPSTREAM_CONNECTED:
        return f"Connected to upstream from {fields.get('local', '?')}"
    if record.name == EventName.TLS_HANDSHAKE:
        if fields.get("peer_subject") or fields.get("peer_sha256"):
            who = f" (server cert {fields.get('peer_subject')}, sha256 {fields.get('peer_sha256')})"
        elif fields.get("cert_subject"):
            who = f" (presented {fields.get('cert_subject')}, sha256 {fields.get('cert_sha256')})"
        else:
            who = ""
        if fields.get("sni"):
            who += f" SNI {fields.get('sni')}"
        return (
            f"TLS {fields.get('version', '?')} {fields.get('cipher', '?')} "
            f"with the {fields.get('leg', '?')}{who}"
        )
    if record.name == EventName.TLS:
        return "TLS up on both legs after STLS: decrypted from here"
    if record.name == EventName.TLS_FAILED:
        return f"TLS failed on the {fields.get('leg', '?')} leg: {fields.get('reason', '?')}"
    if record.name == EventName.FAULT:
        target = "the greeting" if fields.get("seq") == 0 else f"exchange #{fields.get('seq')}"
        return f"Fault injected into {target}: {fields.get('spec', '?')}"
    if record.name == EventName.FAULT_DROPPED:
        seq, spec = fields.get("seq"), fields.get("spec", "?")
        return f"Fault on exchange #{seq} dropped (pairing lost): {spec}"
    if record.name == EventName.FAULT_END:
        return f"Fault ended the session: {fields.get('reason', '?')}"
    if record.name == EventName.UPSTREAM_CONNECT_FAILED:
        return f"Cannot reach upstream {fields.get('upstream', '?')}: {fields.get('error', '?')}"
    details = " ".join(f"{key}={value}" for key, value in sorted(fields.items()))
    return f"{record.name} {details}".rstrip()


def _describe_exchange(ex: Exchange) -> str:
    if ex.status is None:
        # A line that is not a status line can end an exchange (STLS, RFC 2595 §4).
        return f"{ex.first_line}  (not a status line)" if ex.first_line else "(no response)"
    line = ex.first_line
    if ex.multiline:
        extra = f"{ex.body_lines} lines, {ex.body_bytes} bytes"
        if Flag.TRUNCATED in ex.flags:
            extra += ", TRUNCATED"
        line += f"  ({extra})"
    return line


def _records(capture: CaptureSource) -> Iterator[Record]:
    return capture.iter_records()


def render_lines(
    capture: CaptureSource,
    *,
    bodies: bool = False,
    only: Container[int] | None = None,
    stable: bool = False,
) -> Iterator[str]:
    """Yield the Pop3.log-style lines of one capture (times are UTC).

    A :class:`~pop3tap.capture.CaptureReader` is read in one pass (plus a second one for
    ``bodies``), in memory that does not depend on the capture's size.
    ``only``: show just these exchanges (by ``seq``) after the session line, nothing else.
    ``stable``: no times, session ids, ports or fingerprints, so the text of the same
    conversation is the same in every recording (golden files, ``git diff``).
    """
    server_bytes: _ServerBytes | None = None
    second: CaptureReader | None = None
    if bodies:
        if isinstance(capture, CaptureReader):
            second = capture.reopen()
            server_bytes = _ServerBytes(second.iter_records())
        else:
            server_bytes = _ServerBytes(iter(capture.records))

    def out(t: float, tag: str, text: str) -> str:
        if stable:
            return printable(f"POP3: [{tag}] {text}")
        return printable(f"POP3: {_clock(capture, t)} [{tag}] {text}")

    try:
        yield out(0.0, "db", _session_text(capture, stable=stable))
        for record, events in derive_events(_records(capture)):
            if only is not None:
                for event in events:
                    seq = getattr(event, "seq", None)
                    if seq is not None and seq in only:
                        yield from _render_event(
                            event, out, server_bytes, recorded=record is not None
                        )
                continue
            if isinstance(record, EventRecord):
                text = describe_transport_event(record, stable=stable)
                if text:
                    yield out(record.t, "db", text)
            elif isinstance(record, CloseRecord):
                yield out(record.t, "db", _close_text(record))
            for event in events:
                yield from _render_event(event, out, server_bytes, recorded=record is not None)
        if not capture.complete and only is None:
            yield out(capture.last_t, "db", _truncation_line(capture))
    finally:
        if second is not None:
            second.close()


def _session_text(capture: CaptureSource, *, stable: bool) -> str:
    header = capture.header
    if stable:
        return f"Session (secrets {header.secrets})"
    return (
        f"Session {header.session} {header.client} -> {header.upstream} "
        f"(started {header.started}, secrets {header.secrets})"
    )


def _close_text(record: CloseRecord) -> str:
    summary = record.summary
    return (
        f"Closed: {record.reason}; top={summary.get('top_count', 0)}/"
        f"{summary.get('top_bytes', 0)} retr={summary.get('retr_count', 0)}/"
        f"{summary.get('retr_bytes', 0)} del={summary.get('dele_count', 0)} "
        f"update={'yes' if summary.get('reached_update') else 'no'} "
        f"bytes={summary.get('client_bytes', 0)}/{summary.get('server_bytes', 0)}"
    )


def _truncation_line(capture: CaptureSource) -> str:
    """Where a capture without a close record stops, and why it may have."""
    if capture.problem:
        why = f"the rest is unreadable ({capture.problem}; {capture.trailing_bytes} bytes ignored)"
    elif capture.trailing_bytes:
        why = (
            f"a record was cut short ({capture.trailing_bytes} bytes ignored): pop3tap was "
            "killed, or the disk filled up (a failed write is logged as capture.incomplete)"
        )
    else:
        why = "pop3tap was killed, or a write failed (logged as capture.incomplete)"
    return (
        f"Record stops here, at byte {capture.valid_bytes} of the file, without a close "
        f"record: {why}; what happened after is unknown"
    )


def _render_event(
    event: Event, out: _Out, server_bytes: _ServerBytes | None, *, recorded: bool = True
) -> Iterator[str]:
    """The view lines of one event; ``recorded`` False for the ends the reader adds itself."""
    if isinstance(event, Greeting):
        yield out(event.at, "rx", event.text)
    elif isinstance(event, CommandSent):
        yield out(event.at, "tx", f"{event.verb} {event.args}".rstrip())
    elif isinstance(event, SaslResponse):
        yield out(event.at, "tx", event.text or "(empty SASL response)")
    elif isinstance(event, SaslChallenge):
        yield out(event.at, "rx", f"+ (SASL challenge, {event.length} bytes)")
    elif isinstance(event, Exchange):
        yield out(event.at, "rx", _describe_exchange(event))
        if server_bytes is not None and event.multiline:
            pieces = server_bytes.read(event.response_start, event.response_end)
            for line in _body_lines(pieces):
                yield out(event.at, "rx", line)
    elif isinstance(event, PairingLost):
        yield out(event.at, "db", f"Pairing stopped ({event.reason}); bytes are still recorded")
    elif isinstance(event, Suppressed):
        side = "client" if event.direction is Direction.CLIENT else "server"
        what = "unpaired" if event.kind == "unpaired" else "stray/unsolicited"
        if event.final:
            text = f"{event.lines} {what} {side} lines ({event.bytes} bytes) counted, not shown"
        else:
            text = f"Further {what} {side} lines are counted, not shown"
        yield out(event.at, "db", text)
    elif isinstance(event, StartTls):
        injected = event.client_trailing + event.server_trailing
        note = f", {injected} bytes of injected plaintext" if injected else ""
        yield out(event.at, "db", f"STLS accepted: TLS starts here{note}")
    elif isinstance(event, UnsolicitedLine):
        yield out(event.at, "rx", f"{event.text}  (unsolicited)")
    elif isinstance(event, StrayLine):
        tag = "rx" if event.direction is Direction.SERVER else "tx"
        yield out(event.at, tag, f"{event.text}  (stray)")
    elif isinstance(event, EndOfStream):
        side = "client" if event.direction is Direction.CLIENT else "server"
        details = []
        if event.truncated:
            details.append("inside a body: response truncated")
        if event.unanswered:
            details.append(f"{event.unanswered} command(s) got no response")
        suffix = f" ({'; '.join(details)})" if details else ""
        if recorded:
            yield out(event.at, "db", f"Connection closed by the {side}{suffix}")
        elif details:
            # No eof or reset was recorded: say what is open, not who closed.
            yield out(event.at, "db", f"End of the {side} record{suffix}")


__all__ = [
    "MAX_SHOWN_LINE",
    "CaptureSource",
    "describe_transport_event",
    "render_lines",
    "wall_time",
]
