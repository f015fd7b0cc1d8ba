"""The mailbox model: what a capture says about a mailbox, as values (no I/O of its own).

A capture of a POP3 session holds most of what a server knew about the mailbox: the
message count and sizes (STAT, LIST; RFC 1939 §5), the unique ids (UIDL, RFC 1939 §7), the
full messages it sent for RETR and the headers it sent for TOP, and the server's own
wording for each answer. :func:`mailboxes_from_sessions` gathers those facts from one or
more recorded sessions of the same mailbox into a :class:`Mailbox` per user, and refuses
captures that contradict each other (two unique ids for one message number).

Messages can also come from files (:mod:`pop3tap.model._files`): their bodies are then read
from disk when a client asks for them, never held.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pop3tap.protocol import Flag, Status

__all__ = [
    "Mailbox",
    "MessageSource",
    "ModelError",
    "ModelMessage",
    "RecordedAnswer",
    "Wording",
    "dot_stuff",
    "mailboxes_from_sessions",
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
# Building a mailbox from recorded sessions
################################################################

_NUMBER = re.compile(rb"\d+")
#: Verbs whose answers depend only on the login phase, never on the messages.
STATELESS_VERBS = frozenset({"CAPA", "NOOP", "USER"})
#: Verbs answered from the mailbox, whose recorded bytes are reused when the state matches.
MAILBOX_VERBS = frozenset({"STAT", "LIST", "UIDL", "RETR", "TOP", "DELE", "RSET", "LAST", "QUIT"})


def _status_text(line: bytes) -> str:
    """The text after the status indicator of a status line, decoded."""
    text = line.rstrip(b"\r\n").decode("utf-8", "replace")
    parts = text.split(" ", 1)
    return parts[1] if len(parts) == 2 else ""


def _template(text: str, **values: int) -> str:
    """``text`` with whole-word numbers equal to a value replaced by ``{name}``."""
    out = text
    for name, value in values.items():
        out = re.sub(rf"(?<![0-9]){value}(?![0-9])", "{" + name + "}", out, count=1)
    return out


def _message_number(args: bytes) -> int | None:
    parts = args.split()
    if not parts or not parts[0].isdigit() or len(parts[0]) > 9:
        return None
    number = int(parts[0])
    return number if number > 0 else None


def args_key(verb: str, args: bytes) -> bytes:
    """What must be equal for a client command to reuse a recorded answer."""
    if verb in ("PASS", "APOP", "AUTH"):
        return b""
    return b" ".join(args.split())


@dataclass(slots=True)
class _Facts:
    """What one user's captures said, gathered before the mailbox is built."""

    user: str | None
    count: int | None = None
    total: int | None = None
    sizes: dict[int, int] = field(default_factory=dict)
    uids: dict[int, str] = field(default_factory=dict)
    bodies: dict[int, bytes] = field(default_factory=dict)
    headers: dict[int, bytes] = field(default_factory=dict)
    where: dict[tuple[str, int], str] = field(default_factory=dict)
    mailbox: Mailbox | None = None


class SegmentLike(Protocol):
    """A recorded run of server bytes (:class:`pop3tap.replay.Segment`)."""

    @property
    def data(self) -> bytes: ...


class RecordedExchangeLike(Protocol):
    """What the model reads of :class:`pop3tap.replay.RecordedExchange`."""

    @property
    def seq(self) -> int: ...
    @property
    def verb(self) -> str: ...
    @property
    def raw_args(self) -> bytes: ...
    @property
    def status(self) -> Status | None: ...
    @property
    def flags(self) -> frozenset[Flag]: ...
    @property
    def segments(self) -> Sequence[SegmentLike]: ...
    @property
    def response(self) -> bytes: ...
    @property
    def closes(self) -> bool: ...
    @property
    def starts_tls(self) -> bool: ...


class RecordedSessionLike(Protocol):
    """What the model reads of :class:`pop3tap.replay.RecordedSession` (kept pure here)."""

    @property
    def name(self) -> str: ...
    @property
    def user(self) -> str | None: ...
    @property
    def secrets(self) -> str: ...
    @property
    def listen_tls(self) -> bool: ...
    @property
    def greeting(self) -> SegmentLike: ...
    @property
    def exchanges(self) -> Sequence[RecordedExchangeLike]: ...


def _note(facts: _Facts, kind: str, number: int, value: str, where: str) -> None:
    """Remember one fact about message ``number``; two captures that disagree are refused."""
    if kind == "size":
        known = facts.sizes.get(number)
        if known is not None and known != int(value):
            raise ModelError(
                f"captures disagree about message {number} of {facts.user or 'the mailbox'}: "
                f"size {known} in {facts.where[(kind, number)]}, {value} in {where}; "
                "give captures of one mailbox state"
            )
        facts.sizes[number] = int(value)
    else:
        known_uid = facts.uids.get(number)
        if known_uid is not None and known_uid != value:
            raise ModelError(
                f"captures disagree about message {number} of {facts.user or 'the mailbox'}: "
                f"UID {known_uid!r} in {facts.where[(kind, number)]}, {value!r} in {where} "
                "(captures of different mailboxes?)"
            )
        facts.uids[number] = value
    facts.where.setdefault((kind, number), where)


def _gather_listing(facts: _Facts, verb: str, response: bytes, where: str) -> None:
    """LIST/UIDL without an argument: one ``n value`` line per message (RFC 1939 §5, §7)."""
    parsed = unstuff_body(response)
    if parsed is None:
        return
    _status, body = parsed
    numbers = []
    for line in body.splitlines():
        parts = line.split()
        if len(parts) < 2 or not parts[0].isdigit():
            continue
        number = int(parts[0])
        numbers.append(number)
        value = parts[1].decode("ascii", "replace")
        if verb == "LIST" and parts[1].isdigit():
            _note(facts, "size", number, value, where)
        elif verb == "UIDL":
            _note(facts, "uid", number, value, where)


def _gather(facts: _Facts, session: RecordedSessionLike) -> None:
    """Collect message facts and wording from one recorded session's exchanges."""
    mailbox = facts.mailbox
    assert mailbox is not None
    name = session.name
    logged_in = False
    tls_up = session.listen_tls
    deleted: set[int] = set()
    wording = mailbox.wording
    for ex in session.exchanges:
        verb = ex.verb
        raw_args = ex.raw_args
        status = ex.status
        response = ex.response
        complete = (
            status is not None
            and not ex.closes
            and Flag.TRUNCATED not in ex.flags
            and response.endswith(b"\n")
        )
        where = f"{name} #{ex.seq}"
        first_line = response.split(b"\n", 1)[0] + b"\n" if response else b""
        ok = status == Status.OK
        number = _message_number(raw_args)
        state: StateKey = (logged_in, tls_up, frozenset(deleted))
        if complete and (verb in MAILBOX_VERBS or verb in STATELESS_VERBS):
            key = (verb, args_key(verb, raw_args), state)
            mailbox.recorded.setdefault(key, RecordedAnswer(response, name, ex.seq))
        if complete and ok and not deleted:
            _gather_ok(facts, verb, raw_args, number, first_line, response, where)
        if complete:
            _gather_wording(wording, verb, number, ok, first_line, facts, deleted)
        if verb == "AUTH" and raw_args.split():
            mechanism = raw_args.split()[0].decode("ascii", "replace").upper()
            mailbox.mechanisms.add(mechanism)
            plus = [s.data for s in ex.segments[:-1]] if len(ex.segments) > 1 else []
            if plus and mechanism not in mailbox.challenges:
                mailbox.challenges[mechanism] = [p.splitlines(keepends=True)[-1] for p in plus]
        if ok and verb in ("PASS", "APOP", "AUTH"):
            logged_in = True
        if ok and verb == "DELE" and number is not None:
            deleted.add(number)
        if ok and verb == "RSET":
            deleted.clear()
        if ex.starts_tls:
            tls_up = True


def _gather_ok(
    facts: _Facts,
    verb: str,
    raw_args: bytes,
    number: int | None,
    first_line: bytes,
    response: bytes,
    where: str,
) -> None:
    """Facts from one complete ``+OK`` answer given before any deletion in its session."""
    mailbox = facts.mailbox
    assert mailbox is not None
    words = first_line.split()
    if verb == "STAT" and len(words) >= 3 and words[1].isdigit() and words[2].isdigit():
        count, total = int(words[1]), int(words[2])
        if facts.count is not None and facts.count != count:
            raise ModelError(
                f"captures disagree about {facts.user or 'the mailbox'}: STAT says "
                f"{facts.count} messages in one capture and {count} in {where}"
            )
        facts.count, facts.total = count, total
    elif verb in ("LIST", "UIDL") and number is None and not raw_args.strip():
        _gather_listing(facts, verb, response, where)
    elif verb in ("LIST", "UIDL") and number is not None and len(words) >= 3:
        value = words[2].decode("ascii", "replace")
        if verb == "LIST" and words[2].isdigit():
            _note(facts, "size", number, value, where)
        elif verb == "UIDL":
            _note(facts, "uid", number, value, where)
    elif verb == "RETR" and number is not None:
        parsed = unstuff_body(response)
        if parsed is not None:
            facts.bodies.setdefault(number, parsed[1])
    elif verb == "TOP" and number is not None:
        parsed = unstuff_body(response)
        if parsed is not None:
            facts.headers.setdefault(number, header_block(parsed[1]))
    elif verb == "CAPA":
        parsed = unstuff_body(response)
        if parsed is not None and mailbox.capabilities is None:
            mailbox.capabilities = [line for line in parsed[1].splitlines() if line]
            for line in mailbox.capabilities:
                parts = line.split()
                if parts and parts[0].upper() == b"SASL":
                    names = (p.decode("ascii", "replace").upper() for p in parts[1:])
                    mailbox.mechanisms.update(names)
    elif verb == "LAST":
        mailbox.has_last = True


def _gather_wording(
    wording: Wording,
    verb: str,
    number: int | None,
    ok: bool,
    first_line: bytes,
    facts: _Facts,
    deleted: set[int],
) -> None:
    """The recorded server's wording for the answers the model may have to generate."""
    text = _status_text(first_line)
    if ok:
        if verb == "RETR" and number is not None:
            size = facts.sizes.get(number)
            body = facts.bodies.get(number)
            if size is None and body is not None:
                size = crlf_size(body)
            wording.retr = _template(text, size=size) if size is not None else wording.retr
        elif verb == "TOP":
            wording.top = text
        elif verb == "LIST" and number is None:
            count = facts.count if facts.count is not None else len(facts.sizes)
            wording.list_all = _template(text, count=count) if text else ""
        elif verb == "UIDL" and number is None:
            wording.uidl_all = text
        elif verb == "DELE" and number is not None:
            wording.dele = _template(text, n=number)
        elif verb in ("RSET", "NOOP", "USER"):
            setattr(wording, verb.lower(), text)
        elif verb == "QUIT":
            if deleted:
                wording.quit_deleted = text
            else:
                wording.quit = text
        elif verb in ("PASS", "APOP", "AUTH"):
            wording.login = text
        elif verb == "STLS":
            wording.stls = text
    elif verb in ("RETR", "LIST", "TOP", "DELE", "UIDL") and number is not None:
        if number in deleted:
            wording.deleted = _template(text, n=number)
        elif facts.count is not None and number > facts.count:
            wording.no_message = _template(text, n=number)
    elif verb in ("PASS", "APOP") or (verb == "AUTH" and text):
        if "IN-USE" in text.upper():
            wording.in_use = text
        else:
            wording.login_failed = text


def _kept_password(session: RecordedSessionLike) -> str | None:
    """The PASS argument of a capture that kept its secrets (RFC 1939 §7), if it logged in."""
    for ex in session.exchanges:
        if ex.verb == "PASS" and ex.status == Status.OK:
            return ex.raw_args.decode("utf-8", "replace")
    return None


def _build(facts: _Facts) -> Mailbox:
    """The mailbox the facts describe; sizes come from LIST, then STAT, then the bodies."""
    mailbox = facts.mailbox
    assert mailbox is not None
    known = set(facts.sizes) | set(facts.uids) | set(facts.bodies) | set(facts.headers)
    count = facts.count if facts.count is not None else max(known, default=0)
    messages = []
    for number in range(1, count + 1):
        body = facts.bodies.get(number)
        size = facts.sizes.get(number)
        if size is None:
            size = crlf_size(body) if body is not None else 0
        messages.append(
            ModelMessage(
                size=size,
                uid=facts.uids.get(number),
                body=body,
                headers=facts.headers.get(number),
            )
        )
    if facts.total is not None and facts.sizes and len(facts.sizes) == count:
        listed = sum(m.size for m in messages)
        if listed != facts.total:
            raise ModelError(
                f"captures of {facts.user or 'the mailbox'} disagree: STAT says {facts.total} "
                f"octets, LIST adds up to {listed}"
            )
    mailbox.messages = messages
    return mailbox


def mailboxes_from_sessions(
    sessions: Iterable[RecordedSessionLike],
) -> dict[str | None, Mailbox]:
    """One mailbox per user from recorded sessions (see :mod:`pop3tap.replay`).

    Sessions whose user is unknown (a masked SASL login) belong to the only user there is,
    or to a mailbox of their own (key None) when there are several.

    Raises:
        ModelError: two captures disagree about a message (UID, size or count).
    """
    ordered = list(sessions)
    users = {s.user for s in ordered} - {None}
    facts_by_user: dict[str | None, _Facts] = {}
    for session in ordered:
        user = session.user
        if user is None and len(users) == 1:
            user = next(iter(users))
        facts = facts_by_user.get(user)
        if facts is None:
            facts = _Facts(user=user)
            data = session.greeting.data
            line = data.split(b"\n", 1)[0] + b"\n" if data else None
            facts.mailbox = Mailbox(user=user, messages=[], greeting=line)
            if line is not None and not line.endswith(b"\r\n"):
                facts.mailbox.wording.newline = b"\n"
            facts_by_user[user] = facts
        assert facts.mailbox is not None
        facts.mailbox.sources.append(session.name)
        if session.secrets == "kept" and facts.mailbox.password is None:
            facts.mailbox.password = _kept_password(session)
        _gather(facts, session)
    return {user: _build(facts) for user, facts in facts_by_user.items()}
