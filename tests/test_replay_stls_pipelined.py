"""A ClientHello that arrives in the same read as the STLS line goes to TLS (RFC 2595 §4).

Plaintext before the first TLS record is dropped, never answered; the TLS record itself is
the handshake, wherever the client's bytes were split. Before the server-role reader, the
bytes read together with the STLS line were all dropped, so this client waited in vain.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from pathlib import Path

import structlog
from test_replay_tls import CAPA_TLS, stls_capture

import pop3tap


def _read_line(sock: socket.socket, pending: bytearray) -> bytes:
    while b"\n" not in pending:
        data = sock.recv(65536)
        assert data, "the server closed the connection"
        pending += data
    end = pending.index(b"\n") + 1
    line = bytes(pending[:end])
    del pending[:end]
    return line


def _pump(sock: socket.socket, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO) -> None:
    """Send what TLS wrote, then feed it what the server sent."""
    if outgoing.pending:
        sock.sendall(outgoing.read())
    data = sock.recv(65536)
    if data:
        incoming.write(data)
    else:
        incoming.write_eof()


def test_client_hello_in_the_same_write_as_stls_starts_tls(tmp_path: Path) -> None:
    path = stls_capture(tmp_path / "caps")
    with (
        structlog.testing.capture_logs() as logs,
        pop3tap.replay_server(path, ca_dir=tmp_path / "ca", tls_timeout=5) as server,
        socket.create_connection((server.host, server.port), timeout=30) as sock,
    ):
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = server.ssl_context().wrap_bio(incoming, outgoing, server_hostname=server.host)
        with contextlib.suppress(ssl.SSLWantReadError):
            tls.do_handshake()  # writes the ClientHello
        pending = bytearray()
        assert _read_line(sock, pending).startswith(b"+OK replayed ready")
        sock.sendall(b"STLS\r\n" + outgoing.read())  # the ClientHello right behind the line
        assert _read_line(sock, pending) == b"+OK Begin TLS\r\n"
        incoming.write(bytes(pending))
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                _pump(sock, incoming, outgoing)
        tls.write(b"CAPA\r\nQUIT\r\n")
        answers = bytearray()
        while b"Logging out" not in answers:
            try:
                answers += tls.read(65536)
            except ssl.SSLWantReadError:
                _pump(sock, incoming, outgoing)
    assert bytes(answers) == CAPA_TLS + b"+OK Logging out.\r\n"
    assert not [e for e in logs if e["event"] in ("replay.stls_injection", "replay.tls_failed")]
