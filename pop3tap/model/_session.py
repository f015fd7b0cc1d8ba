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
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass

from pop3tap.model._mailbox import (
    MAILBOX_VERBS,
    STATELESS_VERBS,
    Mailbox,
    ModelMessage,
    StateKey,
    Wording,
    args_key,
    dot_stuff,
    header_block,
)
from pop3tap.model._store import ModelStore
from pop3tap.protocol import SECRET_PLACEHOLDER, opens_auth, shown_command, split_command

__all__ = ["ModelSession", "Next", "Phase", "Reply"]

#: An APOP timestamp in a greeting (RFC 1939 §7: ``<...>``).
_APOP_STAMP = re.compile(rb"<[^<>\s]{1,250}>")
#: LOGIN's two challenges ("Username:", "Password:" in base64), as most servers send them.
_LOGIN_CHALLENGES = (b"+ VXNlcm5hbWU6\r\n", b"+ UGFzc3dvcmQ6\r\n")


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


class ModelSession:
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

    # -- greeting ---------------------------------------------------------------------

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

    # -- helpers ----------------------------------------------------------------------

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

    def _recorded(self, verb: str, args: bytes, shown: Display) -> Reply | None:
        """The recorded server's bytes for this command in this state, if it answered it."""
        if verb not in MAILBOX_VERBS and verb not in STATELESS_VERBS:
            return None
        if verb in MAILBOX_VERBS and self.generation != 0:
            return None  # the mailbox changed since it was recorded
        answer = self.mailbox.recorded.get((verb, args_key(verb, args), self._state()))
        if answer is None:
            return None
        nxt = Next.CLOSE if verb == "QUIT" else Next.READ
        return Reply(answer.data, nxt, True, shown)

    # -- AUTHORIZATION (RFC 1939 §4, §7; RFC 2449; RFC 2595; RFC 5034) ---------------------

    def _authorization(
        self, verb: str, args: bytes, shown: Display, recorded: Reply | None
    ) -> Reply:
        if verb == "CAPA":
            return self._recorded_capa(recorded) or self._capa(shown)
        if verb == "NOOP" and recorded is not None:
            return recorded
        if verb == "QUIT":
            self.phase = Phase.DONE
            return self._ok(self.wording.quit, shown, Next.CLOSE)
        if verb == "USER":
            if not args.strip():
                return self._err(self.wording.no_user, shown)
            self.user = args.strip().decode("utf-8", "replace")
            return recorded or self._ok(self.wording.user, shown)
        if verb == "PASS":
            if self.user is None:
                return self._err(self.wording.not_logged_in, shown)
            return self._login(self.user, lambda known: args == known.encode(), shown)
        if verb == "APOP":
            return self._apop(args, shown)
        if verb == "AUTH":
            return self._auth(args, shown)
        if verb == "STLS":
            if self.tls_up or not self.store.tls_available:
                return self._err("STLS is not available.", shown)
            return self._ok(self.wording.stls, shown, Next.START_TLS)
        return self._err(self.wording.not_logged_in, shown)

    def _recorded_capa(self, recorded: Reply | None) -> Reply | None:
        """The recorded CAPA, unless it offers STLS this server cannot do (or the reverse)."""
        if recorded is None:
            return None
        offered = b"\nSTLS\r\n" in recorded.data or b"\nSTLS\n" in recorded.data
        return recorded if offered == (self.store.tls_available and not self.tls_up) else None

    def _capa(self, shown: Display) -> Reply:
        lines = self.mailbox.capabilities
        if lines is None:
            lines = [b"TOP", b"UIDL", b"RESP-CODES", b"PIPELINING", b"USER", b"SASL PLAIN LOGIN"]
            lines.append(b"IMPLEMENTATION pop3tap-model")
        offer_stls = self.store.tls_available and not self.tls_up
        shown_lines = [line for line in lines if line.split()[:1] != [b"STLS"] or offer_stls]
        if offer_stls and b"STLS" not in [line.split()[0] for line in shown_lines]:
            shown_lines.append(b"STLS")
        return self._multi("", b"\r\n".join(shown_lines) + b"\r\n", shown)

    def _login(self, user: str, check: Callable[[str], bool], shown: Display) -> Reply:
        """Finish a login for ``user`` (RFC 1939 §7): password, mailbox, lock."""
        key, known = self.store.credentials(user)
        if key is _NO_MAILBOX or (known is not None and not check(known)):
            self.user = None
            return self._err(self.wording.login_failed, shown)
        if not self.store.lock(key):
            # RFC 2449 §8.1.2: the maildrop is in use by another session.
            self.user = None
            return self._err(self.wording.in_use, shown)
        self.locked = True
        self.key = key
        self.mailbox, self.messages, self.generation = self.store.open(key)
        self.phase = Phase.TRANSACTION
        return self._ok(self.wording.login, shown)

    def _apop(self, args: bytes, shown: Display) -> Reply:
        parts = args.split()
        stamp = self.apop_stamp
        if len(parts) != 2 or stamp is None:
            return self._err(self.wording.login_failed, shown)
        user = parts[0].decode("utf-8", "replace")

        def digest_matches(password: str) -> bool:
            expected = hashlib.md5(stamp + password.encode(), usedforsecurity=False).hexdigest()
            return hmac.compare_digest(expected.encode(), parts[1].lower())

        return self._login(user, digest_matches, shown)

    def _auth(self, args: bytes, shown: Display) -> Reply:
        parts = args.split(None, 1)
        if not parts:
            mechanisms = sorted(self.mailbox.mechanisms or {"PLAIN", "LOGIN"})
            body = b"".join(m.encode() + b"\r\n" for m in mechanisms)
            return self._multi("", body, shown)
        mechanism = parts[0].decode("ascii", "replace").upper()
        offered = self.mailbox.mechanisms or {"PLAIN", "LOGIN"}
        if mechanism not in offered:
            return self._err("Unsupported authentication mechanism.", shown)
        self._sasl_mechanism = mechanism
        self._sasl_answers = []
        if mechanism == "PLAIN":
            self._sasl_challenges = [b"+ \r\n"]
        elif mechanism == "CRAM-MD5":
            # RFC 2195 §2: the challenge is a timestamp-like string, base64-encoded.
            self._sasl_challenges = [b"+ " + base64.b64encode(self._cram_challenge()) + b"\r\n"]
        elif mechanism == "LOGIN":
            self._sasl_challenges = list(_LOGIN_CHALLENGES)
        else:
            self._sasl_challenges = list(self.mailbox.challenges.get(mechanism, [b"+ \r\n"]))
        if len(parts) == 2:
            # An initial response (RFC 5034 §4) answers the first challenge.
            return self._sasl_answer(parts[1], skip_first=True)
        self.phase = Phase.SASL
        return Reply(self._sasl_challenges[0], Next.READ, False, shown)

    def _sasl_answer(self, line: bytes, *, skip_first: bool = False) -> Reply:
        shown = Display.fixed(
            f"AUTH {self._sasl_mechanism} {SECRET_PLACEHOLDER}"
            if skip_first
            else SECRET_PLACEHOLDER
        )
        self.phase = Phase.AUTHORIZATION
        if line.strip() == b"*":
            return self._err(self.wording.auth_aborted, shown)
        self._sasl_answers.append(line.strip())
        if len(self._sasl_answers) < len(self._sasl_challenges):
            self.phase = Phase.SASL
            challenge = self._sasl_challenges[len(self._sasl_answers)]
            return Reply(challenge, Next.READ, False, shown)
        if self._sasl_mechanism == "CRAM-MD5":
            return self._cram_login(shown)
        user, password = _sasl_credentials(self._sasl_mechanism, self._sasl_answers)
        if user is None:
            if self._sasl_mechanism in ("PLAIN", "LOGIN"):
                return self._err(self.wording.login_failed, shown)
            user = self.store.default_user()
        return self._login(user, lambda known: password is None or password == known, shown)

    def _cram_challenge(self) -> bytes:
        stamp = self.apop_stamp
        return stamp if stamp is not None else b"<pop3tap.model@localhost>"

    def _cram_login(self, shown: Display) -> Reply:
        """RFC 2195 §2: ``user hex(HMAC-MD5(password, challenge))``."""
        try:
            answer = base64.b64decode(self._sasl_answers[0], validate=True)
        except (binascii.Error, ValueError):
            return self._err(self.wording.login_failed, shown)
        user, _space, digest = answer.decode("utf-8", "replace").rpartition(" ")
        if not user:
            return self._err(self.wording.login_failed, shown)
        challenge = self._cram_challenge()

        def digest_matches(password: str) -> bool:
            expected = hmac.new(password.encode(), challenge, "md5").hexdigest()
            return hmac.compare_digest(expected, digest.lower())

        return self._login(user, digest_matches, shown)

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


def _sasl_credentials(mechanism: str, answers: list[bytes]) -> tuple[str | None, str | None]:
    """(user, password) from PLAIN (RFC 4616 §2) or LOGIN answers; (None, None) otherwise."""
    try:
        decoded = [base64.b64decode(a, validate=True) for a in answers]
    except (binascii.Error, ValueError):
        return None, None
    if mechanism == "PLAIN" and decoded:
        fields = decoded[0].split(b"\0")
        if len(fields) == 3:
            return fields[1].decode("utf-8", "replace"), fields[2].decode("utf-8", "replace")
        return None, None
    if mechanism == "LOGIN" and len(decoded) == 2:
        return decoded[0].decode("utf-8", "replace"), decoded[1].decode("utf-8", "replace")
    return None, None


_NO_MAILBOX = ModelStore.NO_MAILBOX

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
