"""The server base: the one ``-ERR`` line pop3tap writes in a peer's place, closing every
connection and listener, and riding out accept failures (EMFILE and the like)."""

from __future__ import annotations

import errno
import itertools
import os
import socket
from collections.abc import MutableMapping
from typing import Any

import pytest
import structlog
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from pop3tap.relay._session import ERR_PREFIX as RELAY_PREFIX
from pop3tap.replay._connection import ERR_PREFIX as REPLAY_PREFIX
from pop3tap.server import ConnectionServer, Endpoint, error_line

PREFIXES = [RELAY_PREFIX, REPLAY_PREFIX]


def test_the_prefixes_are_the_ones_clients_see() -> None:
    assert PREFIXES == ["[SYS/TEMP] pop3tap", "pop3tap replay"]


@pytest.mark.parametrize("prefix", PREFIXES)
def test_undecodable_bytes_become_question_marks_on_one_line(prefix: str) -> None:
    # A host name or path read with surrogateescape (PEP 383) holds lone surrogates.
    text = b"no route to h\xf6st\r\nUSER x".decode("utf-8", "surrogateescape")
    assert error_line(prefix, text) == f"-ERR {prefix}: no route to h?st  USER x\r\n".encode()


@pytest.mark.parametrize("prefix", PREFIXES)
def test_encodable_text_is_sent_as_utf8_unchanged(prefix: str) -> None:
    line = error_line(prefix, "Verbindung zu mäil.example abgelehnt")
    assert line == f"-ERR {prefix}: Verbindung zu mäil.example abgelehnt\r\n".encode()


@pytest.mark.parametrize("prefix", PREFIXES)
@given(text=st.text())
def test_any_text_gives_exactly_one_readable_line(prefix: str, text: str) -> None:
    line = error_line(prefix, text)
    assert line.startswith(f"-ERR {prefix}: ".encode())
    assert line.endswith(b"\r\n")
    assert b"\r" not in line[:-2] and b"\n" not in line[:-2]
    decoded = line.decode("utf-8")  # never an escape a client would show as \udcxx
    assert "\\udc" not in decoded or "\\udc" in text


class _LeavesItOpen(ConnectionServer):
    """Greets, then returns without closing: the base must close the connection."""

    served = 0

    async def serve_connection(self, stream: trio.SocketStream, session_id: str) -> None:
        self.served += 1
        await stream.send_all(b"+OK hello\r\n")
        if self.served == 2:
            raise RuntimeError("a handler that fails still gets its connection closed")


async def test_every_accepted_connection_is_closed_after_its_handler() -> None:
    server = _LeavesItOpen(
        listen=Endpoint("127.0.0.1", 0), grace=1.0, log=structlog.get_logger("test")
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        for _ in range(3):
            client = await trio.open_tcp_stream("127.0.0.1", server.address.port)
            got = b""
            with trio.fail_after(10):
                while chunk := await client.receive_some(100):
                    got += chunk
            assert got == b"+OK hello\r\n"  # then the end of the stream: closed by the base
            await client.aclose()
        assert server.active_sessions == 0 and server.total_sessions == 3
        server.shutdown()


class _Holds(ConnectionServer):
    """Holds every connection open until cancelled."""

    async def serve_connection(self, stream: trio.SocketStream, session_id: str) -> None:
        await trio.sleep_forever()


def _fresh_server() -> _Holds:
    return _Holds(listen=Endpoint("localhost", 0), grace=5.0, log=structlog.get_logger("test"))


async def test_listeners_are_closed_when_the_server_is_cancelled_from_outside() -> None:
    # What a pytest fixture or an embedding program does: cancel the nursery running it.
    server = _fresh_server()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(server.run)
        client = await trio.open_tcp_stream("127.0.0.1", server.address.port)
        await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    await client.aclose()
    assert listeners and [listener.socket.fileno() for listener in listeners] == [
        -1 for _ in listeners
    ]


async def test_every_listener_is_closed_by_an_abort() -> None:
    # "localhost" gives one listener per address family where both exist; an abort must
    # not stop closing them after the first (a checkpoint there sees the cancelled drain).
    server = _fresh_server()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(server.run)
        client = await trio.open_tcp_stream("127.0.0.1", server.address.port)
        await trio.sleep(0.05)
        server.abort()
    await client.aclose()
    assert [listener.socket.fileno() for listener in listeners] == [-1 for _ in listeners]


_ENDINGS = ["shutdown", "abort", "cancel"]


@settings(max_examples=15, deadline=None)
@given(ending=st.sampled_from(_ENDINGS), count=st.integers(1, 3), clients=st.integers(0, 2))
def test_property_however_serving_ends_no_listening_socket_stays_open(
    ending: str, count: int, clients: int
) -> None:
    sockets = [socket.create_server(("127.0.0.1", 0)) for _ in range(count)]

    async def main() -> list[trio.SocketListener]:
        listeners: list[trio.SocketListener]
        server = _Holds(
            listen=Endpoint("127.0.0.1", 0),
            grace=0.01,
            log=structlog.get_logger("test"),
            sockets=sockets,
        )
        opened: list[trio.abc.Stream] = []
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(server.run)
            for n in range(clients):
                port = listeners[n % count].socket.getsockname()[1]
                opened.append(await trio.open_tcp_stream("127.0.0.1", port))
            await trio.sleep(0.01)
            {
                "shutdown": server.shutdown,
                "abort": server.abort,
                "cancel": nursery.cancel_scope.cancel,
            }[ending]()
        for stream in opened:
            await stream.aclose()
        return listeners

    listeners = trio.run(main)
    assert len(listeners) == count
    assert all(listener.socket.fileno() == -1 for listener in listeners)


class _ServesNothing(ConnectionServer):
    async def serve_connection(self, stream: trio.SocketStream, session_id: str) -> None:
        return None


class _OutOfDescriptors:
    """A listener whose accept fails with EMFILE ``failures`` times, then gives one client."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.accepted = 0
        self.served = trio.Event()

    async def accept(self) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        if self.failures:
            self.failures -= 1
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        if self.accepted:
            await trio.sleep_forever()
        self.accepted += 1
        self.served.set()
        return trio.testing.memory_stream_pair()[0]


async def _accept_through(failures: int) -> list[MutableMapping[str, Any]]:
    server = _ServesNothing(
        listen=Endpoint("127.0.0.1", 0), grace=1.0, log=structlog.get_logger("test")
    )
    listener = _OutOfDescriptors(failures)
    with structlog.testing.capture_logs() as logs:
        async with trio.open_nursery() as handlers:
            handlers.start_soon(server._accept, listener, handlers)  # type: ignore[arg-type]
            await listener.served.wait()
            await trio.sleep(1)
            handlers.cancel_scope.cancel()
    assert listener.accepted == 1 and server.total_sessions == 1  # it recovered
    return logs


async def test_running_out_of_descriptors_for_ten_minutes_logs_a_bounded_number_of_lines(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A flood of clients holding every descriptor: accept fails every 0.1 s for ten minutes.
    logs = await _accept_through(6_000)
    failed = [line for line in logs if line["event"] == "server.accept_failed"]
    assert 1 <= len(failed) <= 11  # at most one a minute, not ten a second
    assert failed[0]["error"] == os.strerror(errno.EMFILE)
    recovered = [line for line in logs if line["event"] == "server.accept_recovered"]
    assert len(recovered) == 1 and recovered[0]["failures"] == 6_000


class _ScriptedAccepts:
    """A listener whose accepts follow a script: a number of EMFILE failures, then a client,
    for each run in ``runs``; then it waits forever."""

    def __init__(self, runs: list[int]) -> None:
        self.script = [n for failures in runs for n in [*[1] * failures, 0]]
        self.done = trio.Event()

    async def accept(self) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        if not self.script:
            self.done.set()
            await trio.sleep_forever()
        if self.script.pop(0):
            raise OSError(errno.ENFILE, os.strerror(errno.ENFILE))
        return trio.testing.memory_stream_pair()[0]


@settings(max_examples=25, deadline=None)
@given(runs=st.lists(st.one_of(st.integers(0, 3), st.integers(0, 700)), min_size=1, max_size=12))
def test_property_accept_failures_in_any_pattern_are_logged_boundedly(
    runs: list[int],
) -> None:
    # Runs of failures each ended by one client: a long outage, or a flood that frees and
    # takes descriptors in turn (many runs of one failure).
    server = _ServesNothing(
        listen=Endpoint("127.0.0.1", 0), grace=1.0, log=structlog.get_logger("test")
    )
    listener = _ScriptedAccepts(runs)

    async def main() -> None:
        async with trio.open_nursery() as handlers:
            handlers.start_soon(server._accept, listener, handlers)  # type: ignore[arg-type]
            await listener.done.wait()
            handlers.cancel_scope.cancel()

    with structlog.testing.capture_logs() as logs:
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert server.total_sessions == len(runs)  # every client after a failure was served
    lines = [line for line in logs if line["event"].startswith("server.accept_")]
    events = [line["event"] for line in lines]
    failures = sum(runs)
    # 0.1 s per retry: the first failure at once, then at most one line a minute.
    assert events.count("server.accept_failed") <= 1 + failures // 600
    if failures:
        assert events[0] == "server.accept_failed" and lines[0]["failures"] == 1
        # A recovered line follows failed lines, one per span; the last client ends the last.
        assert events[-1] == "server.accept_recovered"
        assert all(
            earlier == "server.accept_failed"
            for earlier, event in itertools.pairwise(events)
            if event == "server.accept_recovered"
        )
        recovered = [int(line["failures"]) for line in lines if line["event"].endswith("red")]
        assert all(n >= 1 for n in recovered) and sum(recovered) <= failures
    else:
        assert events == []
