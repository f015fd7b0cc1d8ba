"""What a server line says: its status token, an extended response code, the APOP
timestamp of a greeting, and protocol bytes decoded for display (RFC 1939 §3 and §7,
RFC 2449 §8, RFC 5034 §4). No verb rules live here: :mod:`._commands` holds them."""

from __future__ import annotations

import re

_APOP_TIMESTAMP = re.compile(rb"<[^<>]*@[^<>]*>")


def decode_text(data: bytes) -> str:
    """Decode protocol bytes for display: UTF-8 where valid, escapes elsewhere."""
    return data.decode("utf-8", "backslashreplace")


def find_apop_timestamp(greeting: bytes) -> str | None:
    """The ``<...@...>`` APOP timestamp in a greeting, if any (RFC 1939 §7)."""
    match = _APOP_TIMESTAMP.search(greeting)
    return None if match is None else decode_text(match.group(0))


def parse_status(line: bytes) -> tuple[str | None, bytes]:
    """Split a server line into its status token and the text after it.

    The token runs up to the first space (RFC 1939 §3; ``+OK`` with no text is common).
    ``+`` alone or followed by a space is a SASL continuation (RFC 5034 §4).
    Returns ``(None, line)`` for a line that is not a status line.
    """
    space = line.find(b" ")
    token = line if space < 0 else line[:space]
    rest = b"" if space < 0 else line[space + 1 :]
    if token == b"+OK":
        return "+OK", rest
    if token == b"-ERR":
        return "-ERR", rest
    if token == b"+":
        return "+", rest
    return None, line


def find_resp_code(text: bytes) -> str | None:
    """The RFC 2449 §8 extended response code at the start of the text, if any."""
    if not text.startswith(b"["):
        return None
    end = text.find(b"]")
    if end <= 1:
        return None
    return text[1:end].decode("ascii", "backslashreplace").upper()
