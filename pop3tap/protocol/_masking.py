"""Streaming redaction of secrets in the client-to-server byte stream.

The capture keeps the bytes each direction carried, so secrets must be masked in the bytes
themselves, chunk by chunk, without waiting for whole lines (a password line may arrive in
pieces). Only the client direction carries secrets: the PASS argument (RFC 1939 §7), the
APOP digest (RFC 1939 §7), an AUTH initial response and every SASL response line while an
AUTH is open (RFC 5034 §4). A SASL line that is exactly ``*`` (cancel) is kept.
"""

from __future__ import annotations

from enum import Enum

from pop3tap.protocol._commands import SECRET_PLACEHOLDER_BYTES

#: How many bytes of a line may be examined before deciding it carries no secret. An APOP
#: user name longer than this is treated as a line without secrets.
_DECISION_LIMIT = 1024


class _Mode(Enum):
    LINE_START = 0
    UNDECIDED = 1
    CLEAR = 2
    SECRET = 3
    SASL_FIRST = 4


class SecretMasker:
    """Replace secret bytes with ``********``; everything else passes through unchanged."""

    def __init__(self) -> None:
        self._mode = _Mode.LINE_START
        self._prefix = bytearray()
        self._spaces_before_secret = 0
        self._secret_emitted = False
        self._pending_cr = False
        self._auth_open = False
        self._held_star = False

    def auth_finished(self) -> None:
        """The server gave AUTH its final answer: client lines are commands again."""
        self._auth_open = False

    def mask(self, data: bytes) -> bytes:
        """Return ``data`` with secret bytes replaced; call once per chunk, in order."""
        out = bytearray()
        pos = 0
        size = len(data)
        while pos < size:
            mode = self._mode
            if mode is _Mode.LINE_START:
                if self._auth_open:
                    self._mode = _Mode.SASL_FIRST
                else:
                    self._mode = _Mode.UNDECIDED
                    self._prefix.clear()
                self._secret_emitted = False
                self._pending_cr = False
                continue
            if mode is _Mode.CLEAR:
                newline = data.find(b"\n", pos)
                end = size if newline < 0 else newline + 1
                out += data[pos:end]
                pos = end
                if newline >= 0:
                    self._mode = _Mode.LINE_START
                continue
            if mode is _Mode.SECRET:
                pos = self._consume_secret(data, pos, out)
                continue
            if mode is _Mode.SASL_FIRST:
                pos = self._consume_sasl_first(data, pos, out)
                continue
            pos = self._consume_undecided(data, pos, out)
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

    def _consume_secret(self, data: bytes, pos: int, out: bytearray) -> int:
        newline = data.find(b"\n", pos)
        end = len(data) if newline < 0 else newline
        if end > pos:
            last_is_cr = data[end - 1] == 0x0D
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
        if byte == 0x0D and not self._pending_cr:
            self._pending_cr = True
            return pos + 1
        if byte == 0x0A:
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

    def _consume_undecided(self, data: bytes, pos: int, out: bytearray) -> int:
        """Pass bytes through until the line's keyword shows whether a secret follows."""
        size = len(data)
        prefix = self._prefix
        while pos < size:
            byte = data[pos]
            out.append(byte)
            pos += 1
            if byte == 0x0A:
                self._line_ended_undecided()
                self._mode = _Mode.LINE_START
                return pos
            if byte in (0x20, 0x09) and prefix and prefix[-1] not in (0x20, 0x09):
                verdict = self._decide_at_separator()
                if verdict is not None:
                    self._mode = verdict
                    return pos
            prefix.append(byte)
            if len(prefix) >= _DECISION_LIMIT:
                self._mode = _Mode.CLEAR
                return pos
        return pos

    def _decide_at_separator(self) -> _Mode | None:
        """At a separator after a word: SECRET, CLEAR, or None while still undecided."""
        words = bytes(self._prefix).split()
        keyword = words[0].upper()
        if keyword == b"PASS":
            return _Mode.SECRET
        if keyword in (b"APOP", b"AUTH"):
            if len(words) < 2:
                return None
            if keyword == b"AUTH":
                self._auth_open = True
            return _Mode.SECRET
        return _Mode.CLEAR

    def _line_ended_undecided(self) -> None:
        """``AUTH mechanism`` without an initial response still opens a SASL exchange."""
        words = bytes(self._prefix).split()
        if len(words) >= 2 and words[0].upper() == b"AUTH":
            self._auth_open = True
