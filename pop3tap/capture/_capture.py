"""A capture read whole, and the protocol events re-derived from its raw bytes.

Only the raw bytes are authoritative: exchanges are re-derived by running the data
records through a fresh ``SessionObserver``, so a better parser improves old captures.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

from pop3tap.capture._reader import CaptureReader
from pop3tap.capture._records import (
    CaptureHeader,
    DataRecord,
    EventRecord,
    Record,
)
from pop3tap.capture._vocabulary import DEFAULT_MAX_RECORD_BYTES, Direction, EventName
from pop3tap.protocol._events import Event, Exchange

if TYPE_CHECKING:
    from pop3tap.protocol import SessionObserver, SessionSummary

__all__ = ["Capture", "derive_events", "read_capture"]

_DIRECTIONS: Final = frozenset(d.value for d in Direction)
#: Events that end the stream of the direction in their ``dir`` field.
_STREAM_ENDS: Final = frozenset({EventName.EOF.value, EventName.RESET.value})


@dataclass(slots=True)
class Capture:
    """A capture file as read back, with the data needed to replay or inspect it."""

    path: Path
    header: CaptureHeader
    records: list[Record]
    #: True when bytes after the last good record were ignored (torn tail or corruption).
    truncated: bool = False
    #: How many bytes after the last good record were ignored.
    trailing_bytes: int = 0
    #: True when the capture ends with a close record.
    complete: bool = False
    #: What stopped the reader early (corruption), or None.
    problem: str | None = None
    #: File offset just after the last good record.
    valid_bytes: int = 0
    _derived: tuple[list[Event], SessionObserver] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    @property
    def last_t(self) -> float:
        """Time of the last record (seconds after the session start)."""
        return max((r.t for r in self.records), default=0.0)

    def iter_records(self) -> Iterator[Record]:
        """The records, in file order (as :meth:`CaptureReader.iter_records` gives them)."""
        return iter(self.records)

    def stream(self, direction: str) -> bytes:
        """All bytes recorded in one direction (``"c2s"`` or ``"s2c"``), concatenated."""
        if direction not in _DIRECTIONS:
            raise ValueError(f"direction must be 'c2s' or 's2c', not {direction!r}")
        return b"".join(
            r.data for r in self.records if isinstance(r, DataRecord) and r.dir == direction
        )

    def events(self) -> list[Event]:
        """Protocol events re-derived from the raw bytes by a fresh ``SessionObserver``."""
        return list(self._derive()[0])

    def exchanges(self) -> list[Exchange]:
        """Command/response pairs re-derived from the raw bytes."""
        return [e for e in self._derive()[0] if isinstance(e, Exchange)]

    def summary(self) -> SessionSummary:
        """The observer's session summary (commands, RETR/TOP/DELE counts, bytes...)."""
        return self._derive()[1].summary()

    def _derive(self) -> tuple[list[Event], SessionObserver]:
        if self._derived is None:
            self._derived = _replay_observer(self.records)
        return self._derived


def read_capture(
    path: str | os.PathLike[str], *, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
) -> Capture:
    """Read and validate a whole capture file into memory (see :class:`CaptureReader`).

    A torn or corrupt tail is not an error: the good records before it are returned with
    ``truncated=True`` (and ``problem`` set for corruption).

    Raises:
        CaptureError: missing/unreadable/empty file, no valid header, or a newer format.
    """
    with CaptureReader(path, max_record_bytes=max_record_bytes) as reader:
        records = list(reader.iter_records())
        return Capture(
            path=reader.path,
            header=reader.header,
            records=records,
            truncated=reader.truncated,
            trailing_bytes=reader.trailing_bytes,
            complete=reader.complete,
            problem=reader.problem,
            valid_bytes=reader.valid_bytes,
        )


def derive_events(
    records: Iterable[Record], observer: SessionObserver | None = None
) -> Iterator[tuple[Record | None, list[Event]]]:
    """Feed records, in file order, through an observer; yield each record with its events.

    An ``eof``/``reset`` event with a ``dir`` ends that direction (a ``reset`` without one
    ends both); a ``tls`` event resumes parsing after STLS; a ``mid_session`` event with
    ``greeting="missed"`` says the first server line is an answer, not the greeting.
    Directions still open at the end are ended at the last record's time, client first;
    those final events are yielded with ``None`` as the record.
    """
    from pop3tap.protocol import SessionObserver

    obs = observer if observer is not None else SessionObserver()
    ended = {Direction.CLIENT.value: False, Direction.SERVER.value: False}
    last_t = 0.0

    def end(direction: str, at: float) -> list[Event]:
        if ended[direction]:
            return []
        ended[direction] = True
        return obs.end_client(at) if direction == Direction.CLIENT else obs.end_server(at)

    for record in records:
        if record.t > last_t:
            last_t = record.t
        events: list[Event] = []
        if isinstance(record, DataRecord):
            if not ended[record.dir]:
                if record.dir == Direction.CLIENT:
                    events = obs.feed_client(record.data, record.t)
                else:
                    events = obs.feed_server(record.data, record.t)
        elif isinstance(record, EventRecord):
            events = _transport_event(record, obs, end)
        yield record, events
    final = end(Direction.CLIENT, last_t) + end(Direction.SERVER, last_t)
    if final:
        yield None, final


def _transport_event(
    record: EventRecord,
    obs: SessionObserver,
    end: Callable[[str, float], list[Event]],
) -> list[Event]:
    """What an event record means to the observer (see :func:`derive_events`)."""
    if record.name in _STREAM_ENDS:
        direction = record.fields.get("dir")
        if isinstance(direction, str) and direction in _DIRECTIONS:
            return end(direction, record.t)
        if record.name == EventName.RESET:
            return end(Direction.CLIENT, record.t) + end(Direction.SERVER, record.t)
    elif record.name == EventName.TLS and obs.opaque:
        obs.resume_after_tls()
    elif record.name == EventName.MID_SESSION and record.fields.get("greeting") == "missed":
        obs.greeting_missed()
    return []


def _replay_observer(records: Iterable[Record]) -> tuple[list[Event], SessionObserver]:
    """All events of a capture, and the observer that produced them."""
    from pop3tap.protocol import SessionObserver

    obs = SessionObserver()
    events = [e for _record, batch in derive_events(records, obs) for e in batch]
    return events, obs
