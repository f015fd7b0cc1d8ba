"""The trio relay: one upstream connection per client, bytes forwarded verbatim both ways.

The relay never parses on the forwarding path: each chunk is sent on as soon as it
arrives, then a copy goes to the capture file and to the sans-IO
:class:`~pop3tap.protocol.SessionObserver`, whose events become log lines. A parser or
capture failure is logged and the session goes on. The relay never sends a byte of its
own to the server; in particular it never sends QUIT for a client that went away, since
a POP3 server deletes marked messages only after QUIT (RFC 1939 §6). The one line it may
send the client is ``-ERR [SYS/TEMP]`` when the upstream cannot be reached at all
(RFC 2449 §8.1.3 response code), in place of a greeting.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
import trio

from pop3tap import __version__
from pop3tap.capture import CaptureError, CaptureWriter
from pop3tap.log import exchange_fields
from pop3tap.protocol import (
    Direction,
    EndOfStream,
    Event,
    Exchange,
    Greeting,
    SaslChallenge,
    SessionObserver,
    StartTls,
    StrayLine,
    UnsolicitedLine,
)

logger = structlog.get_logger("pop3tap.relay")

#: Bytes asked of the kernel per receive; large enough that a big RETR is few chunks.
RECEIVE_SIZE = 256 * 1024


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A host and port, printed as ``host:port`` (``[v6]:port`` for IPv6)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class RelayConfig:
    """Everything a relay needs; defaults are what ``pop3tap record`` uses."""

    upstream: Endpoint
    listen: Endpoint = field(default_factory=lambda: Endpoint("127.0.0.1", 1110))
    #: Directory for capture files; None records nothing to disk.
    captures: Path | None = Path("captures")
    #: Keep PASS, APOP digests and SASL data in captures (logs stay masked).
    keep_secrets: bool = False
    #: Seconds open sessions may go on after shutdown is requested.
    grace: float = 10.0
    #: Seconds to wait for the upstream TCP connection.
    connect_timeout: float = 10.0
    #: Seconds to wait for the upstream greeting before giving up (None: forever).
    greeting_timeout: float | None = 30.0
    #: The longest line the parser keeps (longer lines are flagged, not buffered).
    max_line: int = 8192
    #: Connects to the upstream; TLS support replaces it (see pop3tap.tls).
    connector: Callable[[Endpoint], Awaitable[trio.abc.Stream]] | None = None

    def options(self) -> dict[str, Any]:
        """The options stored in each capture header."""
        return {
            "keep_secrets": self.keep_secrets,
            "grace": self.grace,
            "connect_timeout": self.connect_timeout,
            "greeting_timeout": self.greeting_timeout,
            "max_line": self.max_line,
        }


def format_peer(stream: trio.abc.Stream) -> str:
    """``ip:port`` of the remote end of a socket stream (or ``?``)."""
    sock = getattr(stream, "socket", None)
    try:
        host, port = sock.getpeername()[:2] if sock is not None else ("?", 0)
    except OSError:
        return "?"
    return str(Endpoint(str(host), int(port)))


async def open_plain_upstream(endpoint: Endpoint) -> trio.abc.Stream:
    """Open a TCP connection to the upstream with Nagle off (commands are small)."""
    stream = await trio.open_tcp_stream(endpoint.host, endpoint.port)
    stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return stream


def _abort(stream: trio.abc.Stream) -> None:
    """Close with a TCP reset (SO_LINGER 0), to pass a reset on to the other side."""
    sock = getattr(stream, "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class _Session:
    """One client connection and its upstream: two pumps, one observer, one capture."""

    def __init__(self, relay: RelayServer, client: trio.abc.Stream, session_id: str) -> None:
        self.relay = relay
        self.config = relay.config
        self.client = client
        self.upstream: trio.abc.Stream | None = None
        self.session_id = session_id
        self.started = trio.current_time()
        self.observer = SessionObserver(max_line=self.config.max_line)
        self.capture: CaptureWriter | None = None
        self.capture_warned = False
        self.close_reason = "closed"
        self.greeted = trio.Event()
        self.log = logger.bind()

    def now(self) -> float:
        return trio.current_time() - self.started

    # -- capture -----------------------------------------------------------------------

    def open_capture(self, client_peer: str) -> None:
        directory = self.config.captures
        if directory is None:
            return
        try:
            self.capture = CaptureWriter.create(
                directory,
                session_id=self.session_id,
                header_fields={
                    "pop3tap": __version__,
                    "client": client_peer,
                    "listen": str(self.config.listen),
                    "upstream": str(self.config.upstream),
                    "secrets": "kept" if self.config.keep_secrets else "masked",
                    "options": self.config.options(),
                },
            )
        except CaptureError as exc:
            self.log.error("capture.failed", error=str(exc))
            return
        self.log.info("capture.open", path=str(self.capture.path))

    def check_capture(self) -> None:
        capture = self.capture
        if capture is not None and capture.failed and not self.capture_warned:
            self.capture_warned = True
            self.log.error(
                "capture.incomplete",
                path=str(capture.path),
                error=capture.error,
                note="relaying continues; the capture stops here",
            )

    def record_event(self, name: str, **fields: Any) -> None:
        if self.capture is not None:
            self.capture.write_event(name, self.now(), **fields)
            self.check_capture()

    # -- parsing -------------------------------------------------------------------------

    def handle_events(self, events: list[Event]) -> None:
        log = self.log
        for event in events:
            if isinstance(event, Exchange):
                log.info("pop3.exchange", **exchange_fields(event))
            elif isinstance(event, Greeting):
                self.greeted.set()
                log.info(
                    "pop3.greeting",
                    status=None if event.status is None else event.status.value,
                    first_line=event.text,
                    apop=event.apop_timestamp is not None,
                )
            elif isinstance(event, UnsolicitedLine):
                log.warning("pop3.unsolicited", line=event.text)
            elif isinstance(event, StrayLine):
                log.warning("pop3.stray", direction=event.direction.value, line=event.text)
            elif isinstance(event, StartTls):
                self.on_start_tls(event)
            elif isinstance(event, EndOfStream) and event.truncated:
                log.warning("pop3.truncated", direction=event.direction.value)
            elif isinstance(event, SaslChallenge):
                pass

    def on_start_tls(self, event: StartTls) -> None:
        self.log.warning(
            "pop3.stls",
            note="TLS follows; without interception the rest of the session is relayed "
            "encrypted and recorded as opaque bytes",
            client_trailing=event.client_trailing,
            server_trailing=event.server_trailing,
        )
        self.record_event("stls", intercepted=False)

    def observe(self, direction: Direction, data: bytes, at: float) -> None:
        """Record and parse a copy of bytes that were already forwarded."""
        try:
            if direction is Direction.CLIENT:
                if self.capture is not None:
                    recorded = data if self.config.keep_secrets else self.observer.mask_client(data)
                    if recorded:
                        self.capture.write_data("c2s", at, recorded)
                    self.check_capture()
                events = self.observer.feed_client(data, at)
            else:
                if self.capture is not None:
                    self.capture.write_data("s2c", at, data)
                    self.check_capture()
                events = self.observer.feed_server(data, at)
            self.handle_events(events)
        except Exception:  # the parser must never break the relay
            self.log.exception("pop3.parser_error", direction=direction.value)

    def observe_end(self, direction: Direction, kind: str) -> None:
        at = self.now()
        self.record_event(kind, dir=direction.value)
        try:
            if direction is Direction.CLIENT:
                if self.capture is not None and not self.config.keep_secrets:
                    rest = self.observer.flush_masked_client()
                    if rest:
                        self.capture.write_data("c2s", at, rest)
                events = self.observer.end_client(at)
            else:
                events = self.observer.end_server(at)
            self.handle_events(events)
        except Exception:
            self.log.exception("pop3.parser_error", direction=direction.value)

    # -- pumps ---------------------------------------------------------------------------

    async def pump(
        self,
        source: trio.abc.Stream,
        sink: trio.abc.Stream,
        direction: Direction,
        cancel_scope: trio.CancelScope,
    ) -> None:
        """Forward ``source`` to ``sink`` until end of stream, then propagate it."""
        side = "client" if direction is Direction.CLIENT else "server"
        while True:
            try:
                data = bytes(await source.receive_some(RECEIVE_SIZE))
            except trio.BrokenResourceError as exc:
                # A reset (or a TLS failure) on the receiving side: pass it on as a reset.
                self.log.info("session.reset", side=side, error=_reason(exc))
                self.close_reason = f"{side} reset"
                self.observe_end(direction, "reset")
                _abort(sink)
                cancel_scope.cancel()
                return
            except trio.ClosedResourceError:
                return
            if not data:
                self.observe_end(direction, "eof")
                await self.propagate_eof(sink, direction)
                return
            try:
                await sink.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                other = "server" if direction is Direction.CLIENT else "client"
                self.log.info("session.peer_gone", side=other, error=_reason(exc))
                self.close_reason = f"{other} gone"
                self.observe(direction, data, self.now())
                self.record_event("send_failed", dir=direction.value, error=_reason(exc))
                _abort(source)
                cancel_scope.cancel()
                return
            self.observe(direction, data, self.now())

    async def propagate_eof(self, sink: trio.abc.Stream, direction: Direction) -> None:
        """Half-close the other side; if it cannot half-close, close it."""
        if direction is Direction.SERVER:
            self.close_reason = "server closed"
        elif self.close_reason == "closed":
            self.close_reason = "client closed"
        try:
            if isinstance(sink, trio.abc.HalfCloseableStream):
                await sink.send_eof()
            else:
                await sink.aclose()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def greeting_watchdog(self, cancel_scope: trio.CancelScope) -> None:
        timeout = self.config.greeting_timeout
        if timeout is None:
            return
        with trio.move_on_after(timeout):
            await self.greeted.wait()
            return
        if self.observer.greeted:
            return
        self.log.warning(
            "upstream.no_greeting", upstream=str(self.config.upstream), timeout=timeout
        )
        self.record_event("greeting_timeout", timeout=timeout)
        self.close_reason = "upstream sent no greeting"
        if self.observer.summary().server_bytes == 0:
            await self.refuse_client(
                f"upstream {self.config.upstream} sent no greeting in {timeout:g}s"
            )
        cancel_scope.cancel()

    async def refuse_client(self, reason: str) -> None:
        """Tell the client why there is no server: the only bytes pop3tap ever writes."""
        line = f"-ERR [SYS/TEMP] pop3tap: {reason}\r\n".encode("utf-8", "replace")
        with trio.move_on_after(5):
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self.client.send_all(line)

    # -- lifecycle -----------------------------------------------------------------------

    async def run(self) -> None:
        config = self.config
        client_peer = format_peer(self.client)
        structlog.contextvars.bind_contextvars(session=self.session_id)
        self.log = logger.bind()
        self.log.info(
            "session.open",
            client=client_peer,
            upstream=str(config.upstream),
            listen=str(config.listen),
        )
        self.open_capture(client_peer)
        try:
            await self.connect_and_relay()
        finally:
            with trio.CancelScope(shield=True):
                await self.finish()

    async def connect_and_relay(self) -> None:
        config = self.config
        connector = config.connector or open_plain_upstream
        try:
            with trio.fail_after(config.connect_timeout):
                self.upstream = await connector(config.upstream)
        except trio.TooSlowError:
            await self.upstream_failed(f"timed out after {config.connect_timeout:g}s")
            return
        except OSError as exc:
            await self.upstream_failed(_reason(exc))
            return
        except trio.BrokenResourceError as exc:  # e.g. a failed TLS handshake
            await self.upstream_failed(_reason(exc))
            return
        self.log.info(
            "upstream.connected", upstream=str(config.upstream), local=_local(self.upstream)
        )
        self.record_event("upstream_connected", local=_local(self.upstream))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.greeting_watchdog, nursery.cancel_scope)
            async with trio.open_nursery() as pumps:
                pumps.start_soon(
                    self.pump, self.client, self.upstream, Direction.CLIENT, pumps.cancel_scope
                )
                pumps.start_soon(
                    self.pump, self.upstream, self.client, Direction.SERVER, pumps.cancel_scope
                )
            nursery.cancel_scope.cancel()

    async def upstream_failed(self, reason: str) -> None:
        upstream = str(self.config.upstream)
        self.log.error("upstream.unreachable", upstream=upstream, error=reason)
        self.record_event("upstream_connect_failed", upstream=upstream, error=reason)
        self.close_reason = "upstream unreachable"
        await self.refuse_client(f"cannot reach upstream {upstream}: {reason}")

    async def finish(self) -> None:
        """Close both legs and the capture, and log the session summary."""
        if self.relay.shutting_down and self.close_reason == "closed":
            self.close_reason = "shutdown"
        for stream in (self.client, self.upstream):
            if stream is not None:
                with trio.move_on_after(1):
                    await trio.aclose_forcefully(stream)
        at = self.now()
        summary = self.observer.summary()
        fields = summary.as_dict()
        self.log.info(
            "session.close",
            reason=self.close_reason,
            duration_s=round(at, 3),
            top=f"{summary.top_count}/{summary.top_bytes}",
            retr=f"{summary.retr_count}/{summary.retr_bytes}",
            dele=summary.dele_count,
            commands=summary.commands,
            update=summary.reached_update,
            bytes_in=summary.client_bytes,
            bytes_out=summary.server_bytes,
            anomalies=summary.anomalies,
        )
        if self.capture is not None:
            self.capture.close(at, self.close_reason, fields)
            self.check_capture()


def _reason(exc: BaseException) -> str:
    """A short, single-line reason for a network error."""
    cause = exc.__cause__ or exc.__context__
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if cause is not None and isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    text = str(exc) or (str(cause) if cause is not None else "") or type(exc).__name__
    return text.splitlines()[0] if text else type(exc).__name__


def _local(stream: trio.abc.Stream) -> str:
    sock = getattr(stream, "socket", None)
    try:
        host, port = sock.getsockname()[:2] if sock is not None else ("?", 0)
    except OSError:
        return "?"
    return str(Endpoint(str(host), int(port)))


class RelayServer:
    """Accept clients and relay each to its own upstream connection.

    Use ``await nursery.start(server.run)`` to get the listeners once they accept;
    :meth:`shutdown` stops accepting and lets open sessions finish within ``grace``.
    """

    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        self.shutting_down = False
        self.active_sessions = 0
        self.total_sessions = 0
        self._accept_scope = trio.CancelScope()
        self._handlers: trio.Nursery | None = None
        self.listeners: list[trio.SocketListener] = []

    @property
    def address(self) -> Endpoint:
        """Where the first listener accepts connections."""
        host, port = self.listeners[0].socket.getsockname()[:2]
        return Endpoint(str(host), int(port))

    async def run(
        self, *, task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen, serve until :meth:`shutdown`, then drain sessions within the grace period."""
        listen = self.config.listen
        self.listeners = await trio.open_tcp_listeners(listen.port, host=listen.host, backlog=1024)
        for listener in self.listeners:
            listener.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        async with trio.open_nursery() as handlers:
            self._handlers = handlers
            with self._accept_scope:
                task_status.started(self.listeners)
                await trio.serve_listeners(self._handle, self.listeners, handler_nursery=handlers)
            for listener in self.listeners:
                await listener.aclose()
            if self.active_sessions:
                logger.info(
                    "relay.draining", sessions=self.active_sessions, grace_s=self.config.grace
                )
            handlers.cancel_scope.deadline = trio.current_time() + self.config.grace

    def shutdown(self) -> None:
        """Stop accepting new clients; open sessions get the grace period."""
        self.shutting_down = True
        self._accept_scope.cancel()

    async def _handle(self, client: trio.SocketStream) -> None:
        """Per-connection handler: every error is logged here, never raised to the server."""
        structlog.contextvars.clear_contextvars()
        session = _Session(self, client, secrets.token_hex(6))
        self.active_sessions += 1
        self.total_sessions += 1
        try:
            await session.run()
        except Exception:
            session.log.exception("session.crashed")
        finally:
            self.active_sessions -= 1


async def serve_relay(
    config: RelayConfig,
    *,
    task_status: trio.TaskStatus[RelayServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a relay until cancelled; ``task_status.started`` gets the :class:`RelayServer`."""
    server = RelayServer(config)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        task_status.started(server)
