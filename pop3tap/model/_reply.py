"""What a model session answers with, and the helpers every state shares: the reply
(bytes, what to do next, how the command may be logged), the phases of RFC 1939 §3 with
RFC 5034's SASL step, the greeting with its APOP timestamp (§7), and replies in the
recorded server's wording.
"""


from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from pop3tap.model._mailbox import (
    Mailbox,
    ModelMessage,
    StateKey,
    Wording,
    dot_stuff,
)
from pop3tap.model._store import ModelStore
from pop3tap.protocol import shown_command

#: An APOP timestamp in a greeting (RFC 1939 §7: ``<...>``).
_APOP_STAMP = re.compile(rb"<[^<>\s]{1,250}>")


class Phase(enum.Enum):
    """Where a model session is (RFC 1939 §3, RFC 5034 §4)."""

    #: Before a successful login.
    AUTHORIZATION = "authorization"
    #: Inside AUTH, waiting for the client's answer to a ``+`` challenge.
    SASL = "sasl"
    #: Logged in.
    TRANSACTION = "transaction"
    #: QUIT was answered; nothing more is read.
    DONE = "done"


class Next(enum.Enum):
    """What the connection does after sending a reply."""

    READ = "read"
    #: Start TLS as server (the reply was STLS's ``+OK``).
    START_TLS = "start_tls"
    #: Close the connection (after QUIT).
    CLOSE = "close"


class Display:
    """How a client line may be logged, worked out only if something logs it.

    The protocol core decides (``shown_command``: after an AUTH only valid commands are
    shown); most answers are never logged above debug level, so it is not done per line.
    """

    __slots__ = ("_after_auth", "_line", "_text")

    def __init__(self, line: bytes = b"", *, after_auth: bool = False, text: str | None = None):
        self._line = line
        self._after_auth = after_auth
        self._text = text

    @classmethod
    def fixed(cls, text: str) -> Display:
        return cls(text=text)

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = shown_command(self._line, after_auth=self._after_auth)
        return self._text


@dataclass(frozen=True, slots=True)
class Reply:
    """Bytes for the client and what to do next."""

    data: bytes
    next: Next
    #: True when the bytes are a recorded server's own, False when the model made them.
    recorded: bool
    display: Display

    @property
    def command(self) -> str:
        """The command as it may be logged (secrets masked; SASL lines as the placeholder)."""
        return self.display.text


class SessionBase:
    """State and reply helpers shared by the phases of :class:`~pop3tap.model.ModelSession`
    (which sets every attribute declared here in its ``__init__``)."""

    store: ModelStore
    tls_up: bool
    phase: Phase
    mailbox: Mailbox
    user: str | None
    key: str | None
    locked: bool
    messages: list[ModelMessage]
    deleted: set[int]
    highest_accessed: int
    generation: int
    _stamp: str
    _sasl_mechanism: str
    _sasl_answers: list[bytes]
    _sasl_challenges: list[bytes]

    def greeting(self) -> Reply:
        """The recorded greeting, or ``+OK`` with an APOP timestamp (RFC 1939 §4, §7)."""
        if self.mailbox.greeting is not None:
            return Reply(self.mailbox.greeting, Next.READ, True, Display.fixed("greeting"))
        stamp = self._stamp or "<pop3tap.model@localhost>"
        text = f"+OK pop3tap model ready. {stamp}".encode()
        greeting = Display.fixed("greeting")
        return Reply(text + self.mailbox.wording.newline, Next.READ, False, greeting)

    @property
    def apop_stamp(self) -> bytes | None:
        """The timestamp APOP digests are computed over, from the greeting."""
        found = _APOP_STAMP.search(self.greeting().data)
        return found.group(0) if found else None

    @property
    def wording(self) -> Wording:
        return self.mailbox.wording

    def _line(self, status: bytes, text: str) -> bytes:
        body = status + (b" " + text.encode("utf-8") if text else b"")
        return body + self.wording.newline

    def _ok(self, text: str, shown: Display, nxt: Next = Next.READ) -> Reply:
        return Reply(self._line(b"+OK", text), nxt, False, shown)

    def _err(self, text: str, shown: Display) -> Reply:
        return Reply(self._line(b"-ERR", text), Next.READ, False, shown)

    def _multi(self, first: str, body: bytes, shown: Display) -> Reply:
        data = self._line(b"+OK", first) + dot_stuff(body) + b"." + self.wording.newline
        return Reply(data, Next.READ, False, shown)

    def _state(self) -> StateKey:
        return (self.phase is Phase.TRANSACTION, self.tls_up, frozenset(self.deleted))
