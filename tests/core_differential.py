"""Drive the protocol core with sessions read from stdin and print what it made of them.

Run as a child process, once with the compiled core and once with
``POP3TAP_PURE_PYTHON=1``, by ``tests/test_compiled_core.py``: each input line is a JSON
session (``max_line`` and a list of steps), each output line the session's events, masked
client bytes, body-listener calls, phases and summary in plain JSON, so the two builds'
answers can be compared as text. The first output line says which build was loaded.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import json
import sys
from typing import Any

import pop3tap.protocol
from pop3tap.protocol import SessionObserver


def plain(value: Any) -> Any:
    """``value`` as JSON: events by class and field, sets sorted, bytes as latin-1 text."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return [type(value).__name__, fields]
    if isinstance(value, enum.Enum):
        return [type(value).__name__, plain(value.value)]
    if isinstance(value, (set, frozenset)):
        return sorted((plain(item) for item in value), key=json.dumps)
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    return value


def run(session: dict[str, Any]) -> list[Any]:
    """Every step's outcome: ``c``/``s`` feed a direction, ``C``/``S`` end it, ``t`` says
    TLS is up (only while the session is opaque), ``g`` says the greeting was missed."""
    bodies: list[Any] = []

    def listener(*args: Any) -> None:
        bodies.append(plain(args))

    observer = SessionObserver(max_line=session["max_line"], body_listener=listener)
    out: list[Any] = []
    for step, (kind, payload) in enumerate(session["steps"]):
        at = float(step)
        data = base64.b64decode(payload)
        if kind == "c":
            feed = observer.receive_client(data, at)
            out.append(["c", plain(feed.recorded), plain(feed.events)])
        elif kind == "s":
            out.append(["s", plain(observer.feed_server(data, at))])
            out.append(["held", plain(observer.take_masked_client())])
        elif kind == "C":
            out.append(["C", plain(observer.end_client(at))])
        elif kind == "S":
            out.append(["S", plain(observer.end_server(at))])
        elif kind == "t" and observer.opaque:
            observer.resume_after_tls()
        elif kind == "g" and not observer.greeted:
            observer.greeting_missed()
        out.append([observer.phase.name, observer.stls_pending, observer.awaiting_answers])
    observer.abandon_client_lines()
    out.append(["abandoned", plain(observer.take_masked_client())])
    out.append(["bodies", bodies, "summary", plain(observer.summary())])
    return out


def main() -> None:
    print(json.dumps(pop3tap.protocol.COMPILED), flush=True)
    for line in sys.stdin:
        print(json.dumps(run(json.loads(line))), flush=True)


if __name__ == "__main__":
    main()
