"""Drive the protocol core, or the relay's recorder, with sessions read from stdin and
print what it made of them.

Run as a child process, once with the compiled modules and once with
``POP3TAP_PURE_PYTHON=1``, by ``tests/test_compiled_core.py``: each input line is a JSON
session (``max_line`` and a list of steps), each output line the session's events, masked
client bytes, body-listener calls, phases and summary in plain JSON, so the two builds'
answers can be compared as text. A session with a ``recorder`` entry goes through the
relay's :class:`~pop3tap.relay.SessionRecorder` (with its STLS and fault gates) instead:
its answer is the capture's records, the log calls and the fault gate's steps. The first
output line says which build was loaded.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import pop3tap.protocol
from pop3tap.capture import iter_capture_paths, read_capture
from pop3tap.faults import ConnectionFaults, FaultPlan
from pop3tap.protocol import Direction, SessionObserver
from pop3tap.relay import SessionRecorder, StlsGate
from pop3tap.relay._faults import FaultGate


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


class CallLog:
    """A logger that keeps every call: method, event, fields and the exception handled
    (the capture's path, named by the time, as ``capture``)."""

    def __init__(self) -> None:
        self.calls: list[Any] = []

    def __getattr__(self, method: str) -> Any:
        def call(event: str, **fields: Any) -> None:
            handled = sys.exc_info()[0]
            if "path" in fields:  # a temporary file named by the time
                fields["path"] = "capture"
            self.calls.append([method, event, plain(fields), getattr(handled, "__name__", None)])

        return call


def record(session: dict[str, Any]) -> list[Any]:
    """Every step through a :class:`SessionRecorder`: ``c``/``s`` a side's chunk as the
    pumps hand it over when they parse first, ``q``/``Q`` captured and queued (parsed by
    ``w``: work off a few events), ``C``/``S`` a side's end; server chunks also go through
    the fault gate's plan."""
    options = session["recorder"]
    log = CallLog()
    gate = StlsGate(intercept=options["intercept"])
    faults = FaultGate(ConnectionFaults(FaultPlan(options["faults"])))
    recorder = SessionRecorder(
        log=log,
        clock=lambda: 0.5,
        stls=gate,
        max_line=session["max_line"],
        keep_secrets=options["keep_secrets"],
        faults=faults,
    )
    out: list[Any] = []
    with tempfile.TemporaryDirectory() as tmp:
        recorder.open_capture(Path(tmp), "0123456789ab", {"client": "differential"})
        for step, (kind, payload) in enumerate(session["steps"]):
            at = float(step)
            data = base64.b64decode(payload)
            if kind == "c":
                recorder.client_bytes(data, at)
            elif kind == "q":
                recorder.record_client(data, at)
                recorder.queue_client(data, at)
            elif kind == "s":
                start = recorder.seen[Direction.SERVER]
                recorder.server_bytes(data, at)
                out.append(["plan", plain(faults.plan(start, data))])
            elif kind == "Q":
                recorder.queue_server(data, at)
            elif kind == "w":
                out.append(["work", recorder.work(3)])
            elif kind in "CS":
                recorder.ended(Direction.CLIENT if kind == "C" else Direction.SERVER, "eof")
            out.append([gate.pending, recorder.unanswered, faults.active])
        out.append(["close", plain(recorder.close("done"))])
        (path,) = iter_capture_paths([Path(tmp)])
        records = read_capture(path).records
    out.append(["records", plain(records), "log", log.calls])
    return out


def main() -> None:
    print(json.dumps(pop3tap.protocol.COMPILED), flush=True)
    for line in sys.stdin:
        session = json.loads(line)
        answer = record(session) if "recorder" in session else run(session)
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
