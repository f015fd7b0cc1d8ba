"""Deterministic RFC 5322 test messages (bytes, CRLF line ends, each ending in CRLF).

POP3 byte-stuffs lines starting with "." on the wire (RFC 1939 section 3); the messages here
are the unstuffed mailbox contents.
"""

from __future__ import annotations

CRLF = b"\r\n"


def _msg(headers: list[str], body_lines: list[bytes]) -> bytes:
    head = CRLF.join(h.encode("utf-8") for h in headers)
    return head + CRLF + CRLF + CRLF.join(body_lines) + CRLF


def _headers(subject: str, n: int, extra: list[str] | None = None) -> list[str]:
    return [
        "From: Sender One <sender@example.test>",
        "To: Receiver <receiver@example.test>",
        f"Subject: {subject}",
        "Date: Mon, 06 May 2024 10:00:00 +0000",
        f"Message-ID: <corpus-{n}@example.test>",
        *(extra or []),
    ]


SMALL: bytes = _msg(
    _headers("small message", 1),
    [b"Hello,", b"", b"this is a short plain ASCII message.", b"Bye"],
)

DOTSTUFFED: bytes = _msg(
    _headers("lines that begin with a dot", 2),
    [
        b"The next line is a single dot:",
        b".",
        b"and the next one two dots:",
        b"..",
        b".leading dot text",
        b"...three dots",
        b". dot space",
        b"middle . dot",
        b"last line",
    ],
)

UTF8: bytes = _msg(
    [
        "From: J\u00fcrgen M\u00fcller <juergen@example.test>",
        "To: Zo\u00eb <zoe@example.test>",
        "Subject: Gr\u00fc\u00dfe aus K\u00f6ln \u2014 \u65e5\u672c\u8a9e \U0001f600",
        "Date: Mon, 06 May 2024 10:00:00 +0000",
        "Message-ID: <corpus-3@example.test>",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
    ],
    [
        "Stra\u00dfe, na\u00efve caf\u00e9, \u00e5\u00e4\u00f6.".encode(),
        "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440!".encode(),
        ".\u00e9 starts with a dot".encode(),
        "\u3053\u3093\u306b\u3061\u306f".encode(),
    ],
)


def big_message(size_bytes: int) -> bytes:
    """A message of exactly ``size_bytes`` bytes (at least 1 KiB), built by repeating a block.

    Some body lines start with "." or are exactly "." so they get byte-stuffed on the wire.
    """
    headers = _headers(f"big message of {size_bytes} bytes", 4)
    head = CRLF.join(h.encode() for h in headers) + CRLF + CRLF
    block_lines = [_big_line(i) for i in range(200)]
    block = CRLF.join(block_lines) + CRLF
    if size_bytes < 1024:
        raise ValueError("big_message needs at least 1024 bytes")
    room = size_bytes - len(head)
    blocks, rest = divmod(room, len(block))
    if blocks and rest < 2:
        blocks, rest = blocks - 1, rest + len(block)
    return head + block * blocks + _filler(rest)


def _big_line(i: int) -> bytes:
    """Line ``i`` of the repeated block of ``big_message``."""
    if i % 97 == 0:
        return b"."
    if i % 31 == 0:
        return b".." + b"d" * 40
    if i % 7 == 0:
        return b".dot line %05d" % i
    return b"line %05d " % i + b"abcdefghijklmnopqrstuvwxyz0123456789" * 2


def _filler(n: int) -> bytes:
    """Exactly ``n`` (>= 2, or 0) bytes of short CRLF-terminated lines."""
    out: list[bytes] = []
    while n:
        take = min(n, 78)
        if n - take == 1:
            take -= 1
        out.append(b"z" * (take - 2) + CRLF)
        n -= take
    return b"".join(out)


def long_line_message(line_len: int = 100 * 1024) -> bytes:
    """A message whose body holds one line of ``line_len`` bytes (excluding CRLF)."""
    pattern = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    line = (pattern * (line_len // len(pattern) + 1))[:line_len]
    return _msg(_headers(f"one line of {line_len} bytes", 5), [b"before", line, b"after"])


def standard_corpus(big_size: int = 3 * 1024 * 1024) -> list[bytes]:
    """The messages every ``mailbox`` fixture starts with, in order 1..4."""
    return [SMALL, DOTSTUFFED, UTF8, big_message(big_size)]
