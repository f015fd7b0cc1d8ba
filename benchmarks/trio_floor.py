"""The floor for any trio relay on this machine: forward bytes, nothing else.

It uses the same I/O as pop3tap's relay for plain TCP (``wait_readable`` then ``os.read``,
``os.write`` straight away), one task per direction, but does not parse, log or capture.
The benchmark runs it as the ``trio-floor`` mode, so a pop3tap ratio can be read against
what trio itself costs in the same run::

    python -m benchmarks.trio_floor --listen-port 1110 --upstream-port 110
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys

import trio

RECEIVE_SIZE = 256 * 1024


async def pump(source: trio.SocketStream, sink: trio.SocketStream) -> None:
    source_fd, sink_fd = source.socket.fileno(), sink.socket.fileno()
    while True:
        await trio.lowlevel.wait_readable(source_fd)
        try:
            data = os.read(source_fd, RECEIVE_SIZE)
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


async def handle(client: trio.SocketStream, upstream_port: int) -> None:
    try:
        upstream = await trio.open_tcp_stream("127.0.0.1", upstream_port)
    except OSError:
        await client.aclose()
        return
    async with client, upstream, trio.open_nursery() as nursery:
        nursery.start_soon(pump, client, upstream)
        nursery.start_soon(pump, upstream, client)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen-port", type=int, required=True)
    parser.add_argument("--upstream-port", type=int, required=True)
    args = parser.parse_args(argv)
    serve = functools.partial(
        trio.serve_tcp,
        functools.partial(handle, upstream_port=args.upstream_port),
        args.listen_port,
        host="127.0.0.1",
        backlog=1024,
    )
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(serve)
    return 0


if __name__ == "__main__":
    sys.exit(main())
