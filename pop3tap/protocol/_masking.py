"""Streaming redaction of secrets in the client-to-server byte stream.

The capture keeps the bytes each direction carried, so secrets must be masked in the bytes
themselves, chunk by chunk, without waiting for whole lines (a password line may arrive in
pieces). Only the client direction carries secrets: the PASS argument (RFC 1939 §7), the
APOP digest (RFC 1939 §7), an AUTH initial response and every SASL response line while an
AUTH is open (RFC 5034 §4). A SASL line that is exactly ``*`` (cancel) is kept.

Lines end at LF. Outside a secret, a CR that is not followed by LF also ends a line for
the purpose of classification: a server that splits lines at a lone CR would otherwise
run a ``PASS`` that the masker took for the tail of the line before it. Inside a secret
everything up to LF stays masked, lone CRs included.

Memory is constant: only the first word of a line (at most a few bytes) is kept, and the
position of the secret is found by counting words, however long the user name is.
"""

from __future__ import annotations

from enum import Enum

from pop3tap.protocol._commands import SECRET_PLACEHOLDER_BYTES

#: Keywords whose arguments hold a secret, and the word after which the secret begins:
#: ``PASS secret``, ``APOP name digest``, ``AUTH mechanism initial-response``.
_SECRET_AFTER_WORDS = {b"PASS": 1, b"APOP": 2, b"AUTH": 2}
#: Longer first words cannot be one of those keywords.
_KEYWORD_LIMIT = 4



def _may_hold_secret(data: bytes) -> bool:
    """Whether a keyword of :data:`_SECRET_AFTER_WORDS` occurs anywhere, in any case."""
    upper = data.upper()
    return any(keyword in upper for keyword in _SECRET_AFTER_WORDS)


_CR = 0x0D
_LF = 0x0A
_BLANKS = (0x20, 0x09)


class _Mode(Enum):
    LINE_START = 0
    COMMAND = 1
    CLEAR = 2
    SECRET = 3
    SASL_FIRST = 4


class SecretMasker:
    """Replace secret bytes with ``********``; everything else passes through unchanged."""

    def __init__(self) -> None:
        self._mode = _Mode.LINE_START
        #: First word of the current command line (upper-cased, at most a few bytes).
        self._keyword = bytearray()
        self._keyword_too_long = False
        #: Words completed so far on the current line, and whether we are between words.
        self._words = 0
        self._in_blank = True
        self._secret_emitted = False
        #: SECRET/SASL: the last byte seen was a CR (terminator or secret, not yet known).
        self._pending_cr = False
        #: CLEAR/COMMAND: a CR ended the last chunk; LF next ends the line, else it was lone.
        self._cr_at_edge = False
        self._auth_open = False
        self._held_star = False

    def auth_finished(self) -> None:
        """The server gave AUTH its final answer: client lines are commands again."""
        self._auth_open = False

    def mask(self, data: bytes) -> bytes:
        """Return ``data`` with secret bytes replaced; call once per chunk, in order."""
        if (
            self._mode is _Mode.LINE_START
            and not (self._cr_at_edge or self._auth_open or self._held_star)
            and data.endswith(b"\n")
            and not _may_hold_secret(data)
        ):
            # Whole lines, none of them PASS, APOP or AUTH: nothing to mask, and the
            # state after them is a line start again, as the byte-wise path would leave it.
            return data
        return self.mask_bytewise(data)

    def mask_bytewise(self, data: bytes) -> bytes:
        """:meth:`mask` without its shortcut for chunks of whole lines without secrets."""
        out = bytearray()
        pos = 0
        size = len(data)
        if self._cr_at_edge and size:
            self._cr_at_edge = False
            if data[0] == _LF:
                out.append(_LF)
                pos = 1
            self._mode = _Mode.LINE_START
        while pos < size:
            mode = self._mode
            if mode is _Mode.LINE_START:
                self._start_line()
            elif mode is _Mode.CLEAR:
                pos = self._consume_clear(data, pos, out)
            elif mode is _Mode.SECRET:
                pos = self._consume_secret(data, pos, out)
            elif mode is _Mode.SASL_FIRST:
                pos = self._consume_sasl_first(data, pos, out)
            else:
                pos = self._consume_command(data, pos, out)
        return bytes(out)

    def flush(self) -> bytes:
        """Bytes still held back at end of stream (a lone ``*`` or a pending CR)."""
        out = b""
        if self._held_star:
            out += b"*"
            self._held_star = False
        if self._pending_cr and not self._secret_emitted:
            out += b"\r"
        self._pending_cr = False
        return out

    # -- line classification --------------------------------------------------------------

    def _start_line(self) -> None:
        self._secret_emitted = False
        self._pending_cr = False
        if self._auth_open:
            self._mode = _Mode.SASL_FIRST
            return
        self._mode = _Mode.COMMAND
        self._keyword.clear()
        self._keyword_too_long = False
        self._words = 0
        self._in_blank = True

    def _line_boundary(self, data: bytes, pos: int, out: bytearray) -> int | None:
        """At a CR in CLEAR/COMMAND mode: emit it and return where the next line starts,
        or None when the CR is the last byte of the chunk (decided by the next chunk)."""
        out.append(_CR)
        if pos + 1 >= len(data):
            self._cr_at_edge = True
            return None
        if data[pos + 1] == _LF:
            out.append(_LF)
            return pos + 2
        return pos + 1  # a lone CR: what follows is classified as a new line

    def _consume_clear(self, data: bytes, pos: int, out: bytearray) -> int:
        size = len(data)
        newline = data.find(b"\n", pos)
        end = size if newline < 0 else newline
        cr = data.find(b"\r", pos, end)
        if cr >= 0:
            out += data[pos:cr]
            following = self._line_boundary(data, cr, out)
            if following is None:
                return size
            self._mode = _Mode.LINE_START
            return following
        if newline < 0:
            out += data[pos:]
            return size
        out += data[pos : newline + 1]
        self._mode = _Mode.LINE_START
        return newline + 1

    def _consume_command(self, data: bytes, pos: int, out: bytearray) -> int:
        """Pass bytes through until the first words show whether a secret follows."""
        size = len(data)
        while pos < size:
            byte = data[pos]
            if byte == _LF:
                out.append(byte)
                self._line_ended_in_command()
                self._mode = _Mode.LINE_START
                return pos + 1
            if byte == _CR:
                self._line_ended_in_command()
                following = self._line_boundary(data, pos, out)
                self._mode = _Mode.LINE_START
                return size if following is None else following
            out.append(byte)
            pos += 1
            if byte in _BLANKS:
                if not self._in_blank:
                    self._in_blank = True
                    self._words += 1
                    verdict = self._decide()
                    if verdict is not None:
                        self._mode = verdict
                        return pos
                continue
            self._in_blank = False
            if self._words == 0:
                if len(self._keyword) < _KEYWORD_LIMIT:
                    self._keyword.append(byte & 0xDF if 0x61 <= byte <= 0x7A else byte)
                else:
                    self._keyword_too_long = True
        return pos

    def _secret_after(self) -> int | None:
        if self._keyword_too_long:
            return None
        return _SECRET_AFTER_WORDS.get(bytes(self._keyword))

    def _decide(self) -> _Mode | None:
        """After a word ended at a blank: SECRET, CLEAR, or None while still undecided."""
        after = self._secret_after()
        if after is None:
            return _Mode.CLEAR
        if self._words < after:
            return None
        if bytes(self._keyword) == b"AUTH":
            self._auth_open = True
        return _Mode.SECRET

    def _line_ended_in_command(self) -> None:
        """``AUTH mechanism`` without an initial response still opens a SASL exchange."""
        words = self._words + (0 if self._in_blank else 1)
        if bytes(self._keyword) == b"AUTH" and not self._keyword_too_long and words >= 2:
            self._auth_open = True

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
        self._mode = _Mode.LINE_START
        return newline + 1

    def _emit_placeholder(self, out: bytearray) -> None:
        if not self._secret_emitted:
            out += SECRET_PLACEHOLDER_BYTES
            self._secret_emitted = True

    def _consume_sasl_first(self, data: bytes, pos: int, out: bytearray) -> int:
        byte = data[pos]
        if not self._held_star:
            if byte == 0x2A:  # "*": maybe a cancel line, hold it
                self._held_star = True
                return pos + 1
            self._mode = _Mode.SECRET
            return pos
        if byte == _CR and not self._pending_cr:
            self._pending_cr = True
            return pos + 1
        if byte == _LF:
            out += b"*\r\n" if self._pending_cr else b"*\n"
            self._held_star = False
            self._pending_cr = False
            self._mode = _Mode.LINE_START
            return pos + 1
        # "*" followed by more data: the whole line is a secret after all.
        self._held_star = False
        self._pending_cr = False
        self._emit_placeholder(out)
        self._mode = _Mode.SECRET
        return pos
