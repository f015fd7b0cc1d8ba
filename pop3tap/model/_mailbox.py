"""The mailbox model: what a capture says about a mailbox, as values (no I/O of its own).

A capture of a POP3 session holds most of what a server knew about the mailbox: the
message count and sizes (STAT, LIST; RFC 1939 §5), the unique ids (UIDL, RFC 1939 §7), the
full messages it sent for RETR and the headers it sent for TOP, and the server's own
wording for each answer. This module holds those facts as values (:class:`Mailbox`), the
body framing rules of RFC 1939 §3, and which recorded answers can be reused;
:func:`~pop3tap.model._gather.mailboxes_from_sessions` gathers them from captures.

Messages can also come from files (:mod:`pop3tap.model._files`): their bodies are then read
from disk when a client asks for them, never held.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pop3tap.protocol import COMMANDS, AnswerSource, spec_of

__all__ = [
    "Mailbox",
    "MessageSource",
    "ModelError",
    "ModelMessage",
    "RecordedAnswer",
    "Wording",
    "dot_stuff",
    "unstuff_body",
]


class ModelError(Exception):
    """The captures or message files cannot form a mailbox; the message is one line."""


#: A message body read on demand (from a file): returns the message with CRLF line endings.
MessageSource = Callable[[], bytes]


@dataclass(slots=True)
class ModelMessage:
    """One message of the modelled mailbox (numbers start at 1, RFC 1939 §5)."""

    #: Size in octets as the server reported it (LIST), or of the body when only that is known.
    size: int
    #: The unique id (RFC 1939 §7: 1-70 characters in 0x21-0x7E), None when never recorded.
    uid: str | None = None
    #: The full message (dot-unstuffed, the server's line endings), when RETR was recorded.
    body: bytes | None = None
    #: Header block including the blank line after it, when only TOP was recorded.
    headers: bytes | None = None
    #: Reads the body from disk (message files); used instead of ``body`` when set.
    source: MessageSource | None = None

    def full_body(self) -> bytes | None:
        """The whole message, from memory or from its file; None when unknown."""
        if self.source is not None:
            return self.source()
        return self.body


@dataclass(frozen=True, slots=True)
class RecordedAnswer:
    """The raw bytes a recorded server sent for one command in one mailbox state."""

    data: bytes
    capture: str
    seq: int


#: The state a recorded answer depends on: (logged in, TLS up, numbers marked deleted).
StateKey = tuple[bool, bool, frozenset[int]]


@dataclass(slots=True)
class Wording:
    """The recorded server's own status lines, as templates (``{n}``, ``{size}``, ``{count}``).

    Each field holds the text after ``+OK``/``-ERR``; defaults are close to common servers.
    """

    retr: str = "{size} octets"
    top: str = ""
    list_all: str = "{count} messages:"
    uidl_all: str = ""
    dele: str = "Marked to be deleted."
    rset: str = ""
    noop: str = ""
    quit: str = "Logging out."
    quit_deleted: str = "Logging out, messages deleted."
    user: str = ""
    login: str = "Logged in."
    login_failed: str = "[AUTH] Authentication failed."
    no_message: str = "There's no message {n}."
    deleted: str = "Message is deleted."
    unknown: str = "Unknown command."
    not_logged_in: str = "Unknown AUTHORIZATION state command"
    bad_args: str = "Invalid message number."
    no_user: str = "No username given."
    in_use: str = "[IN-USE] Mailbox is locked by another POP3 session."
    stls: str = "Begin TLS negotiation now."
    auth_aborted: str = "Authentication aborted by client."
    #: b"\r\n", or b"\n" for a server that ended its lines with a bare LF.
    newline: bytes = b"\r\n"


@dataclass(slots=True)
class Mailbox:
    """What the model serves for one user: messages, greeting, capabilities and wording."""

    user: str | None
    messages: list[ModelMessage]
    #: The recorded greeting line (with its line ending); None: a default is made.
    greeting: bytes | None = None
    #: The CAPA lines (without endings) as recorded; None: the server never answered CAPA.
    capabilities: list[bytes] | None = None
    wording: Wording = field(default_factory=Wording)
    #: The server answered LAST (RFC 1460; dropped from RFC 1725 on).
    has_last: bool = False
    #: SASL mechanisms seen in AUTH commands or advertised in CAPA (upper case).
    mechanisms: set[str] = field(default_factory=set)
    #: The password recorded in clear (captures with secrets kept), for checking logins.
    password: str | None = None
    #: Recorded raw answers by (verb, argument key, state).
    recorded: dict[tuple[str, bytes, StateKey], RecordedAnswer] = field(default_factory=dict)
    #: Recorded SASL challenges per mechanism (the ``+`` lines, with endings).
    challenges: dict[str, list[bytes]] = field(default_factory=dict)
    #: Where the facts came from (capture names), for messages.
    sources: list[str] = field(default_factory=list)

    @property
    def total_size(self) -> int:
        return sum(m.size for m in self.messages)


################################################################
# Multi-line bodies (RFC 1939 §3)
################################################################


def _lines_with_endings(data: bytes) -> list[bytes]:
    """Split after each LF, keeping the endings (a last line without one is kept too)."""
    lines = data.split(b"\n")
    out = [line + b"\n" for line in lines[:-1]]
    if lines[-1]:
        out.append(lines[-1])
    return out


def unstuff_body(response: bytes) -> tuple[bytes, bytes] | None:
    """``(status line, body)`` of a complete multi-line response, dot-unstuffed; or None.

    The body keeps the server's line endings; the terminating ``.`` line is removed.
    """
    lines = _lines_with_endings(response)
    if len(lines) < 2 or lines[-1].rstrip(b"\r\n") != b".":
        return None
    body = [line[1:] if line.startswith(b".") else line for line in lines[1:-1]]
    return lines[0], b"".join(body)


def dot_stuff(body: bytes) -> bytes:
    """``body`` as it goes inside a multi-line response: CRLF lines, leading dots doubled.

    Bare LF and bare CR become CRLF, and a last line without an ending gets one
    (RFC 1939 §3: every line of a multi-line response ends with CRLF).
    """
    if not body:
        return b""
    text = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if not text.endswith(b"\n"):
        text += b"\n"
    lines = text.split(b"\n")[:-1]
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)


def crlf_size(body: bytes) -> int:
    """The size of ``body`` once its lines end in CRLF (what LIST reports)."""
    text = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if text and not text.endswith(b"\n"):
        text += b"\n"
    return len(text) + text.count(b"\n")


def header_block(body: bytes) -> bytes:
    """The header lines and the blank line after them (the whole text when there is none)."""
    for separator in (b"\r\n\r\n", b"\n\n"):
        at = body.find(separator)
        if at >= 0:
            return body[: at + len(separator)]
    return body


################################################################
# Reusing recorded answers
################################################################

#: Verbs whose answers depend only on the login phase, never on the messages (the
#: command table's ``answer_from``).
STATELESS_VERBS = frozenset(
    verb for verb, spec in COMMANDS.items() if spec.answer_from is AnswerSource.PHASE
)
#: Verbs answered from the mailbox, whose recorded bytes are reused when the state matches.
MAILBOX_VERBS = frozenset(
    verb for verb, spec in COMMANDS.items() if spec.answer_from is AnswerSource.MAILDROP
)


def args_key(verb: str, args: bytes) -> bytes:
    """What must be equal for a client command to reuse a recorded answer."""
    if spec_of(verb).login:  # credentials differ: any recorded login answer will do
        return b""
    return b" ".join(args.split())


