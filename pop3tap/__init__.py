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

__all__ = ["__version__", "open_replay_server", "replay_server"]

_LAZY = {"replay_server", "open_replay_server", "ReplayConfig", "ReplayServer"}


def __getattr__(name: str) -> object:
    """Import the replay API on first use, so ``import pop3tap`` does not import trio."""
    if name in _LAZY:
        from pop3tap import replay

        return getattr(replay, name)
    raise AttributeError(f"module 'pop3tap' has no attribute {name!r}")
