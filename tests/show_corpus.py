"""Quirky POP3 sessions as scripted byte streams, written as captures for the view tests.

Each session is a list of steps: ``("s2c", bytes)`` / ``("c2s", bytes)`` for what a side
sent, ``("event", name, fields)`` for a transport event, ``("close", reason)`` for the close
record and ``("torn", bytes)`` for a torn tail after the last record. Step ``n`` happens at
``n / 100`` s, so every time and latency in the views is fixed.
"""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema

from pop3tap.capture import Capture, CaptureWriter
from pop3tap.render import json_records

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "docs" / "show-json.schema.json"

#: The wall-clock start of every corpus capture.
STARTED = datetime(2026, 11, 27, 6, 0, 0, tzinfo=UTC)

GREETING = b"+OK POP3 ready <1.2@example.org>\r\n"

SESSIONS: dict[str, list[tuple[Any, ...]]] = {
    # Dovecot's inactivity message arrives with no command waiting, then the server closes.
    "unsolicited-err-before-close": [
        ("s2c", GREETING),
        ("c2s", b"USER alice\r\n"),
        ("s2c", b"+OK\r\n"),
        ("c2s", b"PASS secret\r\n"),
        ("s2c", b"+OK Logged in.\r\n"),
        ("s2c", b"-ERR Disconnected for inactivity.\r\n"),
        ("event", "eof", {"dir": "s2c"}),
        ("event", "eof", {"dir": "c2s"}),
        ("close", "server closed"),
    ],
    # STAT answered as if it were LIST: the extra lines fit no command.
    "multiline-answer-to-single-line-command": [
        ("s2c", GREETING),
        ("c2s", b"STAT\r\n"),
        ("s2c", b"+OK 2 320\r\n1 120\r\n2 200\r\n.\r\n"),
        ("c2s", b"NOOP\r\n"),
        ("s2c", b"+OK\r\n"),
        ("c2s", b"QUIT\r\n"),
        ("s2c", b"+OK bye\r\n"),
        ("event", "eof", {"dir": "s2c"}),
        ("event", "eof", {"dir": "c2s"}),
        ("close", "server closed"),
    ],
    # The message holds a line that is a lone dot; the server does not stuff it (RFC 1939
    # §3), so the body seems to end there and its last line is stray.
    "server-never-dot-stuffs": [
        ("s2c", GREETING),
        ("c2s", b"RETR 1\r\n"),
        ("s2c", b"+OK 40 octets\r\nSubject: dots\r\n\r\n.profile\r\n.\r\nlast line\r\n.\r\n"),
        ("c2s", b"QUIT\r\n"),
        ("s2c", b"+OK bye\r\n"),
        ("event", "eof", {"dir": "s2c"}),
        ("event", "eof", {"dir": "c2s"}),
        ("close", "server closed"),
    ],
    # AUTH, one challenge, and the client cancels with * (RFC 5034 §4).
    "auth-cancelled": [
        ("s2c", GREETING),
        ("c2s", b"AUTH PLAIN\r\n"),
        ("s2c", b"+ \r\n"),
        ("c2s", b"*\r\n"),
        ("s2c", b"-ERR [AUTH] Authentication cancelled.\r\n"),
        ("c2s", b"QUIT\r\n"),
        ("s2c", b"+OK bye\r\n"),
        ("event", "eof", {"dir": "s2c"}),
        ("event", "eof", {"dir": "c2s"}),
        ("close", "server closed"),
    ],
    # STLS intercepted, a command inside TLS, then the client resets the connection.
    "stls-then-client-reset": [
        ("event", "upstream_connected", {"local": "127.0.0.1:40000"}),
        ("s2c", GREETING),
        ("c2s", b"STLS\r\n"),
        ("s2c", b"+OK Begin TLS\r\n"),
        ("event", "tls_handshake", {"leg": "server", "version": "TLSv1.3"}),
        ("event", "tls_handshake", {"leg": "client", "version": "TLSv1.3"}),
        ("event", "tls", {"mode": "stls", "seq": 1, "dropped_c2s": 0, "dropped_s2c": 0}),
        ("c2s", b"LIST\r\n"),
        ("s2c", b"+OK\r\n1 120\r\n.\r\n"),
        ("event", "reset", {"dir": "c2s"}),
        ("event", "eof", {"dir": "s2c"}),
        ("close", "client reset"),
    ],
    # Cut off by kill -9 in the middle of a body: no close record, a torn last record.
    "cut-mid-body": [
        ("s2c", GREETING),
        ("c2s", b"RETR 1\r\n"),
        ("s2c", b"+OK 500 octets\r\nSubject: long\r\n"),
        ("torn", b"\x84\xa4type\xa4data"),
    ],
}


def write_session(directory: Path, name: str) -> Path:
    """Write one corpus session as a capture file; returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    writer = CaptureWriter.create(
        directory,
        session_id=name,
        header_fields={
            "pop3tap": "test",
            "client": "127.0.0.1:50000",
            "listen": "127.0.0.1:1110",
            "upstream": "127.0.0.1:110",
            "secrets": "masked",
            "options": {},
        },
        now=STARTED,
    )
    torn = b""
    for number, step in enumerate(SESSIONS[name], start=1):
        t = number / 100
        if step[0] in ("c2s", "s2c"):
            writer.write_data(step[0], t, step[1])
        elif step[0] == "event":
            writer.write_event(step[1], t, **step[2])
        elif step[0] == "close":
            writer.close(t, step[1])
        elif step[0] == "torn":
            torn = step[1]
    path = writer.path
    writer.release()
    if torn:
        with open(path, "ab") as f:
            f.write(torn)
    return path


@functools.cache
def schema_validator() -> jsonschema.Draft202012Validator:
    """The JSON view's schema, checked against the JSON Schema meta-schema first."""
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def validate_json_view(capture: Capture) -> list[dict[str, Any]]:
    """Every record of the capture's JSON view, each checked against the schema."""
    records = [json.loads(json.dumps(r)) for r in json_records(capture)]
    for record in records:
        schema_validator().validate(record)
    return records
