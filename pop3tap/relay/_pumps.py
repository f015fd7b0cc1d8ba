"""The two pumps of a relay session: client to server, and server to client.

Each chunk is sent on as soon as it arrives. Server bytes are written to the capture just
before they are forwarded and parsed just after, in bounded steps; client bytes are
captured first, and parsed before they are forwarded where they may hold an STLS line
(it must be seen first), else after, in bounded steps like the answers (at once while
faults are armed). The exceptions parse server bytes first: until the greeting is
seen, while STLS waits for its answer, while masked client lines wait for the answer
that tells what they were, and while a fault waits for the answer it hits.

A pump that must end the session cancels the pumps' scope and stops (:class:`PumpStopped`);
an end of stream is passed on to the other side as the peer sent it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, NoReturn

import trio

from pop3tap._fastio import plain_fd, read_now, receive_some, reset_on_close, send_all
from pop3tap._faultio import pace
from pop3tap.capture import CloseReason, EventName
from pop3tap.protocol import Direction
from pop3tap.relay._config import RECEIVE_SIZE
from pop3tap.relay._faults import StepKind
from pop3tap.server import one_line_reason
from pop3tap.tls import is_tls_end, send_close_notify

if TYPE_CHECKING:
    from pop3tap.relay._session import RelaySession

#: The close reason when a pump's source resets, or ends first.
_RESET_BY: Final = {
    Direction.CLIENT: CloseReason.CLIENT_RESET,
    Direction.SERVER: CloseReason.SERVER_RESET,
}
_CLOSED_BY: Final = {
    Direction.CLIENT: CloseReason.CLIENT_CLOSED,
    Direction.SERVER: CloseReason.SERVER_CLOSED,
}
#: The close reason when a pump cannot send to its sink (the other side is gone).
_GONE_WHEN_SENDING: Final = {
    Direction.CLIENT: CloseReason.SERVER_GONE,
    Direction.SERVER: CloseReason.CLIENT_GONE,
}


class PumpStopped(Exception):
    """This pump is done; the session's pumps' scope was cancelled if it must end."""


class Pump:
    """One direction of a running session, from ``source`` to ``sink``."""

    direction: Direction

    def __init__(self, session: RelaySession, scope: trio.CancelScope) -> None:
        self.session = session
        self.scope = scope
        client, upstream = session.client, session.upstream
        assert upstream is not None
        self.source, self.sink = (
            (client, upstream) if self.direction is Direction.CLIENT else (upstream, client)
        )
        self.side = "client" if self.direction is Direction.CLIENT else "server"

    async def run(self) -> None:
        """Forward ``source`` to ``sink`` until end of stream, then propagate it."""
        fd = plain_fd(self.source)
        try:
            while True:
                try:
                    data = await self.receive(fd)
                except trio.BrokenResourceError as exc:
                    await self.broken(exc)
                    return
                except trio.ClosedResourceError:
                    return
                if not data:
                    await self.session.catch_up(shield=True)
                    self.session.stream_ended(self.direction, EventName.EOF)
                    await self.propagate_eof()
                    return
                await self.forward(data)
        except PumpStopped:
            return

    async def receive(self, fd: int | None) -> bytes:
        return await receive_some(self.source, fd, RECEIVE_SIZE)

    async def forward(self, data: bytes) -> None:
        raise NotImplementedError

    async def broken(self, exc: trio.BrokenResourceError) -> None:
        """The source failed: an end of stream for TLS without close_notify, else a reset."""
        session = self.session
        if id(self.source) in session.closed_by_us:
            return
        if is_tls_end(self.source, exc):
            # The peer closed TCP without a TLS close_notify, as many servers do, or sent
            # its close_notify after ours: an end of stream, not a reset (RFC 8446 §6.1).
            if id(self.source) not in session.closing:
                session.log.info("tls.no_close_notify", side=self.side)
            await session.catch_up(shield=True)
            session.stream_ended(self.direction, EventName.EOF)
            await self.propagate_eof()
            return
        # A reset (or a TLS failure) on the receiving side: pass it on as a reset.
        session.log.info("session.reset", side=self.side, error=one_line_reason(exc))
        session.close_reason = _RESET_BY[self.direction]
        await session.catch_up(shield=True)
        session.stream_ended(self.direction, EventName.RESET)
        session.closing.add(id(self.sink))
        reset_on_close(self.sink)
        self.scope.cancel()

    async def send(self, data: bytes, *, after_write: Callable[[], None] | None = None) -> None:
        """Send to ``sink``; on failure end the session (raises :class:`PumpStopped`).

        ``after_write`` runs right after the first write attempt, even a failed one (see
        ``send_all``).
        """
        if not data:
            if after_write is not None:
                after_write()
            return
        try:
            await send_all(self.sink, data, after_write)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            session = self.session
            other = "server" if self.direction is Direction.CLIENT else "client"
            session.log.info("session.peer_gone", side=other, error=one_line_reason(exc))
            session.close_reason = _GONE_WHEN_SENDING[self.direction]
            await session.catch_up(shield=True)  # keep the order: the bytes, then the failure
            session.recorder.record_event(
                EventName.SEND_FAILED, dir=self.direction.value, error=one_line_reason(exc)
            )
            session.closing.add(id(self.source))
            reset_on_close(self.source)
            self.stop()

    def stop(self) -> NoReturn:
        """End the session: both pumps stop."""
        self.scope.cancel()
        raise PumpStopped

    async def propagate_eof(self) -> None:
        """Pass an end of stream on to the other side at once, as the peer sent it.

        Plain TCP gets a half-close (FIN). TLS gets ``close_notify`` and a TCP half-close
        (RFC 8446 §6.1): the other peer learns of the close as promptly as over plain TCP,
        so a server ends the session (and releases its mailbox lock) at once. One
        exception: a server may drop commands it has not answered yet when a close_notify
        arrives (Dovecot does), so while the client's commands still wait for answers and
        the server keeps sending, the close_notify waits for them. That peer then has
        ``close_linger`` seconds to end its own side before pop3tap closes the session.
        """
        session, sink = self.session, self.sink
        if session.close_reason == CloseReason.CLOSED:  # the side that ended first is the reason
            session.close_reason = _CLOSED_BY[self.direction]
        linger = session.config.close_linger
        try:
            if isinstance(sink, trio.abc.HalfCloseableStream):
                await sink.send_eof()
                return
            if isinstance(sink, trio.SSLStream) and id(sink) not in session.closing:
                if self.direction is Direction.CLIENT:
                    await session.wait_for_answers()
                session.closing.add(id(sink))
                sent = False
                with trio.move_on_after(linger):
                    sent = await send_close_notify(sink)
                if sent:
                    await self.linger()
                    return
            session.closed_by_us.add(id(sink))
            with trio.move_on_after(linger):
                await sink.aclose()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def linger(self) -> None:
        """Give the other direction ``close_linger`` seconds to end after a close_notify."""
        session = self.session
        other = Direction.SERVER if self.direction is Direction.CLIENT else Direction.CLIENT
        linger = session.config.close_linger
        with trio.move_on_after(linger):
            await session.ended[other].wait()
        if not session.ended[other].is_set():
            side = "server" if other is Direction.SERVER else "client"
            session.log.info("session.close_linger", side=side, linger_s=linger)
            self.scope.cancel()


class ClientPump(Pump):
    """Client to server: parse first when the chunk may hold STLS, else record, send, parse."""

    direction = Direction.CLIENT

    async def forward(self, data: bytes) -> None:
        session = self.session
        recorder = session.recorder
        await session.catch_up()  # what the client saw comes before what it says
        start = recorder.seen[Direction.CLIENT]
        at = session.now()
        if not session.stls.pending and not session.stls.may_hold(
            data, recorder.observer.client_line_open
        ):
            # No STLS can be in these bytes: record them, send them, then parse.
            recorder.record_client(data, at)
            if session.faults is not None:
                # A fault must be armed before the answer it hits arrives: parse now.
                parse = functools.partial(recorder.client_bytes, data, at, captured=True)
                await self.send(data, after_write=parse)
                return
            # Parsed in bounded steps, like the answers, so that a burst of pipelined
            # commands cannot hold the event loop either.
            await self.send(data, after_write=functools.partial(recorder.queue_client, data, at))
            await session.catch_up()
            return
        recorder.client_bytes(data, at)
        await self.forward_held(data, start)

    async def forward_held(self, data: bytes, start: int) -> None:
        """Forward a parsed client chunk, holding what follows a pending STLS line.

        While STLS waits for its answer the pump stops reading: a ``-ERR`` releases the
        held bytes; a ``+OK`` cancels this pump.
        """
        session, gate = self.session, self.session.stls
        while True:
            now, held = gate.hold(data, start)
            await self.send(now)
            if not held:
                return
            data, start = held, start + len(now)
            if not gate.pending:
                continue
            answered = trio.Event()
            gate.on_resolve = answered.set
            timeout = session.config.stls_timeout
            with trio.move_on_after(timeout):
                await answered.wait()
            if not answered.is_set():
                # No answer to STLS: the held bytes never reach the server in plaintext.
                session.log.warning(
                    "tls.stls_timeout", timeout_s=timeout, dropped_client_bytes=len(data)
                )
                session.recorder.record_event(
                    EventName.STLS_TIMEOUT, timeout=timeout, dropped_c2s=len(data)
                )
                session.close_reason = f"server did not answer STLS in {timeout:g}s"
                self.stop()


class ServerPump(Pump):
    """Server to client: capture, send, then parse (in bounded steps), with the exceptions
    the module docstring lists."""

    direction = Direction.SERVER

    async def receive(self, fd: int | None) -> bytes:
        """The next chunk; until the greeting line is complete, the server has until the
        greeting deadline to send it."""
        session = self.session
        deadline = session.greeting_deadline
        if deadline is None or session.recorder.observer.greeted:
            return await receive_some(self.source, fd, RECEIVE_SIZE)
        with trio.move_on_at(deadline):
            return await receive_some(self.source, fd, RECEIVE_SIZE)
        # The deadline passed; bytes that arrived at the same moment still count.
        data = read_now(fd, RECEIVE_SIZE) if fd is not None else None
        if data is not None:
            return data
        if session.recorder.observer.pairing_lost:
            # A client flood made the observer give up parsing while this waited: it can
            # no longer see a greeting, so stop waiting for one.
            session.greeting_deadline = None
            return await receive_some(self.source, fd, RECEIVE_SIZE)
        await session.no_greeting()
        self.stop()

    async def forward(self, data: bytes) -> None:
        session = self.session
        recorder = session.recorder
        observer = recorder.observer
        if session.faults is not None and session.faults.active and not observer.stls_pending:
            # A fault waits for its answer: parse first to find where the answer starts.
            start = recorder.seen[Direction.SERVER]
            recorder.server_bytes(data, session.now())
            await self.forward_faulted(data, start)
        elif (
            not observer.greeted
            or observer.client_held
            or (observer.stls_pending and session.stls.intercept)
        ):
            start = recorder.seen[Direction.SERVER]
            recorder.server_bytes(data, session.now())
            cut = session.stls.server_cut(data, start)
            if cut is None:
                await self.send(data)
                return
            # Forward the +OK line only; the rest is plaintext past the switch.
            await self.send(data[:cut])
            self.stop()  # both pumps stop; the upgrade follows
        else:
            # Forward first, parse after; but the client may answer these bytes before
            # this task parses them, so the client pump catches up first if needed.
            recorder.queue_server(data, session.now())
            await self.send(data)
            await session.catch_up()

    async def forward_faulted(self, data: bytes, start: int) -> None:
        """Forward server bytes as the armed faults say."""
        session = self.session
        assert session.faults is not None
        for step in session.faults.plan(start, data):
            if step.fault is not None:
                session.log.warning(
                    "fault.injected",
                    spec=step.fault.spec,
                    action=step.fault.action.value,
                    seq=step.seq,
                )
            if step.kind is StepKind.SLEEP:
                await trio.sleep(step.amount)
            elif step.kind is StepKind.PACE:
                await pace(self.send, step.data, step.amount)
            elif step.kind is StepKind.SEND:
                await self.send(step.data)
            else:  # END: both legs close; the server never gets a QUIT (RFC 1939 §6)
                session.close_reason = step.reason
                session.recorder.record_event(EventName.FAULT_END, seq=step.seq, reason=step.reason)
                if step.reset:
                    session.closing.add(id(session.client))  # a reset, so no close_notify
                    reset_on_close(session.client)
                self.stop()
