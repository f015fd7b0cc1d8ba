"""STLS answered by a hostile or broken server, through the real relay (RFC 2595 §4).

Only ``+OK`` starts TLS. Any other line ends the wait and the client bytes held behind the
STLS go on, in order; a server that never answers makes the relay drop the held bytes and
end the session after ``stls_timeout``.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import structlog
from clients import RunningRelay, running_relay
from faults import Behaviour, Connection, scripted_server

from pop3tap.capture import EventRecord, read_capture
from pop3tap.protocol import Status
from pop3tap.render import render_lines
from pop3tap.tls import TlsConfig


def _answer_stls_with(answer: bytes) -> Behaviour:
    def behaviour(conn: Connection) -> None:
        conn.send(b"+OK scripted ready\r\n")
        assert conn.readline() == b"STLS\r\n"
        conn.send(answer)
        assert conn.readline() == b"NOOP\r\n"
        conn.send(b"+OK noop\r\n")
        conn.read_all()

    return behaviour


def _never_answer_stls(conn: Connection) -> None:
    conn.send(b"+OK scripted ready\r\n")
    conn.read_all()


def _wait_for_complete_capture(relay: RunningRelay) -> None:
    deadline = time.monotonic() + 10
    while not (relay.capture_files() and read_capture(relay.capture_files()[0]).complete):
        assert time.monotonic() < deadline, "capture did not complete"
        time.sleep(0.02)


def _read_lines(reader: object, count: int) -> list[bytes]:
    return [reader.readline() for _ in range(count)]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        (b"+ok go ahead\r\n", None),
        (b"+ \r\n", Status.CONTINUE),
        (b"I do not speak TLS\r\n", None),
        (b"-ERR not now\r\n", Status.ERR),
    ],
    ids=["lowercase-ok", "continuation", "free-text", "err"],
)
def test_any_answer_but_ok_releases_the_held_bytes_in_order(
    tmp_path: Path, answer: bytes, status: Status | None
) -> None:
    with (
        scripted_server(_answer_stls_with(answer)) as server,
        running_relay(server.host, server.port, tmp_path) as relay,
        socket.create_connection((relay.host, relay.port), timeout=10) as client,
    ):
        reader = client.makefile("rb")
        assert reader.readline() == b"+OK scripted ready\r\n"
        client.sendall(b"STLS\r\nNOOP\r\n")  # NOOP is held until STLS is answered
        assert _read_lines(reader, 2) == [answer, b"+OK noop\r\n"]
        client.shutdown(socket.SHUT_WR)
        assert reader.read() == b""
        (conn,) = server.wait()
        _wait_for_complete_capture(relay)
    assert bytes(conn.received) == b"STLS\r\nNOOP\r\n"
    stls, noop = relay.only_capture().exchanges()
    assert (stls.verb, stls.status) == ("STLS", status)
    assert (noop.verb, noop.first_line) == ("NOOP", "+OK noop")
    shown = "\n".join(render_lines(relay.only_capture()))
    assert answer.decode().strip() in shown and "(no response)" not in shown


def test_a_server_that_never_answers_stls_ends_the_session_and_drops_held_bytes(
    tmp_path: Path,
) -> None:
    with (
        scripted_server(_never_answer_stls) as server,
        structlog.testing.capture_logs() as logs,
        running_relay(server.host, server.port, tmp_path, stls_timeout=0.3) as relay,
        socket.create_connection((relay.host, relay.port), timeout=10) as client,
    ):
        reader = client.makefile("rb")
        assert reader.readline() == b"+OK scripted ready\r\n"
        client.sendall(b"STLS\r\nUSER held\r\n")
        assert reader.read() == b""  # the relay ended the session
        (conn,) = server.wait()
    assert bytes(conn.received) == b"STLS\r\n"
    (timeout,) = [e for e in logs if e["event"] == "tls.stls_timeout"]
    assert timeout["dropped_client_bytes"] == len(b"USER held\r\n")
    records = [r for r in relay.only_capture().records if isinstance(r, EventRecord)]
    assert any(r.name == "stls_timeout" for r in records)


def _accept_stls_then_read(conn: Connection) -> None:
    conn.send(b"+OK scripted ready\r\n")
    assert conn.readline() == b"STLS\r\n"
    conn.send(b"+OK begin TLS\r\n")
    conn.read_all()


@pytest.mark.parametrize(
    "writes",
    [[b"STLS\r\n", b"PASS sekrit-after-ok\r\n"], [b"STLS\r\nPASS sekrit-after-ok\r\n"]],
    ids=["after-the-ok", "pipelined-with-stls"],
)
def test_plaintext_after_a_passed_through_stls_is_forwarded_but_recorded_masked(
    tmp_path: Path, writes: list[bytes]
) -> None:
    with (
        scripted_server(_accept_stls_then_read) as server,
        structlog.testing.capture_logs() as logs,
        running_relay(
            server.host, server.port, tmp_path, tls=TlsConfig(intercept_stls=False)
        ) as relay,
        socket.create_connection((relay.host, relay.port), timeout=10) as client,
    ):
        reader = client.makefile("rb")
        assert reader.readline() == b"+OK scripted ready\r\n"
        client.sendall(writes[0])
        assert reader.readline() == b"+OK begin TLS\r\n"
        for data in writes[1:]:
            client.sendall(data)
        client.shutdown(socket.SHUT_WR)
        assert reader.read() == b""
        (conn,) = server.wait()
        _wait_for_complete_capture(relay)
    # Transparent: the server got every byte the client sent.
    assert bytes(conn.received) == b"".join(writes)
    (path,) = relay.capture_files()
    assert b"sekrit" not in path.read_bytes()
    assert b"sekrit" not in repr(logs).encode()
    capture = relay.only_capture()
    assert capture.stream("c2s").startswith(b"STLS\r\n")
    injected = [e for e in logs if e["event"] == "tls.injection"]
    names = [r.name for r in capture.records if isinstance(r, EventRecord)]
    # Plaintext where the server expects TLS is flagged, once.
    (flagged,) = injected
    assert flagged["client_bytes"] == len(b"PASS sekrit-after-ok\r\n")
    assert names.count("stls_injection") == 1


@pytest.mark.parametrize(
    ("before_ok", "after_ok"),
    [
        (b"STLS\r\nP", b"ASS sekrit-cut\r\n"),
        (b"STLS\r\nPASS", b" sekrit-cut\r\n"),
        (b"STLS\r\nPASS sek", b"rit-cut\r\n"),
        (b"STLS\r\nAPOP bob ", b"sekrit-cut0123456789abcdef012345\r\n"),
        (b"STLS\r\nAUTH PLA", b"IN sekrit-cut\r\n"),
        (b"STLS\r\nAUTH PLAIN\r\n", b"sekrit-cut\r\n"),
    ],
    ids=["P|ASS", "PASS|arg", "PASS-arg|rest", "APOP|digest", "AUTH|PLAIN", "AUTH|sasl"],
)
def test_a_secret_line_cut_by_a_passed_through_stls_ok_stays_masked(
    tmp_path: Path, before_ok: bytes, after_ok: bytes
) -> None:
    """The line the client had begun when the ``+OK`` to STLS arrived keeps its masking
    state: the part sent after the ``+OK`` is still that line's secret."""
    with (
        scripted_server(_accept_stls_then_read) as server,
        structlog.testing.capture_logs() as logs,
        running_relay(
            server.host, server.port, tmp_path, tls=TlsConfig(intercept_stls=False)
        ) as relay,
        socket.create_connection((relay.host, relay.port), timeout=10) as client,
    ):
        reader = client.makefile("rb")
        assert reader.readline() == b"+OK scripted ready\r\n"
        client.sendall(before_ok)
        assert reader.readline() == b"+OK begin TLS\r\n"
        client.sendall(after_ok)
        client.shutdown(socket.SHUT_WR)
        assert reader.read() == b""
        (conn,) = server.wait()
        _wait_for_complete_capture(relay)
    assert bytes(conn.received) == before_ok + after_ok
    (path,) = relay.capture_files()
    capture = relay.only_capture()
    shown = "\n".join(render_lines(capture)).encode()
    for where, text in (
        ("capture", path.read_bytes()),
        ("log", repr(logs).encode()),
        ("show", shown),
    ):
        assert b"rit-cut" not in text, where
    assert capture.stream("c2s").startswith(b"STLS\r\n")
