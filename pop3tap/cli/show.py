"""``pop3tap show``: print captures as a Pop3.log-style session log.

Layers, each apart from the rendering: which captures (paths, ``--follow``), which
sessions and exchanges (:mod:`pop3tap.selection`), how lines are post-processed
(``--stable``), and where they go (a pager on a terminal, see :mod:`pop3tap.cli._pager`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from pop3tap._text import printable
from pop3tap.cli._common import EXIT_OK, EXIT_USAGE, CliError, Subparsers, epilog

if TYPE_CHECKING:
    from pop3tap.capture import CapturePath
    from pop3tap.render import CaptureSource
    from pop3tap.selection import Selection

#: Seconds between two looks at the captures with ``--follow``.
FOLLOW_INTERVAL = 0.25

EXAMPLES = """\
  pop3tap show captures/                        every session, Pop3.log style
  pop3tap show captures/ --status -ERR          only the exchanges that failed
  pop3tap show captures/ --user alice --verb RETR --verb TOP --bodies
  pop3tap show captures/ --since 10m --grep 'octets'
  pop3tap show captures/ --follow               sessions as they finish (Ctrl-C stops)
  pop3tap show --stable session.p3cap > session.golden   no times, ids or ports
"""


def add_subcommand(sub: Subparsers) -> None:
    parser = sub.add_parser(
        "show",
        help="print captures as a Pop3.log-style session log",
        description="Render capture files (or directories of them) as [tx]/[rx]/[db] lines. "
        "Times are UTC. On a terminal the output goes through $PAGER (less -FRX).",
        epilog=epilog(EXAMPLES),
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    parser.add_argument(
        "--stable",
        action="store_true",
        help="no times, session ids, ports or latencies: the same conversation gives the "
        "same text (golden files, git diff)",
    )
    _add_filters(parser)
    out = parser.add_argument_group("output")
    out.add_argument(
        "-f",
        "--follow",
        action="store_true",
        help="keep watching: print each new session once it is complete (Ctrl-C stops)",
    )
    out.add_argument("--no-pager", action="store_true", help="never page, even on a terminal")
    parser.set_defaults(handler=_cmd_show)


def _add_filters(parser: argparse.ArgumentParser) -> None:
    """The filters (pop3tap.selection applies them)."""
    select = parser.add_argument_group(
        "filters", "Sessions and exchanges to print; several filters must all match."
    )
    select.add_argument(
        "--session", action="append", default=[], metavar="ID", help="session id (or prefix)"
    )
    select.add_argument(
        "--user", action="append", default=[], metavar="NAME", help="sessions of this user"
    )
    select.add_argument(
        "--verb", action="append", default=[], metavar="VERB", help="exchanges of this command"
    )
    select.add_argument(
        "--status",
        action="append",
        default=[],
        metavar="+OK|-ERR",
        help="exchanges answered this way (+ for SASL challenges)",
    )
    select.add_argument(
        "--grep", metavar="REGEX", help="exchanges whose command or first response line match"
    )
    select.add_argument(
        "--since", metavar="TIME", help="exchanges from TIME on (2026-11-27T06:20Z, 06:20, 10m)"
    )
    select.add_argument("--until", metavar="TIME", help="exchanges up to TIME")


def _selection(args: argparse.Namespace) -> Selection:
    from pop3tap.selection import Selection, SelectionError

    try:
        return Selection.build(
            sessions=args.session,
            users=args.user,
            verbs=args.verb,
            statuses=args.status,
            grep=args.grep,
            since=args.since,
            until=args.until,
        )
    except SelectionError as exc:
        raise CliError(str(exc)) from None


def session_lines(
    capture: CaptureSource, args: argparse.Namespace, selection: Selection
) -> Iterator[str]:
    """The lines of one capture under the filters (none when the session is left out)."""
    from pop3tap.render import render_json, render_lines

    only = selection.select(capture)
    if only is not None and not only:
        return
    if args.format != "json":
        yield from render_lines(capture, bodies=args.bodies, only=only, stable=args.stable)
        return
    for line in render_json(capture):
        if only is None and not args.stable:
            yield line
            continue
        record = json.loads(line)
        kind = record.get("kind", "exchange")
        if only is not None and not (
            kind == "session" or (kind == "exchange" and record.get("seq") in only)
        ):
            continue
        if args.stable:
            _make_stable(record)
        yield json.dumps(record, ensure_ascii=False)


#: What differs between two recordings of one conversation, per JSON record.
_UNSTABLE = ("time", "t", "session", "sent_t", "latency_first_ms", "latency_ms")
_UNSTABLE_SESSION = ("client", "listen", "upstream", "started", "pop3tap", "options")


def _make_stable(record: dict[str, object]) -> None:
    """``--stable`` for a JSON record: drop times, ids, addresses and TLS fingerprints."""
    for key in _UNSTABLE:
        record.pop(key, None)
    if record.get("kind") == "session":
        for key in _UNSTABLE_SESSION:
            record.pop(key, None)
    if record.get("kind") in ("tls", "transport"):
        record.pop("fields", None)


def _cmd_show(args: argparse.Namespace) -> int:
    from pop3tap.capture import CaptureError, expand_capture_args

    selection = _selection(args)
    if args.format == "html":
        from pop3tap.cli.show_html import write_html_report

        return write_html_report(args)
    try:
        paths = expand_capture_args(args.captures)
    except CaptureError as exc:
        raise CliError(str(exc)) from None
    if not paths and not args.follow:
        raise CliError(f"no capture files in {' '.join(args.captures)}")
    if args.follow:
        return _follow(args, selection, [p.path for p in paths])
    from pop3tap.cli._pager import output

    with output(paging=not args.no_pager) as stream:
        return _print_all(args, selection, paths, stream)


def _print_all(
    args: argparse.Namespace, selection: Selection, paths: list[CapturePath], stream: TextIO
) -> int:
    """Every capture, streamed (memory does not grow with its size), under the filters."""
    from pop3tap.capture import CaptureError, CaptureReader

    status = EXIT_OK
    shown = 0
    readable = 0
    for entry in paths:
        try:
            capture = CaptureReader(entry.path)
        except CaptureError as exc:
            if entry.from_directory:
                # One stray file (a 0-byte capture from a full disk) must not hide the rest.
                print(printable(f"pop3tap: warning: skipped {exc}"), file=sys.stderr)
            else:
                print(printable(f"pop3tap: {exc}"), file=sys.stderr)
                status = EXIT_USAGE
            continue
        readable += 1
        with capture:
            try:
                first = True
                for line in session_lines(capture, args, selection):
                    if first:
                        if args.format == "text" and shown:
                            stream.write("\n")
                        shown += 1
                        first = False
                    stream.write(line + "\n")
            except CaptureError as exc:  # an I/O error halfway through the file
                print(printable(f"pop3tap: {exc}"), file=sys.stderr)
                status = EXIT_USAGE
    if not readable and status == EXIT_OK:
        raise CliError(f"no readable capture in {' '.join(args.captures)}")
    return status


def _follow(args: argparse.Namespace, selection: Selection, initial: list[Path]) -> int:
    """Print what is there, then each capture that appears (or completes) later."""
    shown = 0
    try:
        for capture in _watch(args.captures, initial):
            lines = list(session_lines(capture, args, selection))
            if not lines:
                continue
            if args.format == "text" and shown:
                sys.stdout.write("\n")
            shown += 1
            sys.stdout.write("".join(line + "\n" for line in lines))
            sys.stdout.flush()
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_OK


def _watch(arguments: list[str], initial: list[Path]) -> Iterator[CaptureSource]:
    """Complete captures under ``arguments``, each once: those there now, then new ones.

    A capture still being written is yielded once its close record is there; one that
    stays incomplete (a killed relay) once it has not grown for a minute, so a crash
    does not hide it.
    """
    from pop3tap.capture import CaptureError, iter_capture_paths, read_capture

    done: set[Path] = set()
    sizes: dict[Path, tuple[int, float]] = {}
    paths = initial
    while True:
        now = time.monotonic()
        for path in paths:
            if path in done:
                continue
            try:
                size = path.stat().st_size
                capture = read_capture(path)
            except (OSError, CaptureError):
                continue
            seen_size, since = sizes.get(path, (-1, now))
            if size != seen_size:
                sizes[path] = (size, now)
                since = now
            if capture.complete or now - since > 60.0:
                done.add(path)
                yield capture
        time.sleep(FOLLOW_INTERVAL)
        try:
            paths = iter_capture_paths(arguments)
        except CaptureError:
            paths = []
