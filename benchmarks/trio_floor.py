"""The floor for any trio relay on this machine: forward bytes, nothing else.

It uses the same I/O as pop3tap's relay for plain TCP (``wait_readable`` then ``os.read``,
``os.write`` straight away), one task per direction, but does not parse, log or capture.
The benchmark runs it as the ``trio-floor`` mode, so a pop3tap ratio can be read against
what trio itself costs in the same run::

    python -m benchmarks.trio_floor --listen-port 1110 --upstream-port 110

``--one-task`` (the ``trio-floor-one-task`` mode) drives both directions of a session from
one task instead, with no nursery: a trio task can wait on one file descriptor at a time,
so each session registers its two raw sockets (level-triggered) in an epoll instance of
its own and the task waits with ``wait_readable`` until that is ready, then reads and
writes whichever socket is ready, as a C event loop would. Backpressure is kept: while
bytes wait to be written to one side, the other side is not read.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import select
import socket
import sys

import trio

RECEIVE_SIZE = 256 * 1024


class Reader:
    """Reads one chunk from a socket, as ``os.read`` (a new bytes object per chunk) or
    with ``recv_into``: ``os.readv`` into one reused buffer, a view of it returned.

    ``os.read`` of 256 KiB allocates above glibc's mmap threshold, so every chunk also
    costs an mmap, an mremap (the shrink to what was read) and a munmap; the buffer does
    not. A view is valid until the next read.
    """

    def __init__(self, recv_into: bool) -> None:
        self.buffer = bytearray(RECEIVE_SIZE) if recv_into else None
        self.view = memoryview(self.buffer) if self.buffer is not None else None

    def read(self, fd: int) -> bytes | memoryview:
        if self.buffer is None or self.view is None:
            return os.read(fd, RECEIVE_SIZE)
        return self.view[: os.readv(fd, [self.buffer])]


async def pump(
    source: trio.SocketStream, sink: trio.SocketStream, recv_into: bool = False
) -> None:
    source_fd, sink_fd = source.socket.fileno(), sink.socket.fileno()
    reader = Reader(recv_into)
    while True:
        await trio.lowlevel.wait_readable(source_fd)
        try:
            data = reader.read(source_fd)
        except BlockingIOError:
            continue
        except OSError:
            return
        if not data:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await sink.send_eof()
            return
        try:
            sent = os.write(sink_fd, data)
        except BlockingIOError:
            sent = 0
        except OSError:
            return
        if sent < len(data):
            try:
                await sink.send_all(memoryview(data)[sent:])
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return


async def drive_both(
    client: trio.SocketStream, upstream: trio.SocketStream, recv_into: bool = False
) -> None:
    """Forward both directions of one session from this task until both have ended."""
    c, u = client.socket.fileno(), upstream.socket.fileno()
    reader = Reader(recv_into)
    peer = {c: u, u: c}
    sockets = {c: client.socket, u: upstream.socket}
    #: Bytes read from the peer of the key and not yet written to the key.
    pending = {c: b"", u: b""}
    reading = {c: True, u: True}
    registered: dict[int, int] = {}
    with select.epoll(2) as ready:

        def update(fd: int) -> None:
            want = (select.EPOLLIN if reading[fd] and not pending[peer[fd]] else 0) | (
                select.EPOLLOUT if pending[fd] else 0
            )
            have = registered.get(fd, 0)
            if want == have:
                return
            if not want:
                # Unregistered, not just masked: a closed peer's EPOLLHUP would spin.
                ready.unregister(fd)
                del registered[fd]
            elif have:
                ready.modify(fd, want)
                registered[fd] = want
            else:
                ready.register(fd, want)
                registered[fd] = want

        def write(fd: int, data: bytes | memoryview) -> bool:
            """Write what the socket takes now; keep the rest, or pass on a finished EOF.

            True when the session's state changed (bytes left over, or an EOF passed on).
            """
            try:
                sent = os.write(fd, data) if data else 0
            except BlockingIOError:
                sent = 0
            pending[fd] = bytes(data[sent:])
            if pending[fd]:
                return True
            if not reading[peer[fd]]:
                with contextlib.suppress(OSError):
                    sockets[fd].shutdown(socket.SHUT_WR)
                return True
            return False

        update(c)
        update(u)
        while registered:
            await trio.lowlevel.wait_readable(ready.fileno())
            changed = False
            try:
                for fd, events in ready.poll(0):
                    if events & select.EPOLLOUT and pending[fd]:
                        changed = True
                        write(fd, pending[fd])
                    if events & ~select.EPOLLOUT and reading[fd] and not pending[peer[fd]]:
                        try:
                            data = reader.read(fd)
                        except BlockingIOError:
                            continue
                        if not data:
                            reading[fd] = False
                            changed = True
                        changed = write(peer[fd], data) or changed
            except OSError:
                return
            if changed:
                update(c)
                update(u)


async def connect_direct(port: int) -> trio.SocketStream:
    """Connect to 127.0.0.1:``port`` without ``open_tcp_stream``'s happy-eyeballs nursery,
    as pop3tap's relay does for an IP-literal upstream."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        await sock.connect(("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


async def connect_upstream(port: int, direct: bool) -> trio.SocketStream:
    if direct:
        return await connect_direct(port)
    return await trio.open_tcp_stream("127.0.0.1", port)


async def handle(
    client: trio.SocketStream,
    upstream_port: int,
    *,
    one_task: bool = False,
    direct: bool = False,
    recv_into: bool = False,
) -> None:
    """One session: connect upstream, then forward with one task or with two (a nursery)."""
    try:
        upstream = await connect_upstream(upstream_port, direct)
    except OSError:
        await client.aclose()
        return
    if one_task:
        async with client, upstream:
            await drive_both(client, upstream, recv_into)
        return
    async with client, upstream, trio.open_nursery() as nursery:
        nursery.start_soon(pump, client, upstream, recv_into)
        nursery.start_soon(pump, upstream, client, recv_into)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen-port", type=int, required=True)
    parser.add_argument("--upstream-port", type=int, required=True)
    parser.add_argument(
        "--one-task", action="store_true", help="one task per session for both directions"
    )
    parser.add_argument(
        "--direct-connect", action="store_true",
        help="connect upstream with one socket, without open_tcp_stream's nursery",
    )
    parser.add_argument(
        "--recv-into", action="store_true",
        help="read into one reused buffer per direction instead of a new bytes per chunk",
    )
    args = parser.parse_args(argv)
    serve = functools.partial(
        trio.serve_tcp,
        functools.partial(
            handle,
            upstream_port=args.upstream_port,
            one_task=args.one_task,
            direct=args.direct_connect,
            recv_into=args.recv_into,
        ),
        args.listen_port,
        host="127.0.0.1",
        backlog=1024,
    )
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(serve)
    return 0


if __name__ == "__main__":
    sys.exit(main())
