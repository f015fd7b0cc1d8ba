"""Import plaintext POP3 sessions from a tcpdump/Wireshark capture (pcap or pcapng).

Scapy reads the file and decodes the link, IP and TCP layers (every link type tcpdump
writes: Ethernet, loopback, Linux cooked v1/v2, raw IP; IPv4 and IPv6). The file's framing
is checked first, so a truncated file is an error instead of a silently shorter
session. Each TCP connection to the POP3 port is rebuilt (in :mod:`pop3tap._tcpflows`):

* Each direction is reassembled by sequence number (RFC 9293 §3.4) relative to the SYN,
  so out-of-order segments fall into place and retransmitted or overlapping bytes are kept
  once (the first copy wins). Bytes never captured become a ``gap`` event.
* The two directions are interleaved causally: a segment is emitted only after the bytes
  its acknowledgement number covers in the other direction, then by packet time. A
  response therefore never comes before its command, however the packets were shuffled.
* A connection whose SYN is not in the file started before the capture: it is imported
  from its first captured byte and marked (``mid_session`` in the header options and a
  ``mid_session`` event).
* A connection that speaks TLS (from its first byte, or after an accepted STLS) cannot be
  read without keys: it is listed with the reason and skipped.

The capture files are what the relay would have written: client bytes with secrets masked
(unless ``keep_secrets``), server bytes as they were, ``eof``/``reset`` events and a close
record, with times from the packet timestamps.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from pop3tap import __version__
from pop3tap._tcpflows import (
    Chunk,
    Flow,
    PcapImportError,
    check_framing,
    direction_chunks,
    endpoint_text,
    interleave,
    read_flows,
    read_packets,
    sequence_base,
)
from pop3tap.capture import (
    CaptureError,
    CaptureWriter,
    CloseReason,
    Direction,
    EventName,
    Secrets,
)
from pop3tap.protocol import SessionObserver, StartTls, known_verbs

__all__ = [
    "ImportedSession",
    "PcapImportError",
    "check_framing",
    "import_pcap",
    "read_packets",
]

_TLS_RECORD_START: Final = (b"\x16\x03", b"\x15\x03", b"\x17\x03")


@dataclass(frozen=True, slots=True)
class ImportedSession:
    """One TCP connection found in the file: written to ``path``, or skipped for ``reason``."""

    connection: str
    path: Path | None
    reason: str | None = None
    exchanges: int = 0
    mid_session: bool = False
    gaps: int = 0


def _tls_reason(
    ordered: list[Chunk], c2s: list[Chunk], s2c: list[Chunk], *, greeting_missed: bool
) -> str | None:
    """Why a connection is encrypted, or None for plaintext POP3."""
    for chunks, who in ((c2s, "client"), (s2c, "server")):
        first = next((c.data for c in chunks if c.data), b"")
        if first.startswith(_TLS_RECORD_START):
            return f"TLS from the first byte (the {who} sent a TLS record): encrypted, no keys"
    observer = SessionObserver()
    if greeting_missed:
        observer.greeting_missed()
    for chunk in ordered:
        if not chunk.data:
            continue
        events = (
            observer.feed_client(chunk.data, chunk.t)
            if chunk.direction == Direction.CLIENT
            else observer.feed_server(chunk.data, chunk.t)
        )
        if any(isinstance(e, StartTls) for e in events):
            return "switched to TLS after STLS: the rest is encrypted, no keys"
    return None


#: Command keywords the core's command table knows (RFC 1939, 2449, 2595, 5034, 6856).
_POP3_VERBS: Final = frozenset(verb.encode("ascii") for verb in known_verbs())
_MASKED_LINE: Final = b"********"
#: Longest line held back while out of sync; beyond it the line is masked as it goes.
_MAX_HELD: Final = 8192


class _UntilInSync:
    """Masking for a connection seen from its middle, before the masker knows its state.

    The masker recognises SASL data by the ``AUTH`` command before it; a capture that
    starts inside an exchange (RFC 5034 §4) shows the data without it. Until the server's
    first ``+OK``/``-ERR`` line (after which the client is back at a command) a client line
    that is not a POP3 command is replaced by ``********``: the facts are missing, so mask.

    It works on what the observer recorded (already masked), never on what the observer
    parses: the observer's masker and its pairing must see the same bytes, or verdicts
    land on the wrong held lines.
    """

    def __init__(self) -> None:
        self.synced = False
        self._line = bytearray()
        self._dropping = False
        self._server = bytearray()

    def client(self, data: bytes) -> bytes:
        """The recorded client bytes to write."""
        if self.synced:
            held, self._line = bytes(self._line), bytearray()
            if self._dropping:
                self._dropping = False
                end = data.find(b"\n")
                if end < 0:
                    return b""
                return _MASKED_LINE + b"\r\n" + data[end + 1 :]
            return held + data
        out = bytearray()
        start = 0
        while start < len(data):
            end = data.find(b"\n", start)
            piece = data[start:] if end < 0 else data[start : end + 1]
            start = len(data) if end < 0 else end + 1
            if self._dropping:
                if end >= 0:
                    self._dropping = False
                    out += _MASKED_LINE + b"\r\n"
                continue
            self._line += piece
            if end < 0:
                if len(self._line) > _MAX_HELD:
                    self._line.clear()
                    self._dropping = True
                continue
            out += self._decide(bytes(self._line))
            self._line.clear()
        return bytes(out)

    def server(self, data: bytes) -> None:
        """Server bytes: the first status line puts the stream in sync."""
        if self.synced:
            return
        self._server += data
        while not self.synced:
            end = self._server.find(b"\n")
            if end < 0:
                if len(self._server) > _MAX_HELD:
                    self._server.clear()
                return
            line = bytes(self._server[: end + 1])
            del self._server[: end + 1]
            self.synced = line.startswith((b"+OK", b"-ERR"))

    def flush(self) -> bytes:
        """A line still held at the end of the client stream."""
        held, self._line = bytes(self._line), bytearray()
        if self.synced or not held:
            return held
        return self._decide(held)

    @staticmethod
    def _decide(line: bytes) -> bytes:
        words = line.split(None, 1)
        if words and words[0].upper() in _POP3_VERBS:
            return line
        ending = b"\r\n" if line.endswith(b"\r\n") else b"\n" if line.endswith(b"\n") else b""
        return _MASKED_LINE + ending


def _session_id(path: Path, flow: Flow) -> str:
    digest = hashlib.sha256(f"{path.name}|{flow.describe()}|{flow.first_t!r}".encode())
    return digest.hexdigest()[:12]


def _write_flow(
    flow: Flow,
    chunks: list[Chunk],
    directory: Path,
    source: Path,
    *,
    mid_session: bool,
    greeting_missed: bool,
    gaps: int,
    keep_secrets: bool,
) -> tuple[Path, int]:
    writer = _create_writer(
        flow, directory, source, mid_session=mid_session, gaps=gaps, keep_secrets=keep_secrets
    )
    out = _FlowWriter(writer, keep_secrets=keep_secrets, guarded=mid_session)
    last = 0.0
    ended: list[tuple[str, str]] = []
    try:
        if mid_session:
            fields = {"note": "the capture starts after the SYN"}
            if greeting_missed:
                fields["greeting"] = "missed"
                out.observer.greeting_missed()
            writer.write_event(EventName.MID_SESSION, 0.0, **fields)
        for chunk in chunks:
            at = max(last, chunk.t - flow.first_t)
            last = at
            if chunk.event is not None:
                out.event(chunk.event, chunk, at, ended)
            elif chunk.direction == Direction.CLIENT:
                out.client(chunk.data, at)
            else:
                out.server(chunk.data, at)
        out.end(last, _close_reason(ended))
    finally:
        writer.release()
    if writer.failed:
        raise PcapImportError(f"{writer.path}: {writer.error}")
    return writer.path, out.observer.summary().commands


def _create_writer(
    flow: Flow, directory: Path, source: Path, *, mid_session: bool, gaps: int, keep_secrets: bool
) -> CaptureWriter:
    return CaptureWriter.create(
        directory,
        session_id=_session_id(source, flow),
        header_fields={
            "pop3tap": __version__,
            "client": endpoint_text(flow.client),
            "listen": "",
            "upstream": endpoint_text(flow.server),
            "secrets": Secrets.KEPT if keep_secrets else Secrets.MASKED,
            "options": {
                "imported_from": source.name,
                "mid_session": mid_session,
                "gaps": gaps,
            },
        },
        now=datetime.fromtimestamp(flow.first_t, UTC),
    )


class _FlowWriter:
    """One connection's chunks into a capture, through the relay's observer and masker."""

    def __init__(self, writer: CaptureWriter, *, keep_secrets: bool, guarded: bool) -> None:
        self.observer = SessionObserver(keep_secrets=keep_secrets)
        self._writer = writer
        self._guard = _UntilInSync() if guarded and not keep_secrets else None

    def _write_client(self, recorded: list[tuple[float, bytes]]) -> None:
        """Write recorded client bytes, in order (through the mid-session guard)."""
        guard = self._guard
        for when, data in recorded:
            out = data if guard is None else guard.client(data)
            if out:
                self._writer.write_data(Direction.CLIENT, when, out)

    def _release_client_lines(self) -> None:
        """Write client lines the masker held until the pairing resolved them (after an
        AUTH): they were sent before the server bytes that resolved them."""
        self._write_client(self.observer.take_masked_client())

    def _end_client(self, at: float) -> None:
        """The client stream ended: what the masker and the guard still hold of it."""
        self.observer.end_client(at)
        self._release_client_lines()
        held = self._guard.flush() if self._guard is not None else b""
        if held:
            self._writer.write_data(Direction.CLIENT, at, held)

    def event(self, event: str, chunk: Chunk, at: float, ended: list[tuple[str, str]]) -> None:
        """An ``eof``, ``reset`` or ``gap`` in one direction (``ended`` collects the ends)."""
        if event in (EventName.EOF, EventName.RESET):
            if chunk.direction == Direction.CLIENT:
                self._end_client(at)
            ended.append((event, chunk.direction))
        self._writer.write_event(event, at, **chunk.fields)

    def client(self, data: bytes, at: float) -> None:
        self._write_client(self.observer.receive_client(data, at).recorded)

    def server(self, data: bytes, at: float) -> None:
        if self._guard is not None:
            self._guard.server(data)
        self.observer.feed_server(data, at)
        self._release_client_lines()
        self._writer.write_data(Direction.SERVER, at, data)

    def end(self, last: float, reason: str) -> None:
        self._end_client(last)
        self.observer.end_server(last)
        # Client lines still without a verdict are masked and written, as the relay does.
        self.observer.abandon_client_lines()
        self._release_client_lines()
        self._writer.close(last, reason, self.observer.summary().as_dict())


#: The close reason of a session by the first end of a direction seen (event, direction).
_END_REASONS: Final[dict[tuple[str, str], CloseReason]] = {
    (EventName.EOF, Direction.CLIENT): CloseReason.CLIENT_CLOSED,
    (EventName.EOF, Direction.SERVER): CloseReason.SERVER_CLOSED,
    (EventName.RESET, Direction.CLIENT): CloseReason.CLIENT_RESET,
    (EventName.RESET, Direction.SERVER): CloseReason.SERVER_RESET,
}


def _close_reason(ended: list[tuple[str, str]]) -> str:
    if not ended:
        return CloseReason.PCAP_ENDED
    return _END_REASONS[ended[0]]


def import_pcap(
    path: str | os.PathLike[str],
    directory: str | os.PathLike[str],
    *,
    port: int = 110,
    keep_secrets: bool = False,
) -> list[ImportedSession]:
    """Write one capture per plaintext POP3 connection of a pcap/pcapng file.

    Raises:
        PcapImportError: the file is not a pcap/pcapng file, is truncated, or the output
            directory cannot be written.
    """
    source = Path(path)
    out = Path(directory)
    check_framing(source)
    flows, _ignored = read_flows(source, port)
    try:
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise PcapImportError(f"{out}: cannot create directory: {exc.strerror or exc}") from None
    results: list[ImportedSession] = []
    for flow in flows:
        c2s_base, c2s_syn = sequence_base(flow, Direction.CLIENT)
        s2c_base, s2c_syn = sequence_base(flow, Direction.SERVER)
        c2s = direction_chunks(flow, Direction.CLIENT, c2s_base, s2c_base)
        s2c = direction_chunks(flow, Direction.SERVER, s2c_base, c2s_base)
        if not any(c.data for c in c2s + s2c):
            results.append(ImportedSession(flow.describe(), None, "no POP3 bytes (handshake only)"))
            continue
        mid_session = not (c2s_syn and s2c_syn)
        chunks = list(interleave(c2s, s2c))
        # The client speaking first means the greeting went by before the capture
        # (RFC 1939 §4: the server speaks first); its first line then answers a command.
        first = next(c for c in chunks if c.data)
        greeting_missed = mid_session and first.direction == Direction.CLIENT
        reason = _tls_reason(chunks, c2s, s2c, greeting_missed=greeting_missed)
        if reason is not None:
            results.append(ImportedSession(flow.describe(), None, reason))
            continue
        gaps = sum(1 for c in c2s + s2c if c.event == EventName.GAP)
        try:
            written, commands = _write_flow(
                flow,
                chunks,
                out,
                source,
                mid_session=mid_session,
                greeting_missed=greeting_missed,
                gaps=gaps,
                keep_secrets=keep_secrets,
            )
        except CaptureError as exc:
            raise PcapImportError(str(exc)) from None
        results.append(ImportedSession(flow.describe(), written, None, commands, mid_session, gaps))
    return results
