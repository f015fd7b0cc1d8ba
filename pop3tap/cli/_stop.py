"""Stop signals that arrive when no server is listening for them.

``record`` and ``replay`` catch SIGINT, SIGTERM and SIGHUP with a trio signal receiver
while they serve (:func:`pop3tap.cli._common.stop_on_signal`); around that, the handlers
installed here are in place. Before serving, a signal does what it always does (SIGINT:
:class:`KeyboardInterrupt`, exit 130; SIGTERM, SIGHUP: the process ends by the signal).
Once a drain has started, the process is on its way out with its close records written
or being written: a third signal from an impatient user or a service manager is then
ignored, so the exit code stays the documented one (0 after a drain, 1 after a second
signal) instead of death by signal or a traceback.

Installed only when pop3tap runs as the program, never by a library call.
"""

from __future__ import annotations

import os
import signal
from types import FrameType
from typing import Final

__all__ = ["STOP_SIGNALS", "ignore_after_drain", "install_program_handlers", "mark_draining"]

STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

_draining = False


def mark_draining() -> None:
    """A first stop signal started the drain: later ones that find no receiver are ignored."""
    global _draining
    _draining = True


def _outside_server(signum: int, _frame: FrameType | None) -> None:
    if _draining:
        return
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    signal.signal(signum, signal.SIG_DFL)  # end by the signal, as without this handler
    os.kill(os.getpid(), signum)


def install_program_handlers() -> None:
    """Route SIGINT, SIGTERM and SIGHUP through :func:`_outside_server`."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _outside_server)


def ignore_after_drain() -> None:
    """When a drain happened, ignore stop signals for the rest of the program.

    The interpreter puts the default action back for every signal that has a Python
    handler as it finalizes, but leaves an ignored signal ignored.
    """
    if _draining:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
