"""A finished relay session is freed at once, by reference counting, however it ended.

If a session and the parts it owns point at each other (a reference cycle), nothing of it
is freed when it ends: its sockets, capture writer (with its pack buffer), observer and
queues wait for Python's cycle collector, together with every other finished session.
Under many sessions that garbage makes the relay's memory grow between collections and
makes every collection slower. The relay here runs in this test's own trio loop with the
cycle collector off; once a session has ended, in any of the ways a session ends, nothing
of it may be left.
"""

from __future__ import annotations

import gc
import poplib
import socket
import ssl
import struct
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
from clients import on_each_instance, relay_in_process
from dovecot import Dovecot, Mailbox
from faults import Connection, scripted_server

from pop3tap.capture import iter_capture_paths, read_capture
from pop3tap.certs import CA_CERT_FILE, init_ca
from pop3tap.relay import Endpoint, RelayConfig, RelayServer, _recorder, _session
from pop3tap.tls import TlsConfig

GREETING = b"+OK upstream ready\r\n"
LISTING = b"+OK 2 messages\r\n1 120\r\n2 300\r\n.\r\n"
ANSWERS = {
    b"USER alice\r\n": b"+OK\r\n",
    b"PASS secret\r\n": b"+OK logged in\r\n",
    b"LIST\r\n": LISTING,
    b"QUIT\r\n": b"+OK bye\r\n",
}
#: Pipelined commands in one write: more events than one step of the recorder works off.
BURST = 300


class Peer:
    """The test's client of the relay: bytes out, and every byte the relay sent back."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.received = b""

    async def receive_until(self, total: bytes) -> None:
        while len(self.received) < len(total):
            chunk = await self.stream.receive_some(65536)
            assert chunk, "the relay closed the session early"
            self.received += chunk
        assert self.received == total

    async def converse(self, answers: dict[bytes, bytes]) -> None:
        expected = GREETING
        await self.receive_until(expected)
        for command, answer in answers.items():
            await self.stream.send_all(command)
            expected += answer
            await self.receive_until(expected)

    async def until_closed(self) -> None:
        while await self.stream.receive_some(65536):
            pass

    def reset(self) -> None:
        self.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _answer_everything(conn: Connection) -> None:
    conn.send(GREETING)
    while line := conn.readline():
        conn.send(ANSWERS.get(line, b"+OK\r\n"))
        if line == b"QUIT\r\n":
            return  # the scripted server closes the connection, as POP3 servers do


def _answer_login_then_close(conn: Connection) -> None:
    conn.send(GREETING)
    assert conn.readline() == b"USER alice\r\n"
    conn.send(b"+OK\r\n")


async def _quit(peer: Peer) -> None:
    await peer.converse(ANSWERS)
    await peer.until_closed()


async def _vanish(peer: Peer) -> None:
    await peer.converse({b"USER alice\r\n": b"+OK\r\n", b"LIST\r\n": LISTING})


async def _reset(peer: Peer) -> None:
    await peer.converse({b"USER alice\r\n": b"+OK\r\n"})
    peer.reset()


async def _server_closes(peer: Peer) -> None:
    await peer.converse({b"USER alice\r\n": b"+OK\r\n"})
    await peer.until_closed()


async def _burst(peer: Peer) -> None:
    await peer.receive_until(GREETING)
    await peer.stream.send_all(b"NOOP\r\n" * BURST + b"QUIT\r\n")
    await peer.receive_until(GREETING + b"+OK\r\n" * BURST + b"+OK bye\r\n")
    await peer.until_closed()


@dataclass(frozen=True)
class Ending:
    upstream: Callable[[Connection], None]
    client: Callable[[Peer], Awaitable[None]]
    #: Exchanges the capture must hold (the session really went through the recorder).
    exchanges: int


ENDINGS = {
    "quit": Ending(_answer_everything, _quit, 4),
    "client vanishes": Ending(_answer_everything, _vanish, 2),
    "client resets": Ending(_answer_everything, _reset, 1),
    "server closes": Ending(_answer_login_then_close, _server_closes, 1),
    "pipelined burst": Ending(_answer_everything, _burst, BURST + 1),
}


@pytest.mark.usefixtures("no_cycle_collector")
@pytest.mark.parametrize("ending", ENDINGS.values(), ids=ENDINGS.keys())
def test_a_finished_session_leaves_nothing_for_the_cycle_collector(
    ending: Ending, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sessions: list[weakref.ref[_session.RelaySession]] = []
    recorders: set[int] = set()

    def track(session: _session.RelaySession) -> None:
        sessions.append(weakref.ref(session))
        # The recorder may be compiled (no weak references): it is looked for, by its id,
        # among the objects the cycle collector tracks, where one left in a cycle would be
        # (no other recorder is made in this test, so no other can take the id).
        assert gc.is_tracked(session.recorder)
        recorders.add(id(session.recorder))

    on_each_instance(monkeypatch, _session.RelaySession, track)
    async def client(port: int) -> None:
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            await ending.client(Peer(stream))

    with scripted_server(ending.upstream) as upstream:
        relay_in_process(upstream.host, upstream.port, tmp_path, client, seconds=30)
        upstream.wait()
    (path,) = iter_capture_paths([tmp_path])
    assert len(read_capture(path).exchanges()) == ending.exchanges
    assert len(sessions) == 1
    assert sessions[0]() is None, "the session is only freed by the cycle collector"
    assert len(recorders) == 1
    left = [o for o in gc.get_objects() if type(o) is _recorder.SessionRecorder]
    assert not [o for o in left if id(o) in recorders]


def _poplib_session(host: str, port: int, box: Mailbox, how: str, trust: ssl.SSLContext) -> None:
    """A real client (poplib) through the relay: POP3S, STLS, or a fault that resets."""
    client: poplib.POP3
    if how == "pop3s":
        client = poplib.POP3_SSL(host, port, context=trust, timeout=30)
    else:
        client = poplib.POP3(host, port, timeout=30)
    try:
        if how == "stls":
            client.stls(trust)
        client.user(box.user)
        client.pass_(box.password)
        client.stat()
        if how == "fault":
            with pytest.raises((poplib.error_proto, OSError)):
                client.retr(1)  # cut by the fault: the relay closes the client leg mid-answer
            return
        client.retr(1)
        client.quit()
    finally:
        client.close()


#: How each case reaches Dovecot: (POP3S on both legs, faults); "stls" upgrades a plain one.
TLS_PATHS: dict[str, tuple[bool, tuple[str, ...]]] = {
    "pop3s": (True, ()),
    "stls": (False, ()),
    "fault": (False, ("RETR:cut=10",)),
}


@pytest.mark.realpeer
@pytest.mark.usefixtures("no_cycle_collector")
@pytest.mark.parametrize("how", TLS_PATHS)
def test_a_tls_or_faulted_session_leaves_nothing_for_the_cycle_collector(
    how: str,
    dovecot: Dovecot,
    corpus: list[bytes],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    box = dovecot.new_mailbox(corpus)
    (tmp_path / "caps").mkdir()
    init_ca(tmp_path / "ca")
    trust = ssl.create_default_context(cafile=str(tmp_path / "ca" / CA_CERT_FILE))
    sessions: list[weakref.ref[_session.RelaySession]] = []
    on_each_instance(monkeypatch, _session.RelaySession, lambda s: sessions.append(weakref.ref(s)))
    pop3s, faults = TLS_PATHS[how]
    port = dovecot.pop3s_port if pop3s else dovecot.pop3_port
    config = RelayConfig(
        upstream=Endpoint(dovecot.host, port),
        listen=Endpoint("127.0.0.1", 0),
        captures=tmp_path / "caps",
        tls=TlsConfig(
            ca_dir=tmp_path / "ca",
            upstream_ca=dovecot.ca_pem_path,
            upstream_tls=pop3s,
            listen_tls=pop3s,
        ),
        faults=faults,
    )

    async def main() -> None:
        server = RelayServer(config)
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                await nursery.start(server.run)
                await trio.to_thread.run_sync(
                    _poplib_session, "127.0.0.1", server.address.port, box, how, trust
                )
                server.shutdown()  # the run ends once the session has ended by itself

    trio.run(main)
    assert len(list(iter_capture_paths([tmp_path / "caps"]))) == 1
    assert len(sessions) == 1
    assert sessions[0]() is None, "the session is only freed by the cycle collector"
