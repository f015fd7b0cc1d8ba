"""pop3tap: a transparent POP3 man-in-the-middle that relays, records and replays sessions.

Importing :mod:`pop3tap` pulls in only the sans-IO protocol core; the trio relay and replay
server live in their own modules.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pop3tap")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
