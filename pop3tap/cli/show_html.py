"""``pop3tap show --format html``: one self-contained HTML page for captures."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pop3tap._text import printable
from pop3tap.cli._common import EXIT_OK, CliError


def write_html_report(args: argparse.Namespace) -> int:
    """Write the page for ``args.captures`` to ``args.output`` (``-`` for stdout).

    An unreadable capture is listed in the page and named on stderr; the page is written
    all the same, so the exit code is 0 whenever the output could be written.
    """
    from pop3tap.capture import CaptureError, iter_capture_paths
    from pop3tap.htmlview import build_model, render_page

    output: str | None = args.output
    if not output:
        raise CliError("show --format html needs -o FILE (or -o - for stdout)")
    try:
        paths = iter_capture_paths(args.captures)
    except CaptureError as exc:
        raise CliError(str(exc)) from None
    if not paths:
        raise CliError(f"no capture files in {' '.join(args.captures)}")
    model = build_model(paths)
    for message in model["errors"]:
        print(printable(f"pop3tap: {message}"), file=sys.stderr)  # names may hold escapes
    page = render_page(model, title=f"pop3tap: {' '.join(args.captures)}")
    # A file name that is not UTF-8 holds lone surrogates (PEP 383): written as \udcXX.
    data = page.encode("utf-8", "backslashreplace")
    if output == "-":
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return EXIT_OK
    _write_file(Path(output), data)
    return EXIT_OK


def _write_file(path: Path, data: bytes) -> None:
    """Write through a new temporary file renamed into place: no half-written report."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(tmp, flags, 0o600)
    except OSError as exc:
        raise CliError(f"{path}: cannot write: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CliError(f"{path}: cannot write: {exc.strerror or exc}") from None
