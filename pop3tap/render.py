"""The Pop3.log-style view of a capture, and its JSON-lines form.

Each protocol line becomes one log line, ``POP3: HH:MM:SS [tx] USER alice`` for what the
client sent, ``[rx]`` for what the server answered and ``[db]`` for transport events, in
the manner of the classic Outlook Express ``Pop3.log``. Multi-line bodies are summarised
unless ``bodies`` is set. Secrets are masked whatever the capture holds: the view is
built from the observer's events, whose arguments are always masked.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from pop3tap.capture import Capture, CloseRecord, EventRecord, derive_events
from pop3tap.log import exchange_fields
from pop3tap.protocol import (
    CommandSent,
    EndOfStream,
    Event,
    Exchange,
    Flag,
    Greeting,
    PairingLost,
    SaslChallenge,
    SaslResponse,
    StartTls,
    StrayLine,
    UnsolicitedLine,
)

#: Formats one view line from a time, a tag (tx, rx, db) and the text.
_Out = Callable[[float, str, str], str]


def _wall_time(capture: Capture, t: float) -> datetime | None:
    """The wall-clock time of a record, or None when a damaged capture gives nonsense."""
    try:
        return datetime.fromtimestamp(capture.header.started_unix + t, UTC)
    except (OverflowError, ValueError, OSError):
        return None


def _clock(capture: Capture, t: float) -> str:
    when = _wall_time(capture, t)
    return "??:??:??" if when is None else when.strftime("%H:%M:%S")


def _body_lines(raw: bytes) -> Iterator[str]:
    """Lines of a raw multi-line response after its first line, dot-unstuffed (RFC 1939 §3)."""
    lines = raw.split(b"\n")[1:]
    for line in lines:
        text = line[:-1] if line.endswith(b"\r") else line
        if text == b".":
            return
        if text.startswith(b"."):
            text = text[1:]
        yield text.decode("utf-8", "backslashreplace")


def _describe_transport_event(record: EventRecord) -> str | None:
    """The [db] text of a transport event record; None where a protocol line says it."""
    fields = record.fields
    side = {"c2s": "client", "s2c": "server"}.get(str(fields.get("dir")), "?")
    if record.name == "eof":
        return None  # the observer's end-of-stream line says it, with what was pending
    if record.name == "reset":
        return f"Connection reset by the {side}"
    if record.name == "upstream_connected":
        return f"Connected to upstream from {fields.get('local', '?')}"
    if record.name == "tls_handshake":
        if fields.get("peer_subject") or fields.get("peer_sha256"):
            who = f" (server cert {fields.get('peer_subject')}, sha256 {fields.get('peer_sha256')})"
        elif fields.get("cert_subject"):
            who = f" (presented {fields.get('cert_subject')}, sha256 {fields.get('cert_sha256')})"
        else:
            who = ""
        if fields.get("sni"):
            who += f" SNI {fields.get('sni')}"
        return (
            f"TLS {fields.get('version', '?')} {fields.get('cipher', '?')} "
            f"with the {fields.get('leg', '?')}{who}"
        )
    if record.name == "tls":
        return "TLS up on both legs after STLS: decrypted from here"
    if record.name == "tls_failed":
        return f"TLS failed on the {fields.get('leg', '?')} leg: {fields.get('reason', '?')}"
    if record.name == "fault":
        target = "the greeting" if fields.get("seq") == 0 else f"exchange #{fields.get('seq')}"
        return f"Fault injected into {target}: {fields.get('spec', '?')}"
    if record.name == "fault_end":
        return f"Fault ended the session: {fields.get('reason', '?')}"
    if record.name == "upstream_connect_failed":
        return f"Cannot reach upstream {fields.get('upstream', '?')}: {fields.get('error', '?')}"
    details = " ".join(f"{key}={value}" for key, value in sorted(fields.items()))
    return f"{record.name} {details}".rstrip()


def _describe_exchange(ex: Exchange) -> str:
    if ex.status is None:
        return "(no response)"
    line = ex.first_line
    if ex.multiline:
        extra = f"{ex.body_lines} lines, {ex.body_bytes} bytes"
        if Flag.TRUNCATED in ex.flags:
            extra += ", TRUNCATED"
        line += f"  ({extra})"
    return line


def render_lines(capture: Capture, *, bodies: bool = False) -> Iterator[str]:
    """Yield the Pop3.log-style lines of one capture (times are UTC)."""
    header = capture.header
    server_stream = capture.stream("s2c") if bodies else b""

    def out(t: float, tag: str, text: str) -> str:
        return f"POP3: {_clock(capture, t)} [{tag}] {text}"

    yield out(
        0.0,
        "db",
        f"Session {header.session} {header.client} -> {header.upstream} "
        f"(started {header.started}, secrets {header.secrets})",
    )
    for record, events in derive_events(capture.records):
        if isinstance(record, EventRecord):
            text = _describe_transport_event(record)
            if text:
                yield out(record.t, "db", text)
        elif isinstance(record, CloseRecord):
            summary = record.summary
            yield out(
                record.t,
                "db",
                f"Closed: {record.reason}; top={summary.get('top_count', 0)}/"
                f"{summary.get('top_bytes', 0)} retr={summary.get('retr_count', 0)}/"
                f"{summary.get('retr_bytes', 0)} del={summary.get('dele_count', 0)} "
                f"update={'yes' if summary.get('reached_update') else 'no'} "
                f"bytes={summary.get('client_bytes', 0)}/{summary.get('server_bytes', 0)}",
            )
        for event in events:
            yield from _render_event(event, out, server_stream if bodies else None)
    if not capture.complete:
        why = f": {capture.problem}" if capture.problem else ""
        torn = f" ({capture.trailing_bytes} trailing bytes ignored)" if capture.truncated else ""
        yield out(
            capture.records[-1].t if capture.records else 0.0,
            "db",
            f"Capture ends without a close record (truncated){torn}{why}",
        )


def _render_event(event: Event, out: _Out, server_stream: bytes | None) -> Iterator[str]:
    if isinstance(event, Greeting):
        yield out(event.at, "rx", event.text)
    elif isinstance(event, CommandSent):
        yield out(event.at, "tx", f"{event.verb} {event.args}".rstrip())
    elif isinstance(event, SaslResponse):
        yield out(event.at, "tx", event.text or "(empty SASL response)")
    elif isinstance(event, SaslChallenge):
        yield out(event.at, "rx", f"+ (SASL challenge, {event.length} bytes)")
    elif isinstance(event, Exchange):
        yield out(event.at, "rx", _describe_exchange(event))
        if server_stream is not None and event.multiline:
            raw = server_stream[event.response_start : event.response_end]
            for line in _body_lines(raw):
                yield out(event.at, "rx", line)
    elif isinstance(event, PairingLost):
        yield out(event.at, "db", f"Pairing stopped ({event.reason}); bytes are still recorded")
    elif isinstance(event, StartTls):
        injected = event.client_trailing + event.server_trailing
        note = f", {injected} bytes of injected plaintext" if injected else ""
        yield out(event.at, "db", f"STLS accepted: TLS starts here{note}")
    elif isinstance(event, UnsolicitedLine):
        yield out(event.at, "rx", f"{event.text}  (unsolicited)")
    elif isinstance(event, StrayLine):
        tag = "rx" if event.direction.value == "s2c" else "tx"
        yield out(event.at, tag, f"{event.text}  (stray)")
    elif isinstance(event, EndOfStream):
        side = "client" if event.direction.value == "c2s" else "server"
        details = []
        if event.truncated:
            details.append("inside a body: response truncated")
        if event.unanswered:
            details.append(f"{event.unanswered} command(s) got no response")
        suffix = f" ({'; '.join(details)})" if details else ""
        yield out(event.at, "db", f"Connection closed by the {side}{suffix}")


def render_json(capture: Capture) -> Iterator[str]:
    """One JSON object per exchange, with the session id and wall-clock time."""
    header = capture.header
    for exchange in capture.exchanges():
        fields = exchange_fields(exchange)
        when = _wall_time(capture, exchange.sent_at)
        record = {
            "session": header.session,
            "time": None if when is None else when.isoformat().replace("+00:00", "Z"),
            **fields,
        }
        yield json.dumps(record, ensure_ascii=False)


__all__ = ["render_json", "render_lines"]
