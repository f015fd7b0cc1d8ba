"""Streaming redaction of secrets in the client-to-server byte stream.

The capture keeps the bytes each direction carried, so secrets must be masked in the bytes
themselves, chunk by chunk, without waiting for whole lines (a password line may arrive in
pieces). Only the client direction carries secrets: the PASS argument (RFC 1939 §7), the
APOP digest (RFC 1939 §7), an AUTH initial response and SASL data (RFC 5034 §4).

Before the first AUTH, lines are masked as they stream by, by the one rule of
:func:`~pop3tap.protocol._commands.mask_line` (same words, same separators). Lines end
at LF; outside a secret a CR that is not followed by LF also ends a line for the purpose
of classification (a server that splits lines at a lone CR would otherwise run a ``PASS``
the masker took for the tail of the line before it). Inside a secret everything up to LF
stays masked, lone CRs included, and so does what follows a lone CR after an AUTH (that
server would take it as SASL data) or after PASS or APOP before their secret began (a
server that splits words at any C blank takes that CR as a separator).

After a line holding AUTH, any later line may be SASL data, and only the pairing of the
whole session can tell (RFC 5034 §4: the server asks for each SASL line with ``+``). So
from the line after it on, every line is *held* (:mod:`._heldlines`) until the observer
gives its verdict (:meth:`SecretMasker.resolve`).

Memory is bounded: before AUTH only the first word of a line (a few bytes) is kept; after
it at most :data:`MAX_HELD_BYTES` and :data:`MAX_HELD_LINES`.

Work per byte is C-level where a hostile client could make it large (issue 10: one client
must not starve the others). :meth:`SecretMasker.mask` copies whole the lines that cannot
begin with a secret keyword, found by searching for the keywords, and hands runs of whole
lines whose masking the line rule decides alone (clear lines, PASS and APOP lines in any
case and with any separator) to one C-level call (:func:`._masklines.mask_run`). Only an
AUTH line and the line a chunk's edge cuts go through the byte steps
(:meth:`SecretMasker.mask_bytewise`, the reference), where a line's kind is decided within
its first bytes and words and separator runs are skipped with searches. After an AUTH, a
chunk bringing more whole lines than may be held masks all but the last
:data:`MAX_HELD_LINES` in one substitution.
"""

from __future__ import annotations

from enum import Enum

from pop3tap.protocol._commands import (
    LETTERS,
    SASL_KEYWORD,
    SECRET_PLACEHOLDER_BYTES,
    SECRET_VERBS,
    WORD_SEPARATORS,
)
from pop3tap.protocol._heldlines import (
    MAX_HELD_BYTES,
    MAX_HELD_LINE,
    MAX_HELD_LINES,
    HeldLines,
    Verdict,
)
from pop3tap.protocol._masklines import (
    KEYWORD_PREFIXES,
    SEPARATOR_RUN_END,
    WORD_END,
    mask_run,
    may_hold_secret,
    next_keyword_line,
)

__all__ = ["MAX_HELD_BYTES", "MAX_HELD_LINE", "MAX_HELD_LINES", "SecretMasker", "Verdict"]

_KEYWORD_LIMIT = 4
_CR = 0x0D
_LF = 0x0A
_SEPARATORS = WORD_SEPARATORS


class _Mode(Enum):
    LINE_START = 0
    COMMAND = 1
    CLEAR = 2
    SECRET = 3


class _LineSteps:
    """The byte-step machine that classifies client lines before an AUTH (the reference:
    :meth:`SecretMasker.mask_bytewise` drives it alone)."""

    def __init__(self) -> None:
        self._mode = _Mode.LINE_START
        #: First word of the current command line (upper-cased, at most a few bytes).
        self._keyword = bytearray()
        self._keyword_too_long = False
        #: Words completed so far on the current line, and whether we are between words.
        self._words = 0
        self._in_blank = True
        self._secret_emitted = False
        #: SECRET: the last byte seen was a CR (terminator or secret, not yet known).
        self._pending_cr = False
        #: CLEAR/COMMAND: a CR ended the last chunk; LF next ends the line, else it was lone.
        self._cr_at_edge = False
        #: An AUTH was classified on the current line: hold every line after its LF.
        self._auth_on_line = False
        #: After an AUTH line: every line waits for a verdict.
        self._holding = False

    def _start_line(self) -> None:
        self._secret_emitted = False
        self._pending_cr = False
        self._mode = _Mode.COMMAND
        self._keyword.clear()
        self._keyword_too_long = False
        self._words = 0
        self._in_blank = True

    def _end_of_line(self) -> None:
        """An LF ended the line: after an AUTH on it, every later line is held."""
        self._mode = _Mode.LINE_START
        if self._auth_on_line:
            self._auth_on_line = False
            self._holding = True

    def _line_boundary(self, data: bytes, pos: int, out: bytearray) -> int | None:
        """At a CR in CLEAR/COMMAND mode: emit it and return where the next line starts,
        or None when the CR is the last byte of the chunk (decided by the next chunk)."""
        out.append(_CR)
        if pos + 1 >= len(data):
            self._cr_at_edge = True
            return None
        if data[pos + 1] == _LF:
            out.append(_LF)
            self._end_of_line()
            return pos + 2
        return self._after_lone_cr(pos + 1)

    def _after_lone_cr(self, pos: int) -> int:
        """A lone CR: what follows is classified as a new line, unless it follows an AUTH
        (a server that ends lines there would take it as SASL data: secret to the LF)."""
        if self._auth_on_line or self._secret_verb_open():
            self._start_line()
            self._mode = _Mode.SECRET
        else:
            self._mode = _Mode.LINE_START
        return pos

    def _secret_verb_open(self) -> bool:
        """The line's first word is PASS, APOP or AUTH and its secret has not begun: a
        server that splits words at any C blank takes a CR as a separator, so what
        follows a lone CR there is the secret (the line's own rule, :func:`mask_line`)."""
        return (
            self._mode is _Mode.COMMAND
            and not self._keyword_too_long
            and bytes(self._keyword) in SECRET_VERBS
        )

    def _consume_clear(self, data: bytes, pos: int, out: bytearray) -> int:
        size = len(data)
        newline = data.find(b"\n", pos)
        end = size if newline < 0 else newline
        cr = data.find(b"\r", pos, end)
        if cr >= 0:
            out += data[pos:cr]
            following = self._line_boundary(data, cr, out)
            return size if following is None else following
        if newline < 0:
            out += data[pos:]
            return size
        out += data[pos : newline + 1]
        self._end_of_line()
        return newline + 1

    def _consume_command(self, data: bytes, pos: int, out: bytearray) -> int:
        """Pass bytes through until the first words show whether a secret follows."""
        size = len(data)
        while pos < size:
            byte = data[pos]
            if byte == _LF:
                out.append(byte)
                self._line_ended_in_command()
                self._end_of_line()
                return pos + 1
            if byte == _CR:
                self._line_ended_in_command()
                following = self._line_boundary(data, pos, out)
                return size if following is None else following
            if byte in _SEPARATORS:
                if self._in_blank:
                    # A run of separators between words: skipped with one search.
                    found = SEPARATOR_RUN_END.search(data, pos)
                    stop = size if found is None else found.start()
                    out += data[pos:stop]
                    pos = stop
                    continue
                out.append(byte)
                pos += 1
                self._in_blank = True
                self._words += 1
                verdict = self._decide()
                if verdict is not None:
                    self._mode = verdict
                    return pos
                continue
            self._in_blank = False
            if self._words:
                # A word after the keyword (the APOP name, the AUTH mechanism), however
                # long: skipped with one search.
                found = WORD_END.search(data, pos)
                stop = size if found is None else found.start()
                out += data[pos:stop]
                pos = stop
                continue
            following = self._first_word_byte(byte, pos, out)
            if following is not None:
                return following
            out.append(byte)
            pos += 1
        return pos

    def _first_word_byte(self, byte: int, pos: int, out: bytearray) -> int | None:
        """A byte of the first word at ``pos``: where the line goes on once its kind is
        decided (CLEAR or SECRET), or None while the word may still be a keyword."""
        if len(self._keyword) < _KEYWORD_LIMIT:
            self._keyword.append(byte & 0xDF if 0x61 <= byte <= 0x7A else byte)
            if bytes(self._keyword) not in KEYWORD_PREFIXES:
                # The first word cannot begin with a secret keyword: the line is
                # clear, and the rest of it is skipped with bytes.find.
                out.append(byte)
                self._mode = _Mode.CLEAR
                return pos + 1
        else:
            # A fifth byte glued to the keyword: a letter makes another word
            # (PASSWORD); anything else glues the secret to it (PASS1secret).
            self._keyword_too_long = True
            if byte not in LETTERS and bytes(self._keyword) in SECRET_VERBS:
                self._auth_on_line |= self._keyword == SASL_KEYWORD
                self._mode = _Mode.SECRET
                return pos
            out.append(byte)
            self._mode = _Mode.CLEAR
            return pos + 1
        return None

    def _secret_after(self) -> int | None:
        if self._keyword_too_long:
            return None
        return SECRET_VERBS.get(bytes(self._keyword))

    def _decide(self) -> _Mode | None:
        """After a word ended at a separator: SECRET, CLEAR, or None while undecided."""
        after = self._secret_after()
        if after is None:
            return _Mode.CLEAR
        if self._keyword == SASL_KEYWORD:
            self._auth_on_line = True
        if self._words < after:
            return None
        return _Mode.SECRET

    def _line_ended_in_command(self) -> None:
        """``AUTH`` alone, or ``AUTH mechanism`` without an initial response."""
        if self._keyword == SASL_KEYWORD and not self._keyword_too_long:
            self._auth_on_line = True

    # -- secrets ----------------------------------------------------------------------------

    def _consume_secret(self, data: bytes, pos: int, out: bytearray) -> int:
        newline = data.find(b"\n", pos)
        end = len(data) if newline < 0 else newline
        if end > pos:
            last_is_cr = data[end - 1] == _CR
            secret_bytes = end - pos - (1 if last_is_cr else 0) + (1 if self._pending_cr else 0)
            if secret_bytes > 0:
                self._emit_placeholder(out)
            self._pending_cr = last_is_cr
        if newline < 0:
            return len(data)
        out += b"\r\n" if self._pending_cr else b"\n"
        self._pending_cr = False
        self._end_of_line()
        return newline + 1

    def _emit_placeholder(self, out: bytearray) -> None:
        if not self._secret_emitted:
            out += SECRET_PLACEHOLDER_BYTES
            self._secret_emitted = True


class SecretMasker(_LineSteps):
    """Replace secret bytes with ``********``; everything else passes through unchanged."""

    def __init__(self, offset: int = 0, *, distrusted: bool = False) -> None:
        super().__init__()
        #: Client-stream offset of the next byte fed.
        self._offset = offset
        #: Lines after an AUTH, and the masked bytes released in stream order.
        self._lines = HeldLines(distrusted=distrusted)
        self._last_at = 0.0

    # ------------------------------------------------------------------ public API

    @property
    def holding(self) -> bool:
        """Complete lines wait for a verdict: server bytes may resolve them."""
        return bool(self._lines.held)

    def mask(self, data: bytes, at: float = 0.0) -> bytes:
        """Return what of ``data`` can be written now, secrets replaced; call once per
        chunk, in order. Lines held for a verdict come out of :meth:`take_released`."""
        if (
            self._mode is _Mode.LINE_START
            and not (self._cr_at_edge or self._holding or self._lines.released)
            and data.endswith(b"\n")
            and not may_hold_secret(data)
        ):
            # Whole lines, none of them PASS, APOP or AUTH: nothing to mask, and the
            # state after them is a line start again, as the byte-wise path would leave it.
            self._offset += len(data)
            self._last_at = at
            return data
        if self._holding or self._lines.released or self._auth_on_line:
            return self.mask_bytewise(data, at)
        # Python work here is a few steps per chunk: runs of lines the line rule decides
        # alone are matched and masked by C-level regular expressions, lines that cannot
        # begin with a secret keyword are found by keyword searches, and the byte steps see
        # only the line the last chunk left open, an AUTH line and the chunk's last line.
        out = bytearray()
        pos = 0
        while pos < len(data):
            if self._holding or self._auth_on_line:
                out += self.mask_bytewise(data[pos:], at)
                break
            if self._cr_at_edge:
                # The last chunk ended with a CR: a LF ends that line, anything else made
                # the CR a lone one and starts a line here.
                if data[pos] == _LF:
                    out += self.mask_bytewise(data[pos : pos + 1], at)
                    pos += 1
                else:
                    self._cr_at_edge = False
                    self._after_lone_cr(pos)
                continue
            if self._mode is _Mode.LINE_START:
                end = self._clear_lines_end(data, pos)
                if end > pos:
                    out += data[pos:end]
                else:
                    masked, end = mask_run(data, pos)
                    out += masked
                if end > pos:
                    self._offset += end - pos
                    self._last_at = at
                    pos = end
                    continue
            # This line may hold a secret (or the chunk cuts it): step it.
            end = self._line_end(data, pos)
            out += self.mask_bytewise(data[pos:end], at)
            pos = end
        return bytes(out)

    @staticmethod
    def _clear_lines_end(data: bytes, pos: int) -> int:
        """Where the lines from ``pos`` whose first word cannot begin with a secret keyword
        end: at the next one that may, or after the chunk's last line end."""
        found = next_keyword_line(data, pos)
        if found >= 0:
            return found
        lf = data.rfind(b"\n", pos)
        start = max(pos, lf + 1)
        cr = data.rfind(b"\r", start, len(data) - 1)  # a lone CR after the last LF
        return max(start, cr + 1)

    def _line_end(self, data: bytes, pos: int) -> int:
        """Where the line open at ``pos`` ends for classification: past its LF, or past a
        CR (a lone CR ends a line outside a secret); the chunk's end if neither is there."""
        size = len(data)
        newline = data.find(b"\n", pos)
        stop = size if newline < 0 else newline + 1
        if self._mode is _Mode.SECRET:
            return stop
        cr = data.find(b"\r", pos, stop)
        if cr < 0:
            return stop
        if cr + 1 < size and data[cr + 1] == _LF:
            return cr + 2
        return cr + 1

    def mask_bytewise(self, data: bytes, at: float = 0.0) -> bytes:
        """:meth:`mask` without its shortcut for chunks of whole lines without secrets."""
        out = bytearray()
        pos = 0
        size = len(data)
        self._last_at = at
        before = len(self._lines.released)
        if self._holding:
            self._lines.hold(data, 0, at, self._offset)
            self._offset += size
            return b""
        if self._cr_at_edge and size:
            self._cr_at_edge = False
            if data[0] == _LF:
                out.append(_LF)
                pos = 1
                self._end_of_line()
            else:
                self._after_lone_cr(0)
        while pos < size:
            if self._holding:
                self._lines.hold(data, pos, at, self._offset)
                break
            mode = self._mode
            if mode is _Mode.LINE_START:
                self._start_line()
            elif mode is _Mode.CLEAR:
                pos = self._consume_clear(data, pos, out)
            elif mode is _Mode.SECRET:
                pos = self._consume_secret(data, pos, out)
            else:
                pos = self._consume_command(data, pos, out)
        self._offset += size
        if before and out:
            # Earlier lines still wait to be taken: these bytes come after them.
            self._lines.released.insert(before, (at, out))
            return b""
        return bytes(out)

    def resolve(self, end: int, verdict: Verdict) -> None:
        """The observer classified the client line that ends at stream offset ``end``."""
        self._lines.resolve(end, verdict)

    def distrust(self) -> None:
        """The pairing is lost or in doubt: mask every line after an AUTH from now on."""
        self._lines.distrust()

    def end_of_stream(self) -> None:
        """The client stream ended: a partial line is complete as it is.

        Before an AUTH, the bytes still held back (a pending CR) come out of
        :meth:`take_released`; after it the partial line waits for its verdict.
        """
        if self._holding:
            if self._lines.open_length:
                self._lines.close_open_line(b"", self._offset)
            return
        tail = b""
        if self._pending_cr and not self._secret_emitted:
            tail = b"\r"
        self._pending_cr = False
        if tail:
            self._lines.released.append((self._last_at, bytearray(tail)))

    def abandon(self) -> None:
        """The session ends: every line still without a verdict is masked."""
        if self._holding and self._lines.open_length:
            self._lines.close_open_line(b"", self._offset)
        self._lines.mask_all()

    def adopt_released(self, released: list[tuple[float, bytes]]) -> None:
        """Bytes another masker released and nobody took yet: they come first."""
        self._lines.released[:0] = [(at, bytearray(data)) for at, data in released]

    def take_released(self) -> list[tuple[float, bytes]]:
        """Masked bytes ready to be written, with the time their lines arrived, in order."""
        released, self._lines.released = self._lines.released, []
        return [(at, bytes(data)) for at, data in released]
