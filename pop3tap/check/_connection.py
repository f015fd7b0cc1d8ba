"""The live connection of ``pop3tap check``: a blocking socket (plain, STLS or POP3S)
with an idle timeout per read and a deadline per step, whose bytes feed a
:class:`~pop3tap.protocol.SessionObserver` and a capture as the relay would write it."""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Callable

from pop3tap.analysis import _BodyTap
from pop3tap.capture import CaptureWriter, Direction, EventName
from pop3tap.check._config import RECV_BYTES, STEP_FACTOR, CheckConfig, CheckError
from pop3tap.protocol import (
    Event,
    Exchange,
    Greeting,
    SessionObserver,
)


class Connection:
    """A blocking socket with bounded waits, feeding a SessionObserver and a capture."""

    def __init__(self, config: CheckConfig, writer: CaptureWriter) -> None:
        self.config = config
        self.writer = writer
        self.tap = _BodyTap(stats=False)
        self.observer = SessionObserver(body_listener=self.tap)
        #: Body digests of the live multi-line responses, by command number.
        self.digests: dict[int, str] = {}
        self.sock: socket.socket | ssl.SSLSocket | None = None
        self.started = time.monotonic()
        self.exchanges: list[Exchange] = []
        self.greeting: Greeting | None = None
        #: Server bytes after the last complete line, for SASL challenges (bounded).
        self._partial = b""
        self._lines: list[bytes] = []
        #: Collect server lines (only while a SASL exchange waits for challenges).
        self.want_lines = False
        self.closed_by_server = False

    def now(self) -> float:
        return time.monotonic() - self.started

    def connect(self, tls: ssl.SSLContext | None) -> None:
        cfg = self.config
        try:
            raw = socket.create_connection((cfg.host, cfg.port), timeout=cfg.timeout)
        except OSError as exc:
            raise CheckError(
                f"connect to {cfg.host}:{cfg.port} failed: {exc.strerror or exc}"
            ) from None
        self.sock = raw
        local = str(raw.getsockname())
        self.writer.write_event(EventName.UPSTREAM_CONNECTED, self.now(), local=local)
        if tls is not None:
            self.start_tls(tls, "POP3S handshake")

    def start_tls(self, context: ssl.SSLContext, step: str) -> None:
        assert self.sock is not None
        cfg = self.config
        try:
            self.sock = context.wrap_socket(self.sock, server_hostname=cfg.host)
        except TimeoutError:
            raise CheckError(f"{step} with {cfg.host}:{cfg.port}: timed out") from None
        except (OSError, ssl.SSLError) as exc:
            raise CheckError(f"{step} with {cfg.host}:{cfg.port} failed: {exc}") from None
        self.writer.write_event(EventName.TLS, self.now(), leg="server")

    def send(self, data: bytes, step: str) -> None:
        assert self.sock is not None
        at = self.now()
        # As the relay records: masked bytes now, lines held after an AUTH once the
        # pairing says what they are (before the server bytes that told it).
        recorded, events = self.observer.receive_client(data, at)
        for when, masked in recorded:
            self.writer.write_data(Direction.CLIENT, when, masked)
        self._handle(events)
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise CheckError(f"{step}: sending failed: {exc.strerror or exc}") from None

    def _write_released(self) -> None:
        for at, data in self.observer.take_masked_client():
            self.writer.write_data(Direction.CLIENT, at, data)

    def finish(self) -> None:
        """The session ends: client lines still held are masked and written."""
        self.observer.abandon_client_lines()
        self._write_released()

    def wait(self, done: Callable[[], bool], step: str) -> None:
        """Read until ``done()``; CheckError after the idle timeout or the step deadline."""
        assert self.sock is not None
        cfg = self.config
        deadline = time.monotonic() + cfg.timeout * STEP_FACTOR
        while not done():
            if self.closed_by_server:
                raise CheckError(f"{step}: the server closed the connection")
            left = deadline - time.monotonic()
            if left <= 0:
                raise CheckError(f"{step}: not complete after {cfg.timeout * STEP_FACTOR:g}s")
            self.sock.settimeout(min(cfg.timeout, left))
            try:
                data = self.sock.recv(RECV_BYTES)
            except TimeoutError:
                raise CheckError(
                    f"{step}: no answer from {cfg.host}:{cfg.port} within {cfg.timeout:g}s"
                ) from None
            except OSError as exc:
                raise CheckError(f"{step}: {exc.strerror or exc}") from None
            self.receive(data)

    def receive(self, data: bytes) -> None:
        at = self.now()
        if not data:
            self.closed_by_server = True
            events = self.observer.end_server(at)
            self._write_released()
            self.writer.write_event(EventName.EOF, at, dir=Direction.SERVER)
            self._handle(events)
            return
        events = self.observer.feed_server(data, at)
        self._write_released()
        self.writer.write_data(Direction.SERVER, at, data)
        self._handle(events)
        if not self.want_lines:
            return
        buffered = self._partial + data
        *lines, self._partial = buffered.split(b"\n")
        self._partial = self._partial[-8192:]
        self._lines.extend(line[:8192] for line in lines[-64:])
        del self._lines[:-64]

    def take_line(self) -> bytes | None:
        return self._lines.pop(0) if self._lines else None

    def _handle(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, Greeting):
                self.greeting = event
            elif isinstance(event, Exchange):
                self.exchanges.append(event)
                body = self.tap.take(event) if event.multiline else None
                if body is not None:
                    self.digests[event.seq] = body.digest

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
