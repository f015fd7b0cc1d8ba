"""TLS for both legs of the relay: context builders, handshakes, and what gets recorded.

Theory of operation
-------------------
pop3tap speaks TLS in three places:

* **Upstream, as a client**: implicit TLS to the server (RFC 8314 §3, port 995) or after
  STLS (RFC 2595 §4). Verification is on by default, against the system trust store (or
  only the ``--upstream-ca`` file) and the upstream host name, which is also sent as SNI
  (RFC 6066 §3); for an IP address the certificate's IP SAN is checked and no SNI is sent
  (RFC 6066 §3 forbids literal addresses in SNI; Python's ``ssl`` already omits it).
* **Downstream, as a server**: implicit TLS on the listening port, or after STLS. The
  certificate is a leaf minted by pop3tap's own CA (:mod:`pop3tap.certs`) for the
  upstream host name, the listen address, ``localhost`` and ``127.0.0.1``; a client that
  asks (SNI) for another name gets a leaf for that name too. Or the user's ``--cert/--key``.
* **Keylog**: with ``--keylog FILE`` (or ``SSLKEYLOGFILE``) every context writes its TLS
  secrets in the NSS key log format, so Wireshark can decrypt the raw traffic.

This module builds the contexts; :mod:`pop3tap._tlsio` (re-exported here) does the
handshakes and describes sessions and failures; the relay applies the timeouts
(``trio.fail_after(config.handshake_timeout)``) around them.
Recorded TLS facts never include keys: version, cipher, SNI, and the certificate's
subject and SHA-256 fingerprint.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from cryptography import x509

from pop3tap._tlsio import (
    LEAF_ATTR,
    SNI_ATTR,
    client_handshake,
    describe_failure,
    is_tls_end,
    send_close_notify,
    server_handshake,
    tls_info,
)
from pop3tap.certs import (
    CertError,
    CertificateAuthority,
    CertStore,
    LeafCertificate,
    default_ca_dir,
    fingerprint_sha256,
    load_or_create_ca,
    normalize_names,
)

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

__all__ = [
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "ServerTls",
    "TlsConfig",
    "TlsContexts",
    "TlsSetupError",
    "client_handshake",
    "describe_failure",
    "is_tls_end",
    "send_close_notify",
    "server_context_for_ca",
    "server_context_from_files",
    "server_handshake",
    "tls_info",
    "upstream_context",
]

DEFAULT_HANDSHAKE_TIMEOUT: Final = 15.0


class TlsSetupError(Exception):
    """A TLS option cannot be honoured (unreadable file, broken CA); one line for the user."""


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """TLS options of a relay (and, later, of replay). The defaults intercept STLS only."""

    #: Implicit TLS to the server (RFC 8314 §3, e.g. port 995).
    upstream_tls: bool = False
    #: Implicit TLS on the listening port.
    listen_tls: bool = False
    #: Trust only this CA file (PEM) for the upstream, instead of the system store.
    upstream_ca: Path | None = None
    #: Skip upstream certificate verification (logged loudly).
    insecure_upstream: bool = False
    #: pop3tap's CA directory; None means :func:`pop3tap.certs.default_ca_dir`.
    ca_dir: Path | None = None
    #: Present this certificate chain and key to clients instead of a minted leaf.
    cert: Path | None = None
    key: Path | None = None
    #: Write TLS secrets here (NSS key log format).
    keylog: Path | None = None
    #: Seconds allowed for each TLS handshake.
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    #: Take over STLS (RFC 2595 §4); False relays the TLS bytes opaquely.
    intercept_stls: bool = True
    #: Keep minted leaves under the CA directory (mode 0600) across runs.
    leaves_on_disk: bool = True

    def options(self) -> dict[str, Any]:
        """The TLS options for capture headers (paths as strings, no secrets)."""
        return {
            "upstream_tls": self.upstream_tls,
            "listen_tls": self.listen_tls,
            "upstream_ca": None if self.upstream_ca is None else str(self.upstream_ca),
            "insecure_upstream": self.insecure_upstream,
            "tls_cert": None if self.cert is None else str(self.cert),
            "tls_keylog": self.keylog is not None,
            "intercept_stls": self.intercept_stls,
            # Where the certificates clients were shown came from: replay uses that CA
            # again when it is still there, so clients that trust it need no change.
            "ca_dir": None if self.cert is not None else str(self.ca_dir or default_ca_dir()),
        }


# --------------------------------------------------------------------------- contexts


def _set_keylog(context: ssl.SSLContext, keylog: Path | None) -> None:
    if keylog is not None:
        context.keylog_filename = str(keylog)


def upstream_context(
    *, ca_file: Path | None = None, insecure: bool = False, keylog: Path | None = None
) -> ssl.SSLContext:
    """A client context for the upstream leg: verifying (system store or ``ca_file``)."""
    try:
        context = ssl.create_default_context(cafile=None if ca_file is None else str(ca_file))
    except FileNotFoundError:
        raise TlsSetupError(f"--upstream-ca {ca_file}: no such file") from None
    except (OSError, ssl.SSLError) as exc:
        raise TlsSetupError(
            f"--upstream-ca {ca_file}: not a readable PEM CA file ({exc})"
        ) from None
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    _set_keylog(context, keylog)
    return context


def _new_server_context(keylog: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    _set_keylog(context, keylog)
    return context


def _load_leaf(context: ssl.SSLContext, leaf: LeafCertificate) -> None:
    """``load_cert_chain`` reads files only: use the cached file or a private temp file."""
    if leaf.path is not None:
        context.load_cert_chain(leaf.path)
        return
    with tempfile.TemporaryDirectory(prefix="pop3tap-") as tmp:
        path = Path(tmp) / "leaf.pem"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(leaf.chain_pem)
        context.load_cert_chain(path)


def server_context_from_files(
    cert: Path, key: Path, *, keylog: Path | None = None
) -> ssl.SSLContext:
    """A server context presenting the user's certificate chain and key (``--cert/--key``)."""
    context = _new_server_context(keylog)
    try:
        context.load_cert_chain(cert, key)
    except FileNotFoundError as exc:
        raise TlsSetupError(f"--cert/--key: {exc.filename or cert}: no such file") from None
    except ssl.SSLError as exc:
        raise TlsSetupError(
            f"--cert {cert} / --key {key}: cannot load them ({exc.reason or exc})"
        ) from None
    except OSError as exc:
        raise TlsSetupError(f"--cert {cert} / --key {key}: {exc.strerror or exc}") from None
    return context


def server_context_for_ca(
    store: CertStore, names: tuple[str, ...], *, keylog: Path | None = None, mint_sni: bool = True
) -> ssl.SSLContext:
    """A server context presenting a leaf for ``names`` signed by ``store``'s CA.

    With ``mint_sni`` a client asking (SNI) for a name not in ``names`` gets a leaf that
    also covers it (the per-name contexts are cached with the leaves).
    """
    leaf = store.leaf_for(names)
    context = _new_server_context(keylog)
    _load_leaf(context, leaf)
    per_name: dict[str, ssl.SSLContext] = {}

    def on_sni(
        sslobj: ssl.SSLObject | ssl.SSLSocket, name: str | None, _ctx: ssl.SSLContext
    ) -> None:
        setattr(sslobj, SNI_ATTR, name)
        chosen = leaf
        if mint_sni and name and not _covered(name, leaf.names):
            wanted = normalize_names([name])
            if wanted:
                key = wanted[0]
                try:
                    chosen = store.leaf_for((*leaf.names, key), persist=False)
                    if key not in per_name:
                        if len(per_name) >= store.capacity:
                            per_name.clear()
                        extra = _new_server_context(keylog)
                        _load_leaf(extra, chosen)
                        per_name[key] = extra
                    sslobj.context = per_name[key]
                except (CertError, ssl.SSLError, OSError):
                    chosen = leaf  # fall back to the default leaf
        setattr(sslobj, LEAF_ATTR, chosen.cert)

    context.sni_callback = on_sni
    return context


def _covered(name: str, names: tuple[str, ...]) -> bool:
    normalized = normalize_names([name])
    return not normalized or normalized[0] in names


@dataclass(frozen=True, slots=True)
class ServerTls:
    """What pop3tap presents to clients: a context, and the certificate it holds by default."""

    context: ssl.SSLContext
    cert_subject: str
    cert_sha256: str
    #: pop3tap's CA, or None with ``--cert/--key``.
    ca: CertificateAuthority | None = None
    #: True when the CA was created to build this context.
    ca_created: bool = False


def warn_if_ca_created(log: FilteringBoundLogger, server: ServerTls) -> None:
    """Log ``tls.ca_created`` when building ``server`` created pop3tap's CA: clients must
    be told to trust it."""
    if server.ca_created and server.ca is not None:
        log.warning(
            "tls.ca_created",
            ca_dir=str(server.ca.directory),
            ca_cert=str(server.ca.cert_path),
            sha256=server.ca.fingerprint,
            note="clients must trust this CA: pop3tap ca export",
        )


class TlsContexts:
    """The contexts of one relay, built on first use and then shared by its sessions."""

    def __init__(self, config: TlsConfig, *, upstream_host: str, listen_host: str) -> None:
        self.config = config
        self.upstream_host = upstream_host
        self.names = normalize_names([upstream_host, listen_host, "localhost", "127.0.0.1"])
        self._upstream: ssl.SSLContext | None = None
        self._server: ServerTls | None = None

    def upstream(self) -> ssl.SSLContext:
        """The client context for the upstream leg."""
        if self._upstream is None:
            config = self.config
            self._upstream = upstream_context(
                ca_file=config.upstream_ca,
                insecure=config.insecure_upstream,
                keylog=config.keylog,
            )
        return self._upstream

    def server(self) -> ServerTls:
        """The server side for clients; may create pop3tap's CA (see ``ca_created``)."""
        if self._server is None:
            self._server = self._build_server()
        return self._server

    @property
    def server_ready(self) -> bool:
        return self._server is not None

    def _build_server(self) -> ServerTls:
        config = self.config
        if (config.cert is None) != (config.key is None):
            raise TlsSetupError("--cert and --key go together")
        return build_server_tls(
            names=self.names,
            cert=config.cert,
            key=config.key,
            ca_dir=config.ca_dir if config.ca_dir is not None else default_ca_dir(),
            leaves_on_disk=config.leaves_on_disk,
            keylog=config.keylog,
        )


def build_server_tls(
    *,
    names: tuple[str, ...],
    cert: Path | None = None,
    key: Path | None = None,
    ca_dir: Path | None = None,
    leaves_on_disk: bool = True,
    keylog: Path | None = None,
) -> ServerTls:
    """What TLS clients are shown: ``cert``/``key`` when given, else a leaf for ``names``
    from pop3tap's CA in ``ca_dir`` (created if missing; see ``ServerTls.ca_created``).

    Raises:
        TlsSetupError: unreadable or mismatched certificate files, or a broken CA.
    """
    if cert is not None and key is not None:
        context = server_context_from_files(cert, key, keylog=keylog)
        subject, sha256 = _describe_cert_file(cert)
        return ServerTls(context=context, cert_subject=subject, cert_sha256=sha256)
    directory = ca_dir if ca_dir is not None else default_ca_dir()
    try:
        ca, created = load_or_create_ca(directory)
        store = CertStore(ca, disk=leaves_on_disk)
        context = server_context_for_ca(store, names, keylog=keylog)
        leaf = store.leaf_for(names)
    except CertError as exc:
        raise TlsSetupError(str(exc)) from None
    except (ssl.SSLError, OSError) as exc:
        raise TlsSetupError(f"cannot load the leaf certificate: {exc}") from None
    return ServerTls(
        context=context,
        cert_subject=leaf.cert.subject.rfc4514_string(),
        cert_sha256=leaf.fingerprint,
        ca=ca,
        ca_created=created,
    )


def _describe_cert_file(path: Path) -> tuple[str, str]:
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return "?", "?"
    return cert.subject.rfc4514_string(), fingerprint_sha256(cert)
