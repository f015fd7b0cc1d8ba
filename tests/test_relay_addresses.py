"""The addresses a relay session reports, and the socket options of its upstream leg."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import structlog
import trio
from faults import Connection, scripted_server

from pop3tap.relay import Endpoint, RelayConfig, RelayServer
from pop3tap.relay._config import open_plain_upstream


def _greet_and_quit(conn: Connection) -> None:
    conn.send(b"+OK ready\r\n")
    assert conn.readline() == b"QUIT\r\n"
    conn.send(b"+OK bye\r\n")
    conn.read_all()


@pytest.mark.parametrize(
    ("listen_host", "client_host", "named"),
    [
        ("127.0.0.1", "127.0.0.1", "127.0.0.1"),
        ("0.0.0.0", "127.0.0.1", "127.0.0.1"),
        ("::1", "::1", "[::1]"),
        ("::", "::1", "[::1]"),
    ],
)
def test_session_open_names_the_address_the_client_reached(
    listen_host: str, client_host: str, named: str, tmp_path: Path
) -> None:
    """A relay bound to one address names it without asking each connection; a wildcard
    bind names the address the client really connected to, never ``0.0.0.0`` or ``::``;
    both as ``getsockname`` of the accepted connection says, IPv6 in brackets."""
    port = 0

    async def main(upstream: Endpoint) -> None:
        nonlocal port
        server = RelayServer(
            RelayConfig(upstream=upstream, listen=Endpoint(listen_host, 0), captures=tmp_path)
        )
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                await nursery.start(server.run)
                port = server.address.port
                async with await trio.open_tcp_stream(client_host, port) as stream:
                    assert await stream.receive_some(100) == b"+OK ready\r\n"
                    await stream.send_all(b"QUIT\r\n")
                    assert await stream.receive_some(100) == b"+OK bye\r\n"
                server.shutdown()

    with scripted_server(_greet_and_quit) as upstream, structlog.testing.capture_logs() as logs:
        trio.run(main, Endpoint(upstream.host, upstream.port))
        upstream.wait()
    (opened,) = [entry for entry in logs if entry["event"] == "session.open"]
    assert opened["listen"] == f"{named}:{port}"


def test_the_upstream_leg_has_nagle_off() -> None:
    """Commands are small: each must leave at once, not wait for the previous ACK."""

    async def main() -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        async with listeners[0]:
            stream = await open_plain_upstream(Endpoint("127.0.0.1", port))
            async with stream:
                assert isinstance(stream, trio.SocketStream)
                assert stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)

    trio.run(main)
