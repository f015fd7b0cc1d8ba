"""Multi-line response bodies as the mailbox held them (RFC 1939 §3 byte-stuffing undone)."""

from __future__ import annotations

__all__ = ["unstuff_body"]


def unstuff_body(raw_response: bytes) -> tuple[bytes, bool]:
    """The body of a raw multi-line response, dot-unstuffed, and whether it was terminated.

    The first (status) line is dropped; every other line keeps its own line end, so the
    result is byte for byte what the server had before it stuffed it. The ``.CRLF`` line
    ends the body (RFC 1939 §3); a body without it (a truncated stream) is returned as far
    as it goes, with ``False``.
    """
    first_end = raw_response.find(b"\n")
    if first_end < 0:
        return b"", False
    out: list[bytes] = []
    pos = first_end + 1
    size = len(raw_response)
    while pos < size:
        end = raw_response.find(b"\n", pos)
        line = raw_response[pos:] if end < 0 else raw_response[pos : end + 1]
        pos = size if end < 0 else end + 1
        if end >= 0 and line in (b".\r\n", b".\n"):
            return b"".join(out), True
        out.append(line[1:] if line.startswith(b".") else line)
    return b"".join(out), False
