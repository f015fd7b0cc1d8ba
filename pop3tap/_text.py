"""Text that is safe to print on a terminal: control characters are shown escaped.

Greetings, responses, stray lines and certificate fields come from peers pop3tap does not
trust; printed raw, an ESC or OSC sequence in them could retitle the terminal, clear the
screen or fake coloured log lines. Every human-facing output passes text through
:func:`printable` (JSON output is already escaped by the encoder).
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["json_safe", "printable"]

#: C0 and C1 controls, DEL, line/paragraph separators, the bidirectional controls that
#: can reorder what a terminal shows (Unicode TR#9 §2), and lone surrogates (the bytes of
#: a file name that is not UTF-8, PEP 383), which no UTF-8 output can encode.
_UNSAFE: Final = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
_NAMED: Final = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with every control character written as a ``\\xNN``/``\\uNNNN`` escape."""
    if text.isprintable():
        return text
    return _UNSAFE.sub(_escape, text)


#: What ``json.dumps(..., ensure_ascii=False)`` leaves raw but a terminal may act on.
_JSON_UNSAFE: Final = re.compile(
    "[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)


def json_safe(line: str) -> str:
    """A JSON text with the controls JSON allows raw written as ``\\uNNNN`` escapes.

    The result is the same JSON value; only its spelling changes (RFC 8259 §7).
    """
    if line.isascii() and "\x7f" not in line:
        return line
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", line)
