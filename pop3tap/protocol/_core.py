"""The state every part of the observer shares, and the moves that touch all of it.

:class:`ObserverCore` holds one session's state: the phase (:mod:`._state`), the pending
FIFO (:mod:`._pending`), the line assemblers (:mod:`._lines`), the open body
(:mod:`._body`), the masker, the summary and the outgoing events. The client side
(:mod:`._requests`) and the server side (:mod:`._responses`) work on it; the public
object is :class:`~._observer.SessionObserver`.
"""

from __future__ import annotations

from pop3tap.protocol._anomalies import UNPAIRED, AnomalyReport
from pop3tap.protocol._body import Body, BodyListener
from pop3tap.protocol._commands import Barrier, Counter
from pop3tap.protocol._events import Direction, Event, Flag, PairingLost
from pop3tap.protocol._lines import LineAssembler
from pop3tap.protocol._masking import SecretMasker
from pop3tap.protocol._pending import ClientLine, Pending, PendingQueue
from pop3tap.protocol._resync import LostRun, unsafe_to_count
from pop3tap.protocol._state import SessionPhase, Trigger, next_phase
from pop3tap.protocol._summary import SessionSummary

#: Enum members as module constants: a class attribute lookup per use costs on the hot path.
_GREETING = SessionPhase.GREETING
_LOST = SessionPhase.LOST
_NO_BARRIER = Barrier.NONE
_OPAQUE = SessionPhase.OPAQUE
_QUIT = Counter.QUIT


def _unsafe_command(pending: Pending) -> bool:
    """A command whose answer may not be exactly one line, or that changes the phase."""
    return (
        pending.multiline
        or pending.barrier is not _NO_BARRIER
        or pending.login
        or pending.counter is _QUIT
        or Flag.OVERLONG in pending.flags
        # A lone CR in the line (shown as an escaped CR): a server may answer it twice.
        or "\\r" in pending.masked_args
    )


def _unsafe_line(line: ClientLine) -> bool:
    """A held line that may get more than one answer line, or change the phase."""
    return Flag.OVERLONG in line.flags or b"\r" in line.text or unsafe_to_count(line.text + b"\n")


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
        self._phase = _GREETING
        #: Counting while pairing is lost (phase LOST).
        self._lost_run: LostRun | None = None
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
        phase = self._phase
        return phase is not _OPAQUE and phase is not _LOST

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
        """Give up pairing, keeping memory bounded, until :mod:`._resync` allows it again.

        Reached only by floods (thousands of commands the server does not answer); the
        relay goes on forwarding every byte, and the capture still holds them all.
        """
        if self._phase is _LOST:
            return
        queue = self._queue
        kept = self._client_line.kept
        tainted = (
            self._phase is _GREETING
            or self._body is not None
            # After an AUTH a command may be shown masked, its lone CRs with it.
            or self._auth_seen
            or any(_unsafe_command(pending) for pending in queue.commands)
            or any(_unsafe_line(line) for line in queue.held)
            or b"\r" in kept
            or self._client_line.length > len(kept)
        )
        self._lost_run = LostRun(
            self._phase,
            outstanding=len(queue.commands) + len(queue.held),
            tainted=tainted,
            client_line_open=self._client_line.length > 0,
            server_line_open=self._server_line.length > 0,
        )
        self._lost_run.line_open_at_loss(kept)
        self._phase = _LOST
        self._summary.anomalies += 1
        self._distrust()
        queue.clear()
        self._body = None
        self._client_line.take()
        self._server_line.take()
        self._events.append(PairingLost(at=at, reason=reason))

    def _resume_if_safe(self, at: float) -> None:
        """At the start of a client chunk: pick pairing up again where it is safe."""
        run = self._lost_run
        if run is None or not run.may_resume():
            return
        self._lost_run = None
        self._phase = run.phase
        self._anomalies.report_totals(Direction.CLIENT, at, UNPAIRED)
        self._anomalies.report_totals(Direction.SERVER, at, UNPAIRED)

    def _count_unpaired(self, direction: Direction, data: bytes, pos: int) -> None:
        """Bytes after pairing was lost: counted with C-level counts, never parsed."""
        self._anomalies.count_unpaired(direction, data, pos)
        run = self._lost_run
        if run is not None:
            if direction is Direction.CLIENT:
                run.client_bytes(data, pos)
            else:
                run.server_bytes(data, pos)
