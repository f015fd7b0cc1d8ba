"""What the relay does with each parsed event: log lines, fault notes, STLS decisions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pop3tap.capture import EventName
from pop3tap.log import log_exchange
from pop3tap.protocol import (
    CommandSent,
    Direction,
    EndOfStream,
    Event,
    Exchange,
    Greeting,
    PairingLost,
    SessionObserver,
    StartTls,
    StrayLine,
    Suppressed,
    UnsolicitedLine,
)
from pop3tap.relay._faults import FaultGate
from pop3tap.relay._stls import StlsGate


class EventActions:
    """The event half of :class:`~pop3tap.relay._recorder.SessionRecorder`."""

    log: Any
    observer: SessionObserver
    stls: StlsGate
    faults: FaultGate | None
    #: Bytes observed so far per direction (the observer's stream offsets).
    seen: dict[Direction, int]
    #: Commands seen whose exchange has not been acted on yet (an upper bound of the
    #: exchanges the next server bytes can complete).
    unanswered = 0

    def record_event(self, name: str, **fields: Any) -> None:
        raise NotImplementedError

    def flag_injection(self, size: int) -> None:
        raise NotImplementedError

    def handle_events(self, events: list[Event], direction: Direction) -> None:
        """Act on parsed events in order; a failure is logged and the session goes on."""
        try:
            for event in events:
                handler = _HANDLERS.get(type(event))
                if handler is not None:
                    handler(self, event)
        except Exception:  # the parser must never break the relay
            self.log.exception("pop3.parser_error", direction=direction.value)

    def on_exchange(self, event: Exchange) -> None:
        self.unanswered = max(0, self.unanswered - 1)
        log_exchange(self.log, event)
        if self.faults is not None:
            self.faults.on_exchange(event.seq, event.response_start, event.response_end)
        self.stls.on_exchange(event)

    def on_command(self, event: CommandSent) -> None:
        self.unanswered += 1
        if self.faults is not None:
            # A fault may hit the answer to this command: note it, and record it.
            armed = self.faults.on_command(
                event.seq, event.verb, event.args.encode(), self.seen[Direction.SERVER]
            )
            if armed is not None:
                self.record_event(EventName.FAULT, seq=armed.seq, spec=armed.fault.spec)
        self.stls.on_command(event)

    def on_greeting(self, event: Greeting) -> None:
        if self.faults is not None:
            self.faults.on_greeting(event.end)
        self.log.info(
            "pop3.greeting",
            status=None if event.status is None else event.status.value,
            first_line=event.text,
            apop=event.apop_timestamp is not None,
        )

    def on_unsolicited(self, event: UnsolicitedLine) -> None:
        self.log.warning("pop3.unsolicited", line=event.text)

    def on_stray(self, event: StrayLine) -> None:
        self.log.warning("pop3.stray", direction=event.direction.value, line=event.text)

    def on_start_tls(self, event: StartTls) -> None:
        if self.stls.on_start_tls(event):
            return
        self.log.warning(
            "pop3.stls",
            note="TLS follows; without interception the rest of the session is relayed "
            "encrypted and recorded as opaque bytes",
            client_trailing=event.client_trailing,
            server_trailing=event.server_trailing,
        )
        self.record_event(EventName.STLS, intercepted=False)
        if event.client_trailing:
            # Sent with the STLS, before its +OK: the observer masked it already.
            self.flag_injection(event.client_trailing)

    def on_pairing_lost(self, event: PairingLost) -> None:
        self.log.warning("pop3.pairing_lost", reason=event.reason)
        for armed in self.faults.disarm() if self.faults is not None else ():
            self.log.warning("fault.dropped", spec=armed.fault.spec, seq=armed.seq)
            # So a replay of this capture does not inject what never happened.
            self.record_event(EventName.FAULT_DROPPED, seq=armed.seq, spec=armed.fault.spec)

    def on_suppressed(self, event: Suppressed) -> None:
        self.log.warning(
            "pop3.suppressed",
            direction=event.direction.value,
            kind=event.kind,
            lines=event.lines,
            bytes=event.bytes,
            final=event.final,
            note="totals for the session"
            if event.final
            else "further lines like these are counted, not logged",
        )

    def on_end_of_stream(self, event: EndOfStream) -> None:
        if event.truncated:
            self.log.warning("pop3.truncated", direction=event.direction.value)


#: What the recorder does with each kind of event (the others need nothing).
_HANDLERS: dict[type[Event], Callable[[EventActions, Any], None]] = {
    Exchange: EventActions.on_exchange,
    CommandSent: EventActions.on_command,
    Greeting: EventActions.on_greeting,
    UnsolicitedLine: EventActions.on_unsolicited,
    StrayLine: EventActions.on_stray,
    StartTls: EventActions.on_start_tls,
    PairingLost: EventActions.on_pairing_lost,
    Suppressed: EventActions.on_suppressed,
    EndOfStream: EventActions.on_end_of_stream,
}
