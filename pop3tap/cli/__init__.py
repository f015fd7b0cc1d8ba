"""The ``pop3tap`` command line.

Each subcommand lives in its own module with an ``add_subcommand(subparsers)`` function.
Every failure a user can cause (a bad address, a busy port, an unwritable directory, a
missing or corrupt capture) ends in one line on stderr and a non-zero exit code, never a
traceback. Exit codes: 0 success, 1 runtime failure, 2 bad usage or bad input.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pop3tap.cli._common import Parser

#: The subcommand modules, in the order ``--help`` lists them. They (and trio, structlog
#: and the rest) are imported inside :func:`main`, so Ctrl-C while they load is the same
#: quiet exit 130 as Ctrl-C later, not a traceback.
SUBCOMMANDS: tuple[str, ...] = (
    "record",
    "replay",
    "show",
    "view",
    "export",
    "pcap_import",
    "demo",
    "ca",
    "console",
    "lint",
    "diff",
    "check",
    "config",
    "completion",
)

EXAMPLES = """\
examples:
  pop3tap demo                                   see it work, loopback only
  pop3tap record -u pop.example.com:110          relay and record on 127.0.0.1:1110
  pop3tap show captures/ --status -ERR           what went wrong
  pop3tap replay captures/ -l 2110               a recorded server, offline
  pop3tap COMMAND --help                         more about one command
"""


def build_parser() -> Parser:
    """The argument parser with every subcommand."""
    import argparse

    from pop3tap import __version__
    from pop3tap.cli._common import EXIT_CODES, Parser

    parser = Parser(
        prog="pop3tap",
        description="A transparent POP3 man-in-the-middle: relay, record and replay sessions.",
        epilog=f"{EXAMPLES}\n{EXIT_CODES}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-V", "--version", action="version", version=f"pop3tap {__version__}")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=Parser
    )
    for name in SUBCOMMANDS:
        importlib.import_module(f"pop3tap.cli.{name}").add_subcommand(sub)
    return parser


def _attach_status_values(argv: list[str]) -> list[str]:
    """``--status -ERR`` as ``--status=-ERR``: argparse takes ``-ERR`` for an option."""
    joined: list[str] = []
    for arg in argv:
        if joined and joined[-1] == "--status" and arg.upper() == "-ERR":
            joined[-1] = f"--status={arg}"
        else:
            joined.append(arg)
    return joined


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pop3tap`` console script and ``python -m pop3tap``."""
    program = argv is None  # the console script or python -m, not a library call
    if program:
        from pop3tap.cli._stop import install_program_handlers

        install_program_handlers()
    try:
        return _run(argv)
    except KeyboardInterrupt:
        return 130
    finally:
        if program:
            from pop3tap.cli._stop import ignore_after_drain

            ignore_after_drain()


def _run(argv: Sequence[str] | None) -> int:
    from pop3tap._text import printable
    from pop3tap.cli import config
    from pop3tap.cli._common import EXIT_OK, EXIT_USAGE, CliError

    parser = build_parser()
    arguments = _attach_status_values(list(sys.argv[1:] if argv is None else argv))
    if not arguments:
        # Bare `pop3tap`: the command list, as `git` does; it is still a usage error.
        parser.print_help()
        return EXIT_USAGE
    try:
        from_files = config.apply(parser, arguments)  # pop3tap.toml, config.toml: defaults
        args = parser.parse_args(arguments)
        config.finish(args, from_files, arguments)
        code: int = args.handler(args)
    except CliError as exc:
        message = str(exc)
        line = message if message.startswith("pop3tap") else f"pop3tap: {message}"
        print(printable(line), file=sys.stderr)  # paths and peer text may hold escapes
        return exc.code
    except BrokenPipeError:
        # `pop3tap show ... | head`: the reader went away; that is not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    return code
