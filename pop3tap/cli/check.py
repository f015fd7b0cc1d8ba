"""``pop3tap check``: replay a capture's client against a live server and diff (docs/check.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pop3tap._text import printable
from pop3tap.cli._common import EXIT_FAILURE, EXIT_OK, CliError, Subparsers, parse_endpoint
from pop3tap.cli.diff import add_diff_options, diff_options, print_results

#: The end of ``--help``: examples and this command's own exit codes.
_EPILOG = """\
examples:
  POP3TAP_PASSWORD_alice=secret pop3tap check session.p3cap --against 127.0.0.1:110
  pop3tap check session.p3cap --against pop.example.com:995 --upstream-ca ca.pem

exit codes:
  0  the live server answers as recorded
  1  it differs, or a step failed (no answer, TLS, refused login)
  2  bad usage, unreadable input, or no password for a masked login"""


def add_subcommand(sub: Subparsers) -> None:
    parser = sub.add_parser(
        "check",
        help="replay a capture's client against a live server and diff the sessions",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_EPILOG,
        description="Send the recorded client's commands to a live server (pipelined where "
        "they were, over plain, STLS or POP3S as recorded), record the new session as a "
        "capture and print how it differs from the recorded one. Exit code 0 when they "
        "agree, 1 when they differ or the server fails a step, 2 for bad input.",
    )
    parser.add_argument("capture", metavar="CAPTURE", help="the recorded session")
    parser.add_argument(
        "--against", required=True, metavar="HOST:PORT", help="the live server to check"
    )
    parser.add_argument(
        "--password",
        action="append",
        default=[],
        metavar="USER=PASSWORD",
        help="password for a masked login; repeatable (also netrc, POP3TAP_PASSWORD_<USER>)",
    )
    parser.add_argument(
        "--netrc", type=Path, metavar="FILE", help="netrc file to read (default ~/.netrc)"
    )
    parser.add_argument(
        "--allow-dele",
        action="store_true",
        help="send the capture's DELE commands (they delete mail on the live server)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="give up when the server is silent this long in a step (default 30; a step "
        "ends after 10 times this in any case)",
    )
    parser.add_argument(
        "--capture-dir",
        type=Path,
        default=Path("."),
        metavar="DIR",
        help="where to write the new session's capture (default: current directory)",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--upstream-ca", type=Path, metavar="FILE", help="CA file to verify the server with"
    )
    group.add_argument(
        "--insecure-upstream",
        action="store_true",
        help="do not verify the server's certificate",
    )
    add_diff_options(parser)
    parser.set_defaults(handler=_cmd_check)


def _cmd_check(args: argparse.Namespace) -> int:
    from pop3tap.check import CheckConfig, CheckError, load_session, preflight, run_check
    from pop3tap.diff import DiffOptions, diff_paths

    host, port = parse_endpoint(args.against)
    if port == 0:
        raise CliError(f"malformed address {args.against!r}: the port cannot be 0")
    if not 0 < args.timeout <= 3600:
        raise CliError("--timeout must be more than 0 and at most 3600 seconds")
    passwords: dict[str, str] = {}
    for item in args.password:
        user, sep, secret = item.partition("=")
        if not sep or not user:
            raise CliError("--password takes USER=PASSWORD")
        passwords[user] = secret
    if not args.capture_dir.is_dir():
        raise CliError(f"{args.capture_dir}: not a directory")
    options = diff_options(args)
    assert isinstance(options, DiffOptions)
    config = CheckConfig(
        host=host,
        port=port,
        capture_dir=args.capture_dir,
        allow_dele=args.allow_dele,
        timeout=args.timeout,
        upstream_ca=args.upstream_ca,
        insecure_upstream=args.insecure_upstream,
        passwords=passwords,
        netrc_file=args.netrc,
    )
    try:
        session, upstream_tls = load_session(Path(args.capture))
        credentials = preflight(session, config)
    except CheckError as exc:
        raise CliError(str(exc)) from None
    try:
        outcome = run_check(session, config, credentials, upstream_tls=upstream_tls)
    except CheckError as exc:
        raise CliError(f"check: {exc}", code=EXIT_FAILURE) from None
    print(f"pop3tap: new session recorded in {outcome.capture}", file=sys.stderr)
    if outcome.stopped:
        print(f"pop3tap: {printable(outcome.stopped)}", file=sys.stderr)
    results = diff_paths(args.capture, outcome.capture, options)
    equal = print_results(list(results), args.format)
    return EXIT_OK if equal and not outcome.stopped else EXIT_FAILURE
