"""Addresses and listening sockets shared by every pop3tap server (relay and replay)."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

import trio

#: Pending connections the kernel queues per listening socket.
LISTEN_BACKLOG = 1024


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A host and port, printed as ``host:port`` (``[v6]:port`` for IPv6)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def socket_of(stream: trio.abc.Stream) -> Any:
    """The (trio) socket under a stream, looking through TLS layers; None if there is none."""
    while isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    return getattr(stream, "socket", None)


def _endpoint(stream: trio.abc.Stream, *, remote: bool) -> Endpoint:
    """One end of the socket under ``stream`` (``?:0`` without a socket); raises OSError."""
    sock = socket_of(stream)
    if sock is None:
        return Endpoint("?", 0)
    host, port = (sock.getpeername() if remote else sock.getsockname())[:2]
    return Endpoint(str(host), int(port))


def format_peer(stream: trio.abc.Stream) -> str:
    """``ip:port`` of the remote end of a socket stream (or ``?``)."""
    try:
        return str(_endpoint(stream, remote=True))
    except OSError:
        return "?"


def local_address(stream: trio.abc.Stream) -> str:
    """``ip:port`` of the local end of a socket stream (or ``?``)."""
    try:
        return str(_endpoint(stream, remote=False))
    except OSError:
        return "?"


def one_line_reason(exc: BaseException) -> str:
    """A short, single-line reason for a network error."""
    cause = exc.__cause__ or exc.__context__
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if cause is not None and isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    text = str(exc) or (str(cause) if cause is not None else "") or type(exc).__name__
    return text.splitlines()[0] if text else type(exc).__name__


def bind_listen_sockets(host: str, port: int) -> list[socket.socket]:
    """Bind and listen on every address of ``host`` (as ``trio.open_tcp_listeners`` does).

    Port 0 picks one free port, shared by all addresses. Raises ``OSError``.
    """
    infos = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE | socket.AI_ADDRCONFIG
    )
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _name, address in infos:
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock.bind(address)
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


async def open_listeners(
    host: str, port: int, sockets: list[socket.socket] | None
) -> list[trio.SocketListener]:
    """Listeners on ``sockets`` bound by :func:`bind_listen_sockets` (``--workers``), or,
    when there are none, on newly bound sockets for ``host:port``."""
    if sockets is None:
        return await trio.open_tcp_listeners(port, host=host, backlog=LISTEN_BACKLOG)
    return [trio.SocketListener(trio.socket.from_stdlib_socket(sock)) for sock in sockets]
