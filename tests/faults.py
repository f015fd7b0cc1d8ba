"""A fault-injection seam: tiny scripted POP3 servers that misbehave on demand.

Dovecot cannot be told to cut a body short, reset a connection or never greet, so these
servers do exactly that, one behaviour per test. Each accepted connection runs the
behaviour in its own thread with a plain blocking socket; what the server received is kept
per connection so a test can check what reached it through the relay.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field


@dataclass
class Connection:
    """One accepted connection of a scripted server."""

    sock: socket.socket
    received: bytearray = field(default_factory=bytearray)
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)
    _buffer: bytearray = field(default_factory=bytearray)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def readline(self) -> bytes:
        """One line (with its terminator); b"" at end of stream."""
        while b"\n" not in self._buffer:
            data = self.sock.recv(65536)
            if not data:
                line, self._buffer[:] = bytes(self._buffer), b""
                return line
            self.received += data
            self._buffer += data
        end = self._buffer.index(b"\n") + 1
        line = bytes(self._buffer[:end])
        del self._buffer[:end]
        return line

    def read_all(self) -> bytes:
        """Everything until the peer closes (or resets)."""
        while True:
            data = self.sock.recv(65536)
            if not data:
                return bytes(self.received)
            self.received += data

    def reset(self) -> None:
        """Close with a TCP RST instead of a FIN."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


Behaviour = Callable[[Connection], None]


@dataclass
class ScriptedServer:
    """A loopback server running ``behaviour`` for each connection."""

    host: str
    port: int
    connections: list[Connection]

    def wait(self, count: int = 1, timeout: float = 30.0) -> list[Connection]:
        """Wait until ``count`` connections have finished their behaviour."""
        for conn in self.connections[:count]:
            if not conn.done.wait(timeout):
                raise AssertionError("scripted server connection did not finish")
        if len(self.connections) < count:
            raise AssertionError(f"only {len(self.connections)} connections arrived")
        return self.connections[:count]


@contextmanager
def scripted_server(behaviour: Behaviour) -> Iterator[ScriptedServer]:
    """Run a scripted server on 127.0.0.1 with an ephemeral port until the block ends."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=512)
    server = ScriptedServer("127.0.0.1", listener.getsockname()[1], [])
    stop = threading.Event()

    def run(conn: Connection) -> None:
        try:
            behaviour(conn)
        except OSError as exc:
            conn.error = exc
        finally:
            with suppress(OSError):
                conn.sock.close()
            conn.done.set()

    def accept_loop() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                sock, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(60)
            conn = Connection(sock)
            server.connections.append(conn)
            threading.Thread(target=run, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept_loop, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        thread.join(5)
        listener.close()


# ---------------------------------------------------------------------------- behaviours


def greet_and_wait(conn: Connection) -> None:
    """Greet, then read until the client side closes."""
    conn.send(b"+OK scripted ready\r\n")
    conn.read_all()


def never_greet(conn: Connection) -> None:
    """Accept and say nothing until the other side gives up."""
    conn.read_all()


def cut_retr_body(body_prefix: bytes) -> Behaviour:
    """Answer RETR with +OK and part of a body, then close: a truncated response."""

    def behaviour(conn: Connection) -> None:
        conn.send(b"+OK scripted ready\r\n")
        line = conn.readline()
        assert line.upper().startswith(b"RETR"), line
        conn.send(b"+OK 1000000 octets\r\n" + body_prefix)

    return behaviour


def reset_after_greeting(conn: Connection) -> None:
    conn.send(b"+OK scripted ready\r\n")
    conn.readline()
    conn.reset()


def echo_random(server_bytes: bytes) -> Behaviour:
    """Send ``server_bytes`` and read everything the client sends, then close."""

    def behaviour(conn: Connection) -> None:
        conn.send(server_bytes)
        conn.sock.shutdown(socket.SHUT_WR)
        conn.read_all()

    return behaviour


def fixed_session(conn: Connection) -> None:
    """A tiny but complete POP3 server: greeting, then +OK to everything, RETR = 3 lines."""
    conn.send(b"+OK scripted ready <1.1@scripted>\r\n")
    while True:
        line = conn.readline()
        if not line:
            return
        verb = line.split(b" ", 1)[0].strip().upper()
        if verb == b"RETR":
            conn.send(b"+OK\r\nSubject: x\r\n\r\nbody\r\n.\r\n")
        elif verb == b"QUIT":
            conn.send(b"+OK bye\r\n")
            return
        else:
            conn.send(b"+OK\r\n")
