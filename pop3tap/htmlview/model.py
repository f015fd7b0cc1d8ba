"""The data behind the HTML view: captures turned into plain, compact JSON-ready values.

Everything here comes from the observer's events, so secrets are masked exactly as in the
``show`` text view (the PASS argument, APOP digests and SASL lines are placeholders in the
events whatever the capture holds). Server bodies are taken from the raw server stream and
dot-unstuffed (RFC 1939 §3); they are data for the page to show as text, never markup.

An exchange row is a list rather than an object to keep the page small (a 10,000-exchange
session would otherwise carry its key names 10,000 times):

``["x", seq, verb, args, status, first_line, sent_ms, first_byte_ms, done_ms, body_lines,
body_bytes, flags, body_index, depth, sasl]``

Other rows are ``[kind, at_ms, text]`` with kind ``g`` (greeting), ``u`` (unsolicited
line), ``s`` (stray line; text starts with the direction), ``t`` (STLS switch) or ``d``
(a transport event, as the text view's ``[db]`` lines say it).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from pop3tap.bodies import unstuff_body
from pop3tap.capture import (
    Capture,
    CaptureError,
    CloseRecord,
    Direction,
    EventName,
    EventRecord,
    derive_events,
    read_capture,
)
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
    Suppressed,
    UnsolicitedLine,
    login_name,
)
from pop3tap.render import describe_transport_event

__all__ = ["DEFAULT_MAX_BODY_BYTES", "FLAG_BITS", "ViewOptions", "build_model", "session_model"]

#: Bit of each flag in an exchange row's ``flags`` number (the page decodes them).
FLAG_BITS: Final = {flag.value: 1 << index for index, flag in enumerate(Flag)}
#: Largest body shown in full; the rest is cut and the cut is said.
DEFAULT_MAX_BODY_BYTES: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ViewOptions:
    """What the page includes."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def _text(data: bytes) -> str:
    return data.decode("utf-8", "backslashreplace")


def _flags(flags: Iterable[Flag]) -> int:
    bits = 0
    for flag in flags:
        bits |= FLAG_BITS.get(flag.value, 0)
    return bits


def _user(exchanges: list[Exchange]) -> str:
    for ex in exchanges:
        name = login_name(ex.verb, ex.args)
        if name is not None:
            return name
    return ""


def _depths(exchanges: list[Exchange]) -> list[int]:
    """How many commands were in flight when each one was sent (itself included)."""
    depths: list[int] = []
    open_until: list[float] = []
    for ex in exchanges:
        open_until = [end for end in open_until if end > ex.sent_at]
        depths.append(len(open_until) + 1)
        open_until.append(ex.at if ex.status is not None else float("inf"))
        if len(open_until) > 64:  # a flood: only the count matters, keep the work bounded
            open_until = sorted(open_until)[-64:]
    return depths


def _verb_summary(exchanges: list[Exchange]) -> list[list[Any]]:
    """Per verb: count, median, 95th percentile and maximum latency in milliseconds."""
    by_verb: dict[str, list[float]] = {}
    counts: dict[str, int] = {}
    for ex in exchanges:
        counts[ex.verb] = counts.get(ex.verb, 0) + 1
        if ex.latency_complete is not None:
            by_verb.setdefault(ex.verb, []).append(ex.latency_complete * 1000.0)
    rows: list[list[Any]] = []
    for verb in sorted(counts, key=lambda v: (-counts[v], v)):
        values = sorted(by_verb.get(verb, []))
        if values:
            p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
            rows.append(
                [
                    verb,
                    counts[verb],
                    round(statistics.median(values), 3),
                    round(p95, 3),
                    round(values[-1], 3),
                ]
            )
        else:
            rows.append([verb, counts[verb], None, None, None])
    return rows


def session_model(capture: Capture, options: ViewOptions = ViewOptions()) -> dict[str, Any]:
    """One capture as the page's session object."""
    header = capture.header
    rows: list[tuple[float, int, list[Any]]] = []
    bodies: list[str] = []
    exchanges: list[Exchange] = []
    tls = False
    close_reason: str | None = None
    end_t = 0.0
    order = 0

    def add(at: float, row: list[Any]) -> None:
        nonlocal order
        rows.append((at, order, row))
        order += 1

    for record, events in derive_events(capture.records):
        if record is not None:
            end_t = max(end_t, record.t)
        if isinstance(record, EventRecord):
            if record.name in (EventName.TLS, EventName.TLS_HANDSHAKE):
                tls = True
            text = describe_transport_event(record)
            if text:
                add(record.t, ["d", _ms(record.t), text])
        elif isinstance(record, CloseRecord):
            close_reason = record.reason
        for event in events:
            _event_row(event, add, exchanges)
    summary = capture.summary()
    slowest = _exchange_rows(exchanges, capture.stream(Direction.SERVER), options, add, bodies)
    rows.sort(key=lambda item: (item[0], item[1]))
    return {
        "file": capture.path.name,
        "id": header.session,
        "client": header.client,
        "upstream": header.upstream,
        "user": _user(exchanges),
        "started": header.started,
        "duration": _ms(end_t),
        "exchanges": len(exchanges),
        "bytes": [summary.client_bytes, summary.server_bytes],
        "close": close_reason,
        "tls": tls or summary.tls,
        "findings": summary.anomalies,
        "secrets": header.secrets,
        "problem": _problem(capture),
        "slowest": None if slowest is None else exchanges[slowest].seq,
        "verbs": _verb_summary(exchanges),
        "rows": [row for _at, _order, row in rows],
        "bodies": bodies,
    }


def _exchange_rows(
    exchanges: list[Exchange],
    server_stream: bytes,
    options: ViewOptions,
    add: Callable[[float, list[Any]], None],
    bodies: list[str],
) -> int | None:
    """Add one row per exchange (its body, cut to ``max_body_bytes``, to ``bodies``);
    return the index of the slowest exchange."""
    depths = _depths(exchanges)
    slowest: int | None = None
    slowest_latency = -1.0
    for index, (ex, depth) in enumerate(zip(exchanges, depths, strict=True)):
        body_index = None
        if ex.multiline and ex.response_end > ex.response_start:
            body, _terminated = unstuff_body(server_stream[ex.response_start : ex.response_end])
            cut = len(body) - options.max_body_bytes
            shown = _text(body[: options.max_body_bytes])
            if cut > 0:
                shown += f"\n[pop3tap: {cut} more bytes not shown]"
            body_index = len(bodies)
            bodies.append(shown)
        latency = ex.latency_complete
        if latency is not None and latency > slowest_latency:
            slowest, slowest_latency = index, latency
        sasl = [[kind, value] for kind, value in ex.sasl] if ex.sasl else 0
        add(
            ex.sent_at,
            [
                "x",
                ex.seq,
                ex.verb,
                ex.args,
                None if ex.status is None else ex.status.value,
                ex.first_line,
                _ms(ex.sent_at),
                _ms(ex.first_byte_at),
                _ms(ex.at) if ex.status is not None else None,
                ex.body_lines if ex.multiline else 0,
                ex.body_bytes if ex.multiline else 0,
                _flags(ex.flags),
                body_index,
                depth,
                sasl,
            ],
        )
    return slowest


def _problem(capture: Capture) -> str | None:
    if capture.complete:
        return None
    problem = "capture ends without a close record (session still open, or truncated)"
    if capture.truncated:
        problem += f"; {capture.trailing_bytes} trailing bytes ignored"
    if capture.problem:
        problem += f": {capture.problem}"
    return problem


def _event_row(event: Event, add: Any, exchanges: list[Exchange]) -> None:
    """Add the row of one observer event (exchanges are collected, added later)."""
    if isinstance(event, Exchange):
        exchanges.append(event)
    elif isinstance(event, Greeting):
        add(event.at, ["g", _ms(event.at), event.text])
    elif isinstance(event, UnsolicitedLine):
        add(event.at, ["u", _ms(event.at), event.text])
    elif isinstance(event, StrayLine):
        add(event.at, ["s", _ms(event.at), f"{event.direction.value} {event.text}"])
    elif isinstance(event, StartTls):
        injected = event.client_trailing + event.server_trailing
        note = f", {injected} bytes of injected plaintext" if injected else ""
        add(event.at, ["t", _ms(event.at), f"STLS accepted: TLS starts here{note}"])
    elif isinstance(event, PairingLost):
        add(event.at, ["d", _ms(event.at), f"Pairing stopped ({event.reason})"])
    elif isinstance(event, Suppressed):
        side = "client" if event.direction is Direction.CLIENT else "server"
        what = "unpaired" if event.kind == "unpaired" else "stray/unsolicited"
        text = (
            f"{event.lines} {what} {side} lines ({event.bytes} bytes) counted, not shown"
            if event.final
            else f"Further {what} {side} lines are counted, not shown"
        )
        add(event.at, ["d", _ms(event.at), text])
    elif isinstance(event, EndOfStream):
        side = "client" if event.direction is Direction.CLIENT else "server"
        details = []
        if event.truncated:
            details.append("inside a body: response truncated")
        if event.unanswered:
            details.append(f"{event.unanswered} command(s) got no response")
        suffix = f" ({'; '.join(details)})" if details else ""
        add(event.at, ["d", _ms(event.at), f"Connection closed by the {side}{suffix}"])
    elif isinstance(event, CommandSent | SaslChallenge | SaslResponse):
        return  # shown inside the exchange row they belong to


def build_model(paths: Iterable[Path], options: ViewOptions = ViewOptions()) -> dict[str, Any]:
    """The page's data for several capture files; unreadable ones are listed, not fatal."""
    sessions: list[dict[str, Any]] = []
    errors: list[str] = []
    for path in paths:
        try:
            capture = read_capture(path)
        except CaptureError as exc:
            errors.append(str(exc))
            continue
        sessions.append(session_model(capture, options))
    return {"version": 1, "flags": list(FLAG_BITS), "sessions": sessions, "errors": errors}
