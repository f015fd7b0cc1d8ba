"""The flat fields of one ``pop3.exchange`` line: one definition for the relay's log (and
its direct writer, :mod:`pop3tap.log`) and ``show --json`` (:mod:`pop3tap.render`).

Apart from :mod:`pop3tap.log` so that reading captures does not load structlog.
"""

from __future__ import annotations

from pop3tap.protocol._events import Exchange


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def exchange_fields(ex: Exchange) -> dict[str, object]:
    """Flat fields of one ``pop3.exchange`` line.

    Always present: ``seq``, ``verb``, ``status`` (``"+OK"``/``"-ERR"``/``"+"`` or None
    when no response came) and ``first_line``. Only when meaningful: ``args`` (already
    masked by the core), ``resp_code``, ``multiline``/``body_lines``/``body_bytes``,
    ``latency_first_ms``/``latency_ms`` (3 decimals), ``pipelined``, ``flags`` (sorted).
    """
    fields: dict[str, object] = {
        "seq": ex.seq,
        "verb": ex.verb,
        "status": None if ex.status is None else ex.status.value,
        "first_line": ex.first_line,
    }
    if ex.args:
        fields["args"] = ex.args
    if ex.resp_code:
        fields["resp_code"] = ex.resp_code
    if ex.multiline:
        fields["multiline"] = True
        fields["body_lines"] = ex.body_lines
        fields["body_bytes"] = ex.body_bytes
    first = _ms(ex.latency_first_byte)
    if first is not None:
        fields["latency_first_ms"] = first
    complete = _ms(ex.latency_complete)
    if complete is not None:
        fields["latency_ms"] = complete
    if ex.pipelined:
        fields["pipelined"] = True
    if ex.flags:
        fields["flags"] = sorted(f.value for f in ex.flags)
    return fields
