"""Captures written directly with CaptureWriter, for views that need sizes or contents no
real server gives on demand (10,000 pipelined exchanges, hostile bytes, one known slow reply).

Only the view code reads these; the relay and real servers are tested with real peers.
"""

from __future__ import annotations

from pathlib import Path

from pop3tap.capture import CaptureWriter

MESSAGE = (
    b"From: Sender <sender@example.test>\r\n"
    b"Subject: message %d\r\n"
    b"\r\n"
    b"first line\r\n"
    b"..a line that starts with a dot\r\n"
    b"last line\r\n"
)


def pipelined_capture(
    directory: Path, exchanges: int, *, slow_seq: int | None = None, session: str = "synthetic"
) -> Path:
    """A session of ``exchanges`` exchanges (USER, PASS, then RETR/STAT/LIST/NOOP/UIDL in
    pipelined batches of 50, then QUIT). Every answer takes 0.1 ms; ``slow_seq`` takes 250 ms.
    """
    directory.mkdir(parents=True, exist_ok=True)
    writer = CaptureWriter.create(
        directory,
        session_id=session,
        header_fields={"client": "127.0.0.1:40000", "upstream": "127.0.0.1:110", "listen": ""},
    )
    t = 0.001
    writer.write_data("s2c", t, b"+OK synthetic POP3 server ready\r\n")
    commands: list[tuple[bytes, bytes]] = [
        (b"USER alice\r\n", b"+OK\r\n"),
        (b"PASS hunter2-password\r\n", b"+OK logged in\r\n"),
    ]
    for i in range(exchanges - 3):
        n = i % 500 + 1
        kind = i % 5
        if kind == 0:
            body = MESSAGE % n
            commands.append(
                (b"RETR %d\r\n" % n, b"+OK %d octets\r\n" % len(body) + body + b".\r\n")
            )
        elif kind == 1:
            commands.append((b"STAT\r\n", b"+OK 500 60000\r\n"))
        elif kind == 2:
            commands.append((b"LIST %d\r\n" % n, b"+OK %d 120\r\n" % n))
        elif kind == 3:
            commands.append((b"NOOP\r\n", b"+OK\r\n"))
        else:
            commands.append((b"UIDL %d\r\n" % n, b"+OK %d uid-%05d\r\n" % (n, n)))
    commands.append((b"QUIT\r\n", b"+OK bye\r\n"))
    for start in range(0, len(commands), 50):
        batch = commands[start : start + 50]
        t += 0.001
        writer.write_data("c2s", t, b"".join(c for c, _ in batch))
        for offset, (_command, response) in enumerate(batch, start=start + 1):
            t += 0.25 if offset == slow_seq else 0.0001
            writer.write_data("s2c", t, response)
    writer.write_event("eof", t, dir="s2c")
    writer.write_event("eof", t, dir="c2s")
    writer.close(t, "server closed")
    return writer.path


def hostile_capture(directory: Path, payloads: list[str]) -> Path:
    """A session whose greeting, commands, response lines, bodies and unsolicited lines carry
    each payload, as markup and script would try to get into a page."""
    directory.mkdir(parents=True, exist_ok=True)
    writer = CaptureWriter.create(
        directory,
        session_id="hostile",
        header_fields={
            "client": payloads[0],
            "upstream": payloads[1 % len(payloads)],
            "listen": "",
        },
    )
    t = 0.001
    writer.write_data("s2c", t, b"+OK " + payloads[0].encode() + b"\r\n")
    for payload in payloads:
        data = payload.encode()
        t += 0.001
        writer.write_data("c2s", t, b"USER " + data + b"\r\nRETR " + data + b"\r\n")
        body = (
            data + b": header named by the payload\r\n"
            b"Subject: " + data + b"\r\n\r\n" + data + b"\r\n." + data + b"\r\n"
        )
        t += 0.001
        writer.write_data(
            "s2c", t, b"-ERR " + data + b"\r\n+OK " + data + b"\r\n" + body + b".\r\n"
        )
        t += 0.001
        writer.write_data("s2c", t, b"-ERR unsolicited " + data + b"\r\n")
        writer.write_event(data.decode(), t, note=payload)
    writer.close(t, payloads[-1])
    return writer.path
