"""``pop3tap view``: serve the HTML view of captures on a local port, live."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from pop3tap.cli._common import EXIT_OK, CliError, Subparsers, epilog, is_loopback, parse_endpoint


def add_subcommand(sub: Subparsers) -> None:
    parser = sub.add_parser(
        "view",
        help="serve the HTML view of captures on 127.0.0.1, refreshed as captures arrive",
        description=(
            "Serve the page of 'show --format html' for capture files or directories on a "
            "local HTTP port (a free one unless --listen names it) and print its address. "
            "The page refreshes itself as captures appear or grow. Read-only."
        ),
        epilog=epilog(
            "  pop3tap view captures/                      a free port, printed\n"
            "  pop3tap view captures/ --listen 8025"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "captures", nargs="+", metavar="CAPTURE", help="capture files or directories"
    )
    parser.add_argument(
        "--listen",
        default="127.0.0.1:0",
        metavar="[HOST:]PORT",
        help="where to serve (default 127.0.0.1 on a free port); anything but loopback "
        "shows the captures to the network and gets a warning",
    )
    parser.set_defaults(handler=_cmd_view)


def _cmd_view(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pop3tap.htmlview.server import ViewServer

    for item in args.captures:
        if not Path(item).exists():
            raise CliError(f"{item}: no such file or directory")
    host, port = parse_endpoint(args.listen, default_host="127.0.0.1")
    if not is_loopback(host):
        print(
            f"pop3tap: warning: serving captures on {host}, reachable from other machines; "
            "they hold mail and addresses",
            file=sys.stderr,
        )
    try:
        server = ViewServer(host, port, list(args.captures))
    except OSError as exc:
        raise CliError(f"cannot listen on {args.listen}: {exc.strerror or exc}", code=1) from None
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    worker = threading.Thread(target=server.serve_forever, name="pop3tap-view", daemon=True)
    worker.start()
    print(f"pop3tap view: {server.url} (Ctrl-C stops)", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.shutdown()
        server.server_close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return EXIT_OK
