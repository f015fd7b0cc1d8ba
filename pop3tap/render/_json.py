"""The JSON-lines form of the Pop3.log view (``pop3tap show --format json``): every fact
as one record, in stream order; docs/show-json.schema.json is the schema of every record.
Secrets are masked as in the text view, and C1 and bidi controls are written escaped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Final

from pop3tap._exchange_fields import exchange_fields
from pop3tap._text import json_safe
from pop3tap.capture import (
    CloseRecord,
    EventName,
    EventRecord,
    Record,
    derive_events,
)
from pop3tap.protocol import (
    CommandSent,
    Direction,
    EndOfStream,
    Event,
    Exchange,
    Greeting,
    PairingLost,
    SaslChallenge,
    SaslResponse,
    StartTls,
    StrayLine,
    Suppressed,
    UnsolicitedLine,
)
from pop3tap.render._lines import CaptureSource, wall_time

#: Capture event names shown as ``tls`` records in the JSON view; the rest are ``transport``.
_TLS_EVENTS: Final = frozenset(
    {
        EventName.TLS_HANDSHAKE,
        EventName.TLS,
        EventName.TLS_FAILED,
        EventName.STLS,
        EventName.STLS_INJECTION,
    }
)
#: Capture events that end a direction (their ends are the observer's EndOfStream).
_STREAM_ENDS: Final = frozenset({EventName.EOF, EventName.RESET})


def _iso(capture: CaptureSource, t: float) -> str | None:
    when = wall_time(capture, t)
    return None if when is None else when.isoformat().replace("+00:00", "Z")


def _json_value(value: object) -> object:
    """A capture field as JSON: bytes as text (never ``b'...'``), nested values kept."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN or infinity
    return value


def _event_record_fields(record: EventRecord) -> dict[str, object]:
    return {"event": record.name, "fields": _json_value(record.fields)}


def _exchange_record(ex: Exchange, stray_lines: int) -> dict[str, object]:
    """The fields of an ``exchange`` record (see docs/show-json.schema.json)."""
    challenges = sum(1 for kind, _text in ex.sasl if kind == "+")
    omitted = sum(int(text) for kind, text in ex.sasl if kind == "...")
    record: dict[str, object] = exchange_fields(ex)
    record["sent_t"] = round(ex.sent_at, 6)
    record["sasl_steps"] = challenges + (omitted + 1) // 2
    if any(kind == "c" and text == "*" for kind, text in ex.sasl):
        record["sasl_cancelled"] = True
    record["stray"] = stray_lines > 0
    record["stray_lines"] = stray_lines
    return record


def json_records(capture: CaptureSource) -> Iterator[dict[str, object]]:
    """Every fact of the Pop3.log view as one JSON-ready record, in stream order.

    Each record has ``kind``, ``session`` (the capture's session id), ``t`` (seconds since
    the session started) and ``time`` (ISO 8601 UTC, or None for a damaged clock); the
    rest depends on the kind. docs/show-json.schema.json is the schema of every record.
    """
    stream = _JsonStream(capture)
    yield stream.session_record()
    for record, events in derive_events(capture.iter_records()):  # streamed: see render_lines
        yield from stream.batch(record, events)
    yield from stream.finish()


class _JsonStream:
    """The records of one capture in stream order, with each exchange held back until the
    server lines after it are known: stray lines that follow an answer are counted on it."""

    def __init__(self, capture: CaptureSource) -> None:
        self._capture = capture
        self._session = capture.header.session
        self._pending: list[dict[str, object]] = []
        self._held: Exchange | None = None
        self._stray_after = 0
        self._summary: dict[str, object] | None = None

    def _base(self, kind: str, t: float) -> dict[str, object]:
        time = _iso(self._capture, t)
        return {"kind": kind, "session": self._session, "t": round(t, 6), "time": time}

    def session_record(self) -> dict[str, object]:
        header = self._capture.header
        return {
            **self._base("session", 0.0),
            "client": header.client,
            "listen": header.listen,
            "upstream": header.upstream,
            "secrets": header.secrets,
            "pop3tap": header.pop3tap,
            "format": header.format,
            "options": _json_value(header.options),
        }

    def _release(self) -> Iterator[dict[str, object]]:
        if self._held is not None:
            held = self._held
            yield {**self._base("exchange", held.at), **_exchange_record(held, self._stray_after)}
        self._held, self._stray_after = None, 0
        yield from self._pending
        self._pending.clear()

    def batch(self, record: Record | None, events: list[Event]) -> Iterator[dict[str, object]]:
        """The records of one capture record and the events derived from it."""
        base = self._base
        if isinstance(record, EventRecord) and record.name not in _STREAM_ENDS:
            yield from self._release()
            kind = "tls" if record.name in _TLS_EVENTS else "transport"
            yield {**base(kind, record.t), **_event_record_fields(record)}
        ends = [e for e in events if isinstance(e, EndOfStream)]
        for event in events:
            yield from self._event(event, record)
        if isinstance(record, EventRecord) and record.name in _STREAM_ENDS and not ends:
            yield from self._release()  # a second end of a direction already ended: keep it
            yield {**base("transport", record.t), **_event_record_fields(record)}
        if isinstance(record, CloseRecord):
            # Last, after the ends the close record implies (derive_events adds them after
            # the last record).
            self._summary = {
                **base("summary", record.t),
                "reason": record.reason,
                "counters": _json_value(record.summary),
            }

    def _event(self, event: Event, record: Record | None) -> Iterator[dict[str, object]]:
        base = self._base
        if isinstance(event, Exchange):
            yield from self._release()
            self._held = event
        elif isinstance(event, StrayLine):
            if event.direction is Direction.SERVER and self._held is not None:
                self._stray_after += 1
            line = {**base("stray", event.at), "direction": event.direction.value}
            line["text"] = event.text
            self._pending.append(line)
        elif isinstance(event, EndOfStream):
            inferred = record is None
            if inferred and not self._capture.complete:
                return  # not recorded: the incomplete record says where it stops
            yield from self._release()
            how = record.name if isinstance(record, EventRecord) else "closed"
            yield {
                **base("end", event.at),
                "direction": event.direction.value,
                "how": how,
                "recorded": not inferred,
                "truncated": event.truncated,
                "unanswered": event.unanswered,
            }
        elif not isinstance(event, CommandSent | SaslChallenge | SaslResponse):
            yield from self._release()
            yield {**base(_EVENT_KINDS[type(event)], event.at), **_event_fields(event)}

    def finish(self) -> Iterator[dict[str, object]]:
        capture = self._capture
        yield from self._release()
        if self._summary is not None:
            yield self._summary
        if not capture.complete:
            yield {
                **self._base("incomplete", capture.last_t),
                "torn": capture.truncated,
                "trailing_bytes": capture.trailing_bytes,
                "problem": capture.problem,
            }


#: The ``kind`` of the observer events that become records of their own.
_EVENT_KINDS: Final[dict[type[Event], str]] = {
    Greeting: "greeting",
    UnsolicitedLine: "unsolicited",
    StartTls: "tls",
    PairingLost: "pairing_lost",
    Suppressed: "suppressed",
}


def _event_fields(event: Event) -> dict[str, object]:
    if isinstance(event, Greeting):
        fields: dict[str, object] = {
            "status": None if event.status is None else event.status.value,
            "text": event.text,
            "apop": event.apop_timestamp is not None,
        }
        if event.resp_code:
            fields["resp_code"] = event.resp_code
        if event.flags:
            fields["flags"] = sorted(f.value for f in event.flags)
        return fields
    if isinstance(event, UnsolicitedLine):
        return {"status": None if event.status is None else event.status.value, "text": event.text}
    if isinstance(event, StartTls):
        return {
            "event": "stls_accepted",
            "fields": {
                "seq": event.seq,
                "client_trailing": event.client_trailing,
                "server_trailing": event.server_trailing,
            },
        }
    if isinstance(event, PairingLost):
        return {"reason": event.reason}
    if isinstance(event, Suppressed):
        return {
            "direction": event.direction.value,
            "what": event.kind,
            "lines": event.lines,
            "bytes": event.bytes,
            "final": event.final,
        }
    raise TypeError(f"no JSON record for {type(event).__name__}")  # pragma: no cover


def render_json(capture: CaptureSource) -> Iterator[str]:
    """The JSON view: one JSON object per line for every record of :func:`json_records`.

    C1 and bidi controls, which JSON allows raw, are written as ``\\u`` escapes.
    """
    for record in json_records(capture):
        yield json_safe(json.dumps(record, ensure_ascii=False))


__all__ = ["json_records", "render_json"]
