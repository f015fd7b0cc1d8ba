"""The console's logic, free of any terminal: one typed line in, server lines and notes out.

:class:`Console` runs the manual POP3 session of RFC 1939 over a :class:`Pop3Link`:
commands go to the server as typed, answers come back through a :class:`Display`
(server lines verbatim but terminal-safe, bodies dot-unstuffed and summarised), and the
helpers a support engineer needs (``headers N``, ``marks``, ``save N FILE``) are built
from ordinary commands. It is safe by construction:

* DELE only marks (RFC 1939 §6): the console remembers each mark with its subject and
  size, and ``QUIT`` with marks pending sends nothing until :meth:`Display.confirm` says
  yes, naming each marked message.
* :meth:`Console.abandon` (Ctrl-C, Ctrl-D, the end of a script, any failure) closes the
  connection without QUIT, so the server never enters the UPDATE state and deletes
  nothing (RFC 1939 §6).
* Secrets never reach the display: PASS, APOP and AUTH take the password from a
  :class:`SecretSource`, never from the typed line, and what is shown of those commands
  is masked.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Final, Protocol

from pop3tap.console._link import ConsoleError, Pop3Link
from pop3tap.console._render import (
    BodyPreview,
    HeaderSummary,
    describe_capabilities,
    parse_message_number,
    strip_line_end,
    summarize_headers,
    terminal_safe,
)
from pop3tap.console._secrets import (
    SASL_MECHANISMS,
    SecretError,
    SecretSource,
    apop_digest,
    b64,
    cram_md5_response,
    line_has_secret,
    plain_response,
    secret_keyword,
)
from pop3tap.protocol import SECRET_PLACEHOLDER, expects_multiline, parse_status, split_command
from pop3tap.protocol._commands import find_apop_timestamp

#: POP3 commands offered for completion (RFC 1939 §5-§7, RFC 2449 §5, RFC 2595 §4,
#: RFC 5034 §4).
POP3_VERBS: Final = (
    "USER", "PASS", "APOP", "AUTH", "STLS", "CAPA", "STAT", "LIST", "UIDL", "TOP", "RETR",
    "DELE", "NOOP", "RSET", "QUIT",
)  # fmt: skip
#: The console's own commands.
HELPERS: Final = ("headers", "marks", "save", "help")
#: Commands whose first argument is a message number.
NUMBERED: Final = frozenset({"LIST", "UIDL", "TOP", "RETR", "DELE", "HEADERS", "SAVE"})
#: Lines of a message body shown by ``RETR N`` without ``--all``.
PREVIEW_LINES: Final = 10
#: Lines of other multi-line answers (LIST, UIDL, TOP) shown without ``--all``.
LIST_LINES: Final = 100
#: Message numbers remembered for completion and marks.
_MAX_KNOWN: Final = 100_000
#: Unprompted server lines read before a command before giving up on the session.
_MAX_UNSOLICITED: Final = 16

HELP: Final = """\
POP3 commands are sent as typed: USER NAME, PASS, APOP NAME, AUTH [MECH], STLS, CAPA, STAT,
LIST [N], UIDL [N], TOP N LINES, RETR N, DELE N, NOOP, RSET, QUIT.
  PASS, APOP NAME and AUTH PLAIN|LOGIN|CRAM-MD5 ask for the password without echo
  (or take it from $POP3TAP_PASSWORD or --netrc).
  RETR N shows the headers, the size and the first lines; add --all to see everything
  (also after LIST, UIDL and TOP).
  DELE only marks a message; QUIT with marks asks before it lets the server delete them.
  Ctrl-C or Ctrl-D closes the connection without QUIT: nothing is deleted.
Helpers:
  headers N      From, Subject, Date and size of message N (TOP N 0 and LIST N)
  marks          messages marked for deletion in this session
  save N FILE    write message N exactly as stored (RETR N) to a new FILE
  help           this text"""


class Outcome(Enum):
    """What one typed line came to."""

    #: Nothing was sent (an empty line, ``help``, ``marks``).
    NOTHING = "nothing"
    OK = "ok"
    #: The server answered ``-ERR``.
    ERR = "err"
    #: The console refused the line itself (bad usage, a secret on the line, QUIT not
    #: confirmed); nothing was sent.
    REFUSED = "refused"
    #: QUIT was answered: the session is over.
    ENDED = "ended"


class Display(Protocol):
    """Where a console session is shown (a terminal, or stdout/stderr for scripts)."""

    def server(self, text: str) -> None:
        """A line the server sent, already terminal-safe."""

    def sent(self, text: str, *, typed: bool) -> None:
        """A command line sent (secrets masked); ``typed`` when the user typed it."""

    def note(self, text: str) -> None:
        """pop3tap's own remark (what happened, what to do next)."""

    def error(self, text: str) -> None:
        """A failure, one line."""

    def confirm(self, question: str) -> bool:
        """Ask a yes/no question; False unless the answer is yes."""


@dataclass(slots=True)
class MessageInfo:
    """What the session learnt about one message."""

    number: int
    size: int | None = None
    headers: HeaderSummary | None = None

    def describe(self) -> str:
        size = "size unknown" if self.size is None else f"{self.size} octets"
        subject = "(subject unknown)" if self.headers is None else self.headers.subject
        return f"{self.number:>5}  {size:>16}  {subject or '(no subject)'}"


@dataclass(slots=True)
class _Answer:
    """A status line, split."""

    status: str
    line: bytes

    @property
    def ok(self) -> bool:
        return self.status == "+OK"

    @property
    def text(self) -> str:
        return terminal_safe(self.line)


@dataclass
class Console:
    """One manual POP3 session (see the module docstring)."""

    link: Pop3Link
    display: Display
    secrets: SecretSource
    #: Log in as this user right after connecting (USER, then PASS).
    user: str | None = None
    #: Upgrade with STLS right after the greeting (RFC 2595 §4).
    starttls: bool = False
    marks: dict[int, MessageInfo] = field(default_factory=dict)
    #: DELE arguments the server accepted that name no message number the console can
    #: read (``DELE 1 x`` on a lenient server): still marks, since QUIT may delete them.
    odd_marks: list[str] = field(default_factory=list)
    messages: dict[int, MessageInfo] = field(default_factory=dict)
    #: Message count from the last STAT (for completion).
    count: int = 0
    capabilities: list[str] = field(default_factory=list)
    ended: bool = False
    #: QUIT was answered +OK (the server entered the UPDATE state, RFC 1939 §6).
    quit_answered: bool = False
    apop_timestamp: str | None = None
    #: How the login on connect (``user``) went; None when there was none.
    login: Outcome | None = None

    # -- session -------------------------------------------------------------------------

    def open(self) -> None:
        """Connect, show the greeting and the capabilities, upgrade, log in if asked."""
        display = self.display
        self.link.connect()
        server = self.link.config.server
        display.note(f"connected to {server}{self._tls_text()}")
        greeting = self.link.read_status("before its greeting")
        status, _rest = parse_status(greeting)
        if status is None:
            raise ConsoleError(
                f"the server sent this instead of a POP3 greeting: {terminal_safe(greeting[:200])}"
            )
        display.server(terminal_safe(greeting))
        if status != "+OK":
            raise ConsoleError("the server refused the session in its greeting")
        self.apop_timestamp = find_apop_timestamp(greeting)
        self._capa(typed=False, show_all=False)
        if self.starttls:
            if self.capabilities and not any(c.upper() == "STLS" for c in self.capabilities):
                display.note("the server does not list STLS; trying it anyway")
            self._stls(typed=False)
        if self.user is not None:
            user = self.user
            answer = self._command(f"USER {user}".encode(), f"USER {user}", typed=False)
            self.login = self._pass(typed=False) if answer.ok else Outcome.ERR

    def run_line(self, raw: str) -> Outcome:
        """Run one typed line (a POP3 command or a helper)."""
        line = raw.strip()
        if not line or line.startswith("#"):
            return Outcome.NOTHING
        if self.ended:
            self.display.error("the session is over")
            return Outcome.REFUSED
        if any(c in line for c in "\r\n\0"):
            self.display.error("one command per line; CR, LF and NUL cannot be sent")
            return Outcome.REFUSED
        word, _, rest = line.partition(" ")
        helper = word.lower()
        if helper in ("help", "?"):
            self.display.note(HELP)
            return Outcome.NOTHING
        if helper == "marks":
            if rest.strip():
                self.display.error("usage: marks (no arguments)")
                return Outcome.REFUSED
            self._show_marks()
            return Outcome.NOTHING
        if helper == "headers":
            return self._headers(rest)
        if helper == "save":
            return self._save(rest)
        return self._pop3(line)

    def abandon(self, why: str) -> None:
        """Close the connection without QUIT: the server deletes nothing (RFC 1939 §6)."""
        if self.ended:
            return
        was_open = self.link.connected
        self.link.close()
        self.ended = True
        if not was_open:
            return
        text = f"{why}: connection closed without QUIT, so nothing was deleted"
        if self.has_marks:
            text += f" (the marks on {self._marked_text()} were dropped; the messages stay)"
        self.display.note(text)

    @property
    def has_marks(self) -> bool:
        """Whether a DELE the server accepted is pending: QUIT would delete (RFC 1939 §6)."""
        return bool(self.marks or self.odd_marks)

    def _marked_text(self) -> str:
        shown = [str(n) for n in sorted(self.marks)]
        shown += [f"DELE {terminal_safe(a)}".rstrip() for a in self.odd_marks]
        return ", ".join(shown)

    def message_numbers(self) -> list[int]:
        """Known message numbers, for completion."""
        known = set(self.messages) | set(range(1, min(self.count, _MAX_KNOWN) + 1))
        return sorted(known)

    # -- POP3 commands -------------------------------------------------------------------

    def _pop3(self, line: str) -> Outcome:
        verb, args_bytes = split_command(line.encode("utf-8", "surrogateescape"))
        args = args_bytes.decode("utf-8", "surrogateescape")
        words = args.split()
        show_all = bool(words) and words[-1].lower() == "--all"
        if show_all:
            trimmed = " ".join(words[:-1])
            if expects_multiline(verb, trimmed.encode()) or verb in ("LIST", "UIDL"):
                line = f"{line.split(None, 1)[0]} {trimmed}".rstrip()
                args, words = trimmed, words[:-1]
            else:
                show_all = False
        if line_has_secret(line):
            keyword = secret_keyword(line) or "this command"
            self.display.error(
                f"{keyword} takes no secret on the command line here: type "
                f"{_secret_usage(keyword)} "
                "and the password is asked without echo; the line was not sent"
            )
            return Outcome.REFUSED
        if verb == "PASS":
            return self._pass(typed=True)
        if verb == "APOP":
            return self._apop(words)
        if verb == "AUTH" and words:
            return self._auth(words[0])
        if verb == "STLS":
            return self._stls(typed=True)
        if verb == "QUIT":
            return self._quit(line)
        if verb == "CAPA" and not words:
            return self._capa(typed=True, show_all=show_all)
        if verb == "DELE":
            return self._dele(line, words)
        number = parse_message_number(words[0]) if words else None
        if verb == "RETR" and number is not None and not show_all:
            return self._retr_preview(line, number)
        answer = self._command(line.encode("utf-8", "surrogateescape"), line, typed=True)
        if answer.ok and expects_multiline(verb, args.encode("utf-8", "surrogateescape")):
            self._show_body(verb, show_all)
        if answer.ok:
            self._learn(verb, words, answer)
            if verb == "USER" and words:
                self.user = args.strip()
            if verb == "RSET" and self.has_marks:
                self.marks.clear()
                self.odd_marks.clear()
                self.display.note("all marks removed")
        return Outcome.OK if answer.ok else Outcome.ERR

    def _command(self, line: bytes, shown: str, *, typed: bool, sasl: bool = False) -> _Answer:
        """Send one line and read its status line (a ``+`` continuation only with ``sasl``)."""
        self._drain_unsolicited()
        self.display.sent(shown, typed=typed)
        self.link.send_line(line)
        verb = shown.split(" ", 1)[0].upper()
        status_line = self.link.read_status(f"while waiting for the answer to {verb}")
        status, _rest = parse_status(status_line)
        if status is None or (status == "+" and not sasl):
            self.abandon("protocol error")
            raise ConsoleError(
                f"the server answered {verb} with a line that is not a POP3 response: "
                f"{terminal_safe(status_line[:200])}"
            )
        answer = _Answer(status, status_line)
        self.display.server(answer.text)
        self._recorder_warning()
        return answer

    def _drain_unsolicited(self) -> None:
        """Show what the server said while no command was waiting (e.g. an idle timeout)."""
        for _ in range(_MAX_UNSOLICITED):
            if not self.link.pending_input():
                return
            line = self.link.read_status("while the console was idle")
            self.display.server(terminal_safe(line))
            self.display.note("(the server sent that line on its own)")
        raise ConsoleError("the server keeps sending lines nobody asked for")

    def _show_body(self, verb: str, show_all: bool) -> None:
        if show_all:
            self.link.read_body(self._print_piece, f"inside the {verb} answer")
            return
        preview = BodyPreview(keep_lines=LIST_LINES)
        learn = self._learn_listing if verb in ("LIST", "UIDL") else None

        def sink(piece: bytes, line_start: bool) -> None:
            preview.feed(piece, line_start)
            if learn is not None and line_start:
                learn(piece)

        self.link.read_body(sink, f"inside the {verb} answer")
        for text in preview.kept:
            self.display.server(text)
        self.display.server(".")
        if preview.more_lines:
            self.display.note(f"{preview.more_lines} more lines not shown: add --all to see them")

    def _print_piece(self, piece: bytes, _line_start: bool) -> None:
        self.display.server(terminal_safe(strip_line_end(piece)))

    def _learn(self, verb: str, words: list[str], answer: _Answer) -> None:
        """Message count and sizes from STAT and ``LIST N`` (RFC 1939 §5 scan listings)."""
        fields = answer.line.split()
        if verb == "STAT" and len(fields) >= 2 and fields[1].isdigit():
            self.count = int(fields[1])
        elif verb == "LIST" and words and len(fields) >= 3:
            self._learn_listing(b" ".join(fields[1:3]))

    def _learn_listing(self, line: bytes) -> None:
        fields = line.split()
        if len(fields) >= 2 and fields[0].isdigit() and fields[1].isdigit():
            number = int(fields[0])
            if number in self.messages or len(self.messages) < _MAX_KNOWN:
                self._info(number).size = int(fields[1])

    def _info(self, number: int) -> MessageInfo:
        info = self.messages.get(number)
        if info is None:
            info = self.messages[number] = MessageInfo(number)
        return info

    def _capa(self, *, typed: bool, show_all: bool) -> Outcome:
        answer = self._command(b"CAPA", "CAPA", typed=typed)
        if not answer.ok:
            self.capabilities = []
            if not typed:
                self.display.note("the server has no CAPA (RFC 2449): capabilities unknown")
            return Outcome.ERR
        preview = BodyPreview(keep_lines=1000 if show_all else 200)
        self.link.read_body(preview.feed, "inside the CAPA answer")
        self.capabilities = list(preview.kept)
        self.display.note("capabilities:")
        for text in describe_capabilities(self.capabilities):
            self.display.server(text)
        return Outcome.OK

    def _stls(self, *, typed: bool) -> Outcome:
        if self.link.tls is not None:
            self.display.error("this connection already uses TLS; STLS not sent")
            return Outcome.REFUSED
        answer = self._command(b"STLS", "STLS", typed=typed)
        if not answer.ok:
            if not typed:
                self.abandon("STLS refused")
                raise ConsoleError(
                    "the server refused STLS; not going on without TLS (drop --starttls "
                    "to talk to it in plaintext)"
                )
            return Outcome.ERR
        dropped = self.link.start_tls()
        if dropped:
            self.display.note(
                f"the server sent {dropped} bytes after its +OK to STLS, before TLS; "
                "they were dropped (RFC 2595 §4)"
            )
        self.display.note(f"TLS is up{self._tls_text()}")
        # RFC 2595 §4: capabilities learnt before TLS must be asked again.
        self._capa(typed=False, show_all=False)
        return Outcome.OK

    def _tls_text(self) -> str:
        tls = self.link.tls
        if tls is None:
            return " (no TLS)" if not self.starttls else " (plaintext until STLS)"
        # The server chooses its certificate's subject: escape sequences and all.
        subject = terminal_safe(str(tls.get("peer_subject")))
        cert = "" if self.link.config.insecure else f"; verified certificate {subject}"
        if self.link.config.insecure:
            cert = f"; certificate {subject} NOT verified (--insecure)"
        return f" ({tls.get('version')}, {tls.get('cipher')}{cert})"

    # -- login ---------------------------------------------------------------------------

    def _ask_password(self) -> str | None:
        try:
            password = self.secrets.password(self.user)
        except SecretError as exc:
            self.display.error(str(exc))
            return None
        if password is None:
            self.display.note("cancelled; nothing was sent")
            return None
        if any(c in password for c in "\r\n\0"):
            self.display.error("the password holds CR, LF or NUL; it cannot be sent")
            return None
        return password

    def _pass(self, *, typed: bool) -> Outcome:
        """PASS with the password from the secret source (RFC 1939 §7)."""
        password = self._ask_password()
        if password is None:
            return Outcome.REFUSED
        answer = self._command(
            b"PASS " + password.encode("utf-8"), f"PASS {SECRET_PLACEHOLDER}", typed=typed
        )
        return Outcome.OK if answer.ok else Outcome.ERR

    def _apop(self, words: list[str]) -> Outcome:
        """APOP name digest, the digest made from the greeting's timestamp (RFC 1939 §7)."""
        if len(words) != 1:
            self.display.error("usage: APOP NAME (the password is asked without echo)")
            return Outcome.REFUSED
        if self.apop_timestamp is None:
            self.display.error("the greeting has no APOP timestamp: this server offers no APOP")
            return Outcome.REFUSED
        self.user = words[0]
        password = self._ask_password()
        if password is None:
            return Outcome.REFUSED
        digest = apop_digest(self.apop_timestamp, password)
        answer = self._command(
            f"APOP {words[0]} {digest}".encode(),
            f"APOP {words[0]} {SECRET_PLACEHOLDER}",
            typed=False,
        )
        return Outcome.OK if answer.ok else Outcome.ERR

    def _auth(self, mechanism: str) -> Outcome:
        """AUTH with PLAIN, LOGIN or CRAM-MD5, answering each challenge (RFC 5034 §4)."""
        mech = mechanism.upper()
        if mech not in SASL_MECHANISMS:
            self.display.error(
                f"the console answers {', '.join(SASL_MECHANISMS)}; "
                "AUTH alone lists what the server offers"
            )
            return Outcome.REFUSED
        user = self.user
        if not user:
            self.display.error(f"AUTH {mech} needs a user name first: USER NAME, or --user")
            return Outcome.REFUSED
        password = self._ask_password()
        if password is None:
            return Outcome.REFUSED
        steps: list[Callable[[bytes], bytes]]
        if mech == "PLAIN":
            steps = [lambda _c: plain_response(user, password)]
        elif mech == "LOGIN":
            steps = [lambda _c: b64(user.encode()), lambda _c: b64(password.encode())]
        else:
            steps = [lambda c: cram_md5_response(user, password, _decode_challenge(c))]
        answer = self._command(f"AUTH {mech}".encode(), f"AUTH {mech}", typed=True, sasl=True)
        while answer.status == "+":
            if steps:
                response = steps.pop(0)(answer.line[2:])
                answer = self._command(response, SECRET_PLACEHOLDER, typed=False, sasl=True)
            else:  # more challenges than the mechanism has: cancel (RFC 5034 §4)
                answer = self._command(b"*", "*", typed=False, sasl=True)
        return Outcome.OK if answer.ok else Outcome.ERR

    # -- reading messages ----------------------------------------------------------------

    def _retr_preview(self, line: str, number: int) -> Outcome:
        """RETR N: the headers, the size and the first lines (``--all`` shows the rest)."""
        answer = self._command(line.encode("utf-8", "surrogateescape"), line, typed=True)
        if not answer.ok:
            return Outcome.ERR
        preview = BodyPreview(keep_lines=PREVIEW_LINES, message=True)
        self.link.read_body(preview.feed, f"inside message {number}")
        headers = summarize_headers(bytes(preview.head))
        info = self._info(number)
        info.size, info.headers = preview.size, headers
        self.display.note(
            f"message {number}: {preview.size} octets, {preview.lines} lines "
            f"({preview.head_lines} header lines)"
        )
        self._show_headers(headers)
        for text in preview.kept:
            self.display.server(text)
        if preview.more_lines:
            self.display.note(
                f"{preview.more_lines} more lines: RETR {number} --all shows them, "
                f"save {number} FILE writes the whole message"
            )
        return Outcome.OK

    def _show_headers(self, headers: HeaderSummary) -> None:
        for name, value in (
            ("From", headers.sender),
            ("To", headers.to),
            ("Subject", headers.subject),
            ("Date", headers.date),
        ):
            if value or name != "To":
                self.display.server(f"  {name + ':':<9}{value}")

    def _lookup(self, number: int, *, typed: bool) -> Outcome:
        """Learn the size (LIST N) and headers (TOP N 0) of a message."""
        info = self._info(number)
        if info.size is None:
            answer = self._command(f"LIST {number}".encode(), f"LIST {number}", typed=False)
            if not answer.ok:
                return Outcome.ERR
            self._learn("LIST", [str(number)], answer)
        answer = self._command(f"TOP {number} 0".encode(), f"TOP {number} 0", typed=False)
        if not answer.ok:
            return Outcome.ERR
        preview = BodyPreview(keep_lines=0, message=True)
        self.link.read_body(preview.feed, f"inside the headers of message {number}")
        info.headers = summarize_headers(bytes(preview.head))
        return Outcome.OK

    def _headers(self, rest: str) -> Outcome:
        number = parse_message_number(rest.strip())
        if number is None:
            self.display.error("usage: headers N (a message number)")
            return Outcome.REFUSED
        outcome = self._lookup(number, typed=True)
        if outcome is not Outcome.OK:
            return outcome
        info = self._info(number)
        assert info.headers is not None
        self.display.note(f"message {number}: {info.size} octets")
        self._show_headers(info.headers)
        return Outcome.OK

    def _save(self, rest: str) -> Outcome:
        """save N FILE: RETR N written exactly (dot-unstuffed, line ends as sent) to FILE."""
        number_text, _, name = rest.strip().partition(" ")
        number = parse_message_number(number_text)
        name = name.strip()
        if number is None or not name:
            self.display.error("usage: save N FILE")
            return Outcome.REFUSED
        target = Path(name).expanduser()
        if os.path.lexists(target):
            self.display.error(f"{target} exists; not overwritten (choose another name)")
            return Outcome.REFUSED
        try:
            fd, temp = tempfile.mkstemp(
                dir=target.parent, prefix=f".{target.name}.", suffix=".part"
            )
        except OSError as exc:
            self.display.error(f"cannot write {target}: {exc.strerror}")
            return Outcome.REFUSED
        written = 0
        try:
            with os.fdopen(fd, "wb") as out:
                answer = self._command(f"RETR {number}".encode(), f"RETR {number}", typed=False)
                if not answer.ok:
                    return Outcome.ERR

                failure: OSError | None = None

                def sink(piece: bytes, _line_start: bool) -> None:
                    # After a failed write the rest of the message is still read: left in
                    # the connection, it would be taken for the next command's answer.
                    nonlocal written, failure
                    if failure is not None:
                        return
                    try:
                        out.write(piece)
                    except OSError as exc:
                        failure = exc
                        return
                    written += len(piece)

                self.link.read_body(sink, f"inside message {number}")
                if failure is not None:
                    raise failure
            _publish(temp, target)
        except FileExistsError:
            self.display.error(f"{target} appeared meanwhile; not overwritten")
            return Outcome.REFUSED
        except OSError as exc:
            self.display.error(f"cannot write {target}: {exc.strerror or exc}")
            return Outcome.REFUSED
        finally:
            with contextlib.suppress(OSError):
                os.unlink(temp)
        self._info(number).size = written
        self.display.note(f"saved message {number} ({written} octets) to {target}")
        return Outcome.OK

    # -- deleting ------------------------------------------------------------------------

    def _dele(self, line: str, words: list[str]) -> Outcome:
        """DELE N marks the message (RFC 1939 §6); its subject and size are learnt first."""
        number = parse_message_number(words[0]) if len(words) == 1 else None
        if number is not None and number not in self.marks:
            info = self._info(number)
            if info.size is None or info.headers is None:
                self.display.note(f"looking up message {number} before marking it")
                self._lookup(number, typed=False)
        answer = self._command(line.encode("utf-8", "surrogateescape"), line, typed=True)
        if not answer.ok:
            return Outcome.ERR
        if number is None:
            # The server accepted a DELE the console cannot read as one message number:
            # whatever it marked, QUIT would delete, so it counts as a mark all the same.
            self.odd_marks.append(" ".join(words))
            self.display.note(
                "the server accepted that DELE; it is counted as a mark "
                "(QUIT asks first; RSET unmarks, Ctrl-D leaves without deleting)"
            )
        else:
            self.marks[number] = self._info(number)
            self.display.note(
                f"message {number} is marked; the server deletes it only at QUIT "
                "(RSET unmarks, Ctrl-D leaves without deleting)"
            )
        return Outcome.OK

    def _show_marks(self) -> None:
        if not self.has_marks:
            self.display.note("no messages are marked for deletion")
            return
        count = len(self.marks) + len(self.odd_marks)
        self.display.note(f"{count} message{'s' if count > 1 else ''} marked for deletion at QUIT:")
        for number in sorted(self.marks):
            self.display.server(self.marks[number].describe())
        for argument in self.odd_marks:
            self.display.server(f"{'?':>5}  accepted: DELE {terminal_safe(argument)}".rstrip())

    def _quit(self, line: str) -> Outcome:
        """QUIT, after confirmation when messages are marked (RFC 1939 §6)."""
        if self.has_marks:
            self._show_marks()
            count = len(self.marks) + len(self.odd_marks)
            what = "this message" if count == 1 else f"these {count} messages"
            if not self.display.confirm(f"QUIT makes the server delete {what}. Send QUIT?"):
                self.display.note(
                    "QUIT not sent; the marks stay (RSET unmarks; Ctrl-D leaves without deleting)"
                )
                return Outcome.REFUSED
        answer = self._command(line.encode("utf-8", "surrogateescape"), line, typed=True)
        if answer.ok and self.has_marks:
            self.display.note(
                f"QUIT accepted: the server deletes the marked messages ({self._marked_text()})"
            )
        self.marks.clear()
        self.odd_marks.clear()
        self.link.close()
        self.ended = True
        self.quit_answered = answer.ok
        return Outcome.ENDED if answer.ok else Outcome.ERR

    def _recorder_warning(self) -> None:
        recorder = self.link.recorder
        if recorder.warning is not None:
            self.display.error(recorder.warning)
            recorder.warning = None


def _secret_usage(verb: str) -> str:
    return {"PASS": "PASS", "APOP": "APOP NAME", "AUTH": "AUTH MECHANISM"}.get(verb, verb)


def _decode_challenge(data: bytes) -> bytes:
    import base64
    import binascii

    try:
        return base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        return b""


def _publish(temp: str, target: Path) -> None:
    """Give the finished file its name without ever replacing an existing file."""
    try:
        os.link(temp, target)
    except FileExistsError:
        raise
    except OSError:
        # A file system without hard links: rename, having checked the name is free.
        if os.path.lexists(target):
            raise FileExistsError(str(target)) from None
        os.rename(temp, target)
