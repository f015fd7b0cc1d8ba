"""The console's connection to a POP3 server, and the capture it writes as it goes.

A console session is one client connection, driven one command at a time by a person or a
script, so it uses a blocking socket (``socket``/``ssl`` with timeouts) rather than trio:
there is nothing to run concurrently, and a blocking read is what lets the terminal layer
between prompts stay a plain loop.

Every byte goes through a :class:`SessionRecorder` on its way: client bytes are masked by
the same :class:`~pop3tap.protocol.SessionObserver` the relay uses (PASS, APOP digests,
SASL data) before they reach the capture, server bytes are captured as received, and both
are paired by the observer, so ``show`` and ``replay`` read a console capture exactly like
one written by ``record``. TLS is recorded the way the relay records it: implicit TLS
(RFC 8314 §3) as a ``tls_handshake`` event, an STLS upgrade (RFC 2595 §4) as a ``tls``
event at the switch point, with the decrypted session after it.

Reading is bounded: a status line may be at most :data:`MAX_STATUS_LINE` bytes, and body
lines are handed on in pieces of at most :data:`MAX_BODY_PIECE` bytes, so a hostile server
cannot make the console buffer more than that.
"""

from __future__ import annotations

import contextlib
import secrets
import select
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NoReturn

from pop3tap import __version__
from pop3tap._tlsio import peer_certificate_facts
from pop3tap.capture import CaptureWriter, Direction, EventName, Secrets
from pop3tap.protocol import Event, SessionObserver, StartTls
from pop3tap.relay import Endpoint
from pop3tap.tls import TlsSetupError, describe_failure, upstream_context

#: Longest status line accepted (RFC 2449 §4 allows 512 octets; real servers stay below).
MAX_STATUS_LINE: Final = 64 * 1024
#: Largest piece of a body line handed on at once; longer lines arrive in several pieces.
MAX_BODY_PIECE: Final = 64 * 1024
_RECEIVE_SIZE: Final = 64 * 1024


class ConsoleError(Exception):
    """The session cannot go on (network, TLS, a broken server); one line for the user."""


class ServerClosed(ConsoleError):
    """The server closed the connection."""


@dataclass(frozen=True, slots=True)
class LinkConfig:
    """Where and how the console connects."""

    server: Endpoint
    #: Implicit TLS from the first byte (POP3S, RFC 8314 §3).
    tls: bool = False
    #: Upgrade with STLS right after the greeting (RFC 2595 §4).
    starttls: bool = False
    #: Trust only this CA file (PEM) instead of the system store.
    ca_file: Path | None = None
    #: Do not verify the server's certificate.
    insecure: bool = False
    connect_timeout: float = 10.0
    #: Seconds to wait for each piece of a response.
    timeout: float = 60.0

    def options(self) -> dict[str, Any]:
        """The options stored in the capture header (no secrets)."""
        return {
            "console": True,
            "keep_secrets": False,
            "upstream_tls": self.tls,
            "starttls": self.starttls,
            "upstream_ca": None if self.ca_file is None else str(self.ca_file),
            "insecure_upstream": self.insecure,
            "listen_tls": False,
            "intercept_stls": True,
        }


class SessionRecorder:
    """The capture of one console session and the observer that masks and pairs it.

    A capture that cannot be written never stops the session: :attr:`warning` says why
    once, and the session goes on unrecorded.
    """

    def __init__(self, writer: CaptureWriter | None) -> None:
        self.writer = writer
        self.observer = SessionObserver()
        self._started = time.monotonic()
        self._warned = False
        #: One line about a capture that stopped being written, once; then None again.
        self.warning: str | None = None
        #: The accepted STLS seen in the server stream, until TLS is up.
        self.switch: StartTls | None = None

    @classmethod
    def create(cls, directory: Path, config: LinkConfig) -> SessionRecorder:
        """Open a new capture in ``directory``.

        Raises:
            CaptureError: the file cannot be created.
        """
        writer = CaptureWriter.create(
            directory,
            session_id=secrets.token_hex(6),
            header_fields={
                "pop3tap": __version__,
                "client": "console",
                "listen": "",
                "upstream": str(config.server),
                "secrets": Secrets.MASKED,
                "options": config.options(),
            },
        )
        return cls(writer)

    @property
    def path(self) -> Path | None:
        """The capture file, or None when nothing is recorded."""
        return None if self.writer is None else self.writer.path

    def now(self) -> float:
        return time.monotonic() - self._started

    def client(self, data: bytes) -> None:
        """Bytes about to be sent: captured with secrets masked, then parsed.

        Lines after an AUTH are held by the masker until the pairing says whether they
        are SASL data or commands; they are written as soon as it does.
        """
        recorded, events = self.observer.receive_client(data, self.now())
        if self.writer is not None:
            for at, masked in recorded:
                self.writer.write_data(Direction.CLIENT, at, masked)
        self._take(events)
        self._check()

    def server(self, data: bytes) -> None:
        """Bytes received: parsed first, so client lines they resolve are written before
        them (the order they crossed the wire in), then captured as they are."""
        at = self.now()
        try:
            self._take(self.observer.feed_server(data, at))
        finally:
            self._write_released()
            if self.writer is not None:
                self.writer.write_data(Direction.SERVER, at, data)
        self._check()

    def _write_released(self) -> None:
        for at, masked in self.observer.take_masked_client():
            if self.writer is not None:
                self.writer.write_data(Direction.CLIENT, at, masked)

    def event(self, name: str, **fields: Any) -> None:
        if self.writer is not None:
            self.writer.write_event(name, self.now(), **fields)
            self._check()

    def tls_started(self, **fields: Any) -> None:
        """TLS is up after STLS: the reader resumes parsing at this record (RFC 2595 §4)."""
        switch = self.switch
        # Client lines still held are masked and written on this side of the switch.
        self.observer.abandon_client_lines()
        self._write_released()
        self.event(EventName.TLS, mode="stls", seq=0 if switch is None else switch.seq, **fields)
        self.observer.resume_after_tls()
        self.switch = None

    def close(self, reason: str) -> None:
        """End both directions and write the close record with the session summary."""
        at = self.now()
        self.observer.end_client(at)
        self.observer.end_server(at)
        # Client lines that never got a verdict are masked (the facts are missing).
        self.observer.abandon_client_lines()
        self._write_released()
        self.event(EventName.EOF, dir=Direction.CLIENT)
        self.event(EventName.EOF, dir=Direction.SERVER)
        if self.writer is not None:
            self.writer.close(at, reason, self.observer.summary().as_dict())
            self._check()

    def _take(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, StartTls):
                self.switch = event

    def _check(self) -> None:
        writer = self.writer
        if writer is not None and writer.failed and not self._warned:
            self._warned = True
            self.warning = f"{writer.error}; the session goes on, unrecorded from here"


def _tls_facts(sock: ssl.SSLSocket) -> dict[str, Any]:
    """Version, cipher and the server certificate's subject and fingerprint (never keys)."""
    cipher = sock.cipher()
    facts: dict[str, Any] = {
        "version": sock.version(),
        "cipher": None if cipher is None else cipher[0],
        "sni": sock.server_hostname,
    }
    facts.update(peer_certificate_facts(sock.getpeercert(binary_form=True)))
    return facts


class Pop3Link:
    """A blocking POP3 connection whose every byte is recorded.

    Failures raise :class:`ConsoleError` with one line; the socket is then closed.
    """

    def __init__(self, config: LinkConfig, recorder: SessionRecorder) -> None:
        self.config = config
        self.recorder = recorder
        self._sock: socket.socket | None = None
        self._buffer = bytearray()
        #: The server closed its side (seen while idle).
        self._eof = False
        #: TLS facts once TLS is up (implicit or after STLS), else None.
        self.tls: dict[str, Any] | None = None

    # -- connection ---------------------------------------------------------------------

    def connect(self) -> None:
        """TCP, then the TLS handshake for implicit TLS."""
        server = self.config.server
        try:
            sock = socket.create_connection(
                (server.host, server.port), timeout=self.config.connect_timeout
            )
        except TimeoutError:
            reason = f"timed out after {self.config.connect_timeout:g}s"
            self._connect_failed(reason)
        except socket.gaierror as exc:
            self._connect_failed(f"unknown host ({exc.strerror})")
        except OSError as exc:
            self._connect_failed(exc.strerror or str(exc))
        sock.settimeout(self.config.timeout)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        local = sock.getsockname()
        self.recorder.event(EventName.UPSTREAM_CONNECTED, local=str(Endpoint(local[0], local[1])))
        if self.config.tls:
            self._handshake()
            self.recorder.event(EventName.TLS_HANDSHAKE, leg="server", **(self.tls or {}))

    def _connect_failed(self, reason: str) -> NoReturn:
        server = str(self.config.server)
        self.recorder.event(EventName.UPSTREAM_CONNECT_FAILED, upstream=server, error=reason)
        raise ConsoleError(f"cannot connect to {server}: {reason}")

    def start_tls(self) -> int:
        """Switch to TLS after the server's ``+OK`` to STLS (RFC 2595 §4).

        Plaintext the server sent after that ``+OK`` is dropped (it would be read as if
        it came through TLS: the CVE-2011-0411 class). Returns how many bytes that was.
        """
        dropped = len(self._buffer)
        self._buffer.clear()
        if dropped:
            self.recorder.event(EventName.STLS_INJECTION, c2s=0, s2c=dropped)
        self._handshake()
        self.recorder.tls_started(dropped_c2s=0, dropped_s2c=dropped, **(self.tls or {}))
        return dropped

    def _handshake(self) -> None:
        sock = self._require()
        try:
            context = upstream_context(ca_file=self.config.ca_file, insecure=self.config.insecure)
        except TlsSetupError as exc:
            self.close()
            raise ConsoleError(str(exc)) from None
        host = self.config.server.host
        try:
            tls = context.wrap_socket(sock, server_hostname=host)
        except (OSError, ValueError) as exc:
            reason = describe_failure(
                exc, leg="server", host=host, timeout=self.config.timeout
            ).replace("upstream ", "server ")
            if isinstance(exc, TimeoutError):
                reason = f"TLS handshake timed out after {self.config.timeout:g}s"
            self.recorder.event(EventName.TLS_FAILED, leg="server", reason=reason)
            self.close()
            raise ConsoleError(f"TLS with {self.config.server} failed: {reason}") from None
        self._sock = tls
        self.tls = _tls_facts(tls)

    def close(self) -> None:
        """Close the socket (never sends anything first; idempotent)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def _require(self) -> socket.socket:
        if self._sock is None:
            raise ServerClosed("the connection is closed")
        return self._sock

    # -- sending ------------------------------------------------------------------------

    def send_line(self, line: bytes) -> None:
        """Send one line, adding CRLF (RFC 1939 §3)."""
        sock = self._require()
        data = line + b"\r\n"
        self.recorder.client(data)
        try:
            sock.sendall(data)
        except OSError as exc:
            self.close()
            raise ServerClosed(
                f"cannot send to the server: {exc.strerror or type(exc).__name__}"
            ) from None

    # -- receiving ----------------------------------------------------------------------

    def _fill(self, what: str) -> None:
        sock = self._require()
        if self._eof:
            self.close()
            raise ServerClosed(f"the server closed the connection {what}")
        try:
            data = sock.recv(_RECEIVE_SIZE)
        except TimeoutError:
            self.close()
            raise ConsoleError(
                f"the server sent nothing for {self.config.timeout:g}s {what}"
            ) from None
        except ssl.SSLError as exc:
            self.close()
            reason = (exc.reason or str(exc)).lower().replace("_", " ")
            raise ServerClosed(f"TLS error {what}: {reason}") from None
        except OSError as exc:
            self.close()
            reason = exc.strerror or type(exc).__name__
            raise ServerClosed(f"the connection failed {what}: {reason}") from None
        if not data:
            self.close()
            raise ServerClosed(f"the server closed the connection {what}")
        self.recorder.server(data)
        self._buffer += data

    def read_line(self, what: str, limit: int = MAX_STATUS_LINE) -> tuple[bytes, bool]:
        """The next line with its line end, and whether it is complete.

        A line longer than ``limit`` comes back in pieces (``complete`` False).
        """
        searched = 0
        while True:
            newline = self._buffer.find(b"\n", searched)
            if 0 <= newline < limit:
                line = bytes(self._buffer[: newline + 1])
                del self._buffer[: newline + 1]
                return line, True
            if len(self._buffer) >= limit:
                piece = bytes(self._buffer[:limit])
                del self._buffer[:limit]
                return piece, False
            searched = len(self._buffer)
            self._fill(what)

    def read_status(self, what: str) -> bytes:
        """A status line without its line end; an endless line is a protocol failure."""
        line, complete = self.read_line(what)
        if not complete:
            self.close()
            raise ConsoleError(
                f"the server sent a line longer than {MAX_STATUS_LINE} bytes {what}: "
                "not a POP3 server?"
            )
        return line.rstrip(b"\r\n")

    def read_body(self, sink: Callable[[bytes, bool], None], what: str) -> None:
        """Hand each body line, dot-unstuffed and with its line end, to ``sink``.

        ``sink(piece, line_start)``: ``line_start`` is False for the later pieces of a line
        longer than :data:`MAX_BODY_PIECE`. Stops after the terminating ``.`` line
        (RFC 1939 §3).
        """
        line_start = True
        while True:
            piece, complete = self.read_line(what, MAX_BODY_PIECE)
            if line_start:
                if piece in (b".\r\n", b".\n"):
                    return
                if piece.startswith(b"."):
                    piece = piece[1:]
            sink(piece, line_start)
            line_start = complete

    def pending_input(self) -> bool:
        """Whether the server sent something (or closed) while no command was waiting.

        Reads whatever has arrived without blocking. Over TLS a readable socket may hold
        only handshake records (TLS 1.3 session tickets), which are no input at all.
        """
        if self._buffer or self._eof:
            return True
        sock = self._sock
        if sock is None:
            return False
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return True
        if not readable and not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
            return False
        sock.setblocking(False)
        try:
            data = sock.recv(_RECEIVE_SIZE)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            return False
        except OSError:
            return True  # the next read reports it
        finally:
            with contextlib.suppress(OSError):
                sock.settimeout(self.config.timeout)
        if not data:
            self._eof = True
            return True
        self.recorder.server(data)
        self._buffer += data
        return True
