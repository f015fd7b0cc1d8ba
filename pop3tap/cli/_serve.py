"""The serve loop of every server subcommand (``record`` and ``replay``)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pop3tap.cli._common import serve_until_stopped, serve_workers, stopped_exit_code

if TYPE_CHECKING:
    import structlog

    from pop3tap.server import ConnectionServer


def serve_server(
    server: ConnectionServer,
    *,
    workers: int,
    log: structlog.typing.FilteringBoundLogger,
    listening: Callable[[], dict[str, Any]],
    stopped: Callable[[], dict[str, Any]],
) -> int:
    """Serve ``server`` in this process or ``workers`` forked ones until stopped; the exit
    code.

    Each process logs ``<kind>.listening`` (its address, then ``listening()``) once it
    accepts and ``<kind>.stopped`` (``stopped()`` and whether a second signal aborted the
    drain) at the end, with its worker number and pid under ``--workers``.
    """

    def serve(sockets: list[socket.socket] | None, where: dict[str, int]) -> int:
        server.sockets = sockets  # each worker has its own copy of the server

        def say_listening() -> None:
            log.info(f"{server.kind}.listening", listen=str(server.address), **listening(), **where)

        aborted = serve_until_stopped(
            server,
            open_sessions=lambda: server.active_sessions,
            grace=server.grace,
            log=log,
            where=where,
            listening=say_listening,
            what=f"listen on {server.listen}",
            kind=server.kind,
        )
        log.info(f"{server.kind}.stopped", **stopped(), aborted=aborted, **where)
        return stopped_exit_code(aborted, where)

    return serve_workers(workers, server.listen, serve, log, server.kind)
