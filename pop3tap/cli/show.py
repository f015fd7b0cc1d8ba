"""``pop3tap show``: print captures as a Pop3.log-style session log."""

from __future__ import annotations

import argparse
import sys

from pop3tap._text import printable
from pop3tap.cli._common import EXIT_OK, EXIT_USAGE, CliError, Subparsers


def add_subcommand(sub: Subparsers) -> None:
    parser = sub.add_parser(
        "show",
        help="print captures as a Pop3.log-style session log",
        description="Render capture files (or directories of them) as [tx]/[rx]/[db] lines.",
    )
    parser.add_argument(
        "captures", nargs="+", metavar="CAPTURE", help="capture files or directories"
    )
    parser.add_argument("--bodies", action="store_true", help="print multi-line bodies in full")
    parser.add_argument(
        "--format",
        choices=("text", "json", "html"),
        default="text",
        help="text: Pop3.log view; json: one JSON object per record, each with a kind "
        "(docs/show-json.schema.json); html: a page (-o FILE)",
    )
    parser.add_argument("-o", "--output", metavar="FILE", help="where --format html writes")
    parser.set_defaults(handler=_cmd_show)


def _cmd_show(args: argparse.Namespace) -> int:
    from pop3tap.capture import CaptureError, CaptureReader, expand_capture_args
    from pop3tap.render import render_json, render_lines

    if args.format == "html":
        from pop3tap.cli.show_html import write_html_report

        return write_html_report(args)
    try:
        paths = expand_capture_args(args.captures)
    except CaptureError as exc:
        raise CliError(str(exc)) from None
    if not paths:
        raise CliError(f"no capture files in {' '.join(args.captures)}")
    status = EXIT_OK
    shown = 0
    for entry in paths:
        try:
            capture = CaptureReader(entry.path)  # streamed: memory does not grow with size
        except CaptureError as exc:
            if entry.from_directory:
                # One stray file (a 0-byte capture from a full disk) must not hide the rest.
                print(printable(f"pop3tap: warning: skipped {exc}"), file=sys.stderr)
            else:
                print(printable(f"pop3tap: {exc}"), file=sys.stderr)
                status = EXIT_USAGE
            continue
        with capture:
            if args.format == "text" and shown:
                print()
            shown += 1
            lines = (
                render_json(capture)
                if args.format == "json"
                else render_lines(capture, bodies=args.bodies)
            )
            try:
                for line in lines:
                    print(line)
            except CaptureError as exc:  # an I/O error halfway through the file
                print(printable(f"pop3tap: {exc}"), file=sys.stderr)
                status = EXIT_USAGE
    if not shown and status == EXIT_OK:
        raise CliError(f"no readable capture in {' '.join(args.captures)}")
    return status
