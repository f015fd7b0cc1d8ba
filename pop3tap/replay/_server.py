"""The replay server: listeners, the accept loop, the drain, one task per connection.

:class:`ReplayServer` loads the captures (or takes loaded sessions), resolves the TLS
choices, and serves each client that connects on its own task; every error in a connection
is caught and logged, so one client can never stop the server or disturb another. On
:meth:`~ReplayServer.shutdown` it stops accepting and gives open connections the grace
period; :meth:`~ReplayServer.abort` closes them at once.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from pop3tap.faults import FaultPlan
from pop3tap.log import get_logger
from pop3tap.relay import Endpoint
from pop3tap.replay._bytes import ByteReplayConnection
from pop3tap.replay._config import ReplayConfig, resolve_tls, server_tls_for, tls_mismatch
from pop3tap.replay._connection import ReplayConnection
from pop3tap.replay._matching import (
    Accounting,
    SessionPicker,
    UnmatchedCommand,
    UnplayedExchange,
)
from pop3tap.replay._recorded import RecordedSession, ReplayError, load_sessions
from pop3tap.tls import ServerTls
from pop3tap.workers import open_listeners

if TYPE_CHECKING:
    from pop3tap.model import ModelStore

logger = get_logger("pop3tap.replay")


class ReplayServer:
    """Serve recorded sessions to every client that connects.

    Use ``await nursery.start(server.run)`` to get the listeners once they accept.
    """

    def __init__(
        self,
        config: ReplayConfig,
        sessions: Sequence[RecordedSession] | None = None,
        *,
        tls: ServerTls | None = None,
        model: ModelStore | None = None,
    ) -> None:
        """Load the captures (unless ``sessions`` are given) and the TLS certificate.

        ``tls`` is what :func:`server_tls_for` returned (built here when None and needed);
        ``model`` the mailbox store of ``config.model`` (built here when None and needed).

        Raises:
            CaptureError, ReplayError: a capture cannot be read or replayed.
            TlsSetupError: the certificate, key or CA cannot be used.
        """
        #: Listening sockets bound beforehand (``--workers``); None: bind ``config.listen``.
        self.sockets: list[socket.socket] | None = None
        self.config = config
        self.warnings: list[str] = []
        if sessions is None:
            loaded: list[RecordedSession] = []
            if config.captures or config.messages is None:
                loaded, self.warnings = load_sessions(config.captures)
            sessions = loaded
        if not sessions and config.messages is None:
            raise ReplayError("no recorded sessions to replay")
        config, self.tls_notes = resolve_tls(config, sessions)
        self.config = config
        for note in self.tls_notes:
            logger.info("replay.tls_choice", note=note)
        self.sessions: tuple[RecordedSession, ...] = tuple(sessions)
        #: One-line warnings about captures whose client-leg TLS differs from the listener.
        self.tls_warnings = [
            w for w in (tls_mismatch(s, bool(config.listen_tls)) for s in self.sessions) if w
        ]
        for warning in self.tls_warnings:
            logger.warning("replay.tls_mismatch", note=warning)
        self.tls = tls if tls is not None else server_tls_for(config, self.sessions)
        #: The mailbox model (``config.model``), else None.
        self.model: ModelStore | None = model
        if config.model and model is None:
            from pop3tap.replay._model import build_store

            self.model = build_store(config, self.sessions, tls_available=self.tls is not None)
        self.accounting = Accounting(self.sessions)
        #: Which recorded session each new connection plays.
        self.picker = SessionPicker(self.sessions, config.sessions)
        #: The faults every connection is subject to; tests may change them while it runs.
        self.faults = FaultPlan(config.faults)
        self.listeners: list[trio.SocketListener] = []
        self.connections = 0
        #: Connections being served right now.
        self.active_connections = 0
        self.shutting_down = False
        #: True once :meth:`abort` closed the open connections without waiting.
        self.aborted = False
        self._accept_scope = trio.CancelScope()
        self._handlers: trio.Nursery | None = None

    @property
    def address(self) -> Endpoint:
        """Where the first listener accepts connections."""
        host, port = self.listeners[0].socket.getsockname()[:2]
        return Endpoint(str(host), int(port))

    @property
    def ca_file(self) -> Path | None:
        """The CA certificate (PEM) clients must trust; None without TLS or with --cert."""
        if self.tls is None or self.tls.ca is None:
            return None
        return self.tls.ca.cert_path

    @property
    def unplayed(self) -> list[UnplayedExchange]:
        """Recorded exchanges (in every loaded session) that no client asked for."""
        return self.accounting.unplayed()

    @property
    def unmatched(self) -> list[UnmatchedCommand]:
        """Client commands that had no recorded answer (the first 1000)."""
        return list(self.accounting.unmatched)

    @property
    def all_played(self) -> bool:
        """Every recorded exchange was played."""
        return not self.unplayed

    async def run(
        self, *, task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen and serve until cancelled or :meth:`shutdown`, then drain within the grace."""
        listen = self.config.listen
        self.listeners = await open_listeners(listen.host, listen.port, self.sockets)
        async with trio.open_nursery() as handlers:
            self._handlers = handlers
            with self._accept_scope:
                task_status.started(self.listeners)
                await trio.serve_listeners(self.handle, self.listeners, handler_nursery=handlers)
            for listener in self.listeners:
                await listener.aclose()
            logger.info(
                "replay.draining", sessions=self.active_connections, grace_s=self.config.grace
            )
            handlers.cancel_scope.deadline = trio.current_time() + self.config.grace

    def shutdown(self) -> None:
        """Stop accepting new clients; open connections get the grace period."""
        self.shutting_down = True
        self._accept_scope.cancel()

    def abort(self) -> None:
        """Close every open connection now."""
        self.aborted = True
        self.shutdown()
        if self._handlers is not None:
            self._handlers.cancel_scope.cancel()

    async def handle(self, stream: trio.abc.Stream) -> None:
        """Serve one client on any trio stream; errors are logged, never raised."""
        self.connections += 1
        self.active_connections += 1
        connection: ReplayConnection
        if self.model is not None:
            from pop3tap.replay._model import ModelConnection

            connection = ModelConnection(self, stream, self.connections)
        else:
            connection = ByteReplayConnection(self, stream, self.connections)
        try:
            await connection.run()
        except Exception:
            connection.log.exception("replay.connection_crashed")
        finally:
            self.active_connections -= 1
            with trio.CancelScope(shield=True):
                try:
                    await connection.finish()
                except Exception:
                    connection.log.exception("replay.connection_crashed")


async def serve_replay(
    config: ReplayConfig,
    *,
    sessions: Sequence[RecordedSession] | None = None,
    tls: ServerTls | None = None,
    model: ModelStore | None = None,
    task_status: trio.TaskStatus[ReplayServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a replay server until cancelled; ``task_status.started`` gets the server."""
    server = ReplayServer(config, sessions, tls=tls, model=model)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        task_status.started(server)
