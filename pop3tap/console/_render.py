"""What the console shows: server text made safe for a terminal, CAPA explained, message
headers parsed, and bounded previews of multi-line bodies."""

from __future__ import annotations

import email.parser
import email.policy
import re
from dataclasses import dataclass, field
from typing import Final

from pop3tap._text import printable

#: What each capability means (RFC 2449 §6, RFC 2595 §4, RFC 6856 §2 and §3).
_CAPABILITIES: Final = {
    "TOP": "TOP n lines: headers and the first lines of a message",
    "USER": "USER and PASS login",
    "SASL": "AUTH mechanisms: {args}",
    "RESP-CODES": "extended response codes such as [IN-USE] and [LOGIN-DELAY]",
    "AUTH-RESP-CODE": "[AUTH] response code when a login fails",
    "LOGIN-DELAY": "seconds to wait between logins: {args}",
    "PIPELINING": "commands may be sent without waiting for each answer",
    "EXPIRE": "messages are deleted by the server after: {args} (days, or NEVER)",
    "UIDL": "UIDL: unique, persistent message ids",
    "IMPLEMENTATION": "server software: {args}",
    "STLS": "STLS: upgrade this connection to TLS",
    "UTF8": "UTF-8 user names, passwords and messages",
    "LANG": "LANG: the language of server messages can be chosen",
}

#: Leading zeros are allowed: servers read ``01`` as message 1 (Dovecot deletes it).
_MESSAGE_NUMBER: Final = re.compile(r"0*([1-9][0-9]{0,9})")
_SUMMARY_HEADERS: Final = ("From", "To", "Subject", "Date")


def terminal_safe(data: bytes | str) -> str:
    """Text fit for a terminal: invalid UTF-8 as ``\\xNN`` and every character pop3tap's
    one rule rejects escaped (:func:`pop3tap._text.printable`). A hostile server could
    otherwise move the cursor, retitle the window or hide text with escape sequences,
    bidi overrides and zero-width characters. Tabs stay; line ends are the caller's.
    """
    text = data.decode("utf-8", "backslashreplace") if isinstance(data, bytes) else data
    return printable(text, keep_tabs=True)


def strip_line_end(line: bytes) -> bytes:
    if line.endswith(b"\r\n"):
        return line[:-2]
    return line[:-1] if line.endswith(b"\n") else line


def describe_capabilities(lines: list[str]) -> list[str]:
    """CAPA lines (RFC 2449 §5) as ``NAME  meaning`` lines, unknown ones as they are."""
    out: list[str] = []
    for line in lines:
        name, _, args = line.strip().partition(" ")
        template = _CAPABILITIES.get(name.upper())
        if template is None:
            out.append(f"  {line.strip()}")
            continue
        shown_args = ", ".join(args.split()) if name.upper() == "SASL" else args.strip()
        meaning = template.format(args=shown_args or "(none given)")
        out.append(f"  {name.upper():<16} {meaning}")
    return out


def parse_message_number(text: str) -> int | None:
    """A message number as RFC 1939 §3 allows (a positive decimal), or None."""
    match = _MESSAGE_NUMBER.fullmatch(text)
    return int(match.group(1)) if match else None


@dataclass(frozen=True, slots=True)
class HeaderSummary:
    """The headers a person looks at first, decoded (RFC 2047) and terminal-safe."""

    sender: str = ""
    to: str = ""
    subject: str = ""
    date: str = ""


def summarize_headers(block: bytes) -> HeaderSummary:
    """Parse a header block (RFC 5322 §2.2); garbage gives empty or raw fields."""
    try:
        # 8-bit headers are UTF-8 (RFC 6532 §3); encoded words are decoded by the policy.
        text = block.decode("utf-8", "replace")
        message = email.parser.HeaderParser(policy=email.policy.default).parsestr(text)
        fields = {name: str(message.get(name, "") or "") for name in _SUMMARY_HEADERS}
    except Exception:  # a malformed header must not end the session
        fields = {}
        for raw in block.split(b"\n"):
            name, sep, value = raw.partition(b":")
            key = name.decode("ascii", "replace").strip().title()
            if sep and key in _SUMMARY_HEADERS and key not in fields:
                fields[key] = value.decode("utf-8", "replace").strip()
    flat = {k: terminal_safe(_shorten(" ".join(v.split()))) for k, v in fields.items()}
    return HeaderSummary(
        sender=flat.get("From", ""),
        to=flat.get("To", ""),
        subject=flat.get("Subject", ""),
        date=flat.get("Date", ""),
    )


def _shorten(text: str, limit: int = 300) -> str:
    """At most ``limit`` characters: a header can be as long as the block that holds it."""
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


@dataclass(slots=True)
class BodyPreview:
    """The first lines of a multi-line body, and the size of all of it (bounded memory).

    ``keep_lines`` lines are kept (each at most ``max_line`` characters); the rest is only
    counted. For a message, the header block is kept apart (up to ``max_head`` bytes).
    """

    keep_lines: int
    message: bool = False
    max_head: int = 64 * 1024
    max_line: int = 1000
    size: int = 0
    lines: int = 0
    head: bytearray = field(default_factory=bytearray)
    head_lines: int = 0
    in_head: bool = True
    kept: list[str] = field(default_factory=list)
    body_lines: int = 0

    def feed(self, piece: bytes, line_start: bool) -> None:
        """One piece of a dot-unstuffed line, with its line end if it has one."""
        self.size += len(piece)
        if line_start:
            self.lines += 1
        if self.message and self.in_head:
            if line_start and piece in (b"\r\n", b"\n"):
                self.in_head = False
                return
            if line_start:
                self.head_lines += 1
            room = self.max_head - len(self.head)
            if room > 0:
                self.head += piece[:room]
            return
        if line_start:
            self.body_lines += 1
            if len(self.kept) < self.keep_lines:
                self.kept.append(terminal_safe(strip_line_end(piece)[: self.max_line]))

    @property
    def more_lines(self) -> int:
        """Body lines seen but not kept."""
        return self.body_lines - len(self.kept)
