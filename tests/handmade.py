"""Hand-made captures: a scripted POP3 conversation written with the project's CaptureWriter.

A script is a list of ``("c", bytes)`` (client) and ``("s", bytes)`` (server) steps, plus
optional ``("event", name, fields)`` transport events. Steps are 1 ms apart unless a data
step gives its own delay as a third item. Each step becomes one data record,
so a test decides exactly how the bytes were chunked on the wire.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pop3tap.capture import CaptureWriter

Step = tuple[Any, ...]
_ids = itertools.count(1)


def message(headers: Sequence[str], body: Sequence[str]) -> bytes:
    """A CRLF message (not dot-stuffed)."""
    return ("\r\n".join([*headers, "", *body]) + "\r\n").encode()


def stuff(raw: bytes) -> bytes:
    """Dot-stuff a CRLF message for the wire and add the terminator (RFC 1939 §3)."""
    lines = raw.split(b"\r\n")[:-1]
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)


def retr_response(raw: bytes, announced: int | None = None) -> bytes:
    """``+OK N octets``, the stuffed message and the terminator."""
    size = len(raw) if announced is None else announced
    return f"+OK {size} octets\r\n".encode() + stuff(raw) + b".\r\n"


def write_capture(
    directory: Path,
    steps: Sequence[Step],
    *,
    upstream: str = "127.0.0.1:110",
    options: dict[str, Any] | None = None,
    close: bool = True,
    session: str | None = None,
) -> Path:
    """Write ``steps`` as a capture in ``directory`` and return its path."""
    writer = CaptureWriter.create(
        directory,
        session_id=session or f"scripted{next(_ids):04d}",
        header_fields={
            "pop3tap": "test",
            "client": "127.0.0.1:40000",
            "listen": "127.0.0.1:1110",
            "upstream": upstream,
            "secrets": "masked",
            "options": options or {},
        },
    )
    t = 0.0
    for step in steps:
        t += 0.001 if step[0] == "event" or len(step) < 3 else step[2]
        if step[0] == "c":
            writer.write_data("c2s", t, step[1])
        elif step[0] == "s":
            writer.write_data("s2c", t, step[1])
        else:
            writer.write_event(step[1], t, **step[2])
    path = writer.path
    if close:
        writer.write_event("eof", t, dir="c2s")
        writer.write_event("eof", t, dir="s2c")
        writer.close(t, "quit")
    else:
        writer.release()
    return path


MSG1 = message(["From: a@example.org", "Subject: one"], ["hello", ".dotted line", "bye"])
MSG2 = message(["From: b@example.org", "Subject: two"], ["second message"])


def clean_session(*, retr: bytes | None = None) -> list[Step]:
    """A conforming session: CAPA, USER/PASS, STAT, LIST, UIDL, RETR 1, DELE 1, QUIT."""
    total = len(MSG1) + len(MSG2)
    return [
        ("s", b"+OK POP3 ready <1896.697170952@dbc.mtview.ca.us>\r\n"),
        ("c", b"CAPA\r\n"),
        ("s", b"+OK\r\nUSER\r\nUIDL\r\nTOP\r\nRESP-CODES\r\nPIPELINING\r\nSASL PLAIN\r\n.\r\n"),
        ("c", b"USER alice\r\n"),
        ("s", b"+OK\r\n"),
        ("c", b"PASS ********\r\n"),
        ("s", b"+OK Logged in.\r\n"),
        ("c", b"STAT\r\n"),
        ("s", f"+OK 2 {total}\r\n".encode()),
        ("c", b"LIST\r\n"),
        ("s", f"+OK 2 messages\r\n1 {len(MSG1)}\r\n2 {len(MSG2)}\r\n.\r\n".encode()),
        ("c", b"UIDL\r\n"),
        ("s", b"+OK\r\n1 uid-one\r\n2 uid-two\r\n.\r\n"),
        ("c", b"RETR 1\r\n"),
        ("s", retr if retr is not None else retr_response(MSG1)),
        ("c", b"DELE 1\r\n"),
        ("s", b"+OK Marked to be deleted.\r\n"),
        ("c", b"QUIT\r\n"),
        ("s", b"+OK Logging out, messages deleted.\r\n"),
    ]
