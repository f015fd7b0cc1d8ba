"""Helpers shared by the ``pop3tap`` subcommands.

Every failure a user can cause (a bad address, a busy port, an unwritable directory, a
missing or corrupt capture) ends in one line on stderr and a non-zero exit code, never a
traceback. Exit codes: 0 success, 1 runtime failure, 2 bad usage or bad input.
"""

from __future__ import annotations

import argparse
import errno
import functools
import ipaddress
import os
import signal
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, TypeAlias

from pop3tap.cli._stop import mark_draining

if TYPE_CHECKING:
    # Only the serving commands need trio and structlog; they import them when they run,
    # so `show`, `lint` or `--help` do not pay for loading them.
    import structlog
    import trio

    from pop3tap.relay import Endpoint

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class CliError(Exception):
    """A user-facing error: printed as one line, exits with ``code``."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are :class:`CliError` (one line, exit code 2)."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{self.prog}: {message}")


#: What each subcommand module's ``add_subcommand`` receives.
Subparsers: TypeAlias = "argparse._SubParsersAction[Parser]"


def check_input_file(path: Path | None, option: str) -> None:
    """A file the user named must exist and be a readable file: else usage error (exit 2)."""
    if path is None:
        return
    if not path.exists():
        raise CliError(f"{option} {path}: no such file")
    if not path.is_file():
        raise CliError(f"{option} {path}: not a file")
    if not os.access(path, os.R_OK):
        raise CliError(f"{option} {path}: not readable")


#: Listed at the end of every ``--help``.
EXIT_CODES = """exit codes:
  0  success
  1  runtime failure (a busy port, an unreachable host, a failed worker, a broken CA)
  2  bad usage or bad input (an unknown option, a malformed address, a missing or corrupt
     input file, a bad config file)"""


def epilog(examples: str) -> str:
    """The end of a subcommand's ``--help``: examples, then the exit codes."""
    return f"examples:\n{examples.rstrip()}\n\n{EXIT_CODES}"


def parse_endpoint(text: str, *, default_host: str | None = None) -> tuple[str, int]:
    """Parse ``host:port``, ``[v6]:port`` or (with a default host) ``:port``/``port``."""
    raw = text.strip()
    host: str
    port_text: str
    if raw.startswith("["):
        end = raw.find("]")
        if end < 0 or not raw[end + 1 :].startswith(":"):
            raise CliError(f"malformed address {text!r}: expected [IPv6]:PORT")
        host, port_text = raw[1:end], raw[end + 2 :]
    elif ":" in raw:
        host, _, port_text = raw.rpartition(":")
        if ":" in host:
            raise CliError(f"malformed address {text!r}: write IPv6 addresses as [ADDR]:PORT")
    elif default_host is not None:
        host, port_text = default_host, raw
    else:
        raise CliError(f"malformed address {text!r}: expected HOST:PORT")
    if not host:
        if default_host is None:
            raise CliError(f"malformed address {text!r}: the host is missing")
        host = default_host
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise CliError(f"malformed address {text!r}: the port must be a number from 0 to 65535")
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    """Whether a listen host only accepts local connections."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_writable_directory(path: Path) -> None:
    """Fail fast when captures cannot be written there (rather than at the first session)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"captures directory {path}: cannot create it: {exc.strerror}") from None
    if not path.is_dir():
        raise CliError(f"captures directory {path}: not a directory")
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise CliError(f"captures directory {path}: not writable: {exc.strerror}") from None


def warn_if_shared_directory(path: Path, log: structlog.typing.FilteringBoundLogger) -> None:
    """Warn when another user controls the captures directory.

    Capture files are created ``O_EXCL`` and 0600, so nothing can be planted in one; but
    a user who may write the directory (group or world write, or owning it), or who owns
    a link on the way to it (and can point it anywhere at any time), could delete or
    rename captures, or add forged ones that `show` and `replay` would read.
    """
    import stat

    from pop3tap._private import owner_name, shared_writable

    trusted = (0, os.geteuid())
    try:
        link = os.lstat(path)
        info = path.stat()
    except OSError:
        return
    note: str | None = None
    if stat.S_ISLNK(link.st_mode) and link.st_uid not in trusted:
        note = (
            f"{path} is a link owned by {owner_name(link.st_uid)}, who can point it "
            "anywhere: give the real directory's path"
        )
    elif info.st_uid not in trusted:
        note = (
            f"{path} is owned by {owner_name(info.st_uid)}, who can delete, rename or "
            "forge captures there: use a directory you own"
        )
    elif shared_writable(info.st_mode):
        note = f"other users can delete, rename or forge captures there: chmod 700 {path}"
    if note is not None:
        log.warning(
            "captures.shared_directory",
            path=str(path),
            mode=f"{info.st_mode & 0o7777:04o}",
            note=note,
        )


def add_logging_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "logging",
        "On a terminal: one aligned line per exchange (colours unless NO_COLOR is set; "
        "FORCE_COLOR forces them). Otherwise JSON lines.",
    )
    group.add_argument(
        "--log-format",
        choices=("auto", "json", "console"),
        default="auto",
        help="JSON lines, or the console view (auto: the console view on a terminal)",
    )
    group.add_argument(
        "--log-file",
        metavar="PATH",
        help="append JSON lines here (created 0600); a terminal keeps the console view",
    )
    group.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="minimum level to log (default: info)",
    )
    loudness = group.add_mutually_exclusive_group()
    loudness.add_argument(
        "-q", "--quiet", action="store_true", help="warnings and errors only (--log-level warning)"
    )
    loudness.add_argument(
        "-v", "--verbose", action="store_true", help="debug events too (--log-level debug)"
    )


def setup_logging(args: argparse.Namespace) -> None:
    from pop3tap.log import LogSetupError, configure_logging

    level = "warning" if args.quiet else "debug" if args.verbose else args.log_level
    try:
        configure_logging(log_format=args.log_format, log_file=args.log_file, level=level)
    except LogSetupError as exc:
        raise CliError(str(exc)) from None


def add_listen_option(parser: argparse.ArgumentParser) -> None:
    """``--listen [HOST:]PORT`` (default 127.0.0.1:1110)."""
    parser.add_argument(
        "-l",
        "--listen",
        default="127.0.0.1:1110",
        metavar="[HOST:]PORT",
        help="where clients connect (default 127.0.0.1:1110; port 0 picks a free port)",
    )


#: The one line a run stopped by a second signal ends with (exit code 1).
ABORTED = "stopped by a second signal: open sessions were closed before they finished"


async def stop_on_signal(
    stop: Callable[[], None],
    abort: Callable[[], None],
    open_sessions: Callable[[], int],
    grace: float,
    log: structlog.typing.FilteringBoundLogger,
    *,
    worker: bool = False,
    kind: str = "relay",
    task_status: trio.TaskStatus[None] | None = None,
) -> None:
    """Drain on the first SIGINT, SIGTERM or SIGHUP; close everything on the second.

    Start it with ``nursery.start`` before serving: once started, the signals are caught.

    The first signal calls ``stop()`` (stop accepting, let open sessions finish within
    ``grace`` seconds) and prints one line saying how many sessions are open and how long
    they get; the second calls ``abort()`` (close every session now). The receiver stays
    installed until this task is cancelled, so no later signal can kill the process
    halfway through writing close records.

    A ``worker`` (``--workers``) listens to SIGTERM (drain; repeats are ignored, since a
    service manager may signal every process as well as the parent does) and to the
    parent's :data:`~pop3tap.workers.ABORT_SIGNAL` (close now); SIGINT and SIGHUP are the
    parent's to handle.
    """
    import trio

    from pop3tap.workers import ABORT_SIGNAL, STOP_SIGNALS

    wanted = (signal.SIGTERM, ABORT_SIGNAL) if worker else STOP_SIGNALS
    stopping = aborted = False
    with trio.open_signal_receiver(*wanted) as signals:
        if task_status is not None:
            task_status.started()
        async for signum in signals:
            name = signal.Signals(signum).name
            second = signum == ABORT_SIGNAL if worker else stopping
            if not second:
                if stopping:
                    continue
                stopping = True
                mark_draining()
                sessions = open_sessions()
                log.info(f"{kind}.shutdown", signal=name, sessions=sessions, grace_s=grace)
                _say(
                    f"{name}: stopping; {sessions} open session(s) get up to {grace:g}s to "
                    "finish (send the signal again to close them now)"
                )
                stop()
            elif not aborted:
                aborted = True
                log.warning(f"{kind}.abort", signal=name, sessions=open_sessions())
                if not worker:
                    _say(f"{name} again: closing {open_sessions()} open session(s) now")
                abort()


def _say(text: str) -> None:
    """One line on stderr for the person at the terminal (the log may go to a file)."""
    import sys

    print(f"pop3tap: {text}", file=sys.stderr, flush=True)


def add_workers_option(parser: argparse.ArgumentParser) -> None:
    """``--workers N``: pre-forked processes sharing the listening socket."""
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="serve from N processes sharing the listening port, to use more cores "
        "under load (default 1)",
    )


def check_workers(count: int) -> None:
    from pop3tap.workers import MAX_WORKERS

    if not 1 <= count <= MAX_WORKERS:
        raise CliError(f"--workers must be between 1 and {MAX_WORKERS}, not {count}")


def serve_workers(
    count: int,
    listen: Endpoint,
    serve: Callable[[list[socket.socket] | None, dict[str, int]], int],
    log: structlog.typing.FilteringBoundLogger,
    kind: str = "relay",
) -> int:
    """Run ``serve(sockets, log_fields)`` once in this process, or in ``count`` workers.

    With one worker ``serve`` binds the address itself (sockets None) and ``log_fields``
    is empty; with more, the address is bound here first so that every worker accepts from
    the same sockets, and each worker gets ``{"worker": index, "pid": pid}`` for its lines.
    ``serve`` returns 1 (and a single process raises ``CliError(ABORTED)``) when a second
    signal closed its sessions.
    """
    if count == 1:
        return serve(None, {})
    from pop3tap.workers import bind_listen_sockets, run_workers

    try:
        sockets = bind_listen_sockets(listen.host, listen.port)
    except OSError as exc:
        raise socket_error(exc, f"listen on {listen}") from None
    supervisor = _WorkerSupervisor(count, sockets, serve, log, kind)
    code = run_workers(
        count,
        supervisor.worker,
        on_exit=supervisor.on_exit,
        after_fork=supervisor.close_sockets,
        on_signal=supervisor.on_signal,
    )
    if supervisor.aborted:
        raise CliError(ABORTED, EXIT_FAILURE)
    if code != 0:
        raise CliError("a worker process failed (see its log lines)", EXIT_FAILURE)
    return EXIT_OK


class _WorkerSupervisor:
    """The parent's side of ``--workers N``: signals, worker exits, the listening sockets."""

    def __init__(
        self,
        count: int,
        sockets: list[socket.socket],
        serve: Callable[[list[socket.socket] | None, dict[str, int]], int],
        log: structlog.typing.FilteringBoundLogger,
        kind: str = "relay",
    ) -> None:
        self.count = count
        #: ``relay`` or ``replay``: the first word of the lines logged here.
        self.kind = kind
        self.sockets = sockets
        self.serve = serve
        self.log = log
        #: A second signal closed the workers' open sessions.
        self.aborted = False

    def on_signal(self, signum: int, second: bool) -> None:
        name = signal.Signals(signum).name
        if second and not self.aborted:
            self.aborted = True
            _say(f"{name} again: every worker closes its open sessions now")
        elif not second:
            mark_draining()
            # The parent turns SIGINT (Ctrl-C) into SIGTERM for each worker: log which it was.
            self.log.info(f"{self.kind}.shutdown", signal=name, workers=self.count)
            _say(
                f"{name}: stopping; {self.count} workers let their open sessions finish "
                f"(see {self.kind}.draining in the log; send the signal again to close them now)"
            )

    def on_exit(self, index: int, pid: int, code: int) -> None:
        if code != 0 and not self.aborted:
            self.log.error("worker.failed", worker=index, pid=pid, exit_code=code)

    def close_sockets(self) -> None:
        # The workers hold them now; a copy left open here would keep accepting clients
        # that no worker serves once they have stopped accepting.
        for sock in self.sockets:
            sock.close()

    def worker(self, index: int) -> int:
        from pop3tap.log import set_process_fields

        where = {"worker": index, "pid": os.getpid()}
        set_process_fields(**where)  # on every line of this worker, sessions' too
        return self.serve(self.sockets, where)


def run_trio(main: Callable[[], object], *, what: str) -> None:
    """Run trio, turning socket errors at startup into one-line CLI errors."""
    import trio

    try:
        trio.run(main)  # type: ignore[arg-type]
    except OSError as exc:
        raise socket_error(exc, what) from None
    except BaseExceptionGroup as group:  # a nursery wraps what its tasks raised
        matched, _rest = group.split(OSError)
        if matched is None:
            raise
        first: BaseException = matched
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        assert isinstance(first, OSError)
        raise socket_error(first, what) from None


def socket_error(exc: OSError, what: str) -> CliError:
    if exc.errno == errno.EADDRINUSE:
        return CliError(f"cannot {what}: address already in use", EXIT_FAILURE)
    if isinstance(exc, socket.gaierror):
        return CliError(f"cannot {what}: unknown host ({exc.strerror})", EXIT_FAILURE)
    return CliError(f"cannot {what}: {exc.strerror or exc}", EXIT_FAILURE)


class DrainableServer(Protocol):
    """What :func:`serve_until_stopped` needs of a relay or replay server."""

    aborted: bool

    async def run(self, *, task_status: Any = ...) -> None: ...
    def shutdown(self) -> None: ...
    def abort(self) -> None: ...


def serve_until_stopped(
    server: DrainableServer,
    *,
    open_sessions: Callable[[], int],
    grace: float,
    log: structlog.typing.FilteringBoundLogger,
    where: dict[str, int],
    listening: Callable[[], None],
    what: str,
    kind: str = "relay",
) -> bool:
    """Serve until a stop signal, then drain (see :func:`stop_on_signal`).

    ``listening`` logs once the server accepts. Returns whether a second signal aborted
    the drain; the caller logs how it stopped and turns that into an exit code with
    :func:`stopped_exit_code`.
    """
    import trio

    async def main() -> None:
        async with trio.open_nursery() as nursery:

            async def serve_until_drained(
                *, task_status: trio.TaskStatus[object] = trio.TASK_STATUS_IGNORED
            ) -> None:
                await server.run(task_status=task_status)
                nursery.cancel_scope.cancel()  # the signal listener too

            await nursery.start(
                functools.partial(
                    stop_on_signal,
                    server.shutdown,
                    server.abort,
                    open_sessions,
                    grace,
                    log,
                    worker=bool(where),
                    kind=kind,
                )
            )
            await nursery.start(serve_until_drained)
            listening()

    run_trio(main, what=what)
    return server.aborted


def stopped_exit_code(aborted: bool, where: dict[str, int]) -> int:
    """0 after a drain; after a second signal 1 (a worker leaves the message to its parent)."""
    if aborted:
        if where:
            return EXIT_FAILURE
        raise CliError(ABORTED, EXIT_FAILURE)
    return EXIT_OK
