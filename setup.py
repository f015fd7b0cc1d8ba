"""Build the optional C body scanner; pop3tap works without it (pure-Python fallback)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "pop3tap.protocol._bodyscan_c",
            ["pop3tap/protocol/_bodyscan.c"],
            optional=True,  # no compiler or headers: install anyway, use the Python scanner
        )
    ]
)
