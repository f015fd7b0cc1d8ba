"""Text that is safe to print on a terminal: control characters are shown escaped.

Greetings, responses, stray lines and certificate fields come from peers pop3tap does not
trust; printed raw, an ESC or OSC sequence in them could retitle the terminal, clear the
screen or fake coloured log lines. Every human-facing output passes text through
:func:`printable`, the one rule (the text views, the log's console view, the console's
server lines, the ``-ERR`` lines replay writes); JSON output is escaped by the encoder and
:func:`json_safe`. Layer 0: the protocol core may import it.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["escape_char", "json_safe", "printable"]

#: Everything but printable ASCII: the only characters that may need an escape. The
#: regular expression finds them in C; whether one does is then ``str.isprintable()``.
_NOT_PLAIN_ASCII: Final = re.compile("[^\x20-\x7e]")
_NAMED: Final = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def escape_char(char: str) -> str:
    """One character as Python writes it in a string literal: ``\\t``, ``\\n``, ``\\r``,
    ``\\xNN``, ``\\uNNNN`` or ``\\UNNNNNNNN`` (never ambiguous about where it ends)."""
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return char if char.isprintable() else escape_char(char)


def _escape_but_tab(match: re.Match[str]) -> str:
    char = match.group()
    return char if char == "\t" or char.isprintable() else escape_char(char)


def printable(text: str, *, keep_tabs: bool = False) -> str:
    """``text`` with every character ``str.isprintable()`` rejects written as an escape
    (:func:`escape_char`): pop3tap's one rule for text a terminal or a log line shows.

    Rejected are Unicode's "Other" and "Separator" categories but the ASCII space: C0
    controls, DEL and C1 controls (escape sequences, 8-bit CSI and OSC), U+2028/U+2029,
    the bidirectional controls that reorder what is shown (Unicode TR#9, CVE-2021-42574),
    zero-width and other format characters, lone surrogates (undecodable bytes, PEP 383),
    private-use and unassigned code points, and spaces other than U+0020 (NBSP among
    them). A viewer of hostile bytes must show what was sent: ``PASS\\xa0x`` is not
    ``PASS x`` to every server, and a zero-width space can hide inside a keyword.
    ``keep_tabs`` leaves tabs raw, for a line that is shown on a terminal line of its own
    (message headers fold with tabs). A backslash is left as it is: callers that must be
    reversible escape it first.
    """
    if text.isprintable():
        return text
    return _NOT_PLAIN_ASCII.sub(_escape_but_tab if keep_tabs else _escape, text)


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
