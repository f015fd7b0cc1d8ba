"""The switch that forces pure Python: ``POP3TAP_PURE_PYTHON=1`` in the environment.

pop3tap's protocol core may be compiled with mypyc (``setup.py``), and the body scanner
and line masker have C twins. Each is optional, and each has a Python source that gives
the same results. The C twins are separate modules that their Python callers choose
between (``_bodyscan``, ``_masklines``). A compiled module, though, has the same name as
its source and sits next to it, and CPython's path finder prefers an extension module to a
``.py`` file; so when the switch is set, :func:`install` puts a finder on ``sys.meta_path``,
just before the path finder, that looks for ``pop3tap.*`` modules among ``.py`` files only. Modules
that have no source (the C twins, mypyc's shared library) are left to the usual finders.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from importlib.machinery import (
    SOURCE_SUFFIXES,
    FileFinder,
    ModuleSpec,
    PathFinder,
    SourceFileLoader,
)
from types import ModuleType


def requested() -> bool:
    """Whether ``POP3TAP_PURE_PYTHON`` asks for the pure-Python modules."""
    return os.environ.get("POP3TAP_PURE_PYTHON", "") not in ("", "0")


class SourceOnlyFinder:
    """A meta-path finder for ``pop3tap.*`` that sees ``.py`` files and nothing else."""

    def __init__(self) -> None:
        self._finders: dict[str, FileFinder] = {}

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        """The source module's spec, or None to let the next finder look."""
        if path is None or not fullname.startswith("pop3tap."):
            return None
        for entry in path:
            finder = self._finders.get(entry)
            if finder is None:
                finder = FileFinder(entry, (SourceFileLoader, SOURCE_SUFFIXES))
                self._finders[entry] = finder
            spec = finder.find_spec(fullname)
            if spec is not None:
                return spec
        return None


def install() -> None:
    """Put a :class:`SourceOnlyFinder` just before the path finder if the switch is set
    (once); finders a program placed in front of the path finder still come first."""
    if not requested() or any(isinstance(f, SourceOnlyFinder) for f in sys.meta_path):
        return
    try:
        where = sys.meta_path.index(PathFinder)
    except ValueError:
        where = len(sys.meta_path)
    sys.meta_path.insert(where, SourceOnlyFinder())
