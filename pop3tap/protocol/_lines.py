"""Line framing: one line collected across chunks, bounded, and its terminator read.

A line ends at LF; one CR before it is dropped, as poplib and MailKit accept (RFC 1939 §3
asks for CRLF). At most ``limit`` bytes of a line are kept; the rest is only counted and
the line is flagged overlong, so memory stays bounded whatever a peer sends.
"""

from __future__ import annotations

from pop3tap.protocol._events import Flag

#: Bytes of one line kept by default; the rest is counted.
DEFAULT_MAX_LINE = 8192

_FLAG_SETS: dict[frozenset[Flag], frozenset[Flag]] = {}
NO_FLAGS: frozenset[Flag] = frozenset()


def shared_flags(flags: set[Flag] | frozenset[Flag]) -> frozenset[Flag]:
    """One shared frozenset per combination of flags (there are few)."""
    frozen = frozenset(flags)
    return _FLAG_SETS.setdefault(frozen, frozen)


class LineAssembler:
    """Collects one line across chunks, keeping at most ``limit`` bytes of it."""

    __slots__ = ("cr_at_edge", "kept", "length", "limit", "lone_cr_dropped", "start", "started_at")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.kept = bytearray()
        self.length = 0
        self.started_at: float | None = None
        self.start = 0
        #: A CR not followed by LF was past the kept bytes: a server that ends lines at a
        #: lone CR ran what followed it as a line of its own (perhaps an AUTH).
        self.lone_cr_dropped = False
        #: The bytes so far end with a CR (a LF may follow in the next chunk).
        self.cr_at_edge = False

    def add(self, data: bytes, begin: int, end: int, at: float, offset: int) -> None:
        """Append ``data[begin:end]``, which began at stream offset ``offset``."""
        if self.length == 0:
            self.started_at = at
            self.start = offset
        room = self.limit - len(self.kept)
        if room > 0:
            self.kept += data[begin : min(end, begin + room)]
        self.length += end - begin
        dropped = max(begin, begin + room)
        if dropped < end:
            # C-level counts: LF only ends a line, so a CR before it is the terminator.
            before = data[dropped - 1] == 0x0D if dropped > begin else self.cr_at_edge
            if before and data[dropped] != 0x0A:
                self.lone_cr_dropped = True
            if data.count(b"\r", dropped, end) > data.count(b"\r\n", dropped, end) + (
                data[end - 1] == 0x0D
            ):
                self.lone_cr_dropped = True
        if end > begin:
            self.cr_at_edge = data[end - 1] == 0x0D

    def take(self) -> tuple[bytes, int, float | None, int]:
        """The kept bytes, the full length, when the line began and where; then reset."""
        kept, length, started_at, start = bytes(self.kept), self.length, self.started_at, self.start
        self.kept.clear()
        self.length = 0
        self.started_at = None
        self.lone_cr_dropped = False
        self.cr_at_edge = False
        return kept, length, started_at, start


def strip_terminator(
    kept: bytes, length: int, limit: int
) -> tuple[bytes, set[Flag] | frozenset[Flag]]:
    """A line's text without its terminator, and the flags its shape earns."""
    if length <= limit and kept.endswith(b"\r\n"):
        return kept[:-2], NO_FLAGS
    flags: set[Flag] = set()
    if length > limit:
        flags.add(Flag.OVERLONG)
    if kept.endswith(b"\r\n"):
        return kept[:-2], flags
    if kept.endswith(b"\n"):
        flags.add(Flag.BARE_LF)
        return kept[:-1], flags
    if length > limit:
        # The end of an overlong line was not kept: trim a CR if one is there.
        return kept.rstrip(b"\r"), flags
    return kept, flags
