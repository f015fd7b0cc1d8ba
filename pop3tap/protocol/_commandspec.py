"""The words of the command table: the rule enums and :class:`CommandSpec`, one verb's
rules. The table itself, :data:`~pop3tap.protocol._commands.COMMANDS`, and the queries
over it live in :mod:`._commands`."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from pop3tap.protocol._values import rebuild_by_fields


class Multiline(Enum):
    """When a ``+OK`` to the command opens a multi-line body (RFC 1939 §3)."""

    #: Always one line.
    NEVER = "never"
    #: Always a body (RETR, TOP: RFC 1939 §7; CAPA: RFC 2449 §5).
    ALWAYS = "always"
    #: A body only without an argument (LIST, UIDL: RFC 1939 §7; LANG: RFC 6856 §3; AUTH
    #: without a mechanism lists mechanisms, a de-facto extension).
    WITHOUT_ARGUMENT = "without_argument"
    #: A body only for ``XTND XLST`` (RFC 1082 §3).
    XLST_ARGUMENT = "xlst_argument"


class Barrier(Enum):
    """What holds back the client lines sent after a command until it is answered."""

    #: Nothing: later lines are commands, in order (RFC 2449 §6.6).
    NONE = "none"
    #: STLS: TLS starts after a ``+OK``, so nothing may follow it (RFC 2595 §4).
    STLS = "stls"
    #: ``AUTH mechanism``: the next lines may be SASL data (RFC 5034 §4).
    SASL = "sasl"


class Counter(Enum):
    """The session summary counter a ``+OK`` to the command moves."""

    NONE = "none"
    RETR = "retr"
    TOP = "top"
    DELE = "dele"
    #: QUIT from the TRANSACTION state: deletions are committed (RFC 1939 §6).
    QUIT = "quit"


class Pop3State(Enum):
    """The RFC 1939 state a command belongs to (§4 AUTHORIZATION, §5 TRANSACTION)."""

    AUTHORIZATION = "authorization"
    TRANSACTION = "transaction"
    #: Valid in both (QUIT: RFC 1939 §§4-6; CAPA: RFC 2449 §5; LANG: RFC 6856 §3).
    EITHER = "either"


class Credential(Enum):
    """What a login command carries (RFC 1939 §7, RFC 5034 §4)."""

    NONE = "none"
    #: USER: the mailbox name, in the clear.
    USER_NAME = "user_name"
    #: PASS: the password, in the clear (RFC 1939 §13).
    PASSWORD = "password"
    #: APOP: an MD5 digest over the greeting's timestamp, so never valid twice.
    GREETING_DIGEST = "greeting_digest"
    #: AUTH: a SASL exchange (RFC 5034 §4).
    SASL = "sasl"


class AnswerSource(Enum):
    """What a server's answer depends on: when a recorded one may be given again."""

    #: The login phase alone (CAPA, NOOP, USER).
    PHASE = "phase"
    #: The maildrop's messages and marks (RFC 1939 §5).
    MAILDROP = "maildrop"
    #: A login, a TLS switch or a server setting: never given again.
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """One verb's rules (see the module docstring)."""

    verb: str
    #: Regular expression for valid arguments, matched after the keyword.
    arguments: bytes
    multiline: Multiline = Multiline.NEVER
    #: Words (the keyword included) before the secret, or None when nothing is secret:
    #: ``PASS secret``, ``APOP name digest``, ``AUTH mechanism initial-response``.
    secret_after: int | None = None
    #: What holds the lines after it; SASL only when a mechanism is named.
    barrier: Barrier = Barrier.NONE
    #: A ``+OK`` logs the user in (for AUTH only when a mechanism is named).
    login: bool = False
    counter: Counter = Counter.NONE
    #: The first word of the arguments names the user (USER, APOP: RFC 1939 §7).
    names_user: bool = False
    state: Pop3State = Pop3State.EITHER
    #: The first argument is a message-number (RFC 1939 §5).
    message_argument: bool = False
    credential: Credential = Credential.NONE
    answer_from: AnswerSource = AnswerSource.OTHER
    #: The server closes the connection after its answer (QUIT, RFC 1939 §6).
    ends_session: bool = False

    @property
    def reads_message(self) -> bool:
        """RETR and TOP: a ``+OK`` carries a message or its head (RFC 1939 §7)."""
        return self.message_argument and self.multiline is Multiline.ALWAYS

    @property
    def lists_messages(self) -> bool:
        """LIST and UIDL: without an argument, a ``+OK`` lists every message (RFC 1939 §7)."""
        return self.message_argument and self.multiline is Multiline.WITHOUT_ARGUMENT

    def __reduce__(self) -> tuple[type[Any], tuple[object, ...]]:
        """Rebuilt through the constructor, in both builds (see :mod:`._values`)."""
        return rebuild_by_fields(self)
