"""The bounded TLS handshakes of every pop3tap server (RFC 8314 §3, RFC 2595 §4)."""

from __future__ import annotations

import ssl
from typing import Any, Literal

import trio

from pop3tap.tls import (
    ServerTls,
    client_handshake,
    describe_failure,
    server_handshake,
    warn_if_ca_created,
)

#: Which connection a handshake is on: with the client (pop3tap is the TLS server) or
#: with the upstream server (pop3tap is the TLS client).
Leg = Literal["client", "server"]


class HandshakeFailed(Exception):
    """A handshake failed or timed out; ``reason`` is one line for the log and the user."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def handshake(
    stream: trio.abc.Stream,
    context: ssl.SSLContext,
    *,
    leg: Leg,
    seconds: float,
    host: str = "",
    server_tls: ServerTls | None = None,
) -> trio.SSLStream[trio.abc.Stream]:
    """One TLS handshake within ``seconds``; raises :class:`HandshakeFailed`.

    On the ``client`` leg pop3tap is the server (``server_tls`` says which certificate
    it shows); on the ``server`` leg it verifies the upstream as ``host``.
    """
    try:
        with trio.fail_after(seconds):
            if leg == "client":
                return await server_handshake(stream, context)
            return await client_handshake(stream, context, host)
    except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError) as exc:
        own_ca = server_tls is None or server_tls.ca is not None
        reason = describe_failure(exc, leg=leg, host=host, own_ca=own_ca, timeout=seconds)
        raise HandshakeFailed(reason) from None


async def accept_tls(
    stream: trio.abc.Stream, server_tls: ServerTls, *, seconds: float, host: str = ""
) -> trio.SSLStream[trio.abc.Stream]:
    """TLS with a client, pop3tap showing ``server_tls``; raises :class:`HandshakeFailed`."""
    return await handshake(
        stream, server_tls.context, leg="client", seconds=seconds, host=host, server_tls=server_tls
    )


def announce_server_tls(log: Any, server: ServerTls) -> None:
    """Log the certificate clients are shown (and pop3tap's CA, if it was just created)."""
    warn_if_ca_created(log, server)
    log.info(
        "tls.certificate",
        subject=server.cert_subject,
        sha256=server.cert_sha256,
        ca=None if server.ca is None else str(server.ca.cert_path),
    )
