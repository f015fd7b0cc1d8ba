"""Client lines after an AUTH, held until the pairing says what they were (RFC 5034 §4).

After a line holding AUTH any later client line may be SASL data, and only the pairing of
the whole session can tell: the server asks for each SASL line with ``+``. So
:class:`~pop3tap.protocol._masking.SecretMasker` hands every line after one to
:class:`HeldLines`, which keeps it until the observer's :class:`Verdict`. Even a command is
written clear only if it is a known command with valid arguments
(:func:`~pop3tap.protocol._commands.is_known_command`); anything else is masked whole.
Held lines are bounded in number and bytes; a line that overflows the bound, or is still
held when the stream ends or the pairing is given up, is masked. Once the pairing is in
doubt (:meth:`HeldLines.distrust`), every line is masked, a chunk at a time.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass
from enum import Enum
from operator import attrgetter

from pop3tap.protocol._commands import SECRET_PLACEHOLDER_BYTES, is_known_command, mask_line
from pop3tap.protocol._masklines import mask_lines

#: Longest held line kept whole; a longer one cannot be a valid command and is masked.
MAX_HELD_LINE = 8192
#: Held lines and bytes per session before the oldest are masked without a verdict.
MAX_HELD_LINES = 1024
MAX_HELD_BYTES = 64 * 1024

_CR = 0x0D


class Verdict(Enum):
    """What the observer decided a held client line was."""

    #: SASL data, or a line that cannot be shown: masked whole.
    MASK = 0
    #: Taken by the server as a command: clear if it is a known command with valid
    #: arguments (secrets in it still masked), else masked whole.
    COMMAND = 1
    #: A SASL response: clear only if it is exactly ``*`` (cancel, RFC 5034 §4).
    CANCEL = 2


@dataclass(slots=True)
class HeldLine:
    #: Client-stream offset just past the line (its LF), as the observer counts it.
    end: int
    at: float
    #: The line without its terminator; None when it was too long to keep.
    content: bytes | None
    #: Whether the content is non-empty (known even when it was not kept).
    nonempty: bool
    terminator: bytes


class HeldLines:
    """The lines waiting for a verdict, and the masked bytes released in stream order."""

    def __init__(self, *, distrusted: bool = False) -> None:
        self.distrusted = distrusted
        self.held: deque[HeldLine] = deque()
        self.held_bytes = 0
        #: The line being assembled.
        self.open = bytearray()
        self.open_length = 0
        self._open_at = 0.0
        self._open_cr = False
        #: Masked bytes ready to be written, with the time their lines arrived.
        self.released: list[tuple[float, bytearray]] = []

    def hold(self, data: bytes, pos: int, at: float, base: int) -> None:
        """Frame ``data[pos:]`` into held lines (LF ends a line, as the observer frames);
        ``base`` is the client-stream offset of ``data[0]``."""
        size = len(data)
        while pos < size:
            last = -1 if self.open_length else data.rfind(b"\n", pos)
            if last >= 0 and self.distrusted and not self.held:
                # Nothing waits and every line is masked: whole lines in one go.
                self._mask_whole_lines(at, data[pos : last + 1])
                pos = last + 1
                continue
            if last >= 0 and not self.distrusted:
                if data.count(b"\n", pos, last + 1) > MAX_HELD_LINES:
                    # More whole lines than may be held: all but the last MAX_HELD_LINES
                    # would push the oldest out unresolved, masked: one substitution.
                    cut = last + 1
                    for _ in range(MAX_HELD_LINES + 1):
                        cut = data.rfind(b"\n", pos, cut)
                    self.mask_all()
                    self._mask_whole_lines(at, data[pos : cut + 1])
                    pos = cut + 1
                self._hold_whole_lines(data, pos, last + 1, at, base)
                pos = last + 1
                continue
            if not self.open_length:
                self._open_at = at
            newline = data.find(b"\n", pos)
            stop = size if newline < 0 else newline
            if stop > pos:
                room = MAX_HELD_LINE + 1 - len(self.open)
                if room > 0:
                    self.open += data[pos : min(stop, pos + room)]
                self.open_length += stop - pos
                self._open_cr = data[stop - 1] == _CR
            if newline < 0:
                return
            self.close_open_line(b"\r\n" if self._open_cr else b"\n", base + newline + 1)
            pos = newline + 1

    def _hold_whole_lines(self, data: bytes, start: int, stop: int, at: float, base: int) -> None:
        """Hold the whole lines of ``data[start:stop]`` (nothing open, nothing distrusted):
        what :meth:`close_open_line` does for each, in one pass."""
        held = self.held
        end = base + start
        for part in data[start:stop].split(b"\n")[:-1]:
            end += len(part) + 1
            crlf = part.endswith(b"\r")
            content = part[:-1] if crlf else part
            kept = content if len(content) <= MAX_HELD_LINE else None
            held.append(HeldLine(end, at, kept, bool(content), b"\r\n" if crlf else b"\n"))
            self.held_bytes += len(content) if kept is not None else 0
        while held and (len(held) > MAX_HELD_LINES or self.held_bytes > MAX_HELD_BYTES):
            self._release(Verdict.MASK)  # bound hit: masked without a verdict

    def _mask_whole_lines(self, at: float, block: bytes) -> None:
        self.append_released(at, mask_lines(block))

    def close_open_line(self, terminator: bytes, end: int) -> None:
        """The open line ended (at stream offset ``end``) with ``terminator``."""
        length = self.open_length - (1 if terminator == b"\r\n" else 0)
        content = bytes(self.open[:length]) if length <= MAX_HELD_LINE else None
        line = HeldLine(
            end=end, at=self._open_at, content=content, nonempty=length > 0, terminator=terminator
        )
        self.open.clear()
        self.open_length = 0
        self._open_cr = False
        if self.distrusted and not self.held:
            self._emit(line, Verdict.MASK)
            return
        self.held.append(line)
        self.held_bytes += len(content) if content is not None else 0
        while self.held and (len(self.held) > MAX_HELD_LINES or self.held_bytes > MAX_HELD_BYTES):
            self._release(Verdict.MASK)  # bound hit: masked without a verdict

    def resolve(self, end: int, verdict: Verdict) -> None:
        """The observer classified the line that ends at stream offset ``end``."""
        held = self.held
        while held and held[0].end < end:
            self._release(Verdict.MASK)  # never classified: mask
        if held and held[0].end == end:
            self._release(verdict)

    def distrust(self) -> None:
        """The pairing is lost or in doubt: every line is masked from now on."""
        self.distrusted = True
        self.mask_all()

    def mask_all(self) -> None:
        """Release every held line masked, without a verdict (as :meth:`_emit` masks)."""
        for at, lines in itertools.groupby(self.held, key=attrgetter("at")):
            self.append_released(
                at,
                b"".join(
                    (SECRET_PLACEHOLDER_BYTES if line.nonempty else b"") + line.terminator
                    for line in lines
                ),
            )
        self.held.clear()
        self.held_bytes = 0

    def _release(self, verdict: Verdict) -> None:
        line = self.held.popleft()
        self.held_bytes -= len(line.content) if line.content is not None else 0
        self._emit(line, verdict)

    def _emit(self, line: HeldLine, verdict: Verdict) -> None:
        content = line.content
        shown: bytes | None = None
        if content is not None and not self.distrusted:
            if verdict is Verdict.COMMAND and is_known_command(content):
                shown = mask_line(content)
            elif verdict is Verdict.CANCEL and content == b"*":
                shown = content
        if shown is None:
            shown = SECRET_PLACEHOLDER_BYTES if line.nonempty else b""
        self.append_released(line.at, shown + line.terminator)

    def append_released(self, at: float, data: bytes) -> None:
        released = self.released
        if released and released[-1][0] == at:
            released[-1][1].extend(data)
        else:
            released.append((at, bytearray(data)))
