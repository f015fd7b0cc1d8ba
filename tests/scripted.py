"""Scripted sessions: a hostile or quirky server script, the lockstep client that talks to
it, and a sans-IO model of the order in which the relay masks, parses and records.

The same :class:`Case` runs through the real relay (``scripted_server`` plus
:func:`converse`) and through :func:`relay_model` at any chunking, so a test can check
that both give the same capture and the same views.
"""

from __future__ import annotations

import random
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from faults import Connection

from pop3tap.capture import Capture, CaptureHeader, DataRecord, EventRecord, Record
from pop3tap.protocol import Event, SessionObserver

GREETING = b"+OK scripted ready <1.1@scripted>\r\n"

#: One server step: ("read", number of lines) or ("send", bytes).
ServerStep = tuple[str, object]


@dataclass(frozen=True)
class Case:
    """A scripted server and the client that talks to it, in lockstep."""

    name: str
    #: ("read", n lines) or ("send", bytes), in order; the server closes after the last.
    server: list[ServerStep]
    #: (bytes to send, bytes to wait for in the answer) pairs.
    client: list[tuple[bytes, bytes]]
    #: Secrets that must never be seen.
    secrets: tuple[bytes, ...] = ()
    #: The client stream the capture must hold (masked), when the case pins it.
    expect_c2s: bytes | None = None
    #: (verb, args, status, sasl steps) of every exchange, when the case pins them.
    expect_exchanges: list[tuple[str, str, str | None, tuple[tuple[str, str], ...]]] | None = None


def run_script(conn: Connection, steps: list[ServerStep]) -> None:
    """Play a server script on one connection of a scripted server."""
    conn.send(GREETING)
    for kind, value in steps:
        if kind == "read":
            for _ in range(int(value)):  # type: ignore[call-overload]
                conn.readline()
        else:
            assert isinstance(value, bytes)
            conn.send(value)


def sequential_behaviours(cases: list[Case]) -> Callable[[Connection], None]:
    """Connection n of the scripted server plays case n."""
    lock = threading.Lock()
    counter = iter(range(len(cases)))

    def behaviour(conn: Connection) -> None:
        with lock:
            index = next(counter)
        run_script(conn, cases[index].server)

    return behaviour


def converse(host: str, port: int, steps: list[tuple[bytes, bytes]]) -> bytes:
    """Lockstep client: after the greeting, send each chunk and wait for its marker."""
    received = bytearray()
    with socket.create_connection((host, port), timeout=20) as sock:

        def wait_for(marker: bytes, since: int) -> None:
            while marker not in received[since:]:
                data = sock.recv(65536)
                if not data:
                    raise AssertionError(f"closed before {marker!r}: {bytes(received)!r}")
                received.extend(data)

        wait_for(b"\r\n", 0)
        for data, marker in steps:
            since = len(received)
            sock.sendall(data)
            wait_for(marker, since)
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(65536):
            pass
    return bytes(received)


def lockstep_turns(case: Case) -> list[tuple[str, bytes]]:
    """The order in which the case's bytes cross a relay: each client chunk, then what
    the server script sends once it has read the lines it waits for."""
    turns: list[tuple[str, bytes]] = [("s", GREETING)]
    script = list(case.server)
    lines_sent = 0
    lines_read = 0
    for data, _marker in case.client:
        turns.append(("c", data))
        lines_sent += data.count(b"\n")
        while script:
            kind, value = script[0]
            if kind == "read":
                if lines_sent - lines_read < int(value):  # type: ignore[call-overload]
                    break
                lines_read += int(value)  # type: ignore[call-overload]
            else:
                assert isinstance(value, bytes)
                turns.append(("s", value))
            script.pop(0)
    return turns


# ---------------------------------------------------------------------------- relay model


@dataclass
class Relayed:
    """What one session through the relay leaves: capture records and live events."""

    records: list[Record] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def capture(self) -> Capture:
        header = CaptureHeader(
            format=1,
            pop3tap="test",
            session="model",
            started="2026-01-01T00:00:00Z",
            started_unix=0.0,
            client="c",
            listen="l",
            upstream="u",
            secrets="masked",
            options={},
        )
        return Capture(path=Path("model.p3cap"), header=header, records=self.records)

    def c2s(self) -> bytes:
        data = [r.data for r in self.records if isinstance(r, DataRecord) and r.dir == "c2s"]
        return b"".join(data)


def relay_model(steps: list[tuple[str, bytes]]) -> Relayed:
    """Drive an observer exactly as the relay does: client bytes are masked, then parsed,
    then the lines they resolve are written; while client lines are held, server bytes
    are parsed before they are written, after the client lines they resolve."""
    observer = SessionObserver()
    out = Relayed()
    t = 0.0

    def released() -> None:
        for at, data in observer.take_masked_client():
            out.records.append(DataRecord(at, "c2s", data))

    for direction, data in steps:
        t += 0.001
        if direction == "c":
            now = observer.record_client(data, t)
            if now:
                out.records.append(DataRecord(t, "c2s", now))
            released()
            out.events += observer.parse_recorded_client()
            released()
        elif observer.client_held or not observer.greeted:
            out.events += observer.feed_server(data, t)
            released()
            out.records.append(DataRecord(t, "s2c", data))
        else:
            out.records.append(DataRecord(t, "s2c", data))
            out.events += observer.feed_server(data, t)
            released()
    t += 0.001
    out.events += observer.end_client(t)
    released()
    out.events += observer.end_server(t)
    released()
    observer.abandon_client_lines()
    released()
    out.records.append(EventRecord(t, "eof", {"dir": "c2s"}))
    out.records.append(EventRecord(t, "eof", {"dir": "s2c"}))
    return out


SPLITS = ["whole", "bytes", "random"]


def split(data: bytes, rng: random.Random, how: str) -> list[bytes]:
    """One chunk, one chunk per byte, or chunks of 1-7 bytes."""
    if how == "whole":
        return [data]
    if how == "bytes":
        return [data[i : i + 1] for i in range(len(data))]
    pieces = []
    pos = 0
    while pos < len(data):
        size = rng.randint(1, 7)
        pieces.append(data[pos : pos + size])
        pos += size
    return pieces


def relay_turns(turns: list[tuple[str, bytes]], how: str, seed: int = 0) -> Relayed:
    """:func:`relay_model` over ``turns`` with each turn split ``how``."""
    rng = random.Random(seed)
    return relay_model([(d, piece) for d, data in turns for piece in split(data, rng, how)])
