"""The switch that forces pure Python: ``POP3TAP_PURE_PYTHON=1`` in the environment.

pop3tap's protocol core may be compiled with mypyc (``setup.py``), and the body scanner
and line masker have C twins. Each is optional, and each has a Python source that gives
the same results. The C twins are separate modules that their Python callers choose
between (``_bodyscan``, ``_masklines``). A compiled module, though, has the same name as
its source and sits next to it, and CPython's path finder prefers an extension module to a
``.py`` file; so when the switch is set, :func:`install` puts a finder on ``sys.meta_path``,
just before the path finder, that looks for ``pop3tap.*`` modules among ``.py`` files only. Modules
that have no source (the C twins, mypyc's shared library) are left to the usual finders.

The same finder guards an editable install: there the compiled core sits next to the
sources it was built from, and after an edit to one of them it would silently run the old
code. When a compiled module of the core is older than its source in a source checkout,
:func:`install` warns once and loads the Python sources instead.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence
from importlib.machinery import (
    SOURCE_SUFFIXES,
    FileFinder,
    ModuleSpec,
    PathFinder,
    SourceFileLoader,
)
from pathlib import Path
from types import ModuleType

#: The package whose modules may be compiled with mypyc (``setup.py``'s ``COMPILED_PACKAGE``).
_CORE = Path(__file__).resolve().parent / "protocol"


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


def stale_compiled_core(core: Path = _CORE) -> list[str]:
    """The core's sources edited after their compiled module was built, in a source
    checkout (an editable install; ``setup.py`` is next to the package). An installed
    wheel's files all carry the install's times, so it is not compared."""
    if not (core.parent.parent / "setup.py").is_file():
        return []
    stale = []
    for source in sorted(core.glob("*.py")):
        if source.name == "__init__.py":
            continue
        source_time = source.stat().st_mtime
        if any(built.stat().st_mtime < source_time for built in core.glob(f"{source.stem}.*.so")):
            stale.append(source.name)
    return stale


def install() -> None:
    """Put a :class:`SourceOnlyFinder` just before the path finder (once) if the switch is
    set, or if the compiled core is older than its sources (with a warning); finders a
    program placed in front of the path finder still come first."""
    if any(isinstance(f, SourceOnlyFinder) for f in sys.meta_path):
        return
    if not requested():
        stale = stale_compiled_core()
        if not stale:
            return
        warnings.warn(
            f"pop3tap: the compiled protocol core is older than {', '.join(stale)}; "
            "running the Python sources (pip install -e . compiles them again)",
            RuntimeWarning,
            stacklevel=2,
        )
    try:
        where = sys.meta_path.index(PathFinder)
    except ValueError:
        where = len(sys.meta_path)
    sys.meta_path.insert(where, SourceOnlyFinder())
