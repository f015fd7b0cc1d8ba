"""Build pop3tap's optional compiled parts and ship the sample captures as package data.

Every compiled part is optional and has a pure-Python twin with the same results, chosen at
import (``POP3TAP_PURE_PYTHON=1`` forces the twins):

* the C body scanner and line masker (``_bodyscan.c``, ``_maskscan.c``), built when a C
  compiler is there;
* the sans-IO protocol core (``pop3tap/protocol``) and the relay's recording path
  (``pop3tap._pure.RECORDING_PATH``) compiled with mypyc, when mypy is importable at
  build time (a build requirement in pyproject.toml) and a compiler is there.

``POP3TAP_PURE_BUILD=1`` builds none of them: the pure wheel (``py3-none-any``). The sample
captures live in ``captures/`` of the source tree (where the README and the tests use
them); the build copies them into the package as ``pop3tap/samples/`` so ``pop3tap demo``
works from any install.
"""

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

#: The captures shipped with pop3tap (only these: ``captures/`` is also where `record`
#: writes by default, and a user's own sessions must never end up in a wheel).
SAMPLE_CAPTURES = (
    "apop.p3cap",
    "auth-plain.p3cap",
    "failed-login.p3cap",
    "pipelined.p3cap",
    "user-pass.p3cap",
)


class BuildWithSamples(build_py):
    """``build_py`` that also copies the sample captures into ``pop3tap/samples``."""

    def run(self) -> None:
        super().run()
        source = Path(__file__).resolve().parent / "captures"
        target = Path(self.build_lib) / "pop3tap" / "samples"
        self.mkpath(str(target))
        for name in SAMPLE_CAPTURES:
            self.copy_file(str(source / name), str(target / name))


#: The modules mypyc compiles: the sans-IO core, without its ``__init__`` (which says
#: which build was loaded), and the relay's recording path, the synchronous code every
#: forwarded chunk runs through (``pop3tap._pure.RECORDING_PATH``: the recorder, its event
#: actions and gates, the exchange line's fields). The relay's trio
#: tasks stay interpreted: compiling them as well measured no further gain
#: (docs/performance.md). One shared library holds them all, ``pop3tap._compiled__mypyc``.
COMPILED_PACKAGE = "pop3tap/protocol"
GROUP = "pop3tap._compiled"
#: Where the shared library lived before the recording path joined the group.
OLD_GROUP_LIBRARY = "pop3tap/protocol/_compiled__mypyc"


def pure_module() -> ModuleType:
    """``pop3tap/_pure.py``, loaded without importing pop3tap (whose dependencies are not
    installed where pip builds; ``_pure`` needs none)."""
    here = Path(__file__).resolve().parent
    spec = importlib.util.spec_from_file_location("_pop3tap_pure", here / "pop3tap" / "_pure.py")
    assert spec is not None and spec.loader is not None
    pure = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pure)
    return pure


def recording_path() -> list[str]:
    """``pop3tap._pure.RECORDING_PATH`` as source paths."""
    return [name.replace(".", "/") + ".py" for name in pure_module().RECORDING_PATH]


def compiled_sources() -> list[str]:
    """Every module mypyc compiles, as paths relative to the checkout."""
    here = Path(__file__).resolve().parent
    core = [
        path.relative_to(here).as_posix()
        for path in (here / COMPILED_PACKAGE).glob("*.py")
        if path.name != "__init__.py"
    ]
    return sorted([*core, *recording_path()])


def compiled_core() -> list[Extension]:
    """mypyc's extensions for :func:`compiled_sources`, or none when mypy is not importable.

    mypyc type-checks the sources before it writes C; if that fails (a mypy newer than the
    code) the install goes on without the compiled core, as it does without a C compiler.
    """
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("pop3tap: mypy is not importable; nothing is compiled with mypyc")
        return []
    sources = compiled_sources()
    try:
        # Not the project's mypy configuration, and errors only for the compiled modules:
        # mypy also reads the modules they import, whose own imports (trio, structlog...)
        # are not installed where pip builds; missing imports are typed Any.
        extensions: list[Extension] = mypycify(
            [
                "--config-file=",
                "--strict",
                "--follow-imports=silent",
                "--ignore-missing-imports",
                *sources,
            ],
            opt_level="3",
            group_name=GROUP,
        )
    except (Exception, SystemExit) as error:  # mypyc exits on a type error
        print(f"pop3tap: mypyc failed ({error!r}); the compiled modules stay pure Python")
        return []
    for extension in extensions:
        extension.optional = True
    return extensions


class BuildAllOrNothing(build_ext):
    """``build_ext`` that keeps the mypyc group whole: mypyc's per-module extensions call
    into one shared library, so if any of them failed to build, the others are removed
    and the pure-Python core is used (a half-compiled core would hold two copies of a
    class)."""

    def run(self) -> None:
        if self.inplace:
            # An editable install: what an earlier build compiled next to the sources goes
            # first. Python prefers it to the sources, and a build that cannot compile
            # this time (no compiler, a module dropped from the group) would leave it
            # running while the install says pure; what does build is copied back.
            for built in earlier_builds():
                built.unlink(missing_ok=True)
        super().run()

    def build_extensions(self) -> None:
        super().build_extensions()
        group = [ext for ext in self.extensions if getattr(ext, "_pop3tap_mypyc", False)]
        outputs = [Path(self.get_ext_fullpath(ext.name)) for ext in group]
        if all(path.exists() for path in outputs):
            return
        print(
            "pop3tap: the compiled modules did not build; they stay pure Python",
            file=sys.stderr,
        )
        for path in outputs:
            path.unlink(missing_ok=True)


#: The C twins of the body scanner and the line masker, and their sources.
C_TWINS = {
    "pop3tap.protocol._bodyscan_c": "pop3tap/protocol/_bodyscan.c",
    "pop3tap.protocol._maskscan_c": "pop3tap/protocol/_maskscan.c",
}


def earlier_builds() -> list[Path]:
    """Everything a build compiles next to the sources when it is editable: each compiled
    module beside its source, mypyc's shared library (and where it was before), the C
    twins."""
    here = Path(__file__).resolve().parent
    built: list[Path] = list(pure_module().compiled_modules(here / "pop3tap"))
    for module in (GROUP + "__mypyc", OLD_GROUP_LIBRARY.replace("/", "."), *C_TWINS):
        path = here / module.replace(".", "/")
        built.extend(path.parent.glob(f"{path.name}.*.so"))
    return built


def extensions() -> list[Extension]:
    """What this build compiles: nothing for the pure wheel."""
    if os.environ.get("POP3TAP_PURE_BUILD", "") not in ("", "0"):
        return []
    core = compiled_core()
    for extension in core:
        extension._pop3tap_mypyc = True  # type: ignore[attr-defined]
    # No compiler or headers: install anyway, with the Python scanner and masker (which
    # give the same bytes).
    return [*core, *(Extension(name, [source], optional=True) for name, source in C_TWINS.items())]


setup(
    cmdclass={"build_py": BuildWithSamples, "build_ext": BuildAllOrNothing},
    ext_modules=extensions(),
)
