"""The POP3 command table: which responses are multi-line and which arguments are secret."""

from __future__ import annotations

import re

#: Mask that replaces secret bytes in logs and captures.
SECRET_PLACEHOLDER = "********"
SECRET_PLACEHOLDER_BYTES = SECRET_PLACEHOLDER.encode()

#: Commands whose ``+OK`` answer is always multi-line (RFC 1939 §5, §7; RFC 2449 §5).
_ALWAYS_MULTILINE = frozenset({"CAPA", "RETR", "TOP"})
#: Commands whose ``+OK`` answer is multi-line only without an argument (RFC 1939 §5, §7;
#: RFC 6856 §3 for LANG; AUTH without a mechanism lists mechanisms, a de-facto extension).
_MULTILINE_WITHOUT_ARG = frozenset({"LIST", "UIDL", "LANG", "AUTH"})

_APOP_TIMESTAMP = re.compile(rb"<[^<>]*@[^<>]*>")


def split_command(line: bytes) -> tuple[str, bytes]:
    """Split a command line into its upper-cased keyword and the raw argument bytes.

    Keywords and arguments are separated by a single space (RFC 1939 §3); RFC 1734 allows
    tabs after AUTH, so any run of spaces or tabs is accepted after the keyword.
    """
    stripped = line.lstrip(b" \t")
    cut = len(stripped)
    for index, byte in enumerate(stripped):
        if byte in (0x20, 0x09):
            cut = index
            break
    keyword = stripped[:cut].decode("ascii", "backslashreplace").upper()
    return keyword, stripped[cut:].lstrip(b" \t")


def expects_multiline(verb: str, args: bytes) -> bool:
    """Whether a ``+OK`` to this command opens a multi-line body (pop3-protocol §0 rule 2)."""
    if verb in _ALWAYS_MULTILINE:
        return True
    if verb in _MULTILINE_WITHOUT_ARG:
        return not args.strip()
    if verb == "XTND":
        return args.strip().upper().startswith(b"XLST")
    return False


def mask_arguments(verb: str, args: bytes) -> str:
    """The argument text as it may appear in a log: secrets replaced by the placeholder.

    PASS takes the rest of the line (RFC 1939 §7); the APOP digest is its second argument
    (RFC 1939 §7); an AUTH initial response follows the mechanism (RFC 5034 §4).
    """
    text = decode_text(args)
    if verb == "PASS":
        return SECRET_PLACEHOLDER if args else ""
    if verb in ("APOP", "AUTH"):
        parts = text.split(None, 1)
        if len(parts) == 2:
            return f"{parts[0]} {SECRET_PLACEHOLDER}"
    return text


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
