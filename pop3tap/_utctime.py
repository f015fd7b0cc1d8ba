"""UTC instants in the two text forms pop3tap writes, from one clock reading, cheaply.

Log lines and capture headers give an instant as ``datetime.isoformat`` does with ``Z``
for ``+00:00`` (``2026-11-27T06:16:23.123456Z``, the fraction left out when the
microseconds are 0); capture file names use the compact form of
``strftime("%Y%m%dT%H%M%S.%fZ")`` (``20261127T061623.123456Z``). Formatting a datetime
costs more than the rest of a log line, so the date and time of day are formatted once per
second here, and each instant only adds its microseconds.
"""

from __future__ import annotations

import time
from typing import NamedTuple

__all__ = ["UtcInstant", "iso_now", "utc_now"]

#: The second the prefixes below were formatted for, and the prefixes.
_second = -1
_iso_prefix = ""
_compact_prefix = ""


class UtcInstant(NamedTuple):
    """One reading of the system clock, to the microsecond (as ``datetime.now`` reads it)."""

    second: int
    micros: int

    @property
    def iso(self) -> str:
        """``2026-11-27T06:16:23.123456Z``, ``2026-11-27T06:16:23Z`` on a whole second."""
        prefix = _prefixes(self.second)[0]
        return f"{prefix}.{self.micros:06d}Z" if self.micros else f"{prefix}Z"

    @property
    def compact(self) -> str:
        """``20261127T061623.123456Z`` (always six digits of fraction)."""
        return f"{_prefixes(self.second)[1]}.{self.micros:06d}Z"

    @property
    def unix(self) -> float:
        """Seconds since the epoch, the float ``datetime.timestamp()`` gives."""
        return (self.second * 1_000_000 + self.micros) / 1_000_000


def utc_now() -> UtcInstant:
    """The current instant."""
    second, micros = divmod(time.time_ns() // 1000, 1_000_000)
    return UtcInstant(second, micros)


def iso_now() -> str:
    """``utc_now().iso`` in half the time: the log's timestamp, once per line."""
    second, micros = divmod(time.time_ns() // 1000, 1_000_000)
    prefix = _iso_prefix if second == _second else _prefixes(second)[0]
    return f"{prefix}.{micros:06d}Z" if micros else f"{prefix}Z"


def _prefixes(second: int) -> tuple[str, str]:
    """The date and time of day of ``second`` in both forms (formatted once per second)."""
    global _second, _iso_prefix, _compact_prefix
    if second != _second:
        moment = time.gmtime(second)
        _iso_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", moment)
        _compact_prefix = time.strftime("%Y%m%dT%H%M%S", moment)
        _second = second
    return _iso_prefix, _compact_prefix
