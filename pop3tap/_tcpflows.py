"""TCP connections out of a tcpdump/Wireshark file, for ``pop3tap import``.

Scapy reads the file and decodes the link, IP and TCP layers; the file's own record
framing is checked here first, so a truncated file is an error instead of a silently
shorter session. Each direction of a connection is reassembled by sequence number
(RFC 9293 §3.4) relative to its SYN (retransmitted or overlapping bytes kept once, the
first copy winning; bytes never captured become a ``gap``), and the two directions are
interleaved causally: a segment comes only after the bytes its acknowledgement covers.
No POP3 here: :mod:`pop3tap.pcap_import` turns the chunks into capture files.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from pop3tap.capture import Direction, EventName

_FIN, _SYN, _RST, _ACK = 0x01, 0x02, 0x04, 0x10

__all__ = [
    "Chunk",
    "Flow",
    "PcapImportError",
    "check_framing",
    "direction_chunks",
    "endpoint_text",
    "interleave",
    "read_flows",
    "read_packets",
    "sequence_base",
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
class Flow:
    client: tuple[str, int]
    server: tuple[str, int]
    first_t: float
    segments: dict[str, list[_Segment]] = field(default_factory=lambda: {d: [] for d in Direction})
    syn: dict[str, int | None] = field(default_factory=lambda: dict.fromkeys(Direction))
    ended: bool = False

    def describe(self) -> str:
        return f"{endpoint_text(self.client)} -> {endpoint_text(self.server)}"


def endpoint_text(endpoint: tuple[str, int]) -> str:
    host, port = endpoint
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(slots=True)
class Chunk:
    """Bytes (or a FIN/RST, with empty data) ready to emit in one direction."""

    direction: str
    t: float
    needs: int | None  # bytes of the other direction this segment acknowledged
    data: bytes = b""
    event: str | None = None  # EventName.EOF, RESET or GAP
    fields: dict[str, Any] = field(default_factory=dict)


def read_flows(path: Path, port: int) -> tuple[list[Flow], int]:
    """TCP segments to or from ``port``, grouped per connection, in file order."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6
    from scapy.packet import Padding
    from scapy.utils import PcapReader

    flows: dict[tuple[tuple[str, int], tuple[str, int]], Flow] = {}
    finished: list[Flow] = []
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
                direction, key = Direction.CLIENT, (src, dst)
            elif src[1] == port:
                direction, key = Direction.SERVER, (dst, src)
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
                and direction == Direction.CLIENT
                and not flags & _ACK
                and flow.syn[Direction.CLIENT] is not None
                and flow.syn[Direction.CLIENT] != seq
            ):
                finished.append(flow)  # the same ports again: a new connection
                flow = None
            if flow is None:
                flow = Flow(client=key[0], server=key[1], first_t=t)
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


def sequence_base(flow: Flow, direction: str) -> tuple[int | None, bool]:
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


def direction_chunks(
    flow: Flow, direction: str, base: int | None, other_base: int | None
) -> list[Chunk]:
    """One direction reassembled in sequence order: data, gaps, then FIN or RST."""
    if base is None:
        return []
    segments = sorted(flow.segments[direction], key=lambda s: (_rel(s.seq, base), s.t, s.order))
    chunks: list[Chunk] = []
    next_byte = 0
    end_event: Chunk | None = None

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
                    Chunk(
                        direction,
                        segment.t,
                        None,
                        event=EventName.GAP,
                        fields={"dir": direction, "bytes": start - next_byte},
                    )
                )
                next_byte = start
            data = segment.payload[next_byte - start :]
            chunks.append(Chunk(direction, segment.t, needs(segment), data=data))
            next_byte = end
        if segment.flags & (_FIN | _RST) and end_event is None:
            name = EventName.RESET if segment.flags & _RST else EventName.EOF
            end_event = Chunk(
                direction, segment.t, needs(segment), event=name, fields={"dir": direction}
            )
        elif segment.flags & (_FIN | _RST) and end_event is not None:
            end_event.t = min(end_event.t, segment.t)
    if end_event is not None:
        chunks.append(end_event)
    return chunks


def _span(chunk: Chunk) -> int:
    """Sequence space a chunk stands for: its bytes, or the bytes of a gap."""
    return len(chunk.data) or int(chunk.fields.get("bytes", 0))


def interleave(c2s: list[Chunk], s2c: list[Chunk]) -> Iterator[Chunk]:
    """Both directions in causal order: acknowledged bytes first, then by packet time.

    A gap counts as the bytes it stands for, and an acknowledgement of bytes that are not
    in the file at all (lost at the end of a stream) waits only for what is there, so a
    capture that lost packets is still put in the order its packets were sent."""
    queues = {Direction.CLIENT: c2s, Direction.SERVER: s2c}
    position: dict[str, int] = dict.fromkeys(Direction, 0)
    emitted: dict[str, int] = dict.fromkeys(Direction, 0)
    total = {d: sum(_span(c) for c in q) for d, q in queues.items()}
    other = {Direction.CLIENT: Direction.SERVER, Direction.SERVER: Direction.CLIENT}
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
        pick = min(ready or heads.values(), key=lambda c: (c.t, c.direction != Direction.CLIENT))
        position[pick.direction] += 1
        emitted[pick.direction] += _span(pick)
        yield pick
