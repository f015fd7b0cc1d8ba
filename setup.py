"""Build the optional C body scanner and line masker and ship the sample captures as package data.

pop3tap works without them (pure-Python fallbacks). The sample captures live in
``captures/`` of the source tree (where the README and the tests use them); the build copies
them into the package as ``pop3tap/samples/`` so ``pop3tap demo`` works from any install.
"""

from pathlib import Path

from setuptools import Extension, setup
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


setup(
    cmdclass={"build_py": BuildWithSamples},
    ext_modules=[
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
    ],
)
