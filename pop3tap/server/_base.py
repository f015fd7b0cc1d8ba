"""The server base every pop3tap server subclasses: listen, accept, drain, abort.

A subclass says what one connection is (:meth:`ConnectionServer.serve_connection`); the
base owns the listeners (bound here, or inherited from a ``--workers`` parent), the accept
loop, each connection's log context (``session=<hex>``), the graceful drain with a grace
period after :meth:`~ConnectionServer.shutdown`, the close-at-once
:meth:`~ConnectionServer.abort` of a second signal, and one crash line per connection that
fails. The one ``-ERR`` line pop3tap itself writes comes from :func:`error_line`.
"""

from __future__ import annotations

import errno
import ipaddress
import math
import secrets
import socket
from typing import Any, ClassVar

import structlog
import trio

from pop3tap.server._net import Endpoint, open_listeners

#: accept() errors that mean "out of descriptors or memory for now": wait and accept again
#: (the errors ``trio.serve_listeners`` retries on).
_ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})


#: How long the accept loop waits after one of those errors before it accepts again.
_ACCEPT_RETRY_S = 0.1
#: While accept keeps failing, at most one line per this many seconds says so.
_ACCEPT_OUTAGE_LOG_S = 60.0


class _AcceptOutage:
    """One listener's failing accepts, logged in a bounded number of lines.

    A failure is logged at once, then at most one line a minute (with the failures not
    yet reported); the first client accepted after a logged failure gets one line saying
    accepting works again. A flood that holds every descriptor, or that frees and takes
    them in turn, cannot fill the log at ten or twenty lines a second.
    """

    def __init__(self, log: Any, kind: str) -> None:
        self.log = log
        self.kind = kind
        #: Failures since the last ``accept_recovered`` line, and when the first was.
        self.failures = 0
        self.since = 0.0
        #: An ``accept_failed`` line was written and no ``accept_recovered`` line yet.
        self.reported = False
        self.next_line = -math.inf

    def failed(self, exc: OSError) -> None:
        now = trio.current_time()
        if not self.failures:
            self.since = now
        self.failures += 1
        if now >= self.next_line:
            self.next_line = now + _ACCEPT_OUTAGE_LOG_S
            self.reported = True
            self.log.error(
                f"{self.kind}.accept_failed",
                error=exc.strerror,
                failures=self.failures,
                retry_s=_ACCEPT_RETRY_S,
            )

    def recovered(self) -> None:
        self.log.warning(
            f"{self.kind}.accept_recovered",
            failures=self.failures,
            seconds=round(trio.current_time() - self.since, 3),
        )
        self.failures = 0
        self.reported = False


def error_line(prefix: str, text: str) -> bytes:
    """The one ``-ERR`` line pop3tap writes in a peer's place (RFC 1939 §3 status indicator).

    ``-ERR {prefix}: {text}`` on one line: a CR or LF in ``text`` becomes a space, and a
    character UTF-8 cannot encode (a lone surrogate, such as the undecodable bytes of a
    file name, PEP 383) becomes ``?``, so the line can neither be split nor fail to encode.
    """
    flat = text.replace("\r", " ").replace("\n", " ")
    return f"-ERR {prefix}: {flat}\r\n".encode("utf-8", "replace")


def _one_local_address(listeners: list[trio.SocketListener]) -> str | None:
    """The local address of every connection these listeners accept, if they have one:
    a single listener bound to one address (not a wildcard, which accepts on any)."""
    if len(listeners) != 1:
        return None
    host, port = listeners[0].socket.getsockname()[:2]
    if ipaddress.ip_address(str(host).split("%", 1)[0]).is_unspecified:
        return None
    return str(Endpoint(str(host), int(port)))


def new_session_id() -> str:
    """The id a connection's log lines and capture carry (12 hex digits)."""
    return secrets.token_hex(6)


class ConnectionServer:
    """Accept clients and serve each in its own task, until shutdown or abort.

    Use ``await nursery.start(server.run)`` to get the listeners once they accept;
    :meth:`shutdown` stops accepting and lets open connections finish within ``grace``.
    """

    #: The first word of the server's own log lines (``relay.draining``).
    kind: ClassVar[str] = "server"
    #: The line logged (with the traceback) when serving a connection raises.
    crash_event: ClassVar[str] = "session.crashed"

    def __init__(
        self,
        *,
        listen: Endpoint,
        grace: float,
        log: Any,
        sockets: list[socket.socket] | None = None,
    ) -> None:
        self.listen = listen
        self.grace = grace
        self.log = log
        #: Listening sockets bound beforehand (``--workers``); None: bind ``listen``.
        self.sockets = sockets
        self.listeners: list[trio.SocketListener] = []
        self.shutting_down = False
        #: True once :meth:`abort` closed the open connections without waiting.
        self.aborted = False
        #: Connections being served now, and since the start.
        self.active_sessions = 0
        self.total_sessions = 0
        self._accept_scope = trio.CancelScope()
        self._handlers: trio.Nursery | None = None
        #: Every accepted connection's local address (``host:port``) when the one listener
        #: is bound to one address, else None (each connection's is asked for).
        self.accepted_on: str | None = None

    async def serve_connection(self, stream: trio.SocketStream, session_id: str) -> None:
        """Serve one client; the log context already carries ``session=session_id``."""
        raise NotImplementedError

    def prepare(self) -> None:
        """Runs before the listeners open, so setup errors show before any client does."""

    def draining(self) -> None:
        """Say that open connections now get the grace period (only when there are some)."""
        if self.active_sessions:
            self.log.info(
                f"{self.kind}.draining", sessions=self.active_sessions, grace_s=self.grace
            )

    @property
    def address(self) -> Endpoint:
        """Where the first listener accepts connections."""
        host, port = self.listeners[0].socket.getsockname()[:2]
        return Endpoint(str(host), int(port))

    async def run(
        self, *, task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen, serve until :meth:`shutdown`, then drain connections within the grace."""
        self.prepare()
        self.listeners = await open_listeners(self.listen.host, self.listen.port, self.sockets)
        for listener in self.listeners:
            listener.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.accepted_on = _one_local_address(self.listeners)
        async with trio.open_nursery() as handlers:
            self._handlers = handlers
            try:
                with self._accept_scope:
                    task_status.started(self.listeners)
                    async with trio.open_nursery() as accepting:
                        for listener in self.listeners:
                            accepting.start_soon(self._accept, listener, handlers)
            finally:
                self._close_listeners()
            self.draining()
            handlers.cancel_scope.deadline = trio.current_time() + self.grace

    def shutdown(self) -> None:
        """Stop accepting new clients; open connections get the grace period."""
        self.shutting_down = True
        self._accept_scope.cancel()

    def abort(self) -> None:
        """Close every open connection now (each still ends as it does on any close)."""
        self.aborted = True
        self.shutdown()
        if self._handlers is not None:
            self._handlers.cancel_scope.cancel()

    def _close_listeners(self) -> None:
        """Close every listening socket now, however accepting ended (shutdown, abort, a
        cancel from outside, an error): without a checkpoint, which a cancelled drain
        would turn into a ``Cancelled`` before the next listener is closed."""
        for listener in self.listeners:
            listener.socket.close()

    async def _accept(self, listener: trio.SocketListener, handlers: trio.Nursery) -> None:
        """Accept clients on ``listener`` until cancelled, each served in its own task.

        As ``trio.serve_listeners`` does, but each connection is closed by
        :meth:`_serve_and_close`: a plain socket without trio's checkpoint, which would
        raise and catch a ``Cancelled`` in every session.
        """
        outage = _AcceptOutage(self.log, self.kind)
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                    raise
                outage.failed(exc)
                await trio.sleep(_ACCEPT_RETRY_S)
                continue
            if outage.reported:
                outage.recovered()
            handlers.start_soon(self._serve_and_close, stream)

    async def _serve_and_close(self, stream: trio.SocketStream) -> None:
        """Serve one accepted client, then make sure its connection is closed."""
        try:
            await self._handle(stream)
        finally:
            if type(stream) is trio.SocketStream:
                stream.socket.close()  # what aclose does, without its checkpoint
            else:  # pragma: no cover - listeners here give plain socket streams
                await trio.aclose_forcefully(stream)

    async def _handle(self, stream: trio.SocketStream) -> None:
        """Per-connection handler: every error is logged here, never raised to the server."""
        structlog.contextvars.clear_contextvars()
        session_id = new_session_id()
        structlog.contextvars.bind_contextvars(session=session_id)
        self.active_sessions += 1
        self.total_sessions += 1
        try:
            await self.serve_connection(stream, session_id)
        except Exception:
            self.log.exception(self.crash_event)
        finally:
            self.active_sessions -= 1


async def serve_server(
    server: ConnectionServer,
    *,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``server`` until cancelled; ``task_status.started`` gets the server."""
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        task_status.started(server)
