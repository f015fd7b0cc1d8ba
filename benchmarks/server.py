"""A fast POP3 server for the benchmarks, so that the server is never the bottleneck.

Plain blocking sockets with one thread per connection. Every reply is pre-built as exact wire
bytes; message 1 (large, dot-stuffed) is built once at start-up and sent with ``sendall`` in big
slices. Run it in its own process::

    python -m benchmarks.server --big-size 67108864

It prints ``PORT <n>`` on stdout once it listens on 127.0.0.1 and serves until killed.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import sys
import threading
from dataclasses import dataclass

SLICE = 4 * 1024 * 1024
BIG_DEFAULT = 64 * 1024 * 1024
SMALL_SIZE = 16 * 1024
TERMINATOR = b"\r\n.\r\n"


def _build_body(size: int, seed: str) -> bytes:
    """Return an unstuffed message of exactly ``size`` octets; many lines begin with a dot."""
    header = (
        f"From: bench@example.invalid\r\nTo: tap@example.invalid\r\n"
        f"Subject: pop3tap benchmark {seed}\r\nMessage-ID: <{seed}@bench.invalid>\r\n\r\n"
    ).encode()
    lines = [
        b"." + b"d" * 70 + b"\r\n",  # a leading dot: must be stuffed on the wire
        b"plain body line with some text in it for the benchmark .......\r\n",
        b"..two dots already, stuffed to three\r\n",
        b".\r\n",  # a lone dot: would end the message if not stuffed
        b"x" * 76 + b"\r\n",
    ]
    block = b"".join(lines)
    need = max(0, size - len(header))
    body = header + block * (need // len(block) + 1)
    body = body[:size]
    # Keep the message a sequence of complete lines: end with CRLF.
    if size >= 2:
        body = body[:-2] + b"\r\n"
    return body


def dot_stuff(body: bytes) -> bytes:
    """Apply RFC 1939 byte-stuffing to a CRLF-terminated body."""
    stuffed = body.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    return stuffed


def wire_message(body: bytes) -> bytes:
    """The complete RETR reply: status line, stuffed body and terminator."""
    return b"+OK %d octets\r\n" % len(body) + dot_stuff(body) + b".\r\n"


@dataclass(frozen=True)
class Mailbox:
    sizes: tuple[int, ...]
    retr: tuple[bytes, ...]
    uids: tuple[str, ...]

    @classmethod
    def build(cls, big_size: int) -> Mailbox:
        bodies = (_build_body(big_size, "big"), _build_body(SMALL_SIZE, "small"))
        return cls(
            sizes=tuple(len(b) for b in bodies),
            retr=tuple(wire_message(b) for b in bodies),
            uids=("uid-big-0001", "uid-small-0002"),
        )

    def stat(self) -> bytes:
        return b"+OK %d %d\r\n" % (len(self.sizes), sum(self.sizes))

    def listing(self) -> bytes:
        rows = b"".join(b"%d %d\r\n" % (i + 1, s) for i, s in enumerate(self.sizes))
        return b"+OK %d messages\r\n" % len(self.sizes) + rows + b".\r\n"

    def uidl(self) -> bytes:
        rows = b"".join(b"%d %s\r\n" % (i + 1, u.encode()) for i, u in enumerate(self.uids))
        return b"+OK\r\n" + rows + b".\r\n"


CAPA = b"+OK Capability list follows\r\nUSER\r\nUIDL\r\nTOP\r\n.\r\n"


def _send(sock: socket.socket, data: bytes) -> None:
    if len(data) <= SLICE:
        sock.sendall(data)
        return
    view = memoryview(data)
    for off in range(0, len(view), SLICE):
        sock.sendall(view[off : off + SLICE])


def _reply(box: Mailbox, line: bytes) -> tuple[bytes, bool]:
    """Return the reply to one command line and whether to close afterwards."""
    verb, _, arg = line.partition(b" ")
    verb = verb.upper()
    if verb == b"NOOP":
        return b"+OK\r\n", False
    if verb == b"RETR":
        try:
            n = int(arg)
        except ValueError:
            return b"-ERR bad message number\r\n", False
        if 1 <= n <= len(box.retr):
            return box.retr[n - 1], False
        return b"-ERR no such message\r\n", False
    if verb == b"STAT":
        return box.stat(), False
    if verb == b"LIST":
        return box.listing(), False
    if verb == b"UIDL":
        return box.uidl(), False
    if verb == b"USER":
        return b"+OK send PASS\r\n", False
    if verb == b"PASS":
        return b"+OK maildrop locked and ready\r\n", False
    if verb == b"CAPA":
        return CAPA, False
    if verb == b"QUIT":
        return b"+OK bye\r\n", True
    return b"-ERR unknown command\r\n", False


def _serve_client(sock: socket.socket, box: Mailbox) -> None:
    with sock:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(b"+OK pop3tap benchmark server ready\r\n")
            buf = b""
            while True:
                data = sock.recv(65536)
                if not data:
                    return
                buf += data
                while True:
                    idx = buf.find(b"\r\n")
                    if idx < 0:
                        break
                    line, buf = buf[:idx], buf[idx + 2 :]
                    reply, close = _reply(box, line)
                    _send(sock, reply)
                    if close:
                        return
                if len(buf) > 65536:
                    return
        except OSError:
            return


def serve(big_size: int) -> None:
    """Build the mailbox, listen on 127.0.0.1:0, report the port and serve forever."""
    box = Mailbox.build(big_size)
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4096)
    port = lsock.getsockname()[1]
    print(f"PORT {port}", flush=True)
    while True:
        conn, _ = lsock.accept()
        threading.Thread(target=_serve_client, args=(conn, box), daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big-size", type=int, default=BIG_DEFAULT, help="octets of message 1")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        serve(args.big_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
