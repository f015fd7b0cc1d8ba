"""The error of a caller that drives the protocol observer in an order it refuses.

Outside :mod:`pop3tap.protocol` because the core is compiled with mypyc, which cannot
compile a subclass of a built-in exception; the core imports it from here.
"""

from __future__ import annotations

__all__ = ["ObserverUsageError"]


class ObserverUsageError(RuntimeError):
    """The observer was driven in an order that would record or parse the client's bytes
    wrongly (a bug in the caller, never caused by peer bytes)."""
