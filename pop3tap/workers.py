"""Pre-forked worker processes sharing one listening socket (``--workers N``).

One Python process runs one trio loop on one core. To use more cores, the parent binds the
listening sockets, forks ``N`` workers that each accept from them (the kernel hands each
connection to one worker), and supervises them: a first SIGINT, SIGTERM or SIGHUP to the
parent becomes a SIGTERM to every worker, which drains its sessions as a single relay does;
a second becomes :data:`ABORT_SIGNAL`, which makes every worker close its sessions at once.
Workers ignore SIGINT and SIGHUP (a terminal sends them to the whole process group) and
treat repeated SIGTERMs as one (a service manager may signal every process as well as the
parent does). A worker that exits with an error stops the others, and the parent exits
non-zero.

The workers share the log file (lines are single ``O_APPEND`` writes) and the capture
directory (names are unique per session and created with ``O_EXCL``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from types import FrameType
from typing import NoReturn

from pop3tap.server._net import LISTEN_BACKLOG, bind_listen_sockets, open_listeners

__all__ = [
    "ABORT_SIGNAL",
    "LISTEN_BACKLOG",
    "MAX_WORKERS",
    "STOP_SIGNALS",
    "bind_listen_sockets",
    "open_listeners",
    "run_workers",
]

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
#: What the parent turns into one SIGTERM per worker (the first time) or one
#: :data:`ABORT_SIGNAL` per worker (the second time).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: What tells a worker to close every session now (sent by its parent only).
ABORT_SIGNAL = signal.SIGUSR2

#: Upper bound for ``--workers``: more processes than this only add scheduling noise.
MAX_WORKERS = 64
#: How long the parent sleeps between looks for workers that ended (seconds): the longest
#: a stop signal can wait for its handler, and a worker's exit to be noticed.
REAP_INTERVAL = 0.2


def _terminate_with_parent(parent: int) -> None:
    """Ask Linux for a SIGTERM when the parent dies (even by SIGKILL): no orphan workers.

    ``parent`` is the parent's pid, taken before the fork: if the parent is already gone,
    ``getppid()`` no longer returns it.
    """
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def run_workers(
    count: int,
    child: Callable[[int], int],
    *,
    on_exit: Callable[[int, int, int], None] | None = None,
    after_fork: Callable[[], None] | None = None,
    on_signal: Callable[[int, bool], None] | None = None,
) -> int:
    """Fork ``count`` workers running ``child(index)``; wait for all; return the exit code.

    ``child`` returns the worker's exit code; it runs with SIGINT and SIGHUP ignored and
    SIGTERM and :data:`ABORT_SIGNAL` at their defaults until it installs its own handlers.
    ``after_fork()`` runs in the parent once every worker has started (e.g. to close the
    parent's copies of the listening sockets). ``on_exit(index, pid, code)`` is called in
    the parent for each worker that ends; ``on_signal(signum, second)`` for each stop
    signal the parent gets (``second`` once the workers were told to close at once). The
    result is 0 only if every worker exited 0.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    supervisor = _Supervisor(on_exit, on_signal)
    # Installed before the first fork, so a signal during the forks is not lost.
    previous = {sig: signal.signal(sig, supervisor.on_stop_signal) for sig in STOP_SIGNALS}
    try:
        supervisor.fork_all(count, child)
        if after_fork is not None:
            after_fork()
        return supervisor.wait_all()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _Supervisor:
    """The parent's view of its workers: who runs, and whether they were told to stop."""

    def __init__(
        self,
        on_exit: Callable[[int, int, int], None] | None,
        on_signal: Callable[[int, bool], None] | None,
    ) -> None:
        self.on_exit = on_exit
        self.on_signal = on_signal
        #: pid -> worker index, for the workers still running.
        self.workers: dict[int, int] = {}
        self.stopping = False
        self.aborting = False

    def tell_all(self, sig: int) -> None:
        for pid in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def stop_all(self) -> None:
        self.stopping = True
        self.tell_all(signal.SIGTERM)

    def on_stop_signal(self, signum: int, _frame: FrameType | None = None) -> None:
        second = self.stopping
        if second:
            self.aborting = True
            self.tell_all(ABORT_SIGNAL)
        else:
            self.stop_all()
        if self.on_signal is not None:
            self.on_signal(signum, second)

    def fork_all(self, count: int, child: Callable[[int], int]) -> None:
        parent = os.getpid()
        for index in range(count):
            if self.stopping:
                break
            # Held back around the fork: a signal handled between fork() and the pid being
            # stored would miss the new worker, and in the worker it would run a copy of
            # stop_all. It is delivered once the mask is restored.
            mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
            if self.stopping:
                # Caught just before the block, its handler ran as the block returned:
                # a worker forked now would never be told to stop.
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
                break
            pid = os.fork()
            if pid == 0:
                _run_worker(index, child, mask, parent)
            self.workers[pid] = index
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    def wait_all(self) -> int:
        """Reap every worker; 1 if any exited non-zero (which stops the others), else 0.

        The wait is a poll with a short sleep, never a blocking ``waitpid``: Python runs a
        signal's handler between bytecodes, so a stop signal caught just before the
        process blocked in ``waitpid`` would wait there, unhandled, until some worker
        exited (none would: they were never told to stop). A sleep ends within
        :data:`REAP_INTERVAL` whatever happens, and the handler runs right after it.
        """
        result = 0
        while self.workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(REAP_INTERVAL)  # a signal cuts it short (and runs its handler)
                continue
            if pid not in self.workers:
                continue
            index = self.workers.pop(pid)
            code = self.exit_code(status)
            if self.on_exit is not None:
                self.on_exit(index, pid, code)
            if code != 0:
                result = 1
                if not self.stopping:
                    self.stop_all()
        return result

    def exit_code(self, status: int) -> int:
        code = os.waitstatus_to_exitcode(status)
        if self.stopping and code == -signal.SIGTERM:
            return 0  # stopped by our SIGTERM before it could install its handler
        if self.aborting and code == -ABORT_SIGNAL:
            return 1  # told to close at once before it could install its handler
        return code


def _run_worker(
    index: int, child: Callable[[int], int], mask: set[int | signal.Signals], parent: int
) -> NoReturn:
    """The forked worker: never returns into the parent's code."""
    code = 1
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(ABORT_SIGNAL, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        _terminate_with_parent(parent)
        code = child(index)
    except SystemExit as exc:
        code = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
