"""Build pop3tap's optional compiled parts and ship the sample captures as package data.

Every compiled part is optional and has a pure-Python twin with the same results, chosen at
import (``POP3TAP_PURE_PYTHON=1`` forces the twins):

* the C body scanner and line masker (``_bodyscan.c``, ``_maskscan.c``), built when a C
  compiler is there;
* the sans-IO protocol core (``pop3tap/protocol``) compiled with mypyc, when mypy is
  importable at build time (a build requirement in pyproject.toml) and a compiler is there.

``POP3TAP_PURE_BUILD=1`` builds none of them: the pure wheel (``py3-none-any``). The sample
captures live in ``captures/`` of the source tree (where the README and the tests use
them); the build copies them into the package as ``pop3tap/samples/`` so ``pop3tap demo``
works from any install.
"""

import os
import sys
from pathlib import Path

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
#: which build was loaded). Their shared library is ``pop3tap.protocol._compiled__mypyc``,
#: inside the package rather than a top-level module.
COMPILED_PACKAGE = "pop3tap/protocol"


def compiled_core() -> list[Extension]:
    """mypyc's extensions for the protocol core, or none when mypy is not importable.

    mypyc type-checks the sources before it writes C; if that fails (a mypy newer than the
    code) the install goes on without the compiled core, as it does without a C compiler.
    """
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("pop3tap: mypy is not importable; the protocol core stays pure Python")
        return []
    here = Path(__file__).resolve().parent
    sources = sorted(
        path.relative_to(here).as_posix()
        for path in (here / COMPILED_PACKAGE).glob("*.py")
        if path.name != "__init__.py"
    )
    try:
        # Not the project's mypy configuration, and errors only for the core: mypy also
        # reads the modules the core's package imports (the replay API, lazily), whose
        # imports (trio, structlog...) are not installed where pip builds.
        extensions: list[Extension] = mypycify(
            ["--config-file=", "--strict", "--follow-imports=silent", *sources],
            opt_level="3",
            group_name="pop3tap.protocol._compiled",
        )
    except (Exception, SystemExit) as error:  # mypyc exits on a type error
        print(f"pop3tap: mypyc failed ({error!r}); the protocol core stays pure Python")
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
        if self.inplace and not any(getattr(e, "_pop3tap_mypyc", False) for e in self.extensions):
            # An editable install that does not compile this time: a core compiled
            # earlier next to the sources would shadow them (Python prefers extensions).
            package = Path(__file__).resolve().parent / COMPILED_PACKAGE
            for source in [*package.glob("*.py"), package / "_compiled__mypyc.py"]:
                if source.name != "__init__.py":
                    for built in package.glob(f"{source.stem}.*.so"):
                        built.unlink()
        super().run()

    def build_extensions(self) -> None:
        super().build_extensions()
        group = [ext for ext in self.extensions if getattr(ext, "_pop3tap_mypyc", False)]
        outputs = [Path(self.get_ext_fullpath(ext.name)) for ext in group]
        if all(path.exists() for path in outputs):
            return
        print(
            "pop3tap: the compiled protocol core did not build; it stays pure Python",
            file=sys.stderr,
        )
        for path in outputs:
            path.unlink(missing_ok=True)


def extensions() -> list[Extension]:
    """What this build compiles: nothing for the pure wheel."""
    if os.environ.get("POP3TAP_PURE_BUILD", "") not in ("", "0"):
        return []
    core = compiled_core()
    for extension in core:
        extension._pop3tap_mypyc = True  # type: ignore[attr-defined]
    return [
        *core,
        Extension(
            "pop3tap.protocol._bodyscan_c",
            ["pop3tap/protocol/_bodyscan.c"],
            optional=True,  # no compiler or headers: install anyway, use the Python scanner
        ),
        Extension(
            "pop3tap.protocol._maskscan_c",
            ["pop3tap/protocol/_maskscan.c"],
            optional=True,  # likewise: the Python masker (_masklines) gives the same bytes
        ),
    ]


setup(
    cmdclass={"build_py": BuildWithSamples, "build_ext": BuildAllOrNothing},
    ext_modules=extensions(),
)
