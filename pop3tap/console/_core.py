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

The command groups live beside it: sending and reading in ``_exchange.py``
(:class:`ConsoleBase`), logging in in ``_login.py``, the message commands and marks in
``_messages.py``; :class:`Console` is their union plus the line dispatcher.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from pop3tap.console._exchange import (
    _MAX_KNOWN,
    Display,
    MessageInfo,
    Outcome,
)
from pop3tap.console._link import ConsoleError, Pop3Link
from pop3tap.console._login import LoginCommands, _secret_usage
from pop3tap.console._messages import MessageCommands
from pop3tap.console._render import (
    parse_message_number,
    terminal_safe,
)
from pop3tap.console._secrets import (
    SecretSource,
    line_has_secret,
    secret_keyword,
)
from pop3tap.protocol import COMMANDS, expects_multiline, parse_status, spec_of, split_command
from pop3tap.protocol._replies import find_apop_timestamp

__all__ = [
    "HELP",
    "HELPERS",
    "NUMBERED",
    "POP3_VERBS",
    "Console",
    "Display",
    "MessageInfo",
    "Outcome",
]

#: POP3 commands offered for completion: every verb of the command table, in its order.
POP3_VERBS: Final = tuple(COMMANDS)
#: The console's own commands.
HELPERS: Final = ("headers", "marks", "save", "help")
#: Commands whose first argument is a message number (RFC 1939 §5), and the helpers
#: that take one.
NUMBERED: Final = frozenset(
    {verb for verb, spec in COMMANDS.items() if spec.message_argument} | {"HEADERS", "SAVE"}
)

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


@dataclass
class Console(LoginCommands, MessageCommands):
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
            if expects_multiline(verb, trimmed.encode()) or spec_of(verb).lists_messages:
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

    # -- login ---------------------------------------------------------------------------

    # -- reading messages ----------------------------------------------------------------

    # -- deleting ------------------------------------------------------------------------

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
