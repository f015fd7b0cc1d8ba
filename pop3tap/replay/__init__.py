"""The replay server: a fake POP3 server that answers with the bytes a real one sent.

Theory of operation
-------------------
Captures are loaded once, into :class:`RecordedSession` values (:mod:`._recorded`, pure):
the greeting bytes, and for each command/response pair re-derived by the protocol core, the
recorded command, the raw response bytes (so every quirk comes back unchanged) and its
recorded timing.

Each connection is given one recorded session (``cycle``: the next one in order, wrapping;
``once``: each at most once; ``by_user``: the one whose USER/APOP/AUTH user the client
names). It gets the recorded greeting, then every client line, read by the protocol core's
server-role reader (:class:`~pop3tap.protocol.ClientReader`), is matched against the
session's exchanges (:mod:`._matching`, pure) and answered with the recorded bytes
(:mod:`._bytes`), or by a mailbox model (:mod:`._model`, ``--model``). A command without a
recorded answer gets one ``-ERR`` line naming pop3tap and the command, and a log event lists
the closest recorded commands and what differed.

Client input is read with a bounded buffer (``max_line``); every wait is bounded by the idle
timeout (:mod:`._connection`). Each connection runs in its own task and every error in it is
caught and logged, so one client can never stop the server or disturb another
(:mod:`._server`). Where the recorded server closed the connection, the replay sends the
recorded bytes up to that point and closes.

TLS (see docs/replay.md, "TLS"): a capture whose STLS was intercepted (RFC 2595 §4) replays
with STLS: the recorded ``+OK``, a TLS handshake as server with a leaf from pop3tap's CA (or
``--cert/--key``), then the exchanges recorded after the switch. Plaintext the client sent
after STLS and before its handshake is dropped, never answered (the CVE-2011-0411 class).
With ``listen_tls`` every connection is TLS from its first byte (RFC 8314 §3). What cannot
be replayed (opaque TLS bytes) is decided in :func:`tls_refusal`; the TLS choices the
captures make in :mod:`._config`. :mod:`._api` is the Python API for tests and scripts.
"""

from pop3tap.protocol import sasl_user as sasl_user
from pop3tap.replay._api import (
    Pop3TestServer,
    ReplayServerHandle,
    open_replay_server,
    replay_server,
)
from pop3tap.replay._capture_facts import tls_refusal
from pop3tap.replay._config import ModelMissing as ModelMissing
from pop3tap.replay._config import (
    ReplayConfig,
    server_tls_for,
    tls_mismatch,
)
from pop3tap.replay._config import parse_timing as parse_timing
from pop3tap.replay._config import resolve_tls as resolve_tls
from pop3tap.replay._matching import MatchMode as MatchMode
from pop3tap.replay._matching import SessionsMode as SessionsMode
from pop3tap.replay._matching import UnmatchedCommand, UnplayedExchange
from pop3tap.replay._matching import _args_key as _args_key
from pop3tap.replay._matching import args_key as args_key
from pop3tap.replay._matching import masked_command as masked_command
from pop3tap.replay._recorded import RecordedExchange, RecordedSession, ReplayError, load_sessions
from pop3tap.replay._recorded import Segment as Segment
from pop3tap.replay._recorded import session_from_capture as session_from_capture
from pop3tap.replay._server import ReplayServer, serve_replay

# Every name imported from here before the package split keeps working: the public ones
# are in __all__, the helpers other modules and tests use are re-exported with ``as``.
__all__ = [
    "Pop3TestServer",
    "RecordedExchange",
    "RecordedSession",
    "ReplayConfig",
    "ReplayError",
    "ReplayServer",
    "ReplayServerHandle",
    "UnmatchedCommand",
    "UnplayedExchange",
    "load_sessions",
    "open_replay_server",
    "replay_server",
    "serve_replay",
    "server_tls_for",
    "tls_mismatch",
    "tls_refusal",
]
