"""The switch that forces pure Python: ``POP3TAP_PURE_PYTHON=1`` in the environment.

pop3tap's protocol core and the relay's recording path may be compiled with mypyc
(``setup.py``), and the body scanner
and line masker have C twins. Each is optional, and each has a Python source that gives
the same results. The C twins are separate modules that their Python callers choose
between (``_bodyscan``, ``_masklines``). A compiled module, though, has the same name as
its source and sits next to it, and CPython's path finder prefers an extension module to a
``.py`` file; so when the switch is set, :func:`install` puts a finder on ``sys.meta_path``,
just before the path finder, that looks for ``pop3tap.*`` modules among ``.py`` files only. Modules
that have no source (the C twins, mypyc's shared library) are left to the usual finders.

The same finder guards an editable install: there the compiled modules sit next to the
sources they were built from, and after an edit to one of them it would silently run the
old code. When a compiled module is older than its source in a source checkout,
:func:`install` warns once and loads the Python sources instead.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from importlib.machinery import (
    SOURCE_SUFFIXES,
    FileFinder,
    ModuleSpec,
    PathFinder,
    SourceFileLoader,
)
from pathlib import Path
from types import ModuleType

#: The relay's recording path, compiled with mypyc along with the protocol core: the
#: synchronous code every forwarded chunk runs through, all of it internal to the relay.
#: (The capture writer is public API, which users subclass and call with keyword fields
#: named like its parameters; compiled classes allow neither.) ``setup.py`` reads this.
RECORDING_PATH = (
    "pop3tap._exchange_fields",
    "pop3tap.relay._actions",
    "pop3tap.relay._faults",
    "pop3tap.relay._recorder",
    "pop3tap.relay._stls",
)
_PACKAGE = Path(__file__).resolve().parent
#: The package directories that may hold modules compiled with mypyc (inside the package,
#: "" for its top level): the core's and those of the recording path.
_COMPILED_DIRS = tuple(
    sorted({"protocol", *("/".join(name.split(".")[1:-1]) for name in RECORDING_PATH)})
)


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


def stale_compiled_core(package: Path = _PACKAGE) -> list[str]:
    """Sources edited after their compiled module was built, in a source checkout (an
    editable install; ``setup.py`` is next to the package), as paths inside the package.
    An installed wheel's files all carry the install's times, so it is not compared."""
    if not (package.parent / "setup.py").is_file():
        return []
    stale = {
        inside for built, source, inside in _compiled_with_sources(package) if _older(built, source)
    }
    return sorted(stale)


def compiled_modules(package: Path = _PACKAGE) -> list[Path]:
    """The compiled modules beside their sources: what an editable install built, which
    ``setup.py`` removes before it builds again."""
    return [Path(built.path) for built, _, _ in _compiled_with_sources(package)]


def _compiled_with_sources(
    package: Path,
) -> Iterator[tuple[os.DirEntry[str], os.DirEntry[str], str]]:
    """Each compiled module, its source and the source's path inside the package.

    A compiled module is a ``NAME.*.so`` next to ``NAME.py``; the C twins and mypyc's
    shared library have no source of the same name, and a package's ``__init__`` is
    never compiled, so none of them is one."""
    for sub in _COMPILED_DIRS:
        try:
            entries = {entry.name: entry for entry in os.scandir(package / sub)}
        except OSError:
            continue
        for name, entry in sorted(entries.items()):
            if not name.endswith(".so"):
                continue
            stem = name.split(".", 1)[0]
            source = entries.get(stem + ".py") if stem != "__init__" else None
            if source is not None:
                yield entry, source, f"{sub}/{source.name}" if sub else source.name


def _older(built: os.DirEntry[str], source: os.DirEntry[str]) -> bool:
    """Whether ``built`` is a file (what Python would load) older than ``source``; one
    that is gone (a reinstall removing it meanwhile), a dangling link or a directory is
    not compared."""
    try:
        return built.is_file() and built.stat().st_mtime < source.stat().st_mtime
    except OSError:
        return False


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
            f"pop3tap: the compiled modules are older than {', '.join(stale)}; "
            "running the Python sources (pip install -e . compiles them again)",
            RuntimeWarning,
            stacklevel=2,
        )
    try:
        where = sys.meta_path.index(PathFinder)
    except ValueError:
        where = len(sys.meta_path)
    sys.meta_path.insert(where, SourceOnlyFinder())
