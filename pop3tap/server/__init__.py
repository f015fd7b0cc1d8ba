"""What every pop3tap server shares: addresses, listeners, the server base, TLS accept.

The relay (:mod:`pop3tap.relay`) subclasses :class:`ConnectionServer`; see
:mod:`pop3tap.server._base` for what the base owns and what a subclass provides.
"""

from pop3tap.server._base import ConnectionServer, error_line, new_session_id, serve_server
from pop3tap.server._net import (
    LISTEN_BACKLOG,
    Endpoint,
    bind_listen_sockets,
    format_peer,
    local_address,
    one_line_reason,
    open_listeners,
    socket_of,
)
from pop3tap.server._tls import HandshakeFailed, Leg, accept_tls, announce_server_tls, handshake

__all__ = [
    "LISTEN_BACKLOG",
    "ConnectionServer",
    "Endpoint",
    "HandshakeFailed",
    "Leg",
    "accept_tls",
    "announce_server_tls",
    "bind_listen_sockets",
    "error_line",
    "format_peer",
    "handshake",
    "local_address",
    "new_session_id",
    "one_line_reason",
    "open_listeners",
    "serve_server",
    "socket_of",
]
