"""Bounded reporting: stray and unsolicited lines, and bytes counted instead of parsed.

Stray and unsolicited server lines are reported one by one up to a per-session budget;
past it they are counted and said once (:class:`~._events.Suppressed`), and a run of them
is skipped with one C-level search for the next line that could be a status line. Bytes
seen while pairing is lost are only counted. At the end of a direction's stream (or when
the run of unpaired bytes ends) the totals are reported.
"""

from __future__ import annotations

import re

from pop3tap.protocol._events import Direction, Event, Suppressed

#: Stray and unsolicited server lines reported one by one per session; the rest are counted.
DEFAULT_MAX_ANOMALY_EVENTS = 100

#: A complete server line that can answer a command other than AUTH (RFC 1939 §3), at the
#: match position / right after a LF. Used to skip runs of stray lines in one search.
STATUS_LINE = re.compile(rb"(?:\+OK|-ERR)(?: |\r?\n)")
STATUS_AFTER_LF = re.compile(rb"\n(?=(?:\+OK|-ERR)(?: |\r?\n))")
#: The same while AUTH waits: a ``+`` continuation answers it too (RFC 5034 §4).
AUTH_LINE = re.compile(rb"(?:\+OK|-ERR|\+)(?: |\r?\n)")
AUTH_AFTER_LF = re.compile(rb"\n(?=(?:\+OK|-ERR|\+)(?: |\r?\n))")

ANOMALIES = "anomalies"
UNPAIRED = "unpaired"


class AnomalyReport:
    """The per-session budget of reported anomalies and the counts of suppressed lines."""

    __slots__ = ("budget", "events", "suppressed")

    def __init__(self, budget: int, events: list[Event]) -> None:
        #: Stray/unsolicited lines that may still be reported one by one.
        self.budget = budget
        #: Where events go (the observer's outgoing list).
        self.events = events
        #: Per direction and kind: [lines, bytes] counted instead of reported.
        self.suppressed: dict[tuple[Direction, str], list[int]] = {}

    def count(self, direction: Direction, kind: str, lines: int, size: int) -> None:
        """Add to what was counted instead of reported."""
        counts = self.suppressed.setdefault((direction, kind), [0, 0])
        counts[0] += lines
        counts[1] += size

    def count_unpaired(self, direction: Direction, data: bytes, pos: int) -> None:
        """Bytes after pairing was lost: counted (one C-level count), never parsed."""
        self.count(direction, UNPAIRED, data.count(b"\n", pos), len(data) - pos)

    def report(self, event: Event | None, at: float, size: int) -> None:
        """Report a stray/unsolicited line while the budget lasts; count it after that."""
        if event is not None and self.budget > 0:
            self.budget -= 1
            self.events.append(event)
            return
        self.budget = 0
        self.suppress(1, size, at)

    def suppress(self, lines: int, size: int, at: float) -> None:
        """Count server lines past the budget; say so the first time."""
        first = (Direction.SERVER, ANOMALIES) not in self.suppressed
        self.count(Direction.SERVER, ANOMALIES, lines, size)
        if first:
            self.events.append(
                Suppressed(
                    at=at,
                    direction=Direction.SERVER,
                    kind=ANOMALIES,
                    lines=lines,
                    bytes=size,
                    final=False,
                )
            )

    def report_totals(self, direction: Direction, at: float, kind: str | None = None) -> None:
        """The totals of what was only counted (of ``kind``, or all) for ``direction``;
        a kind reported for a run that ended (``kind`` given) starts counting afresh."""
        for key, (lines, size) in list(self.suppressed.items()):
            counted_direction, counted_kind = key
            if counted_direction is direction and kind in (None, counted_kind):
                self.events.append(
                    Suppressed(
                        at=at,
                        direction=direction,
                        kind=counted_kind,
                        lines=lines,
                        bytes=size,
                        final=True,
                    )
                )
                if kind is not None:
                    del self.suppressed[key]
