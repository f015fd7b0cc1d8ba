"""The plumbing of a console session: send one command, read its status line and its
body, learn message numbers and sizes from the answers, and leave without QUIT.

:class:`ConsoleBase` is the base of :class:`~pop3tap.console._core.Console`; the
command groups (``_login.py``, ``_messages.py``) build on it. It holds no state of its
own: the fields it declares are the dataclass fields of ``Console``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final, Protocol

from pop3tap.console._link import ConsoleError, Pop3Link
from pop3tap.console._render import (
    BodyPreview,
    HeaderSummary,
    strip_line_end,
    terminal_safe,
)
from pop3tap.console._secrets import (
    SecretSource,
)
from pop3tap.protocol import parse_status, spec_of

#: Lines of a message body shown by ``RETR N`` without ``--all``.
PREVIEW_LINES: Final = 10


#: Lines of other multi-line answers (LIST, UIDL, TOP) shown without ``--all``.
LIST_LINES: Final = 100


#: Message numbers remembered for completion and marks.
_MAX_KNOWN: Final = 100_000


#: Unprompted server lines read before a command before giving up on the session.
_MAX_UNSOLICITED: Final = 16


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
        """A command line sent (secrets masked, terminal-safe); ``typed`` when the user
        typed it."""

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


class ConsoleBase:
    """Sending, reading and learning, shared by the command groups."""

    link: Pop3Link
    display: Display
    secrets: SecretSource
    user: str | None
    starttls: bool
    marks: dict[int, MessageInfo]
    odd_marks: list[str]
    messages: dict[int, MessageInfo]
    count: int
    capabilities: list[str]
    ended: bool
    quit_answered: bool
    apop_timestamp: str | None
    login: Outcome | None

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

    def _command(self, line: bytes, shown: str, *, typed: bool, sasl: bool = False) -> _Answer:
        """Send one line and read its status line (a ``+`` continuation only with ``sasl``)."""
        self._drain_unsolicited()
        # A script line is input like a server's: shown through the same filter.
        self.display.sent(terminal_safe(shown), typed=typed)
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
        learn = self._learn_listing if spec_of(verb).lists_messages else None

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

    def _recorder_warning(self) -> None:
        recorder = self.link.recorder
        if recorder.warning is not None:
            self.display.error(recorder.warning)
            recorder.warning = None
