"""What a capture's event and close records say about a session (pure, no I/O).

The data records hold the bytes; these say how the recorded session used TLS, how the
recorded server ended it and which faults the recording relay injected, so that replay
can do the same.
"""

from __future__ import annotations

from pop3tap.capture import (
    Capture,
    CloseReason,
    CloseRecord,
    Direction,
    EventName,
    EventRecord,
)

#: The events that end one direction's stream.
_STREAM_ENDS = (EventName.EOF, EventName.RESET)
#: A fault armed on an answer, and one dropped again when the pairing was lost.
_FAULT_EVENTS = (EventName.FAULT, EventName.FAULT_DROPPED)


def tls_refusal(capture: Capture) -> str | None:
    """Why a capture cannot be replayed because of TLS, or None.

    Implicit TLS (RFC 8314 §3) on either leg is recorded decrypted, and so is an
    intercepted STLS (RFC 2595 §4, a ``tls`` record at the switch): both replay. Refused:
    an STLS the relay let through without intercepting it (an ``stls`` record with
    ``intercepted: false``), whose later bytes are opaque TLS records, not POP3.
    An accepted STLS whose handshake failed (``tls_failed``) is replayed up to the STLS
    answer, then the connection closes (see :func:`~pop3tap.replay.session_from_capture`).
    """
    for record in capture.records:
        if (
            isinstance(record, EventRecord)
            and record.name == EventName.STLS
            and record.fields.get("intercepted") is False
        ):
            return (
                "the session used STLS without interception (intercept_stls off), so "
                "what follows the upgrade is encrypted; it cannot be replayed"
            )
    return None


def upstream_host(upstream: str) -> str:
    """The host of a capture header's ``host:port`` (``[v6]:port`` too)."""
    text = upstream.strip()
    if text.startswith("["):
        return text[1 : text.find("]")] if "]" in text else text.strip("[]")
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


def stls_came_up(capture: Capture) -> bool:
    """Whether TLS came up after STLS (a ``tls`` record in ``stls`` mode)."""
    return any(
        isinstance(record, EventRecord)
        and record.name == EventName.TLS
        and record.fields.get("mode", "stls") == "stls"
        for record in capture.records
    )


def server_reset(capture: Capture) -> bool:
    """Whether the recorded server's stream ended with a reset rather than a clean close."""
    for record in capture.records:
        if (
            isinstance(record, EventRecord)
            and record.name in _STREAM_ENDS
            and record.fields.get("dir") in (Direction.SERVER, None)
        ):
            return record.name == EventName.RESET
    return False


def server_closed_first(capture: Capture) -> bool:
    """Whether the recorded server ended its stream before the client did."""
    for record in capture.records:
        if isinstance(record, EventRecord) and record.name in _STREAM_ENDS:
            return record.fields.get("dir") == Direction.SERVER
        if isinstance(record, CloseRecord):
            return record.reason in (
                CloseReason.SERVER_CLOSED,
                CloseReason.SERVER_EOF,
                CloseReason.SERVER_RESET,
            )
    return False


def recorded_faults(capture: Capture) -> dict[int, str]:
    """Faults the relay injected (``fault`` records): exchange seq (0: greeting) -> spec."""
    found: dict[int, str] = {}
    dropped: set[int] = set()
    for record in capture.records:
        if isinstance(record, EventRecord) and record.name in _FAULT_EVENTS:
            seq, spec = record.fields.get("seq"), record.fields.get("spec")
            if not isinstance(seq, int) or not isinstance(spec, str):
                continue
            if record.name == EventName.FAULT:
                found.setdefault(seq, spec)
            else:  # armed, then dropped when the pairing was lost: it never happened
                dropped.add(seq)
    return {seq: spec for seq, spec in found.items() if seq not in dropped}


def text_option(value: object) -> str | None:
    return value if isinstance(value, str) and value and "\0" not in value else None
