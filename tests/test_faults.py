"""Relay faults: what the client sees, what is logged and what the capture holds.

Dovecot shows the cases it can; tests/faults.py scripts the ones it cannot (a server that
never greets, cuts a body short or resets the connection).
"""

from __future__ import annotations

import os
import random
import socket
import struct
import time
from pathlib import Path

import pytest
import structlog
import trio
import trio.testing
from clients import RunningRelay, raw_session, running_relay
from dovecot import Dovecot
from faults import (
    Connection,
    cut_retr_body,
    echo_random,
    greet_and_wait,
    never_greet,
    reset_after_greeting,
    scripted_server,
)
from mail_corpus import big_message

from pop3tap.capture import DataRecord, EventRecord, read_capture
from pop3tap.protocol import Flag
from pop3tap.relay import Endpoint, RelayConfig, serve_relay


def wait_complete(relay: RunningRelay, count: int = 1, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        files = relay.capture_files()
        if len(files) >= count and all(read_capture(p).complete for p in files):
            return
        time.sleep(0.02)
    raise AssertionError("captures did not complete")


def test_upstream_that_never_greets(tmp_path: Path) -> None:
    with (
        scripted_server(never_greet) as server,
        structlog.testing.capture_logs() as logs,
        running_relay(server.host, server.port, tmp_path, greeting_timeout=0.3) as relay,
    ):
        reply = raw_session(relay.host, relay.port, b"")
        wait_complete(relay)
        (conn,) = server.wait()
    assert reply.startswith(b"-ERR [SYS/TEMP] pop3tap: upstream ")
    assert b"sent no greeting" in reply and reply.count(b"\r\n") == 1
    assert conn.received == b""  # nothing of pop3tap's own reached the server
    assert any(e["event"] == "upstream.no_greeting" for e in logs)
    names = [r.name for r in relay.only_capture().records if isinstance(r, EventRecord)]
    assert "greeting_timeout" in names


async def _greeting_at_the_deadline(
    clock: trio.testing.MockClock, same_tick: bool
) -> tuple[bytes, bytes]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    upstream_port = listeners[0].socket.getsockname()[1]
    config = RelayConfig(
        upstream=Endpoint("127.0.0.1", upstream_port),
        listen=Endpoint("127.0.0.1", 0),
        captures=None,
        greeting_timeout=30,
    )
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_relay, config)
        client = await trio.open_tcp_stream("127.0.0.1", server.address.port)
        upstream = await listeners[0].accept()
        await trio.testing.wait_all_tasks_blocked()  # the pumps wait for bytes
        os.write(upstream.socket.fileno(), b"+OK ready\r\n")
        if not same_tick:
            await trio.testing.wait_all_tasks_blocked()
        clock.jump(30.5)  # the deadline passes as the greeting arrives
        greeting = await client.receive_some(100)
        await client.send_all(b"NOOP\r\n")
        answer = b""
        with trio.move_on_after(5):
            assert await upstream.receive_some(100) == b"NOOP\r\n"
            await upstream.send_all(b"+OK\r\n")
            answer = await client.receive_some(100)
        nursery.cancel_scope.cancel()
    for listener in listeners:
        await listener.aclose()
    return greeting, answer


@pytest.mark.parametrize("same_tick", [False, True], ids=["before", "same-tick"])
def test_a_greeting_arriving_with_the_deadline_keeps_the_session(same_tick: bool) -> None:
    """No real server can hit the scheduler tick of the deadline on purpose: MockClock."""
    clock = trio.testing.MockClock(autojump_threshold=0.5)
    greeting, answer = trio.run(_greeting_at_the_deadline, clock, same_tick, clock=clock)
    assert greeting == b"+OK ready\r\n"
    assert answer == b"+OK\r\n"


def _greet_late(conn: Connection) -> None:
    time.sleep(0.8)  # well past the relay's greeting deadline
    conn.send(b"+OK late but here\r\n")
    conn.read_all()


def test_a_flood_before_the_greeting_drops_the_greeting_deadline(tmp_path: Path) -> None:
    """Once a command flood makes the observer give up pairing, it cannot see the greeting
    any more: the relay then stops waiting for one and goes on forwarding."""
    flood = b"NOOP\r\n" * 20_000
    with (
        scripted_server(_greet_late) as server,
        running_relay(server.host, server.port, tmp_path, greeting_timeout=0.3) as relay,
        socket.create_connection((relay.host, relay.port), timeout=10) as client,
    ):
        client.sendall(flood)
        reader = client.makefile("rb")
        assert reader.readline() == b"+OK late but here\r\n"
        client.shutdown(socket.SHUT_WR)
        assert reader.read() == b""
        (conn,) = server.wait()
    assert bytes(conn.received) == flood


def test_connect_timeout_to_unroutable_upstream(tmp_path: Path) -> None:
    # A listening socket with a full backlog never completes new connections quickly;
    # a zero connect timeout makes the relay give up at once, deterministically.
    with (
        scripted_server(greet_and_wait) as server,
        running_relay(server.host, server.port, tmp_path, connect_timeout=0.0) as relay,
    ):
        reply = raw_session(relay.host, relay.port, b"")
    assert reply.startswith(b"-ERR [SYS/TEMP] pop3tap: cannot reach upstream")
    assert b"timed out" in reply


def test_server_closing_mid_body_closes_client_at_same_point(tmp_path: Path) -> None:
    prefix = b"Subject: cut\r\n\r\n" + b"line of a body\r\n" * 5000 + b"half a li"
    with (
        scripted_server(cut_retr_body(prefix)) as server,
        structlog.testing.capture_logs() as logs,
        running_relay(server.host, server.port, tmp_path) as relay,
    ):
        reply = raw_session(relay.host, relay.port, b"RETR 1\r\n")
        wait_complete(relay)
    assert reply == b"+OK scripted ready\r\n+OK 1000000 octets\r\n" + prefix
    capture = relay.only_capture()
    assert capture.stream("s2c") == reply
    (retr,) = capture.exchanges()
    assert Flag.TRUNCATED in retr.flags and retr.body_bytes == len(prefix)
    assert any(e["event"] == "pop3.truncated" for e in logs)
    close = next(e for e in logs if e["event"] == "session.close")
    assert close["reason"] == "server closed"


@pytest.mark.realpeer
@pytest.mark.lint_findings("pipelining-without-capability")  # pipelines, never asks CAPA
def test_client_closing_mid_retr_closes_upstream_and_sends_nothing(
    dovecot: Dovecot, tmp_path: Path
) -> None:
    box = dovecot.new_mailbox([big_message(8 * 1024 * 1024)])
    with running_relay(dovecot.host, dovecot.pop3_port, tmp_path) as relay:
        sock = socket.create_connection((relay.host, relay.port), timeout=30)
        sock.sendall(f"USER {box.user}\r\nPASS {box.password}\r\nRETR 1\r\n".encode())
        received = 0
        while received < 200_000:
            received += len(sock.recv(65536))
        sock.close()
        dovecot.wait_disconnected(box.user)
        wait_complete(relay)
    capture = relay.only_capture()
    assert capture.stream("c2s") == f"USER {box.user}\r\nPASS ********\r\nRETR 1\r\n".encode()
    retr = next(e for e in capture.exchanges() if e.verb == "RETR")
    assert Flag.TRUNCATED in retr.flags
    assert dovecot.message_count(box.user) == 1
    # Dovecot logged the session as closed by the peer, not as a logout.
    assert "Logged out" not in dovecot.wait_disconnected(box.user)


def test_client_reset_is_passed_on_as_reset(tmp_path: Path) -> None:
    with (
        scripted_server(greet_and_wait) as server,
        structlog.testing.capture_logs() as logs,
        running_relay(server.host, server.port, tmp_path) as relay,
    ):
        sock = socket.create_connection((relay.host, relay.port), timeout=30)
        assert sock.recv(100).startswith(b"+OK")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        (conn,) = server.wait()
        wait_complete(relay)
    assert isinstance(conn.error, ConnectionResetError)
    assert any(e["event"] == "session.reset" and e["side"] == "client" for e in logs)
    kinds = [r.name for r in relay.only_capture().records if isinstance(r, EventRecord)]
    assert "reset" in kinds


def test_server_reset_is_passed_on_as_reset(tmp_path: Path) -> None:
    with (
        scripted_server(reset_after_greeting) as server,
        running_relay(server.host, server.port, tmp_path) as relay,
    ):
        sock = socket.create_connection((relay.host, relay.port), timeout=30)
        assert sock.recv(100).startswith(b"+OK")
        sock.sendall(b"NOOP\r\n")
        with pytest.raises(ConnectionResetError):
            while sock.recv(100):
                pass
        sock.close()
        wait_complete(relay)
    assert relay.only_capture().records[-1].reason == "server reset"  # type: ignore[union-attr]


def test_random_binary_both_ways_is_relayed_exactly(tmp_path: Path) -> None:
    rng = random.Random(1939)
    server_bytes = rng.randbytes(3 * 1024 * 1024)
    client_bytes = rng.randbytes(2 * 1024 * 1024)
    with (
        scripted_server(echo_random(server_bytes)) as server,
        running_relay(server.host, server.port, tmp_path) as relay,
    ):
        reply = raw_session(relay.host, relay.port, client_bytes)
        (conn,) = server.wait()
        wait_complete(relay)
    assert reply == server_bytes
    assert bytes(conn.received) == client_bytes
    capture = relay.only_capture()
    assert capture.stream("s2c") == server_bytes
    # Random client bytes may look like PASS/AUTH lines; masked or not, nothing was lost
    # on the wire, and with --keep-secrets the capture holds them exactly.


def test_random_binary_kept_exactly_with_keep_secrets(tmp_path: Path) -> None:
    rng = random.Random(2449)
    client_bytes = b"PASS secret\r\nAUTH PLAIN\r\n" + rng.randbytes(100_000)
    with (
        scripted_server(echo_random(b"+OK hi\r\n")) as server,
        running_relay(server.host, server.port, tmp_path, keep_secrets=True) as relay,
    ):
        raw_session(relay.host, relay.port, client_bytes)
        server.wait()
        wait_complete(relay)
    capture = relay.only_capture()
    assert capture.stream("c2s") == client_bytes
    assert capture.header.secrets == "kept"


def test_ten_mib_lines_without_end_are_relayed_and_flagged(tmp_path: Path) -> None:
    long_server_line = b"+OK " + b"s" * (10 * 1024 * 1024)
    long_client_line = b"X" * (10 * 1024 * 1024)

    def behaviour(conn: Connection) -> None:
        conn.send(b"+OK ready\r\n")
        while len(conn.received) < len(long_client_line) + 2:
            if not conn.readline():
                break
        conn.send(long_server_line + b"\r\n")

    with (
        scripted_server(behaviour) as server,
        running_relay(server.host, server.port, tmp_path) as relay,
    ):
        reply = raw_session(relay.host, relay.port, long_client_line + b"\r\n")
        (conn,) = server.wait()
        wait_complete(relay)
    assert reply == b"+OK ready\r\n" + long_server_line + b"\r\n"
    assert bytes(conn.received) == long_client_line + b"\r\n"
    (exchange,) = relay.only_capture().exchanges()
    assert Flag.OVERLONG in exchange.flags
    assert len(exchange.verb) + len(exchange.first_line) < 20_000


def test_capture_disk_full_mid_session_never_stops_the_relay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk is simulated (no real peer can fill a disk on demand)."""
    real_writev = os.writev
    calls = {"n": 0}

    def failing_writev(fd: int, buffers: list[bytes]) -> int:
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError(28, "No space left on device")
        return real_writev(fd, buffers)

    monkeypatch.setattr(os, "writev", failing_writev)
    rng = random.Random(5)
    server_bytes = b"+OK hi\r\n" + rng.randbytes(500_000)
    with (
        scripted_server(echo_random(server_bytes)) as server,
        structlog.testing.capture_logs() as logs,
        running_relay(server.host, server.port, tmp_path) as relay,
    ):
        reply = raw_session(relay.host, relay.port, b"NOOP\r\n" * 1000)
        server.wait()
        deadline = time.monotonic() + 10
        while not any(e["event"] == "session.close" for e in logs):
            assert time.monotonic() < deadline
            time.sleep(0.02)
    assert reply == server_bytes
    incomplete = [e for e in logs if e["event"] == "capture.incomplete"]
    assert len(incomplete) == 1 and "No space left" in incomplete[0]["error"]
    monkeypatch.setattr(os, "writev", real_writev)
    capture = relay.only_capture()
    assert not capture.complete
    assert sum(len(r.data) for r in capture.records if isinstance(r, DataRecord)) < len(reply)
