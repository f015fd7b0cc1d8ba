"""The TLS legs of a relay session (see docs/tls.md).

Implicit TLS on either leg (RFC 8314 §3) is a handshake before relaying starts. An
intercepted STLS (RFC 2595 §4) stops both pumps at the switch point; plaintext either
side sent past it is dropped and flagged (command injection, the CVE-2011-0411 class),
pop3tap handshakes with the server (as a client) and with the client (as a server), and
the pumps restart on the TLS streams, so the rest of the session is logged and captured
decrypted.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

import trio

from pop3tap.capture import EventName
from pop3tap.protocol import Direction, StartTls
from pop3tap.server import HandshakeFailed, Leg, handshake
from pop3tap.tls import ServerTls, TlsSetupError, tls_info

if TYPE_CHECKING:
    from pop3tap.relay._session import RelaySession


async def accept_client_tls(session: RelaySession) -> bool:
    """Implicit TLS with the client (RFC 8314 §3), before the upstream is contacted."""
    try:
        server_tls = session.relay.server_tls()
    except TlsSetupError as exc:
        tls_failed(session, "client", str(exc))
        return False
    tls = await bounded_handshake(session, "client", session.client, server_tls.context, server_tls)
    if tls is None:
        return False
    session.client = tls
    return True


async def connect_upstream_tls(session: RelaySession) -> bool:
    """Implicit TLS with the upstream (RFC 8314 §3); a failure refuses the client."""
    try:
        context = session.relay.tls.upstream()
    except TlsSetupError as exc:
        reason = str(exc)
    else:
        assert session.upstream is not None
        tls = await bounded_handshake(session, "server", session.upstream, context, None)
        if tls is not None:
            session.upstream = tls
            return True
        reason = session.close_reason
    upstream = str(session.config.upstream)
    await session.refuse_client(f"TLS with upstream {upstream} failed: {reason}")
    return False


async def bounded_handshake(
    session: RelaySession,
    leg: Leg,
    stream: trio.abc.Stream,
    context: ssl.SSLContext,
    server_tls: ServerTls | None,
) -> trio.SSLStream[trio.abc.Stream] | None:
    """One bounded TLS handshake; logs and records the outcome; None on failure."""
    try:
        tls = await handshake(
            stream,
            context,
            leg=leg,
            seconds=session.config.tls.handshake_timeout,
            host=session.config.upstream.host,
            server_tls=server_tls,
        )
    except HandshakeFailed as exc:
        tls_failed(session, leg, exc.reason)
        return None
    info = tls_info(tls, server=server_tls)
    session.log.info("tls.handshake", leg=leg, **info)
    session.recorder.record_event(EventName.TLS_HANDSHAKE, leg=leg, **info)
    return tls


def tls_failed(session: RelaySession, leg: Leg, reason: str) -> None:
    """A handshake (or TLS setup) failed on ``leg``: the session ends, both legs close."""
    session.log.error("tls.failed", leg=leg, reason=reason)
    session.recorder.record_event(EventName.TLS_FAILED, leg=leg, reason=reason)
    session.close_reason = f"TLS failed ({leg}): {reason}"


async def intercept_stls(session: RelaySession, switch: StartTls) -> bool:
    """Both pumps stopped at the STLS switch point: TLS with both sides (RFC 2595 §4).

    The server leg comes first, so a server that cannot be verified never sees the
    client's session go on. Returns False when the session must end.
    """
    recorder = session.recorder
    injected = {
        Direction.CLIENT.value: switch.client_trailing,
        Direction.SERVER.value: switch.server_trailing,
    }
    if switch.client_trailing or switch.server_trailing:
        session.log.warning(
            "tls.injection",
            client_bytes=switch.client_trailing,
            server_bytes=switch.server_trailing,
            note="plaintext sent after STLS before TLS (CVE-2011-0411 class): dropped",
        )
        recorder.record_event(EventName.STLS_INJECTION, **injected)
    session.log.info("tls.stls", note="intercepting STLS: TLS with the server, then the client")
    if not await _upgrade_both(session):
        return False
    session.stls.switched()
    # Plaintext lines still held (injected after STLS) are masked and written on this
    # side of the switch.
    recorder.observer.abandon_client_lines()
    recorder.record_released_client()
    # The capture reader resumes parsing at this record; decrypted bytes follow.
    recorder.record_event(
        EventName.TLS,
        mode="stls",
        seq=switch.seq,
        dropped_c2s=switch.client_trailing,
        dropped_s2c=switch.server_trailing,
    )
    recorder.observer.resume_after_tls()
    return True


async def _upgrade_both(session: RelaySession) -> bool:
    """TLS with the server, then with the client; False when either fails."""
    try:
        context = session.relay.tls.upstream()
    except TlsSetupError as exc:
        tls_failed(session, "server", str(exc))
        return False
    assert session.upstream is not None
    upstream = await bounded_handshake(session, "server", session.upstream, context, None)
    if upstream is None:
        return False
    session.upstream = upstream
    try:
        server_tls = await trio.to_thread.run_sync(session.relay.server_tls)
    except TlsSetupError as exc:
        tls_failed(session, "client", str(exc))
        return False
    client = await bounded_handshake(
        session, "client", session.client, server_tls.context, server_tls
    )
    if client is None:
        return False
    session.client = client
    return True
