"""Reading captures written in an older format version: a chain of upgrade steps.

The format version in the header is independent of the pop3tap release. When the record
layout changes, ``FORMAT_VERSION`` goes up by one and a step is registered here for the
version it replaces: a function for the header and one for every later record, each
taking a map of that version and returning a map of the next. A reader of a version-``n``
file runs ``n -> n+1 -> ... -> FORMAT_VERSION``, so a step is written once, against the
version right after it, and old files never need rewriting. A file of the current version
goes through no step at all.

Version 1 is the first published layout, so the chain is empty today.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from pop3tap.capture._vocabulary import FORMAT_VERSION

__all__ = ["UPGRADES", "Upgrade", "UpgradeError", "register", "upgrader_for"]

RawRecord = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Upgrade:
    """One step: turns the maps of format version ``source`` into version ``source + 1``."""

    source: int
    header: Callable[[RawRecord], RawRecord]
    record: Callable[[RawRecord], RawRecord]


class UpgradeError(Exception):
    """No chain of steps leads from a file's version to this pop3tap's."""


#: The registered steps, by the version they upgrade from.
UPGRADES: Final[dict[int, Upgrade]] = {}


def register(
    source: int,
    *,
    header: Callable[[RawRecord], RawRecord],
    record: Callable[[RawRecord], RawRecord],
) -> Upgrade:
    """Register the step from format ``source`` to ``source + 1``."""
    if source in UPGRADES:
        raise ValueError(f"an upgrade from capture format {source} is already registered")
    step = Upgrade(source, header, record)
    UPGRADES[source] = step
    return step


def _chain(version: int) -> list[Upgrade]:
    """The steps from ``version`` up to the current one, in order."""
    steps: list[Upgrade] = []
    for source in range(version, FORMAT_VERSION):
        step = UPGRADES.get(source)
        if step is None:
            raise UpgradeError(f"format {version} cannot be upgraded: no step from {source}")
        steps.append(step)
    return steps


def upgrader_for(
    version: int, header: RawRecord
) -> tuple[RawRecord, Callable[[object], object] | None]:
    """The header upgraded to the current version, and the function for the records.

    The record function is ``None`` for a file of the current version (nothing to do).
    It passes anything that is not a map through untouched, for the reader to reject.

    Raises:
        UpgradeError: ``version`` is older than the oldest registered step.
    """
    steps = _chain(version)
    if not steps:
        return header, None

    def upgrade_record(obj: object) -> object:
        if not isinstance(obj, dict):
            return obj
        for step in steps:
            obj = step.record(dict(obj))
        return obj

    for step in steps:
        header = step.header(dict(header))
    return header, upgrade_record
