"""TLS on a live connection: handshakes as client and server, the close_notify alert,
telling a TLS end from a failure, the facts recorded about a session (version, cipher,
SNI, certificate subject and SHA-256 fingerprint; never keys), and one line saying why a
handshake failed.

:mod:`pop3tap.tls` builds the contexts and re-exports everything here; callers apply the
timeouts (``trio.fail_after(config.handshake_timeout)``) around these handshakes.
"""

from __future__ import annotations

import contextlib
import ipaddress
import ssl
from typing import TYPE_CHECKING, Any, Final

import trio
from cryptography import x509

from pop3tap.certs import fingerprint_sha256

if TYPE_CHECKING:
    from pop3tap.tls import ServerTls

__all__ = [
    "LEAF_ATTR",
    "SNI_ATTR",
    "client_handshake",
    "describe_failure",
    "is_tls_end",
    "send_close_notify",
    "server_handshake",
    "tls_info",
]


SNI_ATTR: Final = "_pop3tap_sni"


LEAF_ATTR: Final = "_pop3tap_leaf"


#: OpenSSL alert reasons that mean "the client rejected our certificate".
_CLIENT_DISTRUST: Final = frozenset(
    {
        "TLSV1_ALERT_UNKNOWN_CA",
        "SSLV3_ALERT_BAD_CERTIFICATE",
        "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
        "TLSV1_ALERT_DECRYPT_ERROR",
        "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
        "TLSV1_ALERT_ACCESS_DENIED",
    }
)


#: OpenSSL reasons that mean "the peer does not speak TLS here".
_NOT_TLS: Final = frozenset(
    {"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNKNOWN_PROTOCOL", "RECORD_LAYER_FAILURE"}
)


# --------------------------------------------------------------------------- handshakes


async def client_handshake(
    stream: trio.abc.Stream, context: ssl.SSLContext, server_hostname: str
) -> trio.SSLStream[trio.abc.Stream]:
    """TLS as a client on ``stream`` (SNI and verification for ``server_hostname``).

    The caller bounds it with a cancel scope; failures raise ``trio.BrokenResourceError``.
    """
    host = server_hostname.strip("[]")
    tls = trio.SSLStream(stream, context, server_hostname=host)
    await tls.do_handshake()
    return tls


async def server_handshake(
    stream: trio.abc.Stream, context: ssl.SSLContext
) -> trio.SSLStream[trio.abc.Stream]:
    """TLS as a server on ``stream``; the caller bounds it with a cancel scope."""
    tls = trio.SSLStream(stream, context, server_side=True)
    await tls.do_handshake()
    return tls


# --------------------------------------------------------------------------- closing


async def send_close_notify(stream: trio.SSLStream[Any]) -> bool:
    """Send a TLS ``close_notify`` alert and half-close the TCP connection under it.

    RFC 8446 §6.1: each party sends ``close_notify`` before closing its write side, and may
    go on reading until the peer's own ``close_notify``. trio's ``SSLStream`` only closes
    both ways at once (``aclose``), which would cut off a peer's last answers, so this calls
    ``SSL_shutdown`` once through the stream's own send machinery and then shuts the TCP
    write side. ``receive_some`` keeps working: the peer's ``close_notify`` then reads as
    the end of the stream (see :func:`is_tls_end`).

    Returns False when nothing could be sent (the peer is gone, the stream is broken, or
    trio's internals are not what this expects); the caller then closes the stream.
    """
    retry = getattr(stream, "_retry", None)
    ssl_object = getattr(stream, "_ssl_object", None)
    unwrap = getattr(ssl_object, "unwrap", None)
    if retry is None or unwrap is None:
        return False
    try:
        # One SSL_shutdown call: it queues the alert, which _retry sends; not waiting for
        # the peer's answer is what ignore_want_read means (as in SSLStream.aclose).
        await retry(unwrap, ignore_want_read=True)
    except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError):
        return False
    transport: Any = stream.transport_stream
    if isinstance(transport, trio.abc.HalfCloseableStream):
        with contextlib.suppress(
            trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError
        ):
            await transport.send_eof()
    return True


def is_tls_end(stream: trio.abc.Stream, exc: BaseException) -> bool:
    """Whether a receive error on ``stream`` is the peer's end of stream, not a failure.

    Two cases: the peer closed TCP without ``close_notify`` (``UNEXPECTED_EOF_WHILE_READING``,
    as many servers do), or its ``close_notify`` came after pop3tap sent its own (Python's
    ``ssl`` then raises ``SSLZeroReturnError`` instead of returning ``b""``).
    """
    if not isinstance(stream, trio.SSLStream):
        return False
    cause = exc.__cause__
    return isinstance(cause, ssl.SSLEOFError | ssl.SSLZeroReturnError) or (
        isinstance(cause, ssl.SSLError) and "UNEXPECTED_EOF" in str(cause)
    )


def tls_info(stream: trio.SSLStream[Any], *, server: ServerTls | None = None) -> dict[str, Any]:
    """Facts about an established TLS session, fit for logs and captures (never keys).

    For the upstream leg: the server's certificate (``peer_subject``, ``peer_sha256``) and
    the SNI sent. For the client leg: the SNI the client asked for and the certificate
    pop3tap presented (``cert_subject``, ``cert_sha256``).
    """
    cipher = stream.cipher()
    info: dict[str, Any] = {
        "version": stream.version(),
        "cipher": None if cipher is None else cipher[0],
    }
    if stream.server_side:
        sslobj = getattr(stream, "_ssl_object", None)
        info["sni"] = getattr(sslobj, SNI_ATTR, None)
        presented = getattr(sslobj, LEAF_ATTR, None)
        if isinstance(presented, x509.Certificate):
            info["cert_subject"] = presented.subject.rfc4514_string()
            info["cert_sha256"] = fingerprint_sha256(presented)
        elif server is not None:
            info["cert_subject"] = server.cert_subject
            info["cert_sha256"] = server.cert_sha256
        return info
    hostname = stream.server_hostname
    info["sni"] = None if hostname is None or _is_ip(hostname) else hostname
    info.update(peer_certificate_facts(stream.getpeercert(binary_form=True)))
    return info


def peer_certificate_facts(der: bytes | None) -> dict[str, str]:
    """The peer certificate's subject and SHA-256 fingerprint (``peer_subject``,
    ``peer_sha256``); ``?`` for a certificate that does not parse; nothing without one."""
    if not der:
        return {}
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return {"peer_subject": "?"}
    return {"peer_subject": cert.subject.rfc4514_string(), "peer_sha256": fingerprint_sha256(cert)}


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _find_ssl_error(exc: BaseException) -> ssl.SSLError | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def describe_failure(
    exc: BaseException, *, leg: str, host: str = "", own_ca: bool = True, timeout: float = 0.0
) -> str:
    """One line saying why a handshake failed on ``leg`` ("client" or "server")."""
    if isinstance(exc, trio.TooSlowError):
        return f"TLS handshake timed out after {timeout:g}s"
    error = _find_ssl_error(exc)
    if isinstance(error, ssl.SSLCertVerificationError):
        message = error.verify_message or error.reason or "verification failed"
        if "mismatch" in message.lower():
            return f"upstream certificate does not match host {host}: {message}"
        hint = "" if leg != "server" else " (use --upstream-ca FILE for a private CA)"
        return f"certificate verify failed: {message}{hint}"
    if error is not None:
        reason = error.reason or ""
        if leg == "client" and reason in _CLIENT_DISTRUST:
            alert = reason.split("ALERT_", 1)[-1].replace("_", " ").lower()
            who = "pop3tap's CA (see `pop3tap ca export`)" if own_ca else "the certificate"
            return f"client does not trust {who}: TLS alert {alert}"
        if reason in _NOT_TLS:
            peer = "client" if leg == "client" else "upstream"
            return f"{peer} did not speak TLS ({reason.lower().replace('_', ' ')})"
        if isinstance(error, ssl.SSLEOFError) or reason == "UNEXPECTED_EOF_WHILE_READING":
            return _closed_during(leg, own_ca)
        text = reason.lower().replace("_", " ") if reason else str(error).splitlines()[0]
        return f"TLS handshake failed: {text}"
    if isinstance(exc, trio.BrokenResourceError | trio.ClosedResourceError | OSError):
        cause = exc.__cause__ or exc.__context__
        if isinstance(exc, OSError) and exc.strerror:
            return f"TLS handshake failed: {exc.strerror}"
        if isinstance(cause, OSError) and cause.strerror:
            return f"TLS handshake failed: {cause.strerror}"
        return _closed_during(leg, own_ca)
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"TLS handshake failed: {first}"


def _closed_during(leg: str, own_ca: bool) -> str:
    if leg == "client":
        maybe = " (perhaps it does not trust pop3tap's CA)" if own_ca else ""
        return f"client closed the connection during the TLS handshake{maybe}"
    return "upstream closed the connection during the TLS handshake"
