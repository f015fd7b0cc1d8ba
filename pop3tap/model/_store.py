"""The mailboxes a model server serves, shared by its connections.

It holds what outlives one session: which mailbox a user logs in to, who holds a mailbox
now (a second login gets ``-ERR [IN-USE]``, RFC 2449 §8.1.2, as Dovecot and GNU Mailutils
answer), and, when deletions persist, the mailbox as the last QUIT left it (RFC 1939 §6).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Final, Literal

from pop3tap.model._mailbox import Mailbox, ModelMessage

__all__ = ["MissingPolicy", "ModelStore", "synthesize"]

#: What to do when a client asks for a message whose body was never recorded.
MissingPolicy = Literal["err", "synth"]


class ModelStore:
    """Mailboxes by user, their locks and (optionally) their persisted deletions."""

    #: The key :meth:`credentials` returns for a user with no mailbox.
    NO_MAILBOX: Final = "\0no mailbox"

    def __init__(
        self,
        mailboxes: Mapping[str | None, Mailbox],
        *,
        passwords: Mapping[str, str] | None = None,
        persist: bool = False,
        shared: bool = False,
        missing: MissingPolicy = "err",
        tls_available: bool = False,
    ) -> None:
        if not mailboxes:
            raise ValueError("a model needs at least one mailbox")
        self._mailboxes = {(user or ""): box for user, box in mailboxes.items()}
        self._original = {key: list(box.messages) for key, box in self._mailboxes.items()}
        for messages in self._original.values():
            for number, message in enumerate(messages, start=1):
                if message.uid is None:
                    # Never recorded: a stable made-up id (RFC 1939 §7 characters).
                    message.uid = f"pop3tap-{number}"
        self._current = {key: list(messages) for key, messages in self._original.items()}
        self._generation = dict.fromkeys(self._mailboxes, 0)
        self._held: set[str] = set()
        self._lock = threading.Lock()
        self.passwords = dict(passwords or {})
        self.persist = persist
        self.shared = shared
        self.missing: MissingPolicy = missing
        self.tls_available = tls_available

    # -- which mailbox ----------------------------------------------------------------

    def template(self) -> Mailbox:
        """The mailbox whose greeting and wording are used before a user is known."""
        return next(iter(self._mailboxes.values()))

    def default_user(self) -> str:
        """The user a login with an undecodable SASL mechanism is taken to be."""
        return next(iter(self._mailboxes))

    def credentials(self, user: str) -> tuple[str, str | None]:
        """(mailbox key, the password to check or None to accept any) for ``user``.

        One mailbox serves any user name; with several, the user must be one of them
        (a mailbox recorded without a user name takes the others).
        """
        if user in self._mailboxes:
            key = user
        elif len(self._mailboxes) == 1:
            key = next(iter(self._mailboxes))
        elif "" in self._mailboxes:
            key = ""
        else:
            return self.NO_MAILBOX, None
        known = self.passwords.get(user)
        if known is None:
            known = self._mailboxes[key].password
        return key, known

    def users(self) -> list[str]:
        return [key for key in self._mailboxes if key]

    # -- sessions ---------------------------------------------------------------------

    def lock(self, key: str) -> bool:
        """Take the mailbox for one session; False when another session holds it."""
        if self.shared:
            return True
        with self._lock:
            if key in self._held:
                return False
            self._held.add(key)
            return True

    def unlock(self, key: str) -> None:
        with self._lock:
            self._held.discard(key)

    def open(self, key: str) -> tuple[Mailbox, list[ModelMessage], int]:
        """The mailbox, its messages as a session sees them at login, and their generation."""
        with self._lock:
            return self._mailboxes[key], list(self._current[key]), self._generation[key]

    def expunge(self, key: str, gone: Iterable[ModelMessage]) -> None:
        """UPDATE (RFC 1939 §6): remove the marked messages, for later sessions too when
        deletions persist."""
        if not self.persist:
            return
        removed = {id(message) for message in gone}
        if not removed:
            return
        with self._lock:
            self._current[key] = [m for m in self._current[key] if id(m) not in removed]
            self._generation[key] += 1

    def reset(self) -> None:
        """Restore every mailbox as recorded (undo persisted deletions)."""
        with self._lock:
            self._current = {key: list(messages) for key, messages in self._original.items()}
            self._generation = dict.fromkeys(self._mailboxes, 0)

    def message_count(self, user: str | None = None) -> int:
        """How many messages the mailbox holds now (for tests and the API)."""
        key = user or next(iter(self._mailboxes))
        with self._lock:
            return len(self._current[key])

    # -- content ----------------------------------------------------------------------

    @staticmethod
    def uid_of_message(number: int, message: ModelMessage) -> str:
        """The unique id UIDL shows (made up at start for messages never listed)."""
        return message.uid or f"pop3tap-{number}"

    def body_of(self, message: ModelMessage, number: int) -> bytes | None:
        """The message, or a synthesized one with ``--model-missing synth``; None if unknown."""
        try:
            body = message.full_body()
        except OSError:
            return None
        if body is None and self.missing == "synth":
            return synthesize(message, number)
        return body

    @staticmethod
    def missing_text(number: int, verb: str) -> str:
        return (
            f"pop3tap model: message {number} was never retrieved in the captures, so {verb} "
            "cannot be answered (--model-missing synth makes one up)"
        )


def synthesize(message: ModelMessage, number: int) -> bytes:
    """A made-up RFC 5322 message of exactly ``message.size`` octets, marked as such.

    The recorded headers are used when TOP recorded them; the body is filler lines.
    """
    size = message.size
    headers = message.headers
    if headers is None or len(headers) > size:
        headers = (
            b"From: pop3tap <model@pop3tap.invalid>\r\n"
            + f"Subject: pop3tap synthetic message {number}\r\n".encode()
            + f"Message-ID: <synthetic-{number}@pop3tap.invalid>\r\n".encode()
            + b"X-Pop3tap-Synthetic: body never retrieved in the captures\r\n\r\n"
        )
    if len(headers) > size:
        headers = b"X-Pop3tap-Synthetic: yes\r\n\r\n"
    if len(headers) > size:
        return _filler(size)
    remaining = size - len(headers)
    if remaining == 1 and headers.endswith(b"\r\n\r\n"):
        return headers[:-4] + b"x\r\n\r\n"
    return headers + _filler(remaining)


def _filler(size: int) -> bytes:
    """``size`` octets of ``x`` lines ending in CRLF (one stray byte when size is 1)."""
    lines: list[bytes] = []
    while size > 0:
        if size == 1:
            lines.append(b"x")
            break
        width = min(size, 78)
        if size - width == 1:
            width -= 1
        lines.append(b"x" * (width - 2) + b"\r\n")
        size -= width
    return b"".join(lines)
