"""Import plaintext POP3 sessions from a tcpdump/Wireshark capture (pcap or pcapng).

Scapy reads the file and decodes the link, IP and TCP layers (every link type tcpdump
writes: Ethernet, loopback, Linux cooked v1/v2, raw IP; IPv4 and IPv6). The file's framing
is checked here first, so a truncated file is an error instead of a silently shorter
session. This module then rebuilds each TCP connection to the POP3 port:

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
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from pop3tap import __version__
from pop3tap.capture import CaptureError, CaptureWriter
from pop3tap.protocol import SessionObserver, StartTls

__all__ = [
    "ImportedSession",
    "PcapImportError",
    "check_framing",
    "import_pcap",
    "read_packets",
]

_SEQ_MOD: Final = 1 << 32
_HALF: Final = 1 << 31
_PCAP_MAGICS: Final = {
    b"\xd4\xc3\xb2\xa1": "<",
    b"\xa1\xb2\xc3\xd4": ">",
    b"\x4d\x3c\xb2\xa1": "<",
    b"\xa1\xb2\x3c\x4d": ">",
}
_PCAPNG_SHB: Final = b"\x0a\x0d\x0d\x0a"
_TLS_RECORD_START: Final = (b"\x16\x03", b"\x15\x03", b"\x17\x03")
_FIN, _SYN, _RST, _ACK = 0x01, 0x02, 0x04, 0x10
#: Largest frame read whole (tcpdump's default snap length).
_MAX_FRAME: Final = 262144


class PcapImportError(Exception):
    """The file cannot be imported; the message is one line naming the file."""


def check_framing(path: Path) -> str:
    """Walk the file's record framing; return ``"pcap"`` or ``"pcapng"``.

    Raises:
        PcapImportError: not a pcap/pcapng file, or it ends inside a record.
    """
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(24)
            if head[:4] in _PCAP_MAGICS:
                if len(head) < 24:
                    raise PcapImportError(f"{path}: truncated pcap file (ends in its header)")
                endian = _PCAP_MAGICS[head[:4]]
                offset = 24
                while offset < size:
                    f.seek(offset)
                    record = f.read(16)
                    if len(record) < 16:
                        raise PcapImportError(f"{path}: truncated pcap file at byte {offset}")
                    (caplen,) = struct.unpack(endian + "I", record[8:12])
                    if offset + 16 + caplen > size:
                        raise PcapImportError(f"{path}: truncated pcap file at byte {offset}")
                    offset += 16 + caplen
                return "pcap"
            if head[:4] == _PCAPNG_SHB and len(head) >= 12:
                magic = head[8:12]
                endian = "<" if magic == b"\x4d\x3c\x2b\x1a" else ">"
                if magic not in (b"\x4d\x3c\x2b\x1a", b"\x1a\x2b\x3c\x4d"):
                    raise PcapImportError(f"{path}: not a pcap or pcapng file (bad byte order)")
                offset = 0
                while offset < size:
                    f.seek(offset)
                    block = f.read(8)
                    if len(block) < 8:
                        raise PcapImportError(f"{path}: truncated pcapng file at byte {offset}")
                    if block[:4] == _PCAPNG_SHB:
                        more = f.read(4)
                        if more in (b"\x4d\x3c\x2b\x1a", b"\x1a\x2b\x3c\x4d"):
                            endian = "<" if more == b"\x4d\x3c\x2b\x1a" else ">"
                    (length,) = struct.unpack(endian + "I", block[4:8])
                    if length < 12 or length % 4 or offset + length > size:
                        raise PcapImportError(f"{path}: truncated pcapng file at byte {offset}")
                    offset += length
                return "pcapng"
    except OSError as exc:
        raise PcapImportError(f"{path}: cannot read: {exc.strerror or exc}") from None
    raise PcapImportError(f"{path}: not a pcap or pcapng file")


@dataclass(slots=True)
class _Segment:
    t: float
    seq: int
    ack: int | None
    flags: int
    payload: bytes
    order: int


@dataclass(slots=True)
class _Flow:
    client: tuple[str, int]
    server: tuple[str, int]
    first_t: float
    segments: dict[str, list[_Segment]] = field(default_factory=lambda: {"c2s": [], "s2c": []})
    syn: dict[str, int | None] = field(default_factory=lambda: {"c2s": None, "s2c": None})
    ended: bool = False

    def describe(self) -> str:
        return f"{_addr(self.client)} -> {_addr(self.server)}"


def _addr(endpoint: tuple[str, int]) -> str:
    host, port = endpoint
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class ImportedSession:
    """One TCP connection found in the file: written to ``path``, or skipped for ``reason``."""

    connection: str
    path: Path | None
    reason: str | None = None
    exchanges: int = 0
    mid_session: bool = False
    gaps: int = 0


@dataclass(slots=True)
class _Chunk:
    """Bytes (or a FIN/RST, with empty data) ready to emit in one direction."""

    direction: str
    t: float
    needs: int | None  # bytes of the other direction this segment acknowledged
    data: bytes = b""
    event: str | None = None  # "eof", "reset" or "gap"
    fields: dict[str, Any] = field(default_factory=dict)


def _read_flows(path: Path, port: int) -> tuple[list[_Flow], int]:
    """TCP segments to or from ``port``, grouped per connection, in file order."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6
    from scapy.packet import Padding
    from scapy.utils import PcapReader

    flows: dict[tuple[tuple[str, int], tuple[str, int]], _Flow] = {}
    finished: list[_Flow] = []
    ignored = 0
    try:
        reader = PcapReader(str(path))
    except Exception as exc:  # Scapy_Exception and friends: not a readable capture
        raise PcapImportError(f"{path}: not a pcap or pcapng file ({exc})") from None
    with reader:
        for order, packet in enumerate(_packets(reader)):
            tcp = packet.getlayer(TCP)
            ip = packet.getlayer(IP) or packet.getlayer(IPv6)
            if tcp is None or ip is None:
                ignored += 1
                continue
            src = (str(ip.src), int(tcp.sport))
            dst = (str(ip.dst), int(tcp.dport))
            if dst[1] == port:
                direction, key = "c2s", (src, dst)
            elif src[1] == port:
                direction, key = "s2c", (dst, src)
            else:
                ignored += 1
                continue
            payload = bytes(tcp.payload)
            pad = tcp.getlayer(Padding)
            if pad is not None and pad.load:
                payload = payload[: len(payload) - len(pad.load)]
            flags = int(tcp.flags)
            t = float(packet.time)
            seq = int(tcp.seq)
            flow = flows.get(key)
            if (
                flow is not None
                and flags & _SYN
                and direction == "c2s"
                and not flags & _ACK
                and flow.syn["c2s"] is not None
                and flow.syn["c2s"] != seq
            ):
                finished.append(flow)  # the same ports again: a new connection
                flow = None
            if flow is None:
                flow = _Flow(client=key[0], server=key[1], first_t=t)
                flows[key] = flow
            if flags & _SYN and flow.syn[direction] is None:
                flow.syn[direction] = seq
            ack = int(tcp.ack) if flags & _ACK else None
            flow.segments[direction].append(_Segment(t, seq, ack, flags, payload, order))
    finished.extend(flows.values())
    finished.sort(key=lambda f: f.first_t)
    return finished, ignored


def _packets(reader: Any) -> Iterator[Any]:
    """Every packet of a scapy reader, whole: its default read size is one MTU (65535), which
    cuts the 64 KiB segments of the loopback interface."""
    while True:
        try:
            yield reader.read_packet(size=_MAX_FRAME)
        except EOFError:
            return


def read_packets(path: str | os.PathLike[str]) -> list[Any]:
    """Every packet of a pcap/pcapng file as scapy packets, none cut short."""
    from scapy.utils import PcapReader

    with PcapReader(str(path)) as reader:
        return list(_packets(reader))


def _rel(seq: int, base: int) -> int:
    """``seq`` relative to ``base`` in 32-bit sequence space, negative when before it."""
    return (seq - base + _HALF) % _SEQ_MOD - _HALF


def _base(flow: _Flow, direction: str) -> tuple[int | None, bool]:
    """The sequence number of the first byte, and whether it is known from the SYN."""
    syn = flow.syn[direction]
    if syn is not None:
        return (syn + 1) % _SEQ_MOD, True
    # Data decides where the stream starts: a RST's sequence number may lie anywhere
    # (RFC 9293 §3.10.7.1 has stacks send 0 and receivers check it against the window).
    carrying = [s for s in flow.segments[direction] if s.payload]
    if not carrying:
        carrying = [s for s in flow.segments[direction] if s.flags & (_FIN | _RST)]
    if not carrying:
        return None, False
    ref = carrying[0].seq
    return (ref + min(_rel(s.seq, ref) for s in carrying)) % _SEQ_MOD, False


def _direction_chunks(
    flow: _Flow, direction: str, base: int | None, other_base: int | None
) -> list[_Chunk]:
    """One direction reassembled in sequence order: data, gaps, then FIN or RST."""
    if base is None:
        return []
    segments = sorted(flow.segments[direction], key=lambda s: (_rel(s.seq, base), s.t, s.order))
    chunks: list[_Chunk] = []
    next_byte = 0
    end_event: _Chunk | None = None

    def needs(segment: _Segment) -> int | None:
        if segment.ack is None or other_base is None:
            return None
        return max(0, _rel(segment.ack, other_base))

    for segment in segments:
        start = _rel(segment.seq, base)
        end = start + len(segment.payload)
        if segment.payload and end > next_byte:
            if start > next_byte:
                chunks.append(
                    _Chunk(
                        direction,
                        segment.t,
                        None,
                        event="gap",
                        fields={"dir": direction, "bytes": start - next_byte},
                    )
                )
                next_byte = start
            data = segment.payload[next_byte - start :]
            chunks.append(_Chunk(direction, segment.t, needs(segment), data=data))
            next_byte = end
        if segment.flags & (_FIN | _RST) and end_event is None:
            name = "reset" if segment.flags & _RST else "eof"
            end_event = _Chunk(
                direction, segment.t, needs(segment), event=name, fields={"dir": direction}
            )
        elif segment.flags & (_FIN | _RST) and end_event is not None:
            end_event.t = min(end_event.t, segment.t)
    if end_event is not None:
        chunks.append(end_event)
    return chunks


def _span(chunk: _Chunk) -> int:
    """Sequence space a chunk stands for: its bytes, or the bytes of a gap."""
    return len(chunk.data) or int(chunk.fields.get("bytes", 0))


def _interleave(c2s: list[_Chunk], s2c: list[_Chunk]) -> Iterator[_Chunk]:
    """Both directions in causal order: acknowledged bytes first, then by packet time.

    A gap counts as the bytes it stands for, and an acknowledgement of bytes that are not
    in the file at all (lost at the end of a stream) waits only for what is there, so a
    capture that lost packets is still put in the order its packets were sent."""
    queues = {"c2s": c2s, "s2c": s2c}
    position = {"c2s": 0, "s2c": 0}
    emitted = {"c2s": 0, "s2c": 0}
    total = {d: sum(_span(c) for c in q) for d, q in queues.items()}
    other = {"c2s": "s2c", "s2c": "c2s"}
    while True:
        heads = {d: q[position[d]] for d, q in queues.items() if position[d] < len(q)}
        if not heads:
            return
        ready = [
            c
            for d, c in heads.items()
            if c.needs is None
            or emitted[other[d]] >= min(c.needs, total[other[d]])
            or position[other[d]] >= len(queues[other[d]])
        ]
        pick = min(ready or heads.values(), key=lambda c: (c.t, c.direction != "c2s"))
        position[pick.direction] += 1
        emitted[pick.direction] += _span(pick)
        yield pick


def _tls_reason(
    ordered: list[_Chunk], c2s: list[_Chunk], s2c: list[_Chunk], *, greeting_missed: bool
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
            if chunk.direction == "c2s"
            else observer.feed_server(chunk.data, chunk.t)
        )
        if any(isinstance(e, StartTls) for e in events):
            return "switched to TLS after STLS: the rest is encrypted, no keys"
    return None


#: Command keywords of RFC 1939 §§4-7, RFC 2449 (CAPA), RFC 2595 (STLS), RFC 5034 (AUTH)
#: and RFC 6856 (UTF8, LANG).
_POP3_VERBS: Final = frozenset(
    b"USER PASS APOP AUTH STAT LIST RETR DELE NOOP RSET QUIT TOP UIDL CAPA STLS UTF8 LANG".split()
)
_MASKED_LINE: Final = b"********"
#: Longest line held back while out of sync; beyond it the line is masked as it goes.
_MAX_HELD: Final = 8192


class _UntilInSync:
    """Masking for a connection seen from its middle, before the masker knows its state.

    The masker recognises SASL data by the ``AUTH`` command before it; a capture that
    starts inside an exchange (RFC 5034 §4) shows the data without it. Until the server's
    first ``+OK``/``-ERR`` line (after which the client is back at a command) a client line
    that is not a POP3 command is replaced by ``********``: the facts are missing, so mask.
    """

    def __init__(self) -> None:
        self.synced = False
        self._line = bytearray()
        self._dropping = False
        self._server = bytearray()

    def client(self, data: bytes) -> bytes:
        """The client bytes to record (then through the ordinary masker)."""
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


def _session_id(path: Path, flow: _Flow) -> str:
    digest = hashlib.sha256(f"{path.name}|{flow.describe()}|{flow.first_t!r}".encode())
    return digest.hexdigest()[:12]


def _write_flow(
    flow: _Flow,
    chunks: list[_Chunk],
    directory: Path,
    source: Path,
    *,
    mid_session: bool,
    greeting_missed: bool,
    gaps: int,
    keep_secrets: bool,
) -> tuple[Path, int]:
    observer = SessionObserver()
    started = datetime.fromtimestamp(flow.first_t, UTC)
    writer = CaptureWriter.create(
        directory,
        session_id=_session_id(source, flow),
        header_fields={
            "pop3tap": __version__,
            "client": _addr(flow.client),
            "listen": "",
            "upstream": _addr(flow.server),
            "secrets": "kept" if keep_secrets else "masked",
            "options": {
                "imported_from": source.name,
                "mid_session": mid_session,
                "gaps": gaps,
            },
        },
        now=started,
    )
    last = 0.0
    ended: list[str] = []

    def release_client_lines() -> None:
        """Write client lines the masker held until the pairing resolved them (after an
        AUTH): they were sent before the server bytes that resolved them."""
        if not keep_secrets:
            for when, data in observer.take_masked_client():
                writer.write_data("c2s", when, data)

    guard = _UntilInSync() if mid_session and not keep_secrets else None

    def release_guarded_line(at: float) -> None:
        """A client line the mid-session guard still holds, at the end of the stream."""
        held = guard.flush() if guard is not None else b""
        recorded = observer.mask_client(held, at) if held else b""
        if recorded:
            writer.write_data("c2s", at, recorded)

    try:
        if mid_session:
            fields = {"note": "the capture starts after the SYN"}
            if greeting_missed:
                fields["greeting"] = "missed"
                observer.greeting_missed()
            writer.write_event("mid_session", 0.0, **fields)
        for chunk in chunks:
            at = max(last, chunk.t - flow.first_t)
            last = at
            if chunk.event is not None:
                if chunk.event in ("eof", "reset"):
                    if chunk.direction == "c2s":
                        release_guarded_line(at)
                        observer.end_client(at)
                        release_client_lines()
                    ended.append(f"{chunk.event}:{chunk.direction}")
                writer.write_event(chunk.event, at, **chunk.fields)
                continue
            if chunk.direction == "c2s":
                data = guard.client(chunk.data) if guard is not None else chunk.data
                recorded = data if keep_secrets else observer.mask_client(data, at)
                if recorded:
                    writer.write_data("c2s", at, recorded)
                observer.feed_client(chunk.data, at)
                release_client_lines()
            else:
                if guard is not None:
                    guard.server(chunk.data)
                observer.feed_server(chunk.data, at)
                release_client_lines()
                writer.write_data("s2c", at, chunk.data)
        release_guarded_line(last)
        observer.end_client(last)
        release_client_lines()
        observer.end_server(last)
        writer.close(last, _close_reason(ended), observer.summary().as_dict())
    finally:
        writer.release()
    if writer.failed:
        raise PcapImportError(f"{writer.path}: {writer.error}")
    return writer.path, observer.summary().commands


def _close_reason(ended: list[str]) -> str:
    if not ended:
        return "the packet capture ends before the session did"
    event, _, direction = ended[0].partition(":")
    side = "client" if direction == "c2s" else "server"
    return f"{side} reset" if event == "reset" else f"{side} closed"


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
    flows, _ignored = _read_flows(source, port)
    try:
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise PcapImportError(f"{out}: cannot create directory: {exc.strerror or exc}") from None
    results: list[ImportedSession] = []
    for flow in flows:
        c2s_base, c2s_syn = _base(flow, "c2s")
        s2c_base, s2c_syn = _base(flow, "s2c")
        c2s = _direction_chunks(flow, "c2s", c2s_base, s2c_base)
        s2c = _direction_chunks(flow, "s2c", s2c_base, c2s_base)
        if not any(c.data for c in c2s + s2c):
            results.append(ImportedSession(flow.describe(), None, "no POP3 bytes (handshake only)"))
            continue
        mid_session = not (c2s_syn and s2c_syn)
        chunks = list(_interleave(c2s, s2c))
        # The client speaking first means the greeting went by before the capture
        # (RFC 1939 §4: the server speaks first); its first line then answers a command.
        first = next(c for c in chunks if c.data)
        greeting_missed = mid_session and first.direction == "c2s"
        reason = _tls_reason(chunks, c2s, s2c, greeting_missed=greeting_missed)
        if reason is not None:
            results.append(ImportedSession(flow.describe(), None, reason))
            continue
        gaps = sum(1 for c in c2s + s2c if c.event == "gap")
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
