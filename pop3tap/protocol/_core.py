"""The state every part of the observer shares, and the moves that touch all of it.

:class:`ObserverCore` holds one session's state: the phase (:mod:`._state`), the pending
FIFO (:mod:`._pending`), the line assemblers (:mod:`._lines`), the open body
(:mod:`._body`), the masker, the summary and the outgoing events. The client side
(:mod:`._requests`) and the server side (:mod:`._responses`) work on it; the public
object is :class:`~._observer.SessionObserver`.
"""

from __future__ import annotations

from pop3tap.protocol._anomalies import AnomalyReport
from pop3tap.protocol._body import Body, BodyListener
from pop3tap.protocol._events import Direction, Event, PairingLost
from pop3tap.protocol._lines import LineAssembler
from pop3tap.protocol._masking import SecretMasker
from pop3tap.protocol._pending import PendingQueue
from pop3tap.protocol._state import PARSING, SessionPhase, Trigger, next_phase
from pop3tap.protocol._summary import SessionSummary


class ObserverCore:
    """One session's pairing state (see the module docstring)."""

    def __init__(
        self,
        *,
        max_line: int,
        max_pending: int,
        max_pending_bytes: int,
        max_anomaly_events: int,
        body_listener: BodyListener | None,
    ) -> None:
        self._max_line = max_line
        self._body_listener = body_listener
        self._queue = PendingQueue(max_pending, max_pending_bytes)
        self._events: list[Event] = []
        self._anomalies = AnomalyReport(max_anomaly_events, self._events)
        self._phase = SessionPhase.GREETING
        self._masker = SecretMasker()
        #: A line holding AUTH was classified: later lines may be SASL data.
        self._auth_seen = False
        #: A server line fit nowhere, or pairing was lost: mask every line after an AUTH.
        self._distrusted = False
        self._client_line = LineAssembler(max_line)
        self._server_line = LineAssembler(max_line)
        self._client_offset = 0
        self._server_offset = 0
        #: Stream offset where the server chunk being parsed ends.
        self._server_chunk_end = 0
        self._body: Body | None = None
        self._next_seq = 1
        self._ended: set[Direction] = set()
        self._summary = SessionSummary()

    @property
    def _parsing(self) -> bool:
        return self._phase in PARSING

    def _advance(self, trigger: Trigger) -> None:
        self._phase = next_phase(self._phase, trigger)

    def _take_events(self) -> list[Event]:
        events = self._events
        self._events = self._anomalies.events = []
        return events

    def _distrust(self) -> None:
        """A server line fit nowhere or pairing was lost: the pairing may be wrong from
        here on, so no client line after an AUTH can be shown."""
        if not self._distrusted:
            self._distrusted = True
            self._masker.distrust()

    def _lose_pairing(self, at: float, reason: str) -> None:
        """Give up pairing for the rest of the session, keeping memory bounded.

        Reached only by floods (thousands of commands the server does not answer); the
        relay goes on forwarding every byte, and the capture still holds them all.
        """
        if self._phase is SessionPhase.LOST:
            return
        queue = self._queue
        self._phase = SessionPhase.LOST
        self._summary.anomalies += 1
        self._distrust()
        queue.clear()
        self._body = None
        self._client_line.take()
        self._server_line.take()
        self._events.append(PairingLost(at=at, reason=reason))

    def _count_unpaired(self, direction: Direction, data: bytes, pos: int) -> None:
        """Bytes after pairing was lost: counted with C-level counts, never parsed."""
        self._anomalies.count_unpaired(direction, data, pos)
