"""Direct socket reads and writes for trio's plain TCP streams, shared by relay and replay.

``SocketStream.receive_some`` and ``send_all`` each pass through trio's scheduler before
and after the system call (and try a ``recv`` that fails before every wait). For a relay
that forwards small POP3 lines, that costs more than the forwarding itself, so for a
plain ``trio.SocketStream`` these helpers wait for readiness once and then call
``os.read``/``os.write`` on the socket. TLS and other streams use the trio methods.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from collections.abc import Callable

import trio


def plain_fd(stream: trio.abc.Stream) -> int | None:
    """The file descriptor under a plain TCP ``trio.SocketStream`` (None for TLS etc.)."""
    if type(stream) is not trio.SocketStream:
        return None
    try:
        fd = stream.socket.fileno()
    except OSError:
        return None
    return fd if fd >= 0 else None


def _broken(exc: OSError) -> trio.BrokenResourceError:
    reason = exc.strerror or str(exc) or type(exc).__name__
    return trio.BrokenResourceError(reason)


async def receive_some(stream: trio.abc.Stream, fd: int | None, size: int) -> bytes:
    """Wait for bytes (one checkpoint), then read what is there; b"" at end of stream.

    ``fd`` is :func:`plain_fd` of the stream, looked up once by the caller.
    """
    if fd is None:
        return bytes(await stream.receive_some(size))
    await trio.lowlevel.wait_readable(fd)
    data = read_now(fd, size)
    if data is None:  # woken without data: let trio wait again
        return bytes(await stream.receive_some(size))
    return data


def read_now(fd: int, size: int) -> bytes | None:
    """Read what a plain socket holds without waiting; None if nothing is there yet."""
    try:
        return os.read(fd, size)
    except BlockingIOError:
        return None
    except OSError as exc:
        raise _broken(exc) from exc


def send_now(stream: trio.abc.Stream, data: bytes) -> int:
    """Write what the kernel takes at once, without waiting; returns the bytes written.

    Returns 0 for streams that are not plain sockets (the caller then uses ``send_all``).
    """
    fd = plain_fd(stream)
    if fd is None:
        return 0
    try:
        return os.write(fd, data)
    except BlockingIOError:
        return 0
    except OSError as exc:
        raise _broken(exc) from exc


async def send_all(
    stream: trio.abc.Stream, data: bytes, after_write: Callable[[], None] | None = None
) -> None:
    """Send all of ``data``; a write the kernel takes at once needs no trip through trio.

    ``after_write`` runs once the first write was tried (even if it failed) and before
    any wait for the rest: work that can follow the bytes out but must not let another
    task run first.
    The caller's receive before it was the checkpoint, so a loop still yields once per
    chunk.
    """
    try:
        sent = send_now(stream, data)
    finally:
        if after_write is not None:
            after_write()
    if sent < len(data):
        await stream.send_all(memoryview(data)[sent:])


def reset_on_close(stream: trio.abc.Stream) -> None:
    """Make the next close a TCP reset (SO_LINGER 0), through any TLS layers.

    The relay passes a peer's reset on this way; replay uses it where the recorded server
    reset, and for the ``reset`` fault.
    """
    while isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    sock = getattr(stream, "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
