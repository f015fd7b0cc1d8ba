"""The trio relay: one upstream connection per client, bytes forwarded verbatim both ways.

Each chunk is sent on as soon as it arrives. Server bytes are written to the capture
just before they are forwarded (so whatever a client received is on disk, even after
``kill -9``) and parsed just after, by the sans-IO
:class:`~pop3tap.protocol.SessionObserver`, whose events become log lines; client bytes
are captured and parsed first (commands are short, and an STLS line must be seen before
it is forwarded). A parser or capture failure is logged and the session goes on.

The modules, from the bottom up:

* ``_recorder``: :class:`SessionRecorder`, the capture, observer and log of one session,
  synchronous (bytes in, records and log lines out);
* ``_stls``: :class:`StlsGate`, the STLS hold-back state (RFC 2595 §4);
* ``_faults``: what the relay does with each server chunk under fault injection;
* ``_pumps``: the client and server pumps; ``_legs``: the TLS legs;
* ``_session``: one session; ``_server``: :class:`RelayServer` on the shared server base
  (:mod:`pop3tap.server`).
"""

from pop3tap.relay._config import RECEIVE_SIZE, RelayConfig, open_plain_upstream
from pop3tap.relay._recorder import SessionRecorder
from pop3tap.relay._server import RelayServer, serve_relay
from pop3tap.relay._session import RelaySession
from pop3tap.relay._stls import StlsGate
from pop3tap.server import Endpoint, format_peer
from pop3tap.tls import TlsConfig

__all__ = [
    "RECEIVE_SIZE",
    "Endpoint",
    "RelayConfig",
    "RelayServer",
    "RelaySession",
    "SessionRecorder",
    "StlsGate",
    "TlsConfig",
    "format_peer",
    "open_plain_upstream",
    "serve_relay",
]
