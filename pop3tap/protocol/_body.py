"""Scanning an open multi-line body, a chunk at a time.

A body ends at a line that is exactly ``.`` (RFC 1939 §3); sizes announced in the text are
never used for framing. Each chunk goes to the body scanner (:mod:`._bodyscan`: one C pass,
or ``bytes.find``/``count``) in one call, never line by line, and nothing is kept but the
last three bytes, where a terminator split across chunks may begin.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pop3tap.protocol._bodyscan import scan_chunk
from pop3tap.protocol._events import Flag
from pop3tap.protocol._pending import Pending

#: Called with every slice of a multi-line body as it is scanned, terminator included:
#: ``(seq, verb, chunk, start, stop, stream_offset_of_start)``. The chunk is not copied;
#: the listener must not keep it.
BodyListener = Callable[[int, str, bytes, int, int, int], None]

_TERMINATORS = (b"\n.\r\n", b"\n.\n")


def terminator_at_edge(tail: bytes, data: bytes, pos: int) -> int:
    """End of a terminator line whose leading LF is in ``tail``, or -1.

    ``tail`` holds the last (up to 3) body bytes before ``pos``; it starts as the status
    line's LF, so an empty body is found here too. A leading LF at ``data[pos]`` or later
    is the body scanner's to find.
    """
    edge = tail + data[pos : pos + 3]
    carry = len(tail)
    best = -1
    for pattern in _TERMINATORS:
        found = edge.find(pattern)
        while 0 <= found < carry:
            candidate = pos + found + len(pattern) - carry
            if candidate > pos and (best < 0 or candidate < best):
                best = candidate
                break
            found = edge.find(pattern, found + 1)
    return best


@dataclass(slots=True, init=False)
class Body:
    """Scanning state of an open multi-line body."""

    pending: Pending
    start: int
    consumed: int = 0
    newlines: int = 0
    #: A LF without a CR before it was seen in the body (terminator included).
    bare_lf: bool = False
    tail: bytes = b"\n"  # the status line's LF: the body starts at a line start

    def __init__(
        self,
        pending: Pending,
        start: int,
        consumed: int = 0,
        newlines: int = 0,
        bare_lf: bool = False,
        tail: bytes = b"\n",
    ) -> None:
        self.pending = pending
        self.start = start
        self.consumed = consumed
        self.newlines = newlines
        self.bare_lf = bare_lf
        self.tail = tail

    def scan(self, data: bytes, pos: int, stream_offset: int, listener: BodyListener | None) -> int:
        """Consume body bytes from ``pos``; the end of the terminator, or -1 if the body
        goes on past this chunk (``stream_offset`` is the chunk's offset in the stream)."""
        size = len(data)
        tail = self.tail
        edge = terminator_at_edge(tail, data, pos)
        end, newlines, bare_lf = scan_chunk(
            data, pos, size if edge < 0 else edge, tail.endswith(b"\r")
        )
        if edge >= 0:
            end = edge
        stop = size if end < 0 else end
        self.consumed += stop - pos
        if listener is not None and stop > pos:
            listener(self.pending.seq, self.pending.verb, data, pos, stop, stream_offset + pos)
        self.newlines += newlines
        if bare_lf:
            self.bare_lf = True
        self.tail = (tail + data[max(pos, stop - 3) : stop])[-3:]
        return end

    def measure(self) -> tuple[int, int]:
        """Lines and bytes of the body, its terminator left out unless it never came."""
        if Flag.TRUNCATED in self.pending.flags:
            return self.newlines, self.consumed
        terminator = 3 if self.tail.endswith(b".\r\n") else 2
        return self.newlines - 1, self.consumed - terminator
