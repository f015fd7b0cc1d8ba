"""The thin terminal layer: prompt_toolkit for the prompt, plain writes for the output.

prompt_toolkit gives the line editing, the history (kept in memory, and never a line that
carries a secret) and the completion of verbs and message numbers. Passwords are read with
:func:`getpass.getpass`, which turns echo off on the terminal itself: nothing of the
secret, not even its length, reaches the screen.

For scripts, :class:`ScriptDisplay` writes server lines and sent commands to stdout and
pop3tap's notes and errors to stderr.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import sys
from collections.abc import Iterable, Iterator
from typing import TextIO

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.layout.processors import (
    Processor,
    Transformation,
    TransformationInput,
)

from pop3tap.console._core import HELPERS, NUMBERED, POP3_VERBS, Console
from pop3tap.console._link import ConsoleError
from pop3tap.console._secrets import line_has_secret, secret_offset

_NOTE = "\x1b[36m"
_ERROR = "\x1b[1;31m"
_SENT = "\x1b[33m"
_RESET = "\x1b[0m"
#: Message numbers offered at once (a mailbox may hold far more).
_MAX_OFFERED = 500


class SecretFreeHistory(InMemoryHistory):
    """In-memory history that never keeps a line carrying a secret (PASS x, APOP n d...)."""

    def append_string(self, string: str) -> None:
        if line_has_secret(string):
            return
        super().append_string(string)


class SecretMask(Processor):
    """Draws as ``*`` what a line being typed carries after ``PASS``, ``APOP NAME`` or
    ``AUTH MECH``: the telnet habit is ``PASS secret`` on one line. The console refuses
    such a line; this keeps the secret off the screen and the scrollback while it is typed.
    """

    def apply_transformation(self, ti: TransformationInput) -> Transformation:
        # Every line: a pasted block puts several in the buffer.
        start = secret_offset(ti.document.lines[ti.lineno].replace("\r", " "))
        if start is None:
            return Transformation(ti.fragments)
        masked: StyleAndTextTuples = []
        position = 0
        for fragment in ti.fragments:
            text = fragment[1]
            shown = "".join(
                "*" if position + i >= start else char for i, char in enumerate(text)
            )
            position += len(text)
            masked.append((fragment[0], shown))
        return Transformation(masked)


class Pop3Completer(Completer):
    """Completes POP3 verbs and helpers, then message numbers the session has seen."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterator[Completion]:
        text = document.text_before_cursor
        words = text.split()
        new_word = not words or text[-1:].isspace()
        if len(words) == 0 or (len(words) == 1 and not new_word):
            prefix = words[0] if words else ""
            yield from self._verbs(prefix)
            return
        verb = words[0].upper()
        position = len(words) if new_word else len(words) - 1
        if verb not in NUMBERED or position != 1:
            return
        prefix = "" if new_word else words[-1]
        marks = self.console.marks
        offered = 0
        for number in self.console.message_numbers():
            candidate = str(number)
            if candidate.startswith(prefix):
                offered += 1
                if offered > _MAX_OFFERED:
                    return
                meta = self._meta(number)
                if number in marks:
                    meta = f"marked  {meta}"
                yield Completion(candidate, start_position=-len(prefix), display_meta=meta)

    def _meta(self, number: int) -> str:
        info = self.console.messages.get(number)
        if info is None:
            return ""
        parts = [] if info.size is None else [f"{info.size} octets"]
        if info.headers is not None and info.headers.subject:
            parts.append(info.headers.subject)
        return "  ".join(parts)

    @staticmethod
    def _verbs(prefix: str) -> Iterable[Completion]:
        lower = prefix.lower()
        for verb in POP3_VERBS:
            if verb.lower().startswith(lower):
                shown = verb if not prefix or prefix[:1].isupper() else verb.lower()
                yield Completion(shown, start_position=-len(prefix))
        for helper in HELPERS:
            if helper.startswith(lower):
                yield Completion(helper, start_position=-len(prefix), display_meta="pop3tap")


class TerminalDisplay:
    """Everything on one terminal; notes and errors in colour."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out if out is not None else sys.stdout
        self._confirm = PromptSession[str]()

    def _write(self, text: str, colour: str = "") -> None:
        if colour:
            text = f"{colour}{text}{_RESET}"
        try:
            self.out.write(text + "\n")
            self.out.flush()
        except OSError:  # the terminal is gone (SIGHUP): the session still closes cleanly
            pass

    def server(self, text: str) -> None:
        self._write(text)

    def sent(self, text: str, *, typed: bool) -> None:
        if not typed:  # the user sees what they typed; show what pop3tap sent for them
            self._write(f"> {text}", _SENT)

    def note(self, text: str) -> None:
        for line in text.splitlines():
            self._write(f"# {line}", _NOTE)

    def error(self, text: str) -> None:
        self._write(f"pop3tap: {text}", _ERROR)

    def confirm(self, question: str) -> bool:
        answer = self._confirm.prompt(f"{question} [y/N] ")
        return answer.strip().lower() in ("y", "yes")


def ask_hidden(prompt: str) -> str | None:
    """Read a secret with echo off on the terminal (nothing is shown as it is typed)."""
    try:
        return getpass.getpass(prompt)
    except (KeyboardInterrupt, EOFError):
        sys.stdout.write("\n")  # getpass leaves the cursor after its prompt
        raise


class ScriptDisplay:
    """Server lines and sent commands on stdout; notes and errors on stderr.

    When stdout is closed (``pop3tap console ... | head -1``) the script stops with a
    :class:`ConsoleError`: nobody sees the answers any more, so it must not go on to a
    QUIT, and the exit code says it stopped.
    """

    def __init__(self, *, confirm_quit: bool, out: TextIO | None = None, err: TextIO | None = None):
        self.confirm_quit = confirm_quit
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        self._out_closed = False

    def _write_out(self, text: str) -> None:
        if self._out_closed:
            return
        try:
            self.out.write(text)
        except BrokenPipeError:
            self._stdout_gone()

    def _flush_out(self) -> None:
        if self._out_closed:
            return
        try:
            self.out.flush()
        except BrokenPipeError:
            self._stdout_gone()

    def _stdout_gone(self) -> None:
        self._out_closed = True
        # What is still buffered would fail again when Python flushes it at exit.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.out.fileno())
            os.close(devnull)
        raise ConsoleError("standard output was closed; stopping")

    def server(self, text: str) -> None:
        self._write_out(text + "\n")

    def sent(self, text: str, *, typed: bool) -> None:
        self._write_out(f"> {text}\n")

    def note(self, text: str) -> None:
        self._flush_out()
        for line in text.splitlines():
            self.err.write(f"# {line}\n")
        self.err.flush()

    def error(self, text: str) -> None:
        with contextlib.suppress(ConsoleError):  # the error is what is being reported
            self._flush_out()
        self.err.write(f"pop3tap: {text}\n")
        self.err.flush()

    def confirm(self, question: str) -> bool:
        if not self.confirm_quit:
            self.error(f"{question} No: a script needs --confirm-quit for that")
        return self.confirm_quit


def run_interactive(console: Console, prompt_text: str) -> int:
    """The read-eval-print loop; returns the exit code.

    Ctrl-D (EOF) and Ctrl-C at the prompt or during a command close the connection
    without QUIT (RFC 1939 §6: nothing is deleted).
    """
    session = PromptSession[str](
        history=SecretFreeHistory(),
        completer=Pop3Completer(console),
        complete_while_typing=False,
        enable_history_search=True,
        input_processors=[SecretMask()],
    )
    while not console.ended:
        try:
            line = session.prompt(prompt_text)
        except EOFError:
            console.abandon("Ctrl-D")
            return 0
        try:
            console.run_line(line)
        except EOFError:  # Ctrl-D at a password or confirmation prompt
            console.abandon("Ctrl-D")
            return 0
    return 0
