"""Turning command-line arguments (files and directories) into the captures to read."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pop3tap.capture._records import CaptureError
from pop3tap.capture._vocabulary import SUFFIX

__all__ = ["CapturePath", "expand_capture_args", "iter_capture_paths"]


@dataclass(frozen=True, slots=True)
class CapturePath:
    """A capture file to read, and how the user named it."""

    path: Path
    #: Found by listing a directory: a reader skips it, with one warning line, when it
    #: turns out not to be a capture (a 0-byte file from a full disk, a stray file).
    from_directory: bool


def expand_capture_args(args: Iterable[str | os.PathLike[str]]) -> list[CapturePath]:
    """Expand files and directories (all ``*.p3cap`` inside, sorted) into capture paths.

    Raises:
        CaptureError: an argument does not exist.
    """
    paths: list[CapturePath] = []
    for arg in args:
        p = Path(arg)
        if p.is_dir():
            found = sorted(c for c in p.glob(f"*{SUFFIX}") if c.is_file())
            paths.extend(CapturePath(c, from_directory=True) for c in found)
        elif p.exists():
            paths.append(CapturePath(p, from_directory=False))
        else:
            raise CaptureError(f"{p}: no such file or directory")
    return paths


def iter_capture_paths(args: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expand files and directories (all ``*.p3cap`` inside, sorted) into capture paths.

    Raises:
        CaptureError: an argument does not exist.
    """
    return [c.path for c in expand_capture_args(args)]
