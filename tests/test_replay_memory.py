"""A finished replay connection is freed at once, by reference counting, however it ended.

As for the relay (test_relay_memory.py): a connection that points at itself through its
idle scope, its streams, its reader or a caught exception's traceback would wait, with its
socket, for the cycle collector. The replay server runs in this test's own trio loop with
the cycle collector off.
"""

from __future__ import annotations

import socket
import ssl
import struct
import weakref
from pathlib import Path

import pytest
import trio
from clients import on_each_instance
from handmade import write_capture

from pop3tap.certs import CA_CERT_FILE
from pop3tap.replay import ReplayConfig, ReplayServer, _connection
from pop3tap.server import Endpoint

PLAIN = [
    ("s", b"+OK ready\r\n"),
    ("c", b"USER a\r\n"),
    ("s", b"+OK\r\n"),
    ("c", b"QUIT\r\n"),
    ("s", b"+OK bye\r\n"),
]
STLS = [
    ("s", b"+OK ready\r\n"),
    ("c", b"USER a\r\n"),
    ("s", b"+OK\r\n"),
    ("c", b"STLS\r\n"),
    ("s", b"+OK go ahead\r\n"),
    ("event", "tls", {"mode": "stls", "seq": 2, "dropped_c2s": 0, "dropped_s2c": 0}),
    ("c", b"QUIT\r\n"),
    ("s", b"+OK bye\r\n"),
]


async def _receive_line(stream: trio.abc.Stream) -> bytes:
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = await stream.receive_some(100)
        if not chunk:
            break
        data += chunk
    return data


async def _until_closed(stream: trio.abc.Stream) -> None:
    try:
        while await stream.receive_some(100):
            pass
    except trio.BrokenResourceError:
        pass


def _reset(stream: trio.abc.Stream) -> None:
    while isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    assert isinstance(stream, trio.SocketStream)
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def _client(stream: trio.abc.Stream, ending: str, trust: ssl.SSLContext) -> None:
    assert (await _receive_line(stream)).startswith(b"+OK")
    await stream.send_all(b"USER a\r\n")
    assert await _receive_line(stream) == b"+OK\r\n"
    if ending.startswith("stls"):
        await stream.send_all(b"STLS\r\n")
        assert await _receive_line(stream) == b"+OK go ahead\r\n"
        if ending == "stls then silence":
            await _until_closed(stream)  # the handshake times out
            return
        stream = trio.SSLStream(stream, trust, server_hostname="127.0.0.1")
    if ending == "reset":
        _reset(stream)
        return
    if ending == "idle":
        await _until_closed(stream)
        return
    await stream.send_all(b"QUIT\r\n")
    assert await _receive_line(stream) == b"+OK bye\r\n"
    await _until_closed(stream)


#: (ending, implicit TLS listener): STLS is only offered on a plain listener.
CASES = [
    *[(ending, tls) for ending in ("quit", "reset", "idle") for tls in (False, True)],
    ("stls quit", False),
    ("stls then silence", False),
]


@pytest.mark.usefixtures("no_cycle_collector")
@pytest.mark.parametrize(
    ("ending", "listen_tls"), CASES, ids=[f"{e}-{'pop3s' if t else 'plain'}" for e, t in CASES]
)
def test_a_finished_replay_connection_leaves_nothing_for_the_cycle_collector(
    ending: str, listen_tls: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_capture(tmp_path, STLS if ending.startswith("stls") else PLAIN)
    connections: list[weakref.ref[_connection.ReplayConnection]] = []
    on_each_instance(
        monkeypatch, _connection.ReplayConnection, lambda c: connections.append(weakref.ref(c))
    )
    config = ReplayConfig(
        captures=(tmp_path,),
        listen=Endpoint("127.0.0.1", 0),
        idle_timeout=0.2,
        tls_timeout=0.2,
        listen_tls=listen_tls,
        ca_dir=tmp_path / "ca",
    )

    async def main() -> None:
        server = ReplayServer(config)
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                await nursery.start(server.run)
                ca_cert = tmp_path / "ca" / CA_CERT_FILE
                trust = ssl.create_default_context()
                if ca_cert.exists():  # the server made its CA: TLS is part of this case
                    trust.load_verify_locations(cafile=str(ca_cert))
                stream: trio.abc.Stream = await trio.open_tcp_stream(
                    "127.0.0.1", server.address.port
                )
                if listen_tls:
                    stream = trio.SSLStream(stream, trust, server_hostname="127.0.0.1")
                await _client(stream, ending, trust)
                await trio.aclose_forcefully(stream)
                server.shutdown()  # the run ends once the connection has ended by itself

    trio.run(main)
    assert len(connections) == 1
    assert connections[0]() is None, "the connection is only freed by the cycle collector"
