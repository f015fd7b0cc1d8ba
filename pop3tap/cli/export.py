"""``pop3tap export``: the messages retrieved in captured sessions, as files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pop3tap._text import printable
from pop3tap.cli._common import EXIT_OK, EXIT_USAGE, CliError, Subparsers, epilog


def add_subcommand(sub: Subparsers) -> None:
    parser = sub.add_parser(
        "export",
        help="write the messages retrieved by RETR as .eml files, a Maildir or an mbox",
        description=(
            "Write every message a captured session retrieved in full by RETR, dot-unstuffed "
            "and byte-exact, named by UIDL where the session listed one (else session id and "
            "number). A message retrieved more than once is written once. TOP answers and "
            "truncated bodies are skipped and counted, or written with --partial, marked."
        ),
        epilog=epilog(
            "  pop3tap export captures/ --eml messages/\n"
            "  pop3tap export captures/ --maildir Maildir/ --partial\n"
            "  pop3tap export session.p3cap --mbox fetched.mbox"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "captures", nargs="+", metavar="CAPTURE", help="capture files or directories"
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--eml", metavar="DIR", help="one NAME.eml file per message in DIR")
    target.add_argument("--maildir", metavar="DIR", help="deliver into the Maildir DIR (new/)")
    target.add_argument("--mbox", metavar="FILE", help="append to the mbox (mboxrd) FILE")
    parser.add_argument(
        "--partial",
        action="store_true",
        help="also write TOP-only and truncated bodies (marked by name and an "
        "X-Pop3tap-Partial header line)",
    )
    parser.set_defaults(handler=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from pop3tap.capture import Capture, CaptureError, expand_capture_args, read_capture
    from pop3tap.export import ExportError, Format, export_messages

    try:
        paths = expand_capture_args(args.captures)
    except CaptureError as exc:
        raise CliError(str(exc)) from None
    if not paths:
        raise CliError(f"no capture files in {' '.join(args.captures)}")
    status = EXIT_OK
    captures: list[Capture] = []
    for entry in paths:
        try:
            captures.append(read_capture(entry.path))
        except CaptureError as exc:
            if entry.from_directory:
                # As show and replay: one junk file in a directory does not fail the rest.
                print(printable(f"pop3tap: warning: skipped {exc}"), file=sys.stderr)
            else:
                print(printable(f"pop3tap: {exc}"), file=sys.stderr)
                status = EXIT_USAGE
    fmt: Format
    if args.eml:
        fmt, target = "eml", args.eml
    elif args.maildir:
        fmt, target = "maildir", args.maildir
    else:
        fmt, target = "mbox", args.mbox
    try:
        stats = export_messages(captures, fmt, Path(target), partial=args.partial)
    except ExportError as exc:
        raise CliError(str(exc), code=1) from None
    print(printable(stats.describe(target)))
    return status
