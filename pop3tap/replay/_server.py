"""The replay server: what one replay connection is, over the shared server base.

:class:`ReplayServer` loads the captures (or takes loaded sessions), resolves the TLS
choices, and says how one client is served (byte replay or the mailbox model). The
listeners, the accept loop, the ``session=<hex>`` log context, the crash line, the drain
after :meth:`~pop3tap.server.ConnectionServer.shutdown` and the
:meth:`~pop3tap.server.ConnectionServer.abort` of a second signal come from
:class:`~pop3tap.server.ConnectionServer`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

import trio

from pop3tap.faults import FaultPlan
from pop3tap.log import get_logger
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
from pop3tap.server import ConnectionServer, serve_server
from pop3tap.tls import ServerTls

if TYPE_CHECKING:
    from pop3tap.model import ModelStore

logger = get_logger("pop3tap.replay")


class ReplayServer(ConnectionServer):
    """Serve recorded sessions to every client that connects.

    Use ``await nursery.start(server.run)`` to get the listeners once they accept;
    :meth:`shutdown` stops accepting and lets open connections finish within the grace.
    """

    kind = "replay"
    crash_event = "replay.connection_crashed"

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
        super().__init__(listen=config.listen, grace=config.grace, log=logger)
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

    def draining(self) -> None:
        """Say that open connections get the grace period, even when there are none, so
        every ``--workers`` process reports its drain."""
        self.log.info(f"{self.kind}.draining", sessions=self.active_sessions, grace_s=self.grace)

    async def handle(self, stream: trio.abc.Stream) -> None:
        """Serve one client on any trio stream (a socket, or a memory stream in tests), as
        an accepted connection is: its own log context, counted, errors logged."""
        # The base types its streams as sockets; a replay connection needs only a Stream.
        await self._handle(cast("trio.SocketStream", stream))

    async def serve_connection(self, stream: trio.abc.Stream, session_id: str) -> None:
        """Play to one client, then close it however the serving ended."""
        connection: ReplayConnection
        if self.model is not None:
            from pop3tap.replay._model import ModelConnection

            connection = ModelConnection(self, stream, self.total_sessions)
        else:
            connection = ByteReplayConnection(self, stream, self.total_sessions)
        try:
            await connection.run()
        finally:
            with trio.CancelScope(shield=True):
                await connection.finish()


async def serve_replay(
    config: ReplayConfig,
    *,
    sessions: Sequence[RecordedSession] | None = None,
    tls: ServerTls | None = None,
    model: ModelStore | None = None,
    task_status: trio.TaskStatus[ReplayServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a replay server until cancelled; ``task_status.started`` gets the server."""
    await serve_server(
        ReplayServer(config, sessions, tls=tls, model=model), task_status=task_status
    )
