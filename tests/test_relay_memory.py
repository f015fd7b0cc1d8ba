"""A finished relay session is freed at once, by reference counting.

If a session and the parts it owns point at each other (a reference cycle), nothing of it
is freed when it ends: its sockets, capture writer (with its pack buffer), observer and
queues wait for Python's cycle collector, together with every other finished session.
Under many sessions that garbage makes the relay's memory grow between collections and
makes every collection slower. The relay here runs in this test's own trio loop with the
cycle collector off; once a session has ended, nothing of it may be left.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from faults import Connection, scripted_server

from pop3tap.capture import iter_capture_paths, read_capture
from pop3tap.relay import Endpoint, RelayConfig, RelayServer, _session

GREETING = b"+OK upstream ready\r\n"
LISTING = b"+OK 2 messages\r\n1 120\r\n2 300\r\n.\r\n"
ANSWERS = {
    b"USER alice\r\n": b"+OK\r\n",
    b"PASS secret\r\n": b"+OK logged in\r\n",
    b"LIST\r\n": LISTING,
    b"QUIT\r\n": b"+OK bye\r\n",
}


def _upstream(conn: Connection) -> None:
    conn.send(GREETING)
    for command, answer in ANSWERS.items():
        assert conn.readline() == command
        conn.send(answer)
    conn.read_all()


async def _client(port: int) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        received = b""

        async def receive_until(total: bytes) -> None:
            nonlocal received
            while len(received) < len(total):
                chunk = await stream.receive_some(4096)
                assert chunk, "the relay closed the session early"
                received += chunk
            assert received == total

        expected = GREETING
        await receive_until(expected)
        for command, answer in ANSWERS.items():
            await stream.send_all(command)
            expected += answer
            await receive_until(expected)


@pytest.fixture
def no_cycle_collector() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.usefixtures("no_cycle_collector")
def test_a_finished_session_leaves_nothing_for_the_cycle_collector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sessions: list[weakref.ref[_session.RelaySession]] = []
    recorders: list[weakref.ref[object]] = []
    original_init = _session.RelaySession.__init__

    def tracked_init(self: _session.RelaySession, *args: object, **kwargs: object) -> None:
        original_init(self, *args, **kwargs)  # type: ignore[arg-type]
        sessions.append(weakref.ref(self))
        recorders.append(weakref.ref(self.recorder))

    monkeypatch.setattr(_session.RelaySession, "__init__", tracked_init)
    with scripted_server(_upstream) as upstream:
        config = RelayConfig(
            upstream=Endpoint(upstream.host, upstream.port),
            listen=Endpoint("127.0.0.1", 0),
            captures=tmp_path,
        )

        async def main() -> None:
            server = RelayServer(config)
            with trio.fail_after(30):
                async with trio.open_nursery() as nursery:
                    await nursery.start(server.run)
                    await _client(server.address.port)
                    server.shutdown()  # the run ends once the session has ended by itself

        trio.run(main)
        upstream.wait()
    # The session really ran through the recorder (so the check below covers its parts).
    (path,) = iter_capture_paths([tmp_path])
    capture = read_capture(path)
    assert [e.verb for e in capture.exchanges()] == ["USER", "PASS", "LIST", "QUIT"]
    assert len(sessions) == 1
    assert sessions[0]() is None, "the session is only freed by the cycle collector"
    assert recorders[0]() is None
