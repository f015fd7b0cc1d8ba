"""``pop3tap diff``: POP3-level differences between two captures (docs/diff.md)."""

from __future__ import annotations

import argparse
import json

from pop3tap._text import printable
from pop3tap.cli._common import EXIT_FAILURE, EXIT_OK, CliError, Subparsers

#: The end of ``--help``: examples and this command's own exit codes.
_EPILOG = """\
examples:
  pop3tap diff before.p3cap after.p3cap
  pop3tap diff old-dovecot/ new-dovecot/ --ignore-header Received
  pop3tap diff a.p3cap b.p3cap --format json

exit codes:
  0  the sessions agree (volatile parts aside)
  1  they differ
  2  bad usage or unreadable input"""


def add_subcommand(sub: Subparsers) -> None:
    parser = sub.add_parser(
        "diff",
        help="compare two captures (or directories of captures) exchange by exchange",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_EPILOG,
        description="Align the exchanges of two sessions by command and report what differs "
        "(status, response code, first line, body, latency, flags). Volatile parts are "
        "ignored and listed unless --strict. Exit code 0 when equal, 1 when they differ, "
        "2 for bad input.",
    )
    parser.add_argument("a", metavar="A", help="capture file or directory")
    parser.add_argument("b", metavar="B", help="capture file or directory")
    add_diff_options(parser)
    parser.set_defaults(handler=_cmd_diff)


def add_diff_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``diff`` and ``check``."""
    parser.add_argument(
        "--format", choices=("text", "json"), default="text", help="output format (default text)"
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="also compare volatile parts (greeting timestamp and host, session ids)",
    )
    parser.add_argument(
        "--ignore-header",
        action="append",
        default=[],
        metavar="NAME",
        help="leave this message header (e.g. Date, Message-ID, Received) out; repeatable",
    )
    parser.add_argument(
        "--latency-factor",
        type=float,
        default=10.0,
        metavar="F",
        help="report latencies that differ by this factor and at least --latency-floor "
        "seconds (default 10; 0 turns latency off)",
    )
    parser.add_argument(
        "--latency-floor", type=float, default=1.0, metavar="SECONDS", help="default 1.0"
    )


def diff_options(args: argparse.Namespace) -> object:
    from pop3tap.diff import DiffOptions

    if args.latency_factor < 0 or args.latency_floor < 0:
        raise CliError("--latency-factor and --latency-floor must not be negative")
    return DiffOptions(
        strict=args.strict,
        ignore_headers=frozenset(h.strip().rstrip(":").lower() for h in args.ignore_header),
        latency_factor=args.latency_factor,
        latency_floor=args.latency_floor,
    )


def print_results(results: list[object], fmt: str) -> bool:
    """Print diff results; return True when all are equal."""
    from pop3tap.diff import JSON_VERSION, DiffResult

    typed = [r for r in results if isinstance(r, DiffResult)]
    equal = all(r.equal for r in typed)
    if fmt == "json":
        doc = {
            "format": "pop3tap-diff",
            "version": JSON_VERSION,
            "equal": equal,
            "sessions": [r.as_json() for r in typed],
        }
        print(json.dumps(doc, indent=1))
    else:
        for index, result in enumerate(typed):
            if index:
                print()
            for line in result.text_lines():
                print(printable(line))  # command lines and headers come from hostile peers
    return equal


def _cmd_diff(args: argparse.Namespace) -> int:
    from pop3tap.capture import CaptureError
    from pop3tap.diff import DiffOptions, diff_paths

    options = diff_options(args)
    assert isinstance(options, DiffOptions)
    try:
        results = diff_paths(args.a, args.b, options)
    except CaptureError as exc:
        raise CliError(str(exc)) from None
    return EXIT_OK if print_results(list(results), args.format) else EXIT_FAILURE
