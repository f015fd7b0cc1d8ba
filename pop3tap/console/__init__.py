"""``pop3tap console``: the classic manual POP3 session, over TLS, safe, and recorded.

The logic lives in :class:`Console` (no terminal), the connection and its capture in
:class:`Pop3Link` and :class:`SessionRecorder`; :mod:`pop3tap.console._terminal` is the
thin prompt_toolkit layer. :func:`run_session` ties them together for one session.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterable
from pathlib import Path
from types import FrameType
from typing import Final

from pop3tap.capture import CloseReason
from pop3tap.console._core import HELP, Console, Display, Outcome
from pop3tap.console._link import (
    ConsoleError,
    LinkConfig,
    Pop3Link,
    ServerClosed,
    SessionRecorder,
)
from pop3tap.console._secrets import PASSWORD_ENV, SecretError, SecretSource, line_has_secret

__all__ = [
    "EXIT_COMMAND_FAILED",
    "HELP",
    "PASSWORD_ENV",
    "Console",
    "ConsoleError",
    "Display",
    "LinkConfig",
    "Outcome",
    "Pop3Link",
    "SecretError",
    "SecretSource",
    "ServerClosed",
    "SessionRecorder",
    "check_script",
    "run_script",
    "run_session",
]

#: Exit code of a script stopped by (or, with --keep-going, that met) a failed command.
EXIT_COMMAND_FAILED: Final = 3
_EXIT_INTERRUPTED: Final = 130


class _Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP: handled like Ctrl-C (leave without QUIT)."""


def _raise_terminated(signum: int, _frame: FrameType | None) -> None:
    raise _Terminated(signal.Signals(signum).name)


def run_session(
    console: Console, recorder: SessionRecorder, driver: Callable[[Console], int]
) -> int:
    """Open the session, hand it to ``driver`` (the REPL or a script), always close the
    capture; a failure is one line and exit code 1, an interrupt leaves without QUIT."""
    display = console.display
    if recorder.path is not None:
        display.note(f"recording to {recorder.path}")
    previous = {
        signum: signal.signal(signum, _raise_terminated)
        for signum in (signal.SIGTERM, signal.SIGHUP)
    }
    reason: str = CloseReason.NO_QUIT
    code = 1
    try:
        console.open()
        code = driver(console)
    except ConsoleError as exc:
        display.error(str(exc))
        reason = str(exc)
        code = 1
    except _Terminated as exc:
        console.abandon(f"{exc.args[0] if exc.args else 'signal'} received")
        reason = CloseReason.TERMINATED
        code = _EXIT_INTERRUPTED
    except KeyboardInterrupt:
        console.abandon("Ctrl-C")
        reason = CloseReason.INTERRUPTED
        code = _EXIT_INTERRUPTED
    except EOFError:
        console.abandon("Ctrl-D")
        code = 0
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        console.link.close()
        if console.quit_answered:
            reason = CloseReason.QUIT
        recorder.close(reason)
        if recorder.path is not None:
            display.note(f"capture: {recorder.path}")
    return code


def check_script(lines: Iterable[str]) -> str | None:
    """Why a script may not run without ``--confirm-quit``, or None.

    It may not QUIT while messages it marked (DELE, undone only by RSET) are pending:
    that QUIT would make the server delete them (RFC 1939 §6).
    """
    marked: list[str] = []
    for number, raw in enumerate(lines, start=1):
        words = raw.split()
        verb = words[0].upper() if words else ""
        if verb == "DELE":
            marked.append(f"line {number}")
        elif verb == "RSET":
            marked.clear()
        elif verb == "QUIT" and marked:
            return (
                f"the script marks messages ({', '.join(marked)}) and then QUITs (line "
                f"{number}), which deletes them; add --confirm-quit to allow that"
            )
    return None


def run_script(console: Console, lines: list[str], *, keep_going: bool, source: str) -> int:
    """Run script lines in order; stop at the first failure unless ``keep_going``.

    Returns 0, or :data:`EXIT_COMMAND_FAILED` when a command got ``-ERR`` or was refused.
    A script that ends without QUIT leaves without it: nothing is deleted.
    """
    failed = console.login in (Outcome.ERR, Outcome.REFUSED)
    if failed and not keep_going:
        console.display.error("the login on connect failed; stopping (--keep-going goes on)")
        lines = []
    for number, line in enumerate(lines, start=1):
        if console.ended:
            if line.strip() and not line.strip().startswith("#"):
                console.display.error(f"{source}:{number}: the session is over; line ignored")
                failed = True
            continue
        outcome = console.run_line(line)
        if outcome in (Outcome.ERR, Outcome.REFUSED):
            failed = True
            if not keep_going:
                shown = "(a line with a secret)" if line_has_secret(line) else line.strip()
                console.display.error(
                    f"{source}:{number}: {shown}: failed; stopping (--keep-going goes on)"
                )
                break
    if not console.ended:
        console.abandon("end of script")
    return EXIT_COMMAND_FAILED if failed else 0


def open_recorder(directory: Path, config: LinkConfig) -> SessionRecorder:
    """A recorder writing a new capture in ``directory`` (CaptureError if it cannot)."""
    return SessionRecorder.create(directory, config)
