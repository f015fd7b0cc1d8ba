"""Client bytes recorded and not yet parsed: the order masking and parsing must keep.

The capture masker (:mod:`._masking`) holds the client lines after an AUTH until the
pairing gives its verdict on each, by stream offset. So it must see every client byte,
and the same bytes, before the pairing parses them: a verdict for a line the masker has
not seen finds nothing to resolve, and a masker that saw other bytes (fewer, more, or
changed) than the pairing resolves the wrong lines. :class:`UnparsedClient` keeps the
chunks the masker has seen and the pairing has not, so the pairing can parse only those,
in order; :class:`ObserverUsageError` is what a caller that tries anything else gets.
"""

from __future__ import annotations

from collections import deque

from pop3tap._usage import ObserverUsageError
from pop3tap.protocol._commands import SECRET_PLACEHOLDER

__all__ = ["ObserverUsageError", "TlsRecordFraming", "UnparsedClient"]


class UnparsedClient:
    """Client chunks recorded (masked for the capture) and not parsed yet, in order.

    Holds references to the caller's chunks, not copies; the caller bounds how much waits
    (the relay parses what it forwarded before it reads more).
    """

    __slots__ = ("_chunks", "_pos", "fed_unrecorded", "recorded", "size")

    def __init__(self) -> None:
        #: The chunks, with their arrival times; the first is parsed up to ``_pos``.
        self._chunks: deque[tuple[bytes, float]] = deque()
        self._pos = 0
        #: Bytes recorded and not parsed yet.
        self.size = 0
        #: Whether any client byte was ever recorded.
        self.recorded = False
        #: Client bytes were parsed without being recorded: none can be recorded now.
        self.fed_unrecorded = False

    def append(self, data: bytes, at: float) -> None:
        """A chunk the masker sees now.

        Raises:
            ObserverUsageError: the observer parsed client bytes it did not record.
        """
        if self.fed_unrecorded:
            raise ObserverUsageError(
                "this observer parsed client bytes it did not record (feed_client): "
                "its masker has not seen them, so it cannot record any more"
            )
        self.recorded = True
        if data:
            self._chunks.append((data, at))
            self.size += len(data)

    def take(self, size: int | None) -> list[tuple[bytes, float]]:
        """The next ``size`` recorded bytes (all of them for None), as pieces of the
        recorded chunks with their times.

        Raises:
            ObserverUsageError: more bytes were asked for than were recorded.
        """
        waiting = self.size
        if size is None:
            size = waiting
        elif not 0 <= size <= waiting:
            raise ObserverUsageError(
                f"asked to parse {size} client bytes, {waiting} recorded and not parsed: "
                "client bytes are parsed only after record_client() has masked them"
            )
        if not size:
            return []
        chunks = self._chunks
        self.size = waiting - size
        pos = self._pos
        if not pos and len(chunks[0][0]) == size:
            return [chunks.popleft()]  # one whole chunk: the relay's common case
        pieces: list[tuple[bytes, float]] = []
        while size:
            data, at = chunks[0]
            end = min(len(data), pos + size)
            pieces.append((data if not pos and end == len(data) else data[pos:end], at))
            size -= end - pos
            if end == len(data):
                chunks.popleft()
                pos = 0
            else:
                pos = end
        self._pos = pos
        return pieces


#: TLS record content types a peer may send: change_cipher_spec, alert, handshake,
#: application_data, heartbeat (RFC 8446 §5.1, RFC 6520 §3).
_TLS_CONTENT_TYPES = frozenset(range(20, 25))
#: The largest record length any TLS version allows (RFC 5246 §6.2.3: 2^14 + 2048).
_TLS_MAX_RECORD = 2**14 + 2048
_TLS_HEADER = 5
_PLACEHOLDER = SECRET_PLACEHOLDER.encode("ascii")


class TlsRecordFraming:
    """Follows the TLS record framing of the client bytes after a passed-through STLS
    ``+OK`` (RFC 8446 §5.1: type, version 3.x, length, then that many opaque bytes), to
    find the first byte that cannot be TLS: from it on the stream is plaintext, not
    ciphertext, and is masked. Each header byte is checked as it arrives, so no byte of
    a broken header is recorded before the break is known."""

    __slots__ = ("_header", "_left", "broken")

    def __init__(self) -> None:
        #: The header bytes of the record being read so far (at most four).
        self._header = bytearray()
        #: Payload bytes of the current record still to come.
        self._left = 0
        #: A byte broke the framing: the stream is plaintext from there on.
        self.broken = False

    def record(self, data: bytes) -> bytes:
        """``data`` as the capture is to hold it: as it is while it keeps the framing; from
        the first byte that breaks it the bytes are neither ciphertext nor plaintext read
        from a line start, so one placeholder stands for all the rest of the stream."""
        if self.broken:
            return b""
        cut = self.break_at(data)
        if cut < 0:
            return data
        self.broken = True
        return data[:cut] + _PLACEHOLDER

    def break_at(self, data: bytes) -> int:
        """The offset in ``data`` of the first byte that breaks the framing, or -1."""
        pos = 0
        end = len(data)
        header = self._header
        while pos < end:
            left = self._left
            if left:
                step = min(left, end - pos)
                self._left = left - step
                pos += step
                continue
            byte = data[pos]
            index = len(header)
            if index == 0:
                valid = byte in _TLS_CONTENT_TYPES
            elif index == 1:
                valid = byte == 3
            elif index == 2:
                valid = byte <= 4
            elif index == 3:
                valid = byte <= _TLS_MAX_RECORD >> 8
            else:
                valid = (header[3] << 8 | byte) <= _TLS_MAX_RECORD
            if not valid:
                return pos
            pos += 1
            if index + 1 < _TLS_HEADER:
                header.append(byte)
            else:
                self._left = header[3] << 8 | byte
                header.clear()
        return -1
