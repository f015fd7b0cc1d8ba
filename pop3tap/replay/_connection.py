"""One client of a replay server: the trio I/O under byte replay and the mailbox model.

What the client sent is read by the protocol core's server-role reader
(:class:`~pop3tap.protocol.ClientReader`): bounded lines, SASL answers, and plaintext
injected after STLS (dropped, never answered; the CVE-2011-0411 class). This module only
moves bytes: it paces recorded answers, bounds every wait by the idle timeout, upgrades to
TLS (implicit, RFC 8314 §3, or after STLS, RFC 2595 §4), carries out faults and closes the
way the recorded server did. :class:`ReplayConnection` is the base of
:class:`~pop3tap.replay._bytes.ByteReplayConnection` and
:class:`~pop3tap.replay._model.ModelConnection`, which decide what to answer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import socket
from typing import TYPE_CHECKING, Any

import trio

from pop3tap._fastio import plain_fd, receive_some, reset_on_close, send_now
from pop3tap._faultio import Delivery, deliver
from pop3tap.capture import CloseReason
from pop3tap.faults import ConnectionFaults, Fault, FaultAction, FaultError, parse_fault
from pop3tap.log import get_logger
from pop3tap.protocol import (
    NEED_DATA,
    ClientReader,
    Command,
    EndOfInput,
    LineTooLong,
    PlaintextAfterStls,
    SaslLine,
    TlsData,
)
from pop3tap.replay._recorded import Segment
from pop3tap.server import HandshakeFailed, accept_tls, error_line, format_peer
from pop3tap.tls import send_close_notify, tls_info

if TYPE_CHECKING:
    from pop3tap.replay._server import ReplayServer

logger = get_logger("pop3tap.replay")

#: What the one ``-ERR`` line pop3tap replay writes itself starts with, after ``-ERR ``.
ERR_PREFIX = "pop3tap replay"
#: Bytes asked of the kernel per receive.
RECEIVE_SIZE = 64 * 1024
#: The longest recorded pause reproduced when there is no idle limit (seconds).
_MAX_RECORDED_PAUSE = 600.0


class LineTooLongError(Exception):
    """The client sent a line longer than ``max_line``."""


class IdleError(Exception):
    """The client sent (or read) nothing for the idle timeout."""


class ClosedError(Exception):
    """The client is gone."""


class _StlsTransport(trio.abc.HalfCloseableStream):
    """The client transport right after an STLS ``+OK`` (RFC 2595 §4), for the handshake.

    Until the first TLS record, received bytes go through the reader, which drops the
    plaintext and says where TLS begins; after it, bytes pass untouched.
    """

    def __init__(self, inner: trio.abc.Stream, reader: ClientReader) -> None:
        self.inner = inner
        self.reader = reader
        self.passing = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        while not self.passing:
            event = self.reader.next_event()
            if isinstance(event, TlsData):
                self.passing = True
                return event.data
            if isinstance(event, PlaintextAfterStls):
                if event.overflow:
                    raise trio.BrokenResourceError("too much plaintext after STLS")
                continue
            if isinstance(event, EndOfInput):
                return b""
            data = bytes(await self.inner.receive_some(max_bytes))
            if data:
                self.reader.receive_data(data)
            else:
                self.reader.receive_eof()
        return await self.inner.receive_some(max_bytes)

    @property
    def socket(self) -> Any:
        """The socket under (so a reset can be set on it), or None."""
        return getattr(self.inner, "socket", None)

    async def send_eof(self) -> None:
        """Half-close the TCP stream under (after a TLS ``close_notify``)."""
        if isinstance(self.inner, trio.abc.HalfCloseableStream):
            await self.inner.send_eof()

    async def aclose(self) -> None:
        await self.inner.aclose()


def _shutdown_write(stream: trio.abc.Stream) -> None:
    """Send FIN on a plain TCP stream now, as ``send_eof`` does without its checkpoint."""
    with contextlib.suppress(OSError):
        stream.socket.shutdown(socket.SHUT_WR)  # type: ignore[attr-defined]


def recorded_fault(spec: str | None) -> Fault | None:
    """The fault a capture's ``fault`` record names (None if none, or not parseable)."""
    if spec is None:
        return None
    try:
        return parse_fault(spec)
    except FaultError:
        logger.warning("replay.bad_fault_record", spec=spec[:200])
        return None


class ReplayConnection:
    """One client: reading, sending, TLS and closing; subclasses implement :meth:`serve`."""

    def __init__(self, server: ReplayServer, stream: trio.abc.Stream, number: int) -> None:
        self.server = server
        self.config = server.config
        self.stream = stream
        #: The descriptor under a plain TCP stream (None for TLS and memory streams).
        self.fd = plain_fd(stream)
        self.number = number
        #: ``config.speed``, worked out once: 0 sends recorded answers without delays.
        self.speed = self.config.speed
        idle = self.config.idle_timeout
        self._idle_seconds = math.inf if idle is None else idle
        #: Bounds each wait for a client line by the idle timeout: armed (a deadline) only
        #: while :meth:`_receive` waits, so one scope serves the whole session instead of
        #: one per line (see :meth:`run`).
        self._idle = trio.CancelScope()
        self._idle_entered = False
        self.reader = ClientReader(max_line=self.config.max_line)
        self.reason: str = CloseReason.CLIENT_CLOSED
        #: The client leg is TLS (implicit, or after STLS).
        self.tls_up = False
        self.log = logger.bind(client=format_peer(stream))
        self.faults = ConnectionFaults(server.faults, number)
        #: A fault asked for a reset: close without the linger (which would send a FIN).
        self.reset_on_close = False

    async def serve(self) -> None:
        """Greet the client and answer it until the session ends."""
        raise NotImplementedError

    def tls_started(self) -> None:
        """TLS came up after STLS (RFC 2595 §4)."""

    def closes_with_reset(self) -> bool:
        """Whether to end the connection with a TCP reset, as the recorded server did."""
        return False

    # -- reading ---------------------------------------------------------------------------

    async def next_line(self) -> Command | SaslLine | None:
        """The client's next line (None at the end of its stream)."""
        reader = self.reader
        while True:
            event = reader.next_event()
            if type(event) is Command or type(event) is SaslLine:
                return event
            if event is NEED_DATA:
                data = await self._receive()
                if data:
                    reader.receive_data(data)
                else:
                    reader.receive_eof()
                continue
            if isinstance(event, LineTooLong):
                raise LineTooLongError
            return None

    async def _receive(self) -> bytes:
        """The client's next bytes (b"" at its end), waiting at most the idle timeout.

        The wait is bounded by the session's idle scope, armed here and disarmed after, so
        a line costs two deadline updates rather than a cancel scope of its own. Outside
        :meth:`run` (no idle scope entered) the wait gets a scope of its own.
        """
        idle = self._idle
        if not self._idle_entered:
            with trio.move_on_after(self._idle_seconds):
                return await self._receive_now()
            raise IdleError
        idle.deadline = trio.current_time() + self._idle_seconds
        try:
            return await self._receive_now()
        finally:
            idle.deadline = math.inf

    async def _receive_now(self) -> bytes:
        try:
            return await receive_some(self.stream, self.fd, RECEIVE_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return b""

    # -- sending ---------------------------------------------------------------------------

    async def send(self, segment: Segment) -> None:
        """Send recorded bytes, with the recorded delay and pacing unless timing is fast."""
        speed = self.speed
        if speed == 0 or (segment.delay == 0 and len(segment.pacing) <= 1):
            await self.send_all(segment.data)
            return
        start = trio.current_time()
        latest = start + self.longest_pause
        await trio.sleep_until(min(start + segment.delay / speed, latest))
        offsets = [offset for offset, _t in segment.pacing] + [len(segment.data)]
        for (offset, at), end in zip(segment.pacing, offsets[1:], strict=True):
            await trio.sleep_until(min(start + (segment.delay + at) / speed, latest))
            await self.send_all(segment.data[offset:end])

    @property
    def longest_pause(self) -> float:
        """A recorded pause, or a recorded fault's delay, never holds a client longer than
        the idle limit (:data:`_MAX_RECORDED_PAUSE` without one): a capture is input too."""
        idle = self.config.idle_timeout
        return idle if idle is not None else _MAX_RECORDED_PAUSE

    def fault_of_record(self, spec: str | None) -> Fault | None:
        """The fault a capture's record names (:func:`recorded_fault`), its delay held to
        :attr:`longest_pause`."""
        fault = recorded_fault(spec)
        longest = self.longest_pause
        if fault is not None and fault.action is FaultAction.DELAY and fault.amount > longest:
            return dataclasses.replace(fault, amount=longest)
        return fault

    async def send_all(self, data: bytes) -> None:
        """Send ``data`` now, within the idle limit."""
        if not data:
            return
        try:
            sent = send_now(self.stream, data)
        except trio.BrokenResourceError:
            raise ClosedError from None
        if sent == len(data):
            return
        idle = self.config.idle_timeout
        with trio.move_on_after(idle if idle is not None else float("inf")):
            try:
                await self.stream.send_all(memoryview(data)[sent:])
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise ClosedError from None
            return
        raise IdleError

    async def send_error(self, text: str) -> None:
        """One ``-ERR`` line naming pop3tap (RFC 1939 §3 status indicator)."""
        await self.send_all(error_line(ERR_PREFIX, text))

    async def greet(self, greeting: Segment, recorded: Fault | None = None) -> bool:
        """Send the greeting, or what a greeting fault makes of it; False: the session ends."""
        fault = self.faults.choose("greeting") or recorded
        if fault is None:
            await self.send(greeting)
            return True
        ended = await self.deliver(greeting.data, fault, 0, "greeting")
        if ended is not None:
            self.reason = ended
            return False
        return True

    async def deliver(self, data: bytes, fault: Fault, seq: int, command: str) -> str | None:
        """Send one answer as ``fault`` says; the reason the session ends, or None."""
        delivery = Delivery(
            self.send_all, self.stream, self.log, wait_for_client_close=self._wait_client_gone
        )
        ended = await deliver(delivery, data, fault, seq=seq, command=command)
        if fault.action is FaultAction.RESET:
            self.reset_on_close = True
        return ended

    async def _wait_client_gone(self) -> None:
        """Read and drop what the client sends until it leaves (or the idle limit)."""
        idle = self.config.idle_timeout
        with trio.move_on_after(idle if idle is not None else float("inf")):
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                while await self.stream.receive_some(RECEIVE_SIZE):
                    pass

    # -- session ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the client; the errors that end a session get their ``-ERR`` and log line."""
        if self.config.listen_tls and not await self.start_tls(self.stream, mode="implicit"):
            return
        try:
            await self._serve_within_idle_limit()
        except LineTooLongError:
            self.reason = "line too long"
            self.log.warning("replay.line_too_long", max_line=self.config.max_line)
            with contextlib.suppress(ClosedError, IdleError):
                await self.send_error(f"line too long (limit {self.config.max_line} bytes)")
        except IdleError:
            self.reason = "idle timeout"
            self.log.info("replay.idle_timeout", seconds=self.config.idle_timeout)
            with contextlib.suppress(ClosedError, IdleError), trio.move_on_after(5):
                await self.send_error("idle timeout, closing")
        except ClosedError:
            self.reason = CloseReason.CLIENT_GONE

    async def _serve_within_idle_limit(self) -> None:
        """:meth:`serve` inside the session's idle scope; :class:`IdleError` when it fired."""
        self._idle_entered = True
        try:
            with self._idle:
                await self.serve()
        finally:
            self._idle_entered = False
        if self._idle.cancelled_caught:
            raise IdleError

    async def upgrade(self) -> bool:
        """TLS after the recorded STLS ``+OK`` (RFC 2595 §4); False when the session ends.

        Client bytes already read past the STLS line, or sent before the ClientHello,
        are dropped and logged, never answered.
        """
        self.reader.start_tls()
        ok = await self.start_tls(_StlsTransport(self.stream, self.reader), mode="stls")
        if self.reader.injected:
            self.log.warning(
                "replay.stls_injection",
                client_bytes=self.reader.injected,
                note="plaintext sent after STLS before TLS (CVE-2011-0411 class): dropped",
            )
        if ok:
            self.tls_started()
        return ok

    async def start_tls(self, transport: trio.abc.Stream, *, mode: str) -> bool:
        """A bounded TLS handshake as server with the client; logs which leg failed and why."""
        server_tls = self.server.tls
        if server_tls is None:  # pragma: no cover - the server builds it when needed
            self.reason = "TLS needed but not configured"
            return False
        timeout = self.config.tls_timeout
        try:
            tls = await accept_tls(transport, server_tls, seconds=timeout)
        except HandshakeFailed as exc:
            reason = exc.reason
            self.log.warning("replay.tls_failed", leg="client", mode=mode, reason=reason)
            self.reason = f"TLS failed (client): {reason}"
            return False
        self.log.info("replay.tls", leg="client", mode=mode, **tls_info(tls, server=server_tls))
        self.stream = tls
        self.fd = None
        self.reader.tls_established()
        self.tls_up = True
        return True

    async def close(self) -> None:
        """End the connection (the linger unless a reset or an abort asks otherwise)."""
        # A second stop signal (abort) closes at once, without the linger.
        if not self.reset_on_close and not self.server.aborted:
            await self._linger()
        stream = self.stream
        if type(stream) is trio.SocketStream:
            stream.socket.close()  # what aclose does, without its checkpoint
            return
        with trio.move_on_after(1):
            await trio.aclose_forcefully(stream)

    async def finish(self) -> None:
        """Close, then log how the session ended."""
        await self.close()

    async def _linger(self) -> None:
        """End the connection the way the recorded server did, then drop what the client
        still sends for a moment.

        An orderly close over TLS sends ``close_notify`` first (RFC 8446 §6.1), so a client
        such as ``openssl s_client`` sees a clean end, not a truncation; a plain one sends
        FIN. Where the recorded server reset the connection, so does the replay. Closing a
        TCP socket with unread input sends a reset, which can destroy our last line before
        the client reads it; reading a bounded amount (for one second) avoids that.
        """
        stream = self.stream
        if self.closes_with_reset():
            reset_on_close(stream)
            return
        with trio.move_on_after(1):
            try:
                if self.fd is not None:
                    _shutdown_write(stream)
                elif isinstance(stream, trio.SSLStream):
                    if not await send_close_notify(stream):
                        return
                elif isinstance(stream, trio.abc.HalfCloseableStream):
                    await stream.send_eof()
                else:
                    return
                discarded = 0
                while discarded < (1 << 20):
                    data = await receive_some(stream, self.fd, RECEIVE_SIZE)
                    if not data:
                        return
                    discarded += len(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
