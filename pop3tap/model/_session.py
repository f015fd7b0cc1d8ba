"""The mailbox model's POP3 server role: RFC 1939's state machine over a :class:`Mailbox`.

:class:`ModelSession` is sans-IO: feed it each client line (without its line ending) and
it returns the bytes to send and what to do next. It keeps the three states of RFC 1939
§3 (AUTHORIZATION, TRANSACTION, UPDATE) plus a SASL step (RFC 5034 §4):

* AUTHORIZATION: USER/PASS (§7), APOP (§7, checked against the greeting's timestamp when a
  password is known), AUTH with the recorded mechanisms (PLAIN, RFC 4616, and LOGIN are
  decoded for the user name), CAPA (RFC 2449 §5), STLS (RFC 2595 §4) when TLS can be served.
  A masked password is accepted whatever it is; a known one must match.
* TRANSACTION: STAT, LIST, UIDL, RETR, TOP, DELE, RSET, NOOP, LAST (when the server had it).
  DELE only marks; a marked message is refused until RSET; numbers never shift inside a
  session (§5).
* UPDATE: QUIT removes the marked messages (for later sessions too when the store persists).

Where the recorded server answered the same command in the same state (logged in or not,
TLS or not, the same messages marked, the mailbox as recorded), its exact bytes are sent;
every other answer is generated in the recorded server's wording (:class:`Wording`).

The replies and shared helpers are in ``_reply.py``, the AUTHORIZATION state in
``_authorization.py``; this module has the TRANSACTION and UPDATE states.
"""

from __future__ import annotations

from collections.abc import Callable

from pop3tap.model._authorization import Authorization
from pop3tap.model._mailbox import (
    MAILBOX_VERBS,
    STATELESS_VERBS,
    Mailbox,
    ModelMessage,
    args_key,
    header_block,
)
from pop3tap.model._reply import Display, Next, Phase, Reply
from pop3tap.model._store import ModelStore
from pop3tap.protocol import opens_auth, spec_of, split_command

__all__ = ["ModelSession", "Next", "Phase", "Reply"]


class ModelSession(Authorization):
    """One client's POP3 session against the modelled mailbox."""

    def __init__(self, store: ModelStore, *, tls_up: bool = False, stamp: str = "") -> None:
        self.store = store
        self.tls_up = tls_up
        self.phase = Phase.AUTHORIZATION
        self.mailbox: Mailbox = store.template()
        self.user: str | None = None
        self.key: str | None = None
        self.locked = False
        self.messages: list[ModelMessage] = []
        self.deleted: set[int] = set()
        self.highest_accessed = 0
        self.generation = 0
        self._stamp = stamp
        self._sasl_mechanism = ""
        self._sasl_answers: list[bytes] = []
        self._sasl_challenges: list[bytes] = []
        #: A line holding AUTH was read: a later line may be SASL data (RFC 5034 §4).
        self._auth_seen = False

    # -- input ------------------------------------------------------------------------

    def receive_line(self, line: bytes) -> Reply:
        """Answer one client line (its CRLF or LF already removed)."""
        if self.phase is Phase.SASL:
            return self._sasl_answer(line)
        verb, args = split_command(line)
        # The protocol core decides what may be logged: after an AUTH, only valid commands.
        shown = Display(line, after_auth=self._auth_seen)
        self._auth_seen = self._auth_seen or opens_auth(line)
        if self.phase is Phase.DONE:
            return self._err(self.wording.unknown, shown)
        recorded = self._recorded(verb, args, shown)
        if self.phase is Phase.AUTHORIZATION:
            return self._authorization(verb, args, shown, recorded)
        return self._transaction(verb, args, shown, recorded)

    def _recorded(self, verb: str, args: bytes, shown: Display) -> Reply | None:
        """The recorded server's bytes for this command in this state, if it answered it."""
        if verb not in MAILBOX_VERBS and verb not in STATELESS_VERBS:
            return None
        if verb in MAILBOX_VERBS and self.generation != 0:
            return None  # the mailbox changed since it was recorded
        answer = self.mailbox.recorded.get((verb, args_key(verb, args), self._state()))
        if answer is None:
            return None
        nxt = Next.CLOSE if spec_of(verb).ends_session else Next.READ
        return Reply(answer.data, nxt, True, shown)

    # -- TRANSACTION (RFC 1939 §5) -----------------------------------------------------

    def _transaction(self, verb: str, args: bytes, shown: Display, recorded: Reply | None) -> Reply:
        if verb == "CAPA":  # both states (RFC 2449 §5)
            return self._recorded_capa(recorded) or self._capa(shown)
        handler = _TRANSACTION.get(verb)
        if handler is None:
            if verb == "LAST" and self.mailbox.has_last:
                return recorded or self._ok(str(self.highest_accessed), shown)
            return self._err(self.wording.unknown, shown)
        return handler(self, args, shown, recorded)

    def _message(
        self, args: bytes, shown: Display, *, words: int = 1
    ) -> tuple[int, ModelMessage] | Reply:
        """The message an argument names, or the ``-ERR`` for a bad or deleted one.

        ``words``: how many arguments the command takes (RFC 1939 §5, §7: one message
        number; TOP two); more is refused, as Dovecot and Mailutils refuse it.
        """
        parts = args.split()
        if not 1 <= len(parts) <= words or not parts[0].isdigit() or len(parts[0]) > 9:
            return self._err(self.wording.bad_args, shown)
        number = int(parts[0])
        if not 1 <= number <= len(self.messages):
            return self._err(self.wording.no_message.format(n=number), shown)
        if number in self.deleted:
            return self._err(self.wording.deleted.format(n=number), shown)
        return number, self.messages[number - 1]

    def _live(self) -> list[tuple[int, ModelMessage]]:
        return [(n, m) for n, m in enumerate(self.messages, start=1) if n not in self.deleted]

    def _stat(self, args: bytes, shown: Display, recorded: Reply | None) -> Reply:
        if recorded is not None:
            return recorded
        live = self._live()
        return self._ok(f"{len(live)} {sum(m.size for _n, m in live)}", shown)

    def _list(self, args: bytes, shown: Display, recorded: Reply | None) -> Reply:
        """LIST [n] (RFC 1939 §5): ``n size`` lines, or the one line for message n."""
        first = self.wording.list_all
        if first:
            first = first.format(count=len(self._live()))
        return recorded or self._listing(args, shown, first, lambda _n, m: str(m.size))

    def _uidl(self, args: bytes, shown: Display, recorded: Reply | None) -> Reply:
        """UIDL [n] (RFC 1939 §7): ``n unique-id`` lines, or the one line for message n."""
        first = self.wording.uidl_all
        return recorded or self._listing(args, shown, first, self.store.uid_of_message)

    def _listing(
        self, args: bytes, shown: Display, first: str, value: Callable[[int, ModelMessage], str]
    ) -> Reply:
        if args.strip():
            found = self._message(args, shown)
            if isinstance(found, Reply):
                return found
            number, message = found
            return self._ok(f"{number} {value(number, message)}", shown)
        body = b"".join(f"{n} {value(n, m)}\r\n".encode() for n, m in self._live())
        return self._multi(first, body, shown)

    def _retr(self, args: bytes, shown: Display, recorded: Reply | None) -> Reply:
        found = self._message(args, shown)
        if isinstance(found, Reply):
            return recorded or found
        number, message = found
        self.highest_accessed = max(self.highest_accessed, number)
        if recorded is not None:
            return recorded
        body = self.store.body_of(message, number)
        if body is None:
            return self._err(self.store.missing_text(number, "RETR"), shown)
        return self._multi(self.wording.retr.format(size=message.size, n=number), body, shown)

    def _top(self, args: bytes, shown: Display, recorded: Reply | None) -> Reply:
        parts = args.split()
        if len(parts) != 2 or not parts[1].isdigit():
            return recorded or self._err(self.wording.bad_args, shown)
        found = self._message(args, shown, words=2)
        if isinstance(found, Reply):
            return recorded or found
        number, message = found
        if recorded is not None:
            return recorded
        lines = int(parts[1][:9])
        body = self.store.body_of(message, number)
        if body is None:
            if lines == 0 and message.headers is not None:
                return self._multi(self.wording.top, message.headers, shown)
            return self._err(self.store.missing_text(number, "TOP"), shown)
        return self._multi(self.wording.top, top_of(body, lines), shown)

    def _dele(self, args: bytes, shown: Display, recorded: Reply | None) -> Reply:
        found = self._message(args, shown)
        if isinstance(found, Reply):
            return recorded or found
        number, _message = found
        reply = recorded or self._ok(self.wording.dele.format(n=number), shown)
        self.deleted.add(number)
        return reply

    def _rset(self, args: bytes, shown: Display, recorded: Reply | None) -> Reply:
        reply = recorded or self._ok(self.wording.rset, shown)
        self.deleted.clear()
        self.highest_accessed = 0
        return reply

    def _noop(self, args: bytes, shown: Display, recorded: Reply | None) -> Reply:
        return recorded or self._ok(self.wording.noop, shown)

    def _quit(self, args: bytes, shown: Display, recorded: Reply | None) -> Reply:
        """UPDATE (RFC 1939 §6): the marked messages go, then the session ends."""
        if recorded is None:
            text = self.wording.quit_deleted if self.deleted else self.wording.quit
            recorded = self._ok(text, shown, Next.CLOSE)
        if self.key is not None:
            self.store.expunge(self.key, [self.messages[n - 1] for n in self.deleted])
        self.deleted = set()
        self.phase = Phase.DONE
        return Reply(recorded.data, Next.CLOSE, recorded.recorded, shown)

    def tls_started(self) -> None:
        """TLS came up after STLS: forget what the client said before (RFC 2595 §4)."""
        self.tls_up = True
        self.user = None

    def close(self) -> None:
        """The connection ended: let go of the mailbox (nothing is deleted without QUIT)."""
        if self.locked and self.key is not None:
            self.store.unlock(self.key)
        self.locked = False


def top_of(body: bytes, lines: int) -> bytes:
    """The headers, the blank line and the first ``lines`` body lines (RFC 1939 §7 TOP)."""
    head = header_block(body)
    rest = body[len(head) :]
    if lines == 0 or not rest:
        return head
    taken = rest.split(b"\n")
    kept = b"\n".join(taken[:lines])
    if len(taken) > lines:
        kept += b"\n"
    return head + kept


#: A TRANSACTION command's handler: (session, arguments, shown command, recorded reply).
_Handler = Callable[[ModelSession, bytes, Display, "Reply | None"], Reply]
#: TRANSACTION state commands (RFC 1939 §5); LAST is handled apart (only if recorded).
_TRANSACTION: dict[str, _Handler] = {
    "STAT": ModelSession._stat,
    "LIST": ModelSession._list,
    "UIDL": ModelSession._uidl,
    "RETR": ModelSession._retr,
    "TOP": ModelSession._top,
    "DELE": ModelSession._dele,
    "RSET": ModelSession._rset,
    "NOOP": ModelSession._noop,
    "QUIT": ModelSession._quit,
}
