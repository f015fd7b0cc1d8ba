"""The trio relay: one upstream connection per client, bytes forwarded verbatim both ways.

Each chunk is sent on as soon as it arrives. Server bytes are written to the capture
just before they are forwarded (so whatever a client received is on disk, even after
``kill -9``) and parsed just after, by the sans-IO
:class:`~pop3tap.protocol.SessionObserver`, whose events become log lines; client bytes
are captured and parsed first (commands are short, and an STLS line must be seen before
it is forwarded). A parser or capture failure is logged and the session goes on.

The relay never sends a byte of its own to the server; in particular it never sends QUIT
for a client that went away, since a POP3 server deletes marked messages only after QUIT
(RFC 1939 §6). The one line it may
send the client is ``-ERR [SYS/TEMP]`` when the upstream cannot be reached at all
(RFC 2449 §8.1.3 response code), in place of a greeting.

TLS (see :mod:`pop3tap.tls` and docs/tls.md): implicit TLS on either leg (RFC 8314 §3) is
a handshake before relaying starts. STLS (RFC 2595 §4) is the one place where the relay
acts on what it parses: once the client's ``STLS`` line is seen, client bytes after it are
held back and server bytes are parsed *before* they are forwarded. A ``-ERR`` releases the
held bytes and nothing changes. A ``+OK`` is forwarded up to its end; then both pumps
stop, plaintext either side sent past the switch point is dropped and flagged (command
injection, the CVE-2011-0411 class), pop3tap handshakes with the server (as a client) and
with the client (as a server), and the pumps restart on the TLS streams, so the rest of
the session is logged and captured decrypted.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
import trio

from pop3tap import __version__
from pop3tap._fastio import plain_fd, read_now, receive_some, reset_on_close, send_all
from pop3tap._faultio import pace
from pop3tap.capture import CaptureError, CaptureWriter
from pop3tap.faults import ConnectionFaults, FaultPlan, check_relay_fault, parse_fault
from pop3tap.log import exchange_fields, get_logger
from pop3tap.protocol import (
    CommandSent,
    Direction,
    EndOfStream,
    Event,
    Exchange,
    Greeting,
    PairingLost,
    SessionObserver,
    StartTls,
    Status,
    StrayLine,
    Suppressed,
    UnsolicitedLine,
)
from pop3tap.relay_faults import FaultGate, StepKind
from pop3tap.tls import (
    ServerTls,
    TlsConfig,
    TlsContexts,
    TlsSetupError,
    client_handshake,
    describe_failure,
    is_tls_end,
    send_close_notify,
    server_handshake,
    tls_info,
    warn_if_ca_created,
)
from pop3tap.workers import open_listeners

logger = get_logger("pop3tap.relay")

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
    #: Seconds a TLS peer may go on sending after pop3tap passed the other side's close on
    #: to it (as ``close_notify``), before pop3tap closes that connection itself.
    close_linger: float = 5.0
    #: Seconds client bytes sent after STLS are held waiting for the server's answer;
    #: past it they are dropped and the session ends (they must not reach the server in
    #: plaintext if TLS follows, RFC 2595 §4).
    stls_timeout: float = 30.0
    #: The longest line the parser keeps (longer lines are flagged, not buffered).
    max_line: int = 8192
    #: Opens the upstream transport (TCP by default); TLS, if any, is layered on top.
    connector: Callable[[Endpoint], Awaitable[trio.abc.Stream]] | None = None
    #: TLS on either leg and STLS interception (see pop3tap.tls).
    tls: TlsConfig = field(default_factory=TlsConfig)
    #: Fault specs (docs/faults.md) applied to what the client receives.
    faults: tuple[str, ...] = ()
    #: Allow faults that change what the server said (err, garble, unsolicited).
    fault_rewrite: bool = False

    def __post_init__(self) -> None:
        for spec in self.faults:
            # FaultError is a ValueError naming the bad part
            check_relay_fault(parse_fault(spec), rewrite=self.fault_rewrite)

    def options(self) -> dict[str, Any]:
        """The options stored in each capture header."""
        extra: dict[str, Any] = {"faults": list(self.faults)} if self.faults else {}
        return {
            "keep_secrets": self.keep_secrets,
            "grace": self.grace,
            "connect_timeout": self.connect_timeout,
            "greeting_timeout": self.greeting_timeout,
            "stls_timeout": self.stls_timeout,
            "max_line": self.max_line,
            "close_linger": self.close_linger,
            **self.tls.options(),
            **extra,
        }


def _socket_of(stream: trio.abc.Stream) -> Any:
    """The (trio) socket under a stream, looking through TLS layers; None if there is none."""
    while isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    return getattr(stream, "socket", None)


def format_peer(stream: trio.abc.Stream) -> str:
    """``ip:port`` of the remote end of a socket stream (or ``?``)."""
    sock = _socket_of(stream)
    try:
        host, port = sock.getpeername()[:2] if sock is not None else ("?", 0)
    except OSError:
        return "?"
    return str(Endpoint(str(host), int(port)))


async def open_plain_upstream(endpoint: Endpoint) -> trio.abc.Stream:
    """Open a TCP connection to the upstream with Nagle off (commands are small).

    An IP address is connected to directly; a name goes through ``open_tcp_stream``
    (resolution and happy eyeballs over its addresses).
    """
    try:
        version = ipaddress.ip_address(endpoint.host).version
    except ValueError:
        stream = await trio.open_tcp_stream(endpoint.host, endpoint.port)
    else:
        family = socket.AF_INET6 if version == 6 else socket.AF_INET
        sock = trio.socket.socket(family, socket.SOCK_STREAM)
        try:
            await sock.connect((endpoint.host, endpoint.port))
        except BaseException:
            sock.close()
            raise
        stream = trio.SocketStream(sock)
    stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return stream


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
        #: When the greeting line must be complete (trio time), or None for no limit.
        self.greeting_deadline: float | None = None
        #: Each direction's stream ended (EOF or reset).
        self.ended = {Direction.CLIENT: trio.Event(), Direction.SERVER: trio.Event()}
        #: Set (and replaced) whenever server bytes are parsed or the server's stream ends.
        self.server_activity = trio.Event()
        #: TLS streams pop3tap sent close_notify on, or set to close with a reset (by id).
        self.closing: set[int] = set()
        self.log = logger.bind()
        #: Bytes observed so far per direction (the observer's stream offsets).
        self.seen = {Direction.CLIENT: 0, Direction.SERVER: 0}
        #: Client-stream offset just past a pending STLS line: later bytes are held.
        self.stls_client_end: int | None = None
        #: Set when a pending STLS got an answer other than +OK (held bytes go on).
        self.stls_resolved = trio.Event()
        #: The accepted STLS, once the server pump has stopped at the switch point.
        self.switch: StartTls | None = None
        #: Server bytes being forwarded, not observed yet (see :meth:`flush_server`).
        #: Server bytes already captured and forwarded, not yet parsed, with their time.
        self.unobserved_server: tuple[bytes, float] | None = None
        #: Streams pop3tap closed itself (errors reading them afterwards are expected).
        self.closed_by_us: set[int] = set()
        #: Faults on what the client receives (docs/faults.md).
        #: None without faults, so a relay without them does no fault work at all.
        self.faults: FaultGate | None = None
        if relay.faults:
            self.faults = FaultGate(ConnectionFaults(relay.faults, relay.total_sessions))
        #: The client's eof/reset record, held back while masked client lines are.
        self.client_end_record: tuple[str, float] | None = None

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
        gate = self.faults
        for event in events:
            if isinstance(event, Exchange):
                log.info("pop3.exchange", **exchange_fields(event))
                if gate is not None:
                    gate.on_exchange(event.seq, event.response_start, event.response_end)
                if event.verb == "STLS" and event.status is not Status.OK:
                    # -ERR (or no answer): the held client bytes go on, nothing changes.
                    self.stls_client_end = None
                    self.stls_resolved.set()
            elif isinstance(event, CommandSent):
                if gate is not None:
                    self.arm_fault(gate, event)
                if event.verb == "STLS" and self.config.tls.intercept_stls:
                    self.stls_client_end = event.end
                    self.stls_resolved = trio.Event()
            elif isinstance(event, Greeting):
                if gate is not None:
                    gate.on_greeting(event.end)
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
            elif isinstance(event, PairingLost):
                log.warning("pop3.pairing_lost", reason=event.reason)
                for armed in gate.disarm() if gate is not None else ():
                    log.warning("fault.dropped", spec=armed.fault.spec, seq=armed.seq)
                    # So a replay of this capture does not inject what never happened.
                    self.record_event("fault_dropped", seq=armed.seq, spec=armed.fault.spec)
            elif isinstance(event, Suppressed):
                log.warning(
                    "pop3.suppressed",
                    direction=event.direction.value,
                    kind=event.kind,
                    lines=event.lines,
                    bytes=event.bytes,
                    final=event.final,
                    note="totals for the session"
                    if event.final
                    else "further lines like these are counted, not logged",
                )
            elif isinstance(event, EndOfStream) and event.truncated:
                log.warning("pop3.truncated", direction=event.direction.value)

    def arm_fault(self, gate: FaultGate, event: CommandSent) -> None:
        """A fault may hit the answer to this command: note it, and record it."""
        armed = gate.on_command(
            event.seq, event.verb, event.args.encode(), self.seen[Direction.SERVER]
        )
        if armed is not None:
            self.record_event("fault", seq=armed.seq, spec=armed.fault.spec)

    def on_start_tls(self, event: StartTls) -> None:
        if self.config.tls.intercept_stls:
            self.switch = event
            return
        self.log.warning(
            "pop3.stls",
            note="TLS follows; without interception the rest of the session is relayed "
            "encrypted and recorded as opaque bytes",
            client_trailing=event.client_trailing,
            server_trailing=event.server_trailing,
        )
        self.record_event("stls", intercepted=False)

    def capture_server(self, data: bytes, at: float) -> None:
        """Write server bytes to the capture before the client can see them.

        So a capture cut off by ``kill -9`` holds every byte any client received.
        """
        if self.capture is not None:
            self.capture.write_data("s2c", at, data)
            self.check_capture()

    def may_hold_stls(self, data: bytes) -> bool:
        """Whether a client chunk may complete an STLS line that must be intercepted.

        Only then must it be parsed before it is forwarded (see :meth:`forward_client`).
        """
        return self.config.tls.intercept_stls and (
            b"STLS" in data.upper() or self.observer.client_line_open
        )

    def record_client(self, data: bytes, at: float) -> None:
        """Write client bytes (secrets masked unless kept) to the capture.

        Lines after an AUTH are held by the masker until the pairing says whether they
        were SASL data or commands (see :meth:`record_released_client`).
        """
        if self.capture is None:
            return
        try:
            recorded = data if self.config.keep_secrets else self.observer.mask_client(data, at)
            if recorded:
                self.capture.write_data("c2s", at, recorded)
        except Exception:  # the masker must never break the relay
            self.log.exception("pop3.parser_error", direction=Direction.CLIENT.value)
        self.record_released_client()

    def record_released_client(self) -> None:
        """Write the masked client lines the pairing has resolved since the last call.

        Called after parsing, and before the server bytes that resolved them are captured,
        so the capture keeps the order they crossed the relay in.
        """
        capture = self.capture
        if capture is None:
            return
        try:
            for at, data in self.observer.take_masked_client():
                capture.write_data("c2s", at, data)
        except Exception:  # the masker must never break the relay
            self.log.exception("pop3.parser_error", direction=Direction.CLIENT.value)
        if self.client_end_record is not None and not self.observer.client_held:
            name, at = self.client_end_record
            self.client_end_record = None
            capture.write_event(name, at, dir=Direction.CLIENT.value)
        self.check_capture()

    def observe(
        self, direction: Direction, data: bytes, at: float, *, captured: bool = False
    ) -> None:
        """Record (unless ``captured``) and parse a copy of the bytes.

        Server bytes not captured yet are parsed first: client lines they resolve (see
        :meth:`record_released_client`) were sent before them and are written first.
        """
        self.seen[direction] += len(data)
        events: list[Event] = []
        try:
            if direction is Direction.CLIENT:
                if not captured:
                    self.record_client(data, at)
                events = self.observer.feed_client(data, at)
            else:
                try:
                    events = self.observer.feed_server(data, at)
                finally:
                    self.record_released_client()
                    if not captured:
                        self.capture_server(data, at)
                self.server_activity.set()
            self.record_released_client()
            self.handle_events(events)
        except Exception:  # the parser must never break the relay
            self.log.exception("pop3.parser_error", direction=direction.value)

    def observe_end(self, direction: Direction, kind: str) -> None:
        self.ended[direction].set()
        self.server_activity.set()
        at = self.now()
        if direction is Direction.CLIENT:
            # Written once the client lines still held are (the reader stops reading
            # client bytes at this record).
            self.client_end_record = (kind, at)
        else:
            self.record_event(kind, dir=direction.value)
        try:
            if direction is Direction.CLIENT:
                events = self.observer.end_client(at)
            else:
                events = self.observer.end_server(at)
            self.record_released_client()
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
        """Forward ``source`` to ``sink`` until end of stream, then propagate it.

        Bytes are captured, forwarded, then parsed. The exceptions parse first: server
        bytes until the greeting is seen, while STLS waits for its answer and while
        masked client lines wait for the answer that tells what they were (so they are
        captured before it), and client bytes that may complete an STLS line, so that
        what follows it can be held.
        """
        side = "client" if direction is Direction.CLIENT else "server"
        source_fd = plain_fd(source)
        while True:
            try:
                data = await self.receive(source, source_fd, direction)
            except _NoGreeting:
                await self.no_greeting()
                cancel_scope.cancel()
                return
            except trio.BrokenResourceError as exc:
                if id(source) in self.closed_by_us:
                    return
                if is_tls_end(source, exc):
                    # The peer closed TCP without a TLS close_notify, as many servers do, or
                    # sent its close_notify after ours: an end of stream, not a reset
                    # (RFC 8446 §6.1).
                    if id(source) not in self.closing:
                        self.log.info("tls.no_close_notify", side=side)
                    self.observe_end(direction, "eof")
                    await self.propagate_eof(sink, direction, cancel_scope)
                    return
                # A reset (or a TLS failure) on the receiving side: pass it on as a reset.
                self.log.info("session.reset", side=side, error=_reason(exc))
                self.close_reason = f"{side} reset"
                self.observe_end(direction, "reset")
                self.closing.add(id(sink))
                reset_on_close(sink)
                cancel_scope.cancel()
                return
            except trio.ClosedResourceError:
                return
            if not data:
                self.observe_end(direction, "eof")
                await self.propagate_eof(sink, direction, cancel_scope)
                return
            if direction is Direction.CLIENT:
                self.flush_server()  # what the client saw comes before what it says
                start = self.seen[direction]
                at = self.now()
                if self.stls_client_end is None and not self.may_hold_stls(data):
                    # No STLS can be in these bytes: record them, send them, then parse.
                    self.record_client(data, at)
                    sent = await self.send(
                        source,
                        sink,
                        direction,
                        data,
                        cancel_scope,
                        after_write=functools.partial(
                            self.observe, direction, data, at, captured=True
                        ),
                    )
                    if not sent:
                        return
                    continue
                self.observe(direction, data, at)
                if not await self.forward_client(source, sink, data, start, cancel_scope):
                    return
            elif self.faults is not None and self.faults.active and not self.observer.stls_pending:
                # A fault waits for its answer: parse first to find where the answer starts.
                start = self.seen[direction]
                self.observe(direction, data, self.now())
                if not await self.forward_faulted(source, sink, data, start, cancel_scope):
                    return
            elif (
                not self.observer.greeted
                or self.observer.client_held
                or (self.observer.stls_pending and self.config.tls.intercept_stls)
            ):
                start = self.seen[direction]
                self.observe(direction, data, self.now())
                switch = self.switch
                if switch is not None:
                    # Forward the +OK line only; the rest is plaintext past the switch.
                    cut = min(len(data), max(0, switch.server_switch - start))
                    if await self.send(source, sink, direction, data[:cut], cancel_scope):
                        cancel_scope.cancel()  # both pumps stop; the upgrade follows
                    return
                if not await self.send(source, sink, direction, data, cancel_scope):
                    return
            else:
                # Forward first, parse after; but the client may answer these bytes before
                # this task runs again, so the client pump observes them first if needed.
                at = self.now()
                self.capture_server(data, at)
                self.unobserved_server = (data, at)
                sent = await self.send(source, sink, direction, data, cancel_scope)
                self.flush_server()
                if not sent:
                    return

    async def forward_faulted(
        self,
        source: trio.abc.Stream,
        sink: trio.abc.Stream,
        data: bytes,
        start: int,
        cancel_scope: trio.CancelScope,
    ) -> bool:
        """Forward server bytes as the armed faults say; False when the session ends."""
        assert self.faults is not None
        for step in self.faults.plan(start, data):
            if step.fault is not None:
                self.log.warning(
                    "fault.injected",
                    spec=step.fault.spec,
                    action=step.fault.action.value,
                    seq=step.seq,
                )
            if step.kind is StepKind.SLEEP:
                await trio.sleep(step.amount)
            elif step.kind is StepKind.PACE:
                ok = True

                async def send_piece(piece: bytes) -> None:
                    nonlocal ok
                    if ok:
                        ok = await self.send(source, sink, Direction.SERVER, piece, cancel_scope)

                await pace(send_piece, step.data, step.amount)
                if not ok:
                    return False
            elif step.kind is StepKind.SEND:
                if not await self.send(source, sink, Direction.SERVER, step.data, cancel_scope):
                    return False
            else:  # END: both legs close; the server never gets a QUIT (RFC 1939 §6)
                self.close_reason = step.reason
                self.record_event("fault_end", seq=step.seq, reason=step.reason)
                if step.reset:
                    self.closing.add(id(self.client))  # a reset, so no close_notify first
                    reset_on_close(self.client)
                cancel_scope.cancel()
                return False
        return True

    async def receive(
        self, source: trio.abc.Stream, source_fd: int | None, direction: Direction
    ) -> bytes:
        """The next chunk from ``source``; until the greeting line is complete, the server
        has until the greeting deadline to send it (raises :class:`_NoGreeting`)."""
        deadline = self.greeting_deadline
        if direction is Direction.CLIENT or deadline is None or self.observer.greeted:
            return await receive_some(source, source_fd, RECEIVE_SIZE)
        with trio.move_on_at(deadline):
            return await receive_some(source, source_fd, RECEIVE_SIZE)
        # The deadline passed; bytes that arrived at the same moment still count.
        data = read_now(source_fd, RECEIVE_SIZE) if source_fd is not None else None
        if data is not None:
            return data
        if self.observer.pairing_lost:
            # A client flood made the observer give up parsing while this waited: it can
            # no longer see a greeting, so stop waiting for one.
            self.greeting_deadline = None
            return await receive_some(source, source_fd, RECEIVE_SIZE)
        raise _NoGreeting

    def flush_server(self) -> None:
        """Observe server bytes that were forwarded but not yet observed."""
        pending = self.unobserved_server
        if pending is not None:
            self.unobserved_server = None
            data, at = pending
            self.observe(Direction.SERVER, data, at, captured=True)

    async def forward_client(
        self,
        source: trio.abc.Stream,
        sink: trio.abc.Stream,
        data: bytes,
        start: int,
        cancel_scope: trio.CancelScope,
    ) -> bool:
        """Forward an observed client chunk, holding what follows a pending STLS line.

        Returns False when the session must end. While STLS waits for its answer the pump
        stops reading: a ``-ERR`` releases the held bytes; a ``+OK`` cancels this pump.
        """
        while True:
            end = self.stls_client_end
            if end is None:
                return await self.send(source, sink, Direction.CLIENT, data, cancel_scope)
            cut = min(len(data), max(0, end - start))
            if not await self.send(source, sink, Direction.CLIENT, data[:cut], cancel_scope):
                return False
            data, start = data[cut:], start + cut
            if not data:
                return True
            timeout = self.config.stls_timeout
            with trio.move_on_after(timeout):
                await self.stls_resolved.wait()
            if not self.stls_resolved.is_set():
                # No answer to STLS: the held bytes never reach the server in plaintext.
                self.log.warning(
                    "tls.stls_timeout", timeout_s=timeout, dropped_client_bytes=len(data)
                )
                self.record_event("stls_timeout", timeout=timeout, dropped_c2s=len(data))
                self.close_reason = f"server did not answer STLS in {timeout:g}s"
                cancel_scope.cancel()
                return False

    async def send(
        self,
        source: trio.abc.Stream,
        sink: trio.abc.Stream,
        direction: Direction,
        data: bytes,
        cancel_scope: trio.CancelScope,
        *,
        after_write: Callable[[], None] | None = None,
    ) -> bool:
        """Send to ``sink``; on failure end the session and return False.

        ``after_write`` runs right after the first write attempt, even a failed one (see
        ``send_all``).
        """
        if not data:
            if after_write is not None:
                after_write()
            return True
        try:
            await send_all(sink, data, after_write)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            other = "server" if direction is Direction.CLIENT else "client"
            self.log.info("session.peer_gone", side=other, error=_reason(exc))
            self.close_reason = f"{other} gone"
            self.flush_server()  # keep the order: the bytes, then the failure
            self.record_event("send_failed", dir=direction.value, error=_reason(exc))
            self.closing.add(id(source))
            reset_on_close(source)
            cancel_scope.cancel()
            return False
        return True

    async def propagate_eof(
        self, sink: trio.abc.Stream, direction: Direction, cancel_scope: trio.CancelScope
    ) -> None:
        """Pass an end of stream on to the other side at once, as the peer sent it.

        Plain TCP gets a half-close (FIN). TLS gets ``close_notify`` and a TCP half-close
        (RFC 8446 §6.1): the other peer learns of the close as promptly as over plain TCP,
        so a server ends the session (and releases its mailbox lock) at once. One
        exception: a server may drop commands it has not answered yet when a close_notify
        arrives (Dovecot does), so while the client's commands still wait for answers and
        the server keeps sending, the close_notify waits for them. That peer then has
        ``close_linger`` seconds to end its own side before pop3tap closes the session.
        """
        if self.close_reason == "closed":  # the side that ended first is the reason
            self.close_reason = (
                "server closed" if direction is Direction.SERVER else "client closed"
            )
        try:
            if isinstance(sink, trio.abc.HalfCloseableStream):
                await sink.send_eof()
                return
            if isinstance(sink, trio.SSLStream) and id(sink) not in self.closing:
                if direction is Direction.CLIENT:
                    await self.wait_for_answers()
                self.closing.add(id(sink))
                sent = False
                with trio.move_on_after(self.config.close_linger):
                    sent = await send_close_notify(sink)
                if sent:
                    await self.linger(direction, cancel_scope)
                    return
            self.closed_by_us.add(id(sink))
            with trio.move_on_after(self.config.close_linger):
                await sink.aclose()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def wait_for_answers(self) -> None:
        """Wait while commands await answers and the server sent something in the last
        ``close_linger`` seconds."""
        linger = self.config.close_linger
        while self.observer.awaiting_answers and not self.ended[Direction.SERVER].is_set():
            self.server_activity = trio.Event()
            with trio.move_on_after(linger):
                await self.server_activity.wait()
            if not self.server_activity.is_set():
                self.log.info("session.close_linger", side="server", linger_s=linger)
                return

    async def linger(self, direction: Direction, cancel_scope: trio.CancelScope) -> None:
        """Give the other direction ``close_linger`` seconds to end after a close_notify."""
        other = Direction.SERVER if direction is Direction.CLIENT else Direction.CLIENT
        with trio.move_on_after(self.config.close_linger):
            await self.ended[other].wait()
        if not self.ended[other].is_set():
            side = "server" if other is Direction.SERVER else "client"
            self.log.info("session.close_linger", side=side, linger_s=self.config.close_linger)
            cancel_scope.cancel()

    async def no_greeting(self) -> None:
        """The greeting deadline passed without a complete greeting line: say so.

        The client gets a ``-ERR`` line only if the server sent nothing at all.
        """
        timeout = self.config.greeting_timeout
        self.log.warning(
            "upstream.no_greeting", upstream=str(self.config.upstream), timeout=timeout
        )
        self.record_event("greeting_timeout", timeout=timeout)
        self.close_reason = "upstream sent no greeting"
        if self.observer.summary().server_bytes == 0:
            await self.refuse_client(
                f"upstream {self.config.upstream} sent no greeting in {timeout:g}s"
            )

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
            listen=self.listen_address(),
        )
        self.open_capture(client_peer)
        try:
            if config.tls.listen_tls and not await self.accept_client_tls():
                return
            await self.connect_and_relay()
        finally:
            with trio.CancelScope(shield=True):
                await self.finish()

    def listen_address(self) -> str:
        """Where this client connected: the real port, also when the relay bound port 0."""
        sock = _socket_of(self.client)
        try:
            host, port = sock.getsockname()[:2]
        except (AttributeError, OSError):
            return str(self.config.listen)
        return str(Endpoint(str(host), int(port)))

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
        if config.tls.upstream_tls and not await self.connect_upstream_tls():
            return
        timeout = self.config.greeting_timeout
        if timeout is not None:
            self.greeting_deadline = trio.current_time() + timeout
        armed = self.faults.on_greeting_expected() if self.faults is not None else None
        if armed is not None:
            self.record_event("fault", seq=0, spec=armed.fault.spec)
        while True:
            self.switch = None
            async with trio.open_nursery() as pumps:
                pumps.start_soon(
                    self.pump, self.client, self.upstream, Direction.CLIENT, pumps.cancel_scope
                )
                pumps.start_soon(
                    self.pump, self.upstream, self.client, Direction.SERVER, pumps.cancel_scope
                )
            switch = self.switch
            if switch is None or not await self.intercept_stls(switch):
                break

    # -- TLS -----------------------------------------------------------------------------

    async def accept_client_tls(self) -> bool:
        """Implicit TLS with the client (RFC 8314 §3), before the upstream is contacted."""
        try:
            server_tls = self.relay.server_tls()
        except TlsSetupError as exc:
            self.tls_failed("client", str(exc))
            return False
        tls = await self.handshake("client", self.client, server_tls.context, server_tls)
        if tls is None:
            return False
        self.client = tls
        return True

    async def connect_upstream_tls(self) -> bool:
        """Implicit TLS with the upstream (RFC 8314 §3); a failure refuses the client."""
        try:
            context = self.relay.tls.upstream()
        except TlsSetupError as exc:
            reason = str(exc)
        else:
            assert self.upstream is not None
            tls = await self.handshake("server", self.upstream, context, None)
            if tls is not None:
                self.upstream = tls
                return True
            reason = self.close_reason
        upstream = str(self.config.upstream)
        await self.refuse_client(f"TLS with upstream {upstream} failed: {reason}")
        return False

    async def handshake(
        self,
        leg: str,
        stream: trio.abc.Stream,
        context: Any,
        server_tls: ServerTls | None,
    ) -> trio.SSLStream[trio.abc.Stream] | None:
        """One bounded TLS handshake; logs and records the outcome; None on failure."""
        timeout = self.config.tls.handshake_timeout
        try:
            with trio.fail_after(timeout):
                if leg == "client":
                    tls = await server_handshake(stream, context)
                else:
                    tls = await client_handshake(stream, context, self.config.upstream.host)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError) as exc:
            own_ca = server_tls is None or server_tls.ca is not None
            reason = describe_failure(
                exc, leg=leg, host=self.config.upstream.host, own_ca=own_ca, timeout=timeout
            )
            self.tls_failed(leg, reason)
            return None
        info = tls_info(tls, server=server_tls)
        self.log.info("tls.handshake", leg=leg, **info)
        self.record_event("tls_handshake", leg=leg, **info)
        return tls

    def tls_failed(self, leg: str, reason: str) -> None:
        """A handshake (or TLS setup) failed on ``leg``: the session ends, both legs close."""
        self.log.error("tls.failed", leg=leg, reason=reason)
        self.record_event("tls_failed", leg=leg, reason=reason)
        self.close_reason = f"TLS failed ({leg}): {reason}"

    async def intercept_stls(self, switch: StartTls) -> bool:
        """Both pumps stopped at the STLS switch point: TLS with both sides (RFC 2595 §4).

        The server leg comes first, so a server that cannot be verified never sees the
        client's session go on. Returns False when the session must end.
        """
        injected = {"c2s": switch.client_trailing, "s2c": switch.server_trailing}
        if switch.client_trailing or switch.server_trailing:
            self.log.warning(
                "tls.injection",
                client_bytes=switch.client_trailing,
                server_bytes=switch.server_trailing,
                note="plaintext sent after STLS before TLS (CVE-2011-0411 class): dropped",
            )
            self.record_event("stls_injection", **injected)
        self.log.info("tls.stls", note="intercepting STLS: TLS with the server, then the client")
        try:
            context = self.relay.tls.upstream()
        except TlsSetupError as exc:
            self.tls_failed("server", str(exc))
            return False
        assert self.upstream is not None
        upstream = await self.handshake("server", self.upstream, context, None)
        if upstream is None:
            return False
        self.upstream = upstream
        try:
            server_tls = await trio.to_thread.run_sync(self.relay.server_tls)
        except TlsSetupError as exc:
            self.tls_failed("client", str(exc))
            return False
        client = await self.handshake("client", self.client, server_tls.context, server_tls)
        if client is None:
            return False
        self.client = client
        self.stls_client_end = None
        # Plaintext lines still held (injected after STLS) are masked and written on this
        # side of the switch.
        self.observer.abandon_client_lines()
        self.record_released_client()
        # The capture reader resumes parsing at this record; decrypted bytes follow.
        self.record_event(
            "tls",
            mode="stls",
            seq=switch.seq,
            dropped_c2s=injected["c2s"],
            dropped_s2c=injected["s2c"],
        )
        self.observer.resume_after_tls()
        return True

    async def upstream_failed(self, reason: str) -> None:
        upstream = str(self.config.upstream)
        self.log.error("upstream.unreachable", upstream=upstream, error=reason)
        self.record_event("upstream_connect_failed", upstream=upstream, error=reason)
        self.close_reason = "upstream unreachable"
        await self.refuse_client(f"cannot reach upstream {upstream}: {reason}")

    async def finish(self) -> None:
        """Close both legs and the capture, and log the session summary."""
        if self.relay.aborted and self.close_reason == "closed":
            self.close_reason = "shutdown (closed at once by a second signal)"
        elif self.relay.shutting_down and self.close_reason == "closed":
            self.close_reason = "shutdown"
        for stream in (self.client, self.upstream):
            if type(stream) is trio.SocketStream:
                stream.socket.close()  # what aclose does, without its checkpoint
            elif stream is not None:
                if isinstance(stream, trio.SSLStream) and id(stream) not in self.closing:
                    # An orderly close by pop3tap itself (shutdown, a peer that is gone
                    # elsewhere): close_notify first, never waiting long (RFC 8446 §6.1).
                    self.closing.add(id(stream))
                    with trio.move_on_after(1):
                        await send_close_notify(stream)
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
            # Client lines that never got a verdict are masked (the facts are missing).
            self.observer.abandon_client_lines()
            self.record_released_client()
            self.capture.close(at, self.close_reason, fields)
            self.check_capture()


class _NoGreeting(Exception):
    """The upstream did not complete its greeting line before the greeting deadline."""


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
    sock = _socket_of(stream)
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

    def __init__(self, config: RelayConfig, *, sockets: list[socket.socket] | None = None) -> None:
        self.config = config
        #: Listening sockets bound beforehand (``--workers``); None: bind ``config.listen``.
        self.sockets = sockets
        self.tls_prepared = False
        self.shutting_down = False
        #: True once :meth:`abort` closed the open sessions without waiting.
        self.aborted = False
        self.active_sessions = 0
        self.total_sessions = 0
        self._accept_scope = trio.CancelScope()
        self._handlers: trio.Nursery | None = None
        self.listeners: list[trio.SocketListener] = []
        self.tls = TlsContexts(
            config.tls, upstream_host=config.upstream.host, listen_host=config.listen.host
        )
        #: The faults every session is subject to; tests may change them while it runs.
        self.faults = FaultPlan(config.faults)

    def server_tls(self) -> ServerTls:
        """What clients are shown; builds it (maybe creating pop3tap's CA) on first use."""
        fresh = not self.tls.server_ready
        server = self.tls.server()
        if fresh:
            warn_if_ca_created(logger, server)
            logger.info(
                "tls.certificate",
                subject=server.cert_subject,
                sha256=server.cert_sha256,
                ca=None if server.ca is None else str(server.ca.cert_path),
            )
        return server

    def prepare_tls(self) -> None:
        """Build the TLS contexts the options need now, so setup errors show at startup.

        Raises :class:`~pop3tap.tls.TlsSetupError`.
        """
        self.tls_prepared = True
        tls = self.config.tls
        if tls.insecure_upstream:
            logger.warning(
                "tls.insecure_upstream",
                upstream=str(self.config.upstream),
                note="upstream certificates are NOT verified: anyone on the path can "
                "read and change the session",
            )
        if tls.keylog is not None:
            logger.warning(
                "tls.keylog",
                path=str(tls.keylog),
                note="TLS secrets are written there: whoever reads it can decrypt the traffic",
            )
        if tls.upstream_tls or tls.upstream_ca is not None or tls.insecure_upstream:
            self.tls.upstream()
        if tls.listen_tls or tls.cert is not None:
            self.server_tls()

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
        if not self.tls_prepared:
            self.prepare_tls()
        self.listeners = await open_listeners(listen.host, listen.port, self.sockets)
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

    def abort(self) -> None:
        """Close every open session now; each still writes its capture's close record."""
        self.aborted = True
        self.shutdown()
        if self._handlers is not None:
            self._handlers.cancel_scope.cancel()

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
