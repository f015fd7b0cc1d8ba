"""One relay session: a client connection, its upstream, two pumps and a recorder.

The relay never sends a byte of its own to the server; in particular it never sends QUIT
for a client that went away, since a POP3 server deletes marked messages only after QUIT
(RFC 1939 §6). The one line it may send the client is ``-ERR [SYS/TEMP]`` when the
upstream cannot be reached at all (RFC 2449 §8.1.3 response code), in place of a greeting.
"""

from __future__ import annotations

import contextlib
import functools
from typing import TYPE_CHECKING

import trio

from pop3tap import __version__
from pop3tap.capture import CloseReason, EventName
from pop3tap.faults import ConnectionFaults
from pop3tap.log import get_logger
from pop3tap.protocol import Direction
from pop3tap.relay import _legs
from pop3tap.relay._config import open_plain_upstream
from pop3tap.relay._faults import FaultGate
from pop3tap.relay._pumps import ClientPump, ServerPump
from pop3tap.relay._recorder import SessionRecorder
from pop3tap.relay._stls import StlsGate
from pop3tap.server import error_line, format_peer, local_address, one_line_reason, socket_of
from pop3tap.server._net import Endpoint
from pop3tap.tls import send_close_notify

if TYPE_CHECKING:
    from pop3tap.relay._server import RelayServer

logger = get_logger("pop3tap.relay")
#: Events worked off per step before other sessions get a turn (see ``catch_up``).
WORK_BUDGET = 32

#: What names pop3tap in the one line it writes in the server's place (RFC 2449 §8.1.3).
ERR_PREFIX = "[SYS/TEMP] pop3tap"


def _seconds_since(started: float) -> float:
    """Seconds of trio time since ``started``."""
    return trio.current_time() - started


class ServerActivity:
    """Set whenever server bytes are parsed or the server's stream ends; a wait renews it.

    The recorder is handed this object's :meth:`set` (and a clock that is no bound method
    of the session either), so a session and its recorder form no reference cycle: a
    finished session, its capture writer and its sockets are freed at once by reference
    counting, not later by the cycle collector with the garbage of every session before.
    """

    def __init__(self) -> None:
        self.event = trio.Event()

    def set(self) -> None:
        self.event.set()

    def renew(self) -> trio.Event:
        """A fresh event, set by the next activity."""
        self.event = trio.Event()
        return self.event


class RelaySession:
    """One client connection and its upstream: two pumps, one recorder, one STLS gate."""

    def __init__(self, relay: RelayServer, client: trio.abc.Stream, session_id: str) -> None:
        self.relay = relay
        self.config = relay.config
        self.client = client
        self.upstream: trio.abc.Stream | None = None
        self.session_id = session_id
        self.started = trio.current_time()
        self.close_reason: str = CloseReason.CLOSED
        #: When the greeting line must be complete (trio time), or None for no limit.
        self.greeting_deadline: float | None = None
        #: Each direction's stream ended (EOF or reset).
        self.ended = {Direction.CLIENT: trio.Event(), Direction.SERVER: trio.Event()}
        #: Set whenever server bytes are parsed or the server's stream ends.
        self.server_activity = ServerActivity()
        #: TLS streams pop3tap sent close_notify on, or set to close with a reset (by id).
        self.closing: set[int] = set()
        #: Streams pop3tap closed itself (errors reading them afterwards are expected).
        self.closed_by_us: set[int] = set()
        self.log = logger.bind()
        #: Faults on what the client receives (docs/faults.md); None without faults, so a
        #: relay without them does no fault work at all.
        self.faults: FaultGate | None = None
        if relay.faults:
            self.faults = FaultGate(ConnectionFaults(relay.faults, relay.total_sessions))
        self.stls = StlsGate(intercept=self.config.tls.intercept_stls)
        self.recorder = SessionRecorder(
            log=self.log,
            clock=functools.partial(_seconds_since, self.started),
            stls=self.stls,
            max_line=self.config.max_line,
            keep_secrets=self.config.keep_secrets,
            faults=self.faults,
            on_server_activity=self.server_activity.set,
        )

    def now(self) -> float:
        return trio.current_time() - self.started

    def stream_ended(self, direction: Direction, kind: str) -> None:
        self.ended[direction].set()
        self.server_activity.set()
        self.recorder.ended(direction, kind)

    async def catch_up(self, *, shield: bool = False) -> None:
        """Parse the server bytes already forwarded, a bounded amount between checkpoints,
        so one session's burst of answers cannot hold up the others.

        ``shield``: finish even if the pumps are cancelled meanwhile (what follows must be
        recorded after these bytes).
        """
        if not self.recorder.work(WORK_BUDGET):
            return  # the usual case: done without a checkpoint (or a cancel scope)
        with trio.CancelScope(shield=shield):
            await trio.lowlevel.checkpoint()
            while self.recorder.work(WORK_BUDGET):
                await trio.lowlevel.checkpoint()

    # -- lifecycle -----------------------------------------------------------------------

    async def run(self) -> None:
        config = self.config
        client_peer = format_peer(self.client)
        self.log.info(
            "session.open",
            client=client_peer,
            upstream=str(config.upstream),
            listen=self.listen_address(),
        )
        if config.captures is not None:
            self.recorder.open_capture(config.captures, self.session_id, self.header(client_peer))
        try:
            if config.tls.listen_tls and not await _legs.accept_client_tls(self):
                return
            await self.connect_and_relay()
        finally:
            with trio.CancelScope(shield=True):
                await self.finish()

    def header(self, client_peer: str) -> dict[str, object]:
        """The capture header's fields."""
        config = self.config
        return {
            "pop3tap": __version__,
            "client": client_peer,
            "listen": str(config.listen),
            "upstream": str(config.upstream),
            "secrets": "kept" if config.keep_secrets else "masked",
            "options": self.relay.header_options,
        }

    def listen_address(self) -> str:
        """Where this client connected: the real port, also when the relay bound port 0."""
        if self.relay.accepted_on is not None:
            return self.relay.accepted_on
        sock = socket_of(self.client)
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
        except (OSError, trio.BrokenResourceError) as exc:  # e.g. a failed TLS handshake
            await self.upstream_failed(one_line_reason(exc))
            return
        local = local_address(self.upstream)
        self.log.info("upstream.connected", upstream=str(config.upstream), local=local)
        self.recorder.record_event(EventName.UPSTREAM_CONNECTED, local=local)
        if config.tls.upstream_tls and not await _legs.connect_upstream_tls(self):
            return
        if config.greeting_timeout is not None:
            self.greeting_deadline = trio.current_time() + config.greeting_timeout
        armed = self.faults.on_greeting_expected() if self.faults is not None else None
        if armed is not None:
            self.recorder.record_event(EventName.FAULT, seq=0, spec=armed.fault.spec)
        while True:
            self.stls.switch = None
            async with trio.open_nursery() as pumps:
                pumps.start_soon(ClientPump(self, pumps.cancel_scope).run)
                pumps.start_soon(ServerPump(self, pumps.cancel_scope).run)
            switch = self.stls.switch
            if switch is None or not await _legs.intercept_stls(self, switch):
                break

    async def wait_for_answers(self) -> None:
        """Wait while commands await answers and the server sent something in the last
        ``close_linger`` seconds."""
        linger = self.config.close_linger
        observer = self.recorder.observer
        while observer.awaiting_answers and not self.ended[Direction.SERVER].is_set():
            activity = self.server_activity.renew()
            with trio.move_on_after(linger):
                await activity.wait()
            if not activity.is_set():
                self.log.info("session.close_linger", side="server", linger_s=linger)
                return

    async def no_greeting(self) -> None:
        """The greeting deadline passed without a complete greeting line: say so.

        The client gets a ``-ERR`` line only if the server sent nothing at all.
        """
        timeout = self.config.greeting_timeout
        upstream = self.config.upstream
        self.log.warning("upstream.no_greeting", upstream=str(upstream), timeout=timeout)
        self.recorder.record_event(EventName.GREETING_TIMEOUT, timeout=timeout)
        self.close_reason = CloseReason.NO_GREETING
        if self.recorder.observer.summary().server_bytes == 0:
            await self.refuse_client(f"upstream {upstream} sent no greeting in {timeout:g}s")

    async def upstream_failed(self, reason: str) -> None:
        upstream = str(self.config.upstream)
        self.log.error("upstream.unreachable", upstream=upstream, error=reason)
        self.recorder.record_event(
            EventName.UPSTREAM_CONNECT_FAILED, upstream=upstream, error=reason
        )
        self.close_reason = CloseReason.UPSTREAM_UNREACHABLE
        await self.refuse_client(f"cannot reach upstream {upstream}: {reason}")

    async def refuse_client(self, reason: str) -> None:
        """Tell the client why there is no server: the only bytes pop3tap ever writes."""
        with trio.move_on_after(5):
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self.client.send_all(error_line(ERR_PREFIX, reason))

    async def finish(self) -> None:
        """Close both legs and the capture, and log the session summary."""
        if self.relay.aborted and self.close_reason == CloseReason.CLOSED:
            self.close_reason = CloseReason.SHUTDOWN_AT_ONCE
        elif self.relay.shutting_down and self.close_reason == CloseReason.CLOSED:
            self.close_reason = CloseReason.SHUTDOWN
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
        await self.catch_up()  # finish shields it
        self.recorder.close(self.close_reason)
