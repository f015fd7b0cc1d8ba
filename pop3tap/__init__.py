"""pop3tap: a transparent POP3 man-in-the-middle that relays, records and replays sessions.

Importing :mod:`pop3tap` pulls in only the sans-IO protocol core; the trio relay and replay
server live in their own modules.
"""

from __future__ import annotations

from pop3tap import _pure

_pure.install()  # before any compiled module is imported

__all__ = ["__version__", "open_replay_server", "replay_server"]

_LAZY = {"replay_server", "open_replay_server", "ReplayConfig", "ReplayServer"}


def __getattr__(name: str) -> object:
    """Import the replay API on first use, so ``import pop3tap`` does not import trio;
    ``__version__`` too (importlib.metadata is slow to load: the command line loads it
    where Ctrl-C is handled)."""
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("pop3tap")
        except PackageNotFoundError:  # running from a source tree that was never installed
            found = "0.0.0+unknown"
        globals()["__version__"] = found
        return found
    if name in _LAZY:
        from pop3tap import replay

        return getattr(replay, name)
    raise AttributeError(f"module 'pop3tap' has no attribute {name!r}")
