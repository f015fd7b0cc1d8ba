"""``pop3tap demo``: record and show a POP3 session with nothing but loopback.

It starts a replay server from a capture shipped in ``captures/``, the recording relay in
front of it, drives a real :mod:`poplib` session through the relay, then prints the
Pop3.log-style view of the new capture and where it was written.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pop3tap.cli._common import (
    EXIT_FAILURE,
    EXIT_OK,
    CliError,
    Subparsers,
    add_logging_options,
    check_writable_directory,
    epilog,
    setup_logging,
)

if TYPE_CHECKING:
    from pop3tap.replay import RecordedSession

#: The capture the demo replays by default.
DEFAULT_CAPTURE = "user-pass.p3cap"
#: A client command for the replayed demo session (USER/PASS, as recorded).
CLIENT_HINT = (
    "python3 -c \"import poplib; c = poplib.POP3('127.0.0.1', 1110); c.user('alice'); "
    "c.pass_('any'); print(c.stat()); c.quit()\""
)


def shipped_captures_dir() -> Path:
    """The sample captures: ``pop3tap/samples`` of an installed wheel or sdist (package
    data), else ``captures/`` of the source tree (an editable install or a checkout)."""
    installed = Path(__file__).resolve().parents[1] / "samples"
    if (installed / DEFAULT_CAPTURE).is_file():
        return installed
    return Path(__file__).resolve().parents[2] / "captures"


def invocation() -> str:
    """How to run pop3tap again as this process was run, for hints printed to copy."""
    import shlex
    import shutil
    import sys

    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else "pop3tap"
    if argv0.endswith("__main__.py") or argv0 == "-m":
        return f"{shlex.quote(sys.executable)} -m pop3tap"
    found = shutil.which("pop3tap")
    if found and Path(found).resolve() == Path(argv0).resolve():
        return "pop3tap"
    return shlex.quote(argv0)


def add_subcommand(sub: Subparsers) -> None:
    parser = sub.add_parser(
        "demo",
        help="record a session against a replayed server and show it (loopback only)",
        description="Start a replay server from a shipped capture, the recording relay in front "
        "of it, drive a poplib session through the relay, and print the new capture.",
        epilog=epilog(
            "  pop3tap demo\n"
            "  pop3tap demo --bodies --captures demo-captures/\n"
            "  pop3tap demo --capture my-session.p3cap"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--capture",
        metavar="PATH",
        help=f"capture to replay (default: the shipped sample {DEFAULT_CAPTURE})",
    )
    parser.add_argument(
        "--captures",
        metavar="DIR",
        help="where the relay writes the new capture (default: a new temporary directory)",
    )
    parser.add_argument("--bodies", action="store_true", help="print message bodies in full")
    add_logging_options(parser)
    parser.set_defaults(handler=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from pop3tap.capture import CaptureError, read_capture
    from pop3tap.render import render_lines
    from pop3tap.replay import ReplayError, load_sessions

    setup_logging(args)
    source = Path(args.capture) if args.capture else shipped_captures_dir() / DEFAULT_CAPTURE
    try:
        sessions, _warnings = load_sessions(source)
    except (CaptureError, ReplayError) as exc:
        raise CliError(str(exc)) from None
    if args.captures:
        out_dir = Path(args.captures)
    else:
        out_dir = Path(tempfile.mkdtemp(prefix="pop3tap-demo-"))
    check_writable_directory(out_dir)
    path = _record_one_session(source, sessions, out_dir)
    try:
        capture = read_capture(path)
    except CaptureError as exc:
        raise CliError(str(exc), EXIT_FAILURE) from None
    print()
    for line in render_lines(capture, bodies=args.bodies):
        print(line)
    print()
    _print_next_steps(path)
    return EXIT_OK


def _record_one_session(source: Path, sessions: list[RecordedSession], out_dir: Path) -> Path:
    """Replay the first session behind a recording relay, run poplib through the relay,
    and return the capture the relay wrote."""
    import functools

    import trio

    from pop3tap.background import BackgroundServer
    from pop3tap.capture import iter_capture_paths
    from pop3tap.relay import Endpoint, RelayConfig, RelayServer, serve_relay
    from pop3tap.replay import ReplayConfig, ReplayServer, serve_replay
    from pop3tap.testing import run_poplib

    async def serve_both(
        *, task_status: trio.TaskStatus[tuple[ReplayServer, RelayServer]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as nursery:
            replay: ReplayServer = await nursery.start(
                functools.partial(serve_replay, ReplayConfig(listen=Endpoint("127.0.0.1", 0)),
                                  sessions=sessions[:1])
            )
            relay: RelayServer = await nursery.start(
                serve_relay,
                RelayConfig(
                    upstream=replay.address,
                    listen=Endpoint("127.0.0.1", 0),
                    captures=out_dir,
                    grace=1.0,
                ),
            )
            task_status.started((replay, relay))

    before = set(iter_capture_paths([out_dir]))
    background: BackgroundServer[tuple[ReplayServer, RelayServer]] = BackgroundServer(
        serve_both, name="pop3tap-demo"
    )
    with background as (replay, relay):
        print(f"replaying {source} on {replay.address}; recording relay on {relay.address}")
        try:
            run_poplib(relay.address.host, relay.address.port, sessions[0], timeout=10)
        except (OSError, EOFError) as exc:
            raise CliError(f"the demo client failed: {exc}", EXIT_FAILURE) from None
        path = _wait_for_capture(out_dir, before)
    if path is None:
        raise CliError(f"the relay wrote no capture to {out_dir}", EXIT_FAILURE)
    return path


def _print_next_steps(path: Path) -> None:
    import shlex

    command = invocation()
    quoted = shlex.quote(str(path))
    print(f"capture written to {path}")
    print("next:")
    print(f"  {command} show --bodies {quoted}")
    print(f"  {command} replay --listen 127.0.0.1:1110 {quoted}")
    print(f"  {CLIENT_HINT}   # in another terminal, while replay runs")


def _wait_for_capture(directory: Path, before: set[Path], timeout: float = 10.0) -> Path | None:
    """The new capture, once the relay has written its close record."""
    from pop3tap.capture import CaptureError, iter_capture_paths, read_capture

    deadline = time.monotonic() + timeout
    new: list[Path] = []
    while time.monotonic() < deadline:
        new = [p for p in iter_capture_paths([directory]) if p not in before]
        if new:
            try:
                if read_capture(new[0]).complete:
                    return new[0]
            except CaptureError:
                pass
        time.sleep(0.02)
    return new[0] if new else None
