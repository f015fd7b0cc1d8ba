"""The session recorder: capture writer, protocol observer and log lines, without trio.

Bytes go in (each side's chunks, in the order they crossed the relay, with their time);
capture records and log lines come out. The recorder writes client bytes masked (unless
secrets are kept) before they are parsed, writes server bytes before the client can see
them (so a capture cut off by ``kill -9`` holds every byte any client received), and turns
the observer's events into ``pop3.*`` log lines, fault notes and STLS gate decisions. A
parser, masker or capture failure is logged and the session goes on.

Bytes already forwarded may wait in one queue, in the order they crossed the relay
(:meth:`SessionRecorder.queue_server`, :meth:`SessionRecorder.queue_client`), and be
worked off a bounded amount at a time (:meth:`SessionRecorder.work`), so that one
session's burst of pipelined commands or of answers cannot hold the event loop; every
other entry point first works the queue off completely, so nothing is ever reordered.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pop3tap.capture import CaptureError, CaptureWriter, EventName
from pop3tap.protocol import (
    Direction,
    Event,
    SessionObserver,
)
from pop3tap.relay._actions import EventActions
from pop3tap.relay._faults import FaultGate
from pop3tap.relay._stls import StlsGate

#: Lines of queued server bytes parsed in one go (see :meth:`SessionRecorder.work`).
PARSE_LINES = 256


def _nothing() -> None:
    return None


def _line_slice(data: bytes, pos: int, lines: int) -> int:
    """Where ``lines`` lines of ``data`` from ``pos`` end (``len(data)`` if fewer follow)."""
    for _ in range(lines):
        found = data.find(b"\n", pos)
        if found < 0:
            return len(data)
        pos = found + 1
    return pos


class SessionRecorder(EventActions):
    """One session's capture, observer and log; synchronous, no I/O but the capture file."""

    def __init__(
        self,
        *,
        log: Any,
        clock: Callable[[], float],
        stls: StlsGate,
        max_line: int = 8192,
        keep_secrets: bool = False,
        faults: FaultGate | None = None,
        on_server_activity: Callable[[], None] = _nothing,
    ) -> None:
        self.log = log
        #: Seconds since the session started (the time of records written without one).
        self.clock = clock
        self.stls = stls
        self.keep_secrets = keep_secrets
        self.faults = faults
        self.on_server_activity = on_server_activity
        self.observer = SessionObserver(max_line=max_line, keep_secrets=keep_secrets)
        self.capture: CaptureWriter | None = None
        self.capture_warned = False
        #: Bytes observed so far per direction (the observer's stream offsets).
        self.seen = {Direction.CLIENT: 0, Direction.SERVER: 0}
        #: The client's eof/reset record, held back while masked client lines are.
        self.client_end_record: tuple[str, float] | None = None
        #: Bytes captured and forwarded, not parsed yet, with their side and time, in the
        #: order they crossed; the first chunk is parsed up to ``unobserved_pos``.
        self.unobserved: deque[tuple[Direction, bytes, float]] = deque()
        self.unobserved_pos = 0
        #: Events parsed, not acted on yet (in order).
        self.backlog: deque[Event] = deque()
        #: Plaintext after a passed-through STLS was flagged (once a session).
        self.injection_flagged = False

    # -- capture -------------------------------------------------------------------------

    def open_capture(self, directory: Path, session_id: str, header: dict[str, Any]) -> None:
        try:
            self.capture = CaptureWriter.create(
                directory, session_id=session_id, header_fields=header
            )
        except CaptureError as exc:
            self.log.error("capture.failed", error=str(exc))
            return
        self.log.info("capture.open", path=str(self.capture.path))

    def check_capture(self) -> None:
        capture = self.capture
        if capture is not None and capture.failed and not self.capture_warned:
            self.capture_warned = True
            self.log.error(
                "capture.incomplete",
                path=str(capture.path),
                error=capture.error,
                note="relaying continues; the capture stops here",
            )

    def record_event(self, name: str, **fields: Any) -> None:
        if self.capture is not None:
            self.capture.write_event(name, self.clock(), **fields)
            self.check_capture()

    def capture_server(self, data: bytes, at: float) -> None:
        """Write server bytes to the capture before the client can see them."""
        if self.capture is not None:
            self.capture.write_data(Direction.SERVER, at, data)
            self.check_capture()

    def record_client(self, data: bytes, at: float) -> None:
        """Write client bytes (secrets masked unless kept) to the capture.

        Lines after an AUTH are held by the masker until the pairing says whether they
        were SASL data or commands (see :meth:`record_released_client`).
        """
        injected = self.stls.injected_plaintext(data)
        if injected:
            self.flag_injection(len(data))
        observer = self.observer
        try:
            # Every chunk goes through the observer's record entry: only what it recorded
            # can be parsed (see _parse_client).
            if injected:
                recorded = observer.record_injected_client(data, at)
            else:
                recorded = observer.record_client(data, at)
            if recorded and self.capture is not None:
                self.capture.write_data(Direction.CLIENT, at, recorded)
            if not injected and observer.plaintext_after_stls:
                # Plaintext behind bytes that first looked like TLS (the framing broke).
                self.flag_injection(len(data))
        except Exception:  # the masker must never break the relay
            self.log.exception("pop3.parser_error", direction=Direction.CLIENT.value)
        self.record_released_client()

    def flag_injection(self, size: int) -> None:
        """Plaintext after a passed-through STLS ``+OK``: flagged once, like intercepted
        STLS flags what it drops (the CVE-2011-0411 class)."""
        if self.injection_flagged:
            return
        self.injection_flagged = True
        self.log.warning(
            "tls.injection",
            client_bytes=size,
            server_bytes=0,
            note="plaintext sent after STLS where TLS was due: forwarded, recorded masked",
        )
        self.record_event(EventName.STLS_INJECTION, c2s=size, s2c=0)

    def record_released_client(self) -> None:
        """Write the masked client lines the pairing has resolved since the last call.

        Called after parsing, and before the server bytes that resolved them are captured,
        so the capture keeps the order they crossed the relay in.
        """
        capture = self.capture
        if capture is None:
            self.observer.take_masked_client()  # nothing records them: none may pile up
            return
        try:
            for at, data in self.observer.take_masked_client():
                capture.write_data(Direction.CLIENT, at, data)
        except Exception:  # the masker must never break the relay
            self.log.exception("pop3.parser_error", direction=Direction.CLIENT.value)
        if self.client_end_record is not None and not self.observer.client_held:
            name, at = self.client_end_record
            self.client_end_record = None
            capture.write_event(name, at, dir=Direction.CLIENT.value)
        self.check_capture()

    # -- bytes in ------------------------------------------------------------------------

    def client_bytes(self, data: bytes, at: float, *, captured: bool = False) -> None:
        """Record (unless ``captured``) and parse a client chunk."""
        self.flush()
        if not captured:
            try:
                self.record_client(data, at)
            except Exception:  # the masker must never break the relay
                self.log.exception("pop3.parser_error", direction=Direction.CLIENT.value)
        self._parse_client(data, at)
        self.handle_events(self._take_backlog(), Direction.CLIENT)

    def _parse_client(self, data: bytes, at: float) -> None:
        self.seen[Direction.CLIENT] += len(data)
        try:
            events = self.observer.parse_recorded_client(len(data))
            self.record_released_client()
            self.backlog.extend(events)
        except Exception:  # the parser must never break the relay
            self.log.exception("pop3.parser_error", direction=Direction.CLIENT.value)

    def server_bytes(self, data: bytes, at: float) -> None:
        """Parse a server chunk, then capture it: client lines it resolves come first."""
        self.flush()
        self._parse_server(data, at, captured=False)
        self.handle_events(self._take_backlog(), Direction.SERVER)

    def queue_server(self, data: bytes, at: float) -> None:
        """Capture a server chunk now (it is about to be forwarded); parse it later."""
        self.capture_server(data, at)
        self.unobserved.append((Direction.SERVER, data, at))

    def queue_client(self, data: bytes, at: float) -> None:
        """A client chunk already captured and forwarded: parse it later, in order."""
        self.unobserved.append((Direction.CLIENT, data, at))

    def work(self, budget: int) -> bool:
        """Parse queued bytes and act on their events, about ``budget`` events' worth;
        True while some remain."""
        backlog = self.backlog
        while True:
            if backlog:
                if len(backlog) <= budget:
                    batch = list(backlog)
                    backlog.clear()
                else:
                    batch = [backlog.popleft() for _ in range(budget)]
                budget -= len(batch)
                self.handle_events(batch, Direction.SERVER)
                if budget <= 0:
                    return bool(backlog or self.unobserved)
            elif self.unobserved:
                self._parse_queued()
            else:
                return False

    def _parse_queued(self) -> None:
        """Parse the next at most :data:`PARSE_LINES` lines of queued bytes."""
        direction, data, at = self.unobserved[0]
        start = self.unobserved_pos
        # Few commands wait for answers: server bytes cannot complete many exchanges
        # (body lines cost little), so they are parsed whole; the line count is only
        # searched for when a client pipelined many commands, or for client bytes.
        if start == 0 and (
            (direction is Direction.SERVER and self.unanswered <= PARSE_LINES)
            or data.count(b"\n") <= PARSE_LINES
        ):
            end = len(data)
        else:
            end = _line_slice(data, start, PARSE_LINES)
        if end == len(data):
            self.unobserved.popleft()
            self.unobserved_pos = 0
        else:
            self.unobserved_pos = end
        chunk = data if start == 0 and end == len(data) else data[start:end]
        if direction is Direction.SERVER:
            self._parse_server(chunk, at, captured=True)
        else:
            self._parse_client(chunk, at)

    def flush(self) -> None:
        """Work off every queued server byte and event (before anything else is recorded)."""
        while self.unobserved or self.backlog:
            self.work(len(self.backlog) or PARSE_LINES)

    def _parse_server(self, data: bytes, at: float, *, captured: bool) -> None:
        self.seen[Direction.SERVER] += len(data)
        try:
            events: list[Event] = []
            try:
                events = self.observer.feed_server(data, at)
            finally:
                self.record_released_client()
                if not captured:
                    self.capture_server(data, at)
            self.on_server_activity()
            self.record_released_client()
            self.backlog.extend(events)
        except Exception:  # the parser must never break the relay
            self.log.exception("pop3.parser_error", direction=Direction.SERVER.value)

    def _take_backlog(self) -> list[Event]:
        events = list(self.backlog)
        self.backlog.clear()
        return events

    def ended(self, direction: Direction, kind: str) -> None:
        """A side's stream ended (``kind``: ``eof`` or ``reset``)."""
        self.flush()
        at = self.clock()
        if direction is Direction.CLIENT:
            # Written once the client lines still held are (the reader stops reading
            # client bytes at this record).
            self.client_end_record = (kind, at)
        else:
            self.record_event(kind, dir=direction.value)
        try:
            if direction is Direction.CLIENT:
                events = self.observer.end_client(at)
            else:
                events = self.observer.end_server(at)
            self.record_released_client()
        except Exception:
            self.log.exception("pop3.parser_error", direction=direction.value)
        else:
            self.handle_events(events, direction)

    def close(self, reason: str) -> dict[str, Any]:
        """Log the session summary and close the capture; returns the summary fields."""
        self.flush()
        at = self.clock()
        summary = self.observer.summary()
        fields = summary.as_dict()
        self.log.info(
            "session.close",
            reason=reason,
            duration_s=round(at, 3),
            top=f"{summary.top_count}/{summary.top_bytes}",
            retr=f"{summary.retr_count}/{summary.retr_bytes}",
            dele=summary.dele_count,
            commands=summary.commands,
            update=summary.reached_update,
            bytes_in=summary.client_bytes,
            bytes_out=summary.server_bytes,
            anomalies=summary.anomalies,
        )
        if self.capture is not None:
            # Client lines that never got a verdict are masked (the facts are missing).
            self.observer.abandon_client_lines()
            self.record_released_client()
            self.capture.close(at, reason, fields)
            self.check_capture()
        return fields
