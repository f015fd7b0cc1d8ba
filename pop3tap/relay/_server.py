"""The relay server: accept clients and relay each to its own upstream connection."""

from __future__ import annotations

import socket
from typing import Any

import trio

from pop3tap.faults import FaultPlan
from pop3tap.relay._config import RelayConfig
from pop3tap.relay._session import RelaySession, logger
from pop3tap.server import ConnectionServer, announce_server_tls, serve_server
from pop3tap.tls import ServerTls, TlsContexts


class RelayServer(ConnectionServer):
    """Accept clients and relay each to its own upstream connection.

    Use ``await nursery.start(server.run)`` to get the listeners once they accept;
    :meth:`shutdown` stops accepting and lets open sessions finish within ``grace``.
    """

    kind = "relay"
    crash_event = "session.crashed"

    def __init__(self, config: RelayConfig, *, sockets: list[socket.socket] | None = None) -> None:
        super().__init__(listen=config.listen, grace=config.grace, log=logger, sockets=sockets)
        self.config = config
        self.tls_prepared = False
        self.tls = TlsContexts(
            config.tls, upstream_host=config.upstream.host, listen_host=config.listen.host
        )
        #: The faults every session is subject to; tests may change them while it runs.
        self.faults = FaultPlan(config.faults)
        #: The options every capture header stores (the config is frozen: built once).
        self.header_options = config.options()

    def server_tls(self) -> ServerTls:
        """What clients are shown; builds it (maybe creating pop3tap's CA) on first use."""
        fresh = not self.tls.server_ready
        server = self.tls.server()
        if fresh:
            announce_server_tls(logger, server)
        return server

    def prepare(self) -> None:
        if not self.tls_prepared:
            self.prepare_tls()

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

    async def serve_connection(self, stream: trio.SocketStream, session_id: str) -> None:
        await RelaySession(self, stream, session_id).run()


async def serve_relay(
    config: RelayConfig,
    *,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a relay until cancelled; ``task_status.started`` gets the :class:`RelayServer`."""
    await serve_server(RelayServer(config), task_status=task_status)
