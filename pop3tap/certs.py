"""pop3tap's local certificate authority and the leaf certificates it signs (no trio).

Theory of operation
-------------------
To read a TLS session, pop3tap must terminate the client's TLS itself (RFC 8314 §3
implicit TLS, or RFC 2595 §4 STLS), so it presents a certificate that the client must
trust. Like other interception proxies, it keeps a private CA: one key pair and one
self-signed certificate (BasicConstraints CA, KeyUsage keyCertSign/cRLSign, SKI; valid ten
years, backdated two days for skewed clocks) in a directory of its own. The user installs
the CA certificate (``pop3tap ca export``) in the client's trust store once.

Leaf certificates are minted on demand for a set of names (DNS and IP subject
alternative names, RFC 5280 §4.2.1.6), with EKU serverAuth and an AKI equal to the CA's
SKI, valid about 199 days. Each leaf has its own P-256 key. Leaves are cached in memory
(bounded, least recently used first out) and, when a cache directory is given, on disk as
one PEM file per name set (certificate then key, mode 0600).

The CA private key is written with mode 0600 under a ``0o077`` umask, so it is never
readable by others, even for an instant.
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import ipaddress
import os
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pop3tap._private import (
    UnsafePathError,
    create_private_dir,
    read_owned_file,
    write_private_file,
)

__all__ = [
    "CA_CERT_FILE",
    "CA_KEY_FILE",
    "CertError",
    "CertStore",
    "CertificateAuthority",
    "KeyType",
    "LeafCertificate",
    "default_ca_dir",
    "fingerprint_sha256",
    "init_ca",
    "load_ca",
    "load_or_create_ca",
    "normalize_names",
]

KeyType = Literal["ec", "rsa"]

#: File names inside the CA directory.
CA_CERT_FILE: Final = "pop3tap-ca.pem"
CA_KEY_FILE: Final = "pop3tap-ca-key.pem"
LEAF_DIR: Final = "leaves"

CA_VALIDITY: Final = datetime.timedelta(days=3650)
LEAF_VALIDITY: Final = datetime.timedelta(days=199)
BACKDATE: Final = datetime.timedelta(days=2)
#: Leaves kept in memory.
CACHE_CAPACITY: Final = 128
#: A cached leaf is re-minted when it has less than this left.
RENEW_BEFORE: Final = datetime.timedelta(days=7)


class CertError(Exception):
    """A CA or certificate problem; the message is one line fit for the user."""


def default_ca_dir() -> Path:
    """``${XDG_CONFIG_HOME:-~/.config}/pop3tap/ca``."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "pop3tap" / "ca"


def fingerprint_sha256(cert: x509.Certificate) -> str:
    """The SHA-256 fingerprint of a certificate's DER, as colon-separated hex."""
    digest = cert.fingerprint(hashes.SHA256())
    return ":".join(f"{b:02X}" for b in digest)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600 (see :mod:`pop3tap._private`)."""
    write_private_file(path, data)


def _check_ca_dir(directory: Path, *, create: bool) -> None:
    """Make or check the CA directory: 0700, ours, writable by nobody else.

    Raises :class:`CertError` (one line with the fix).
    """
    try:
        if create or directory.exists() or directory.is_symlink():
            create_private_dir(
                directory,
                "CA directory",
                owns=(CA_CERT_FILE, CA_KEY_FILE, LEAF_DIR).__contains__,
            )
    except UnsafePathError as exc:
        raise CertError(str(exc)) from None
    except OSError as exc:
        raise CertError(f"cannot use the CA directory {directory}: {exc.strerror or exc}") from None


def _new_key(key_type: KeyType) -> CertificateIssuerPrivateKeyTypes:
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: CertificateIssuerPrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    """pop3tap's CA: its certificate, its key, and where they live."""

    cert: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes
    directory: Path

    @property
    def cert_path(self) -> Path:
        """The CA certificate (PEM): what clients must trust."""
        return self.directory / CA_CERT_FILE

    @property
    def key_path(self) -> Path:
        return self.directory / CA_KEY_FILE

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def fingerprint(self) -> str:
        return fingerprint_sha256(self.cert)

    @property
    def ski(self) -> x509.SubjectKeyIdentifier:
        return self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value


def _build_ca(key_type: KeyType) -> tuple[x509.Certificate, CertificateIssuerPrivateKeyTypes]:
    key = _new_key(key_type)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "pop3tap local CA"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pop3tap"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, os.uname().nodename[:64] or "-"),
        ]
    )
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def init_ca(
    directory: Path | None = None, *, key_type: KeyType = "ec", force: bool = False
) -> CertificateAuthority:
    """Create a new CA in ``directory`` (default :func:`default_ca_dir`).

    Refuses to replace an existing CA unless ``force``; cached leaves are then removed.
    """
    directory = directory if directory is not None else default_ca_dir()
    cert_path, key_path = directory / CA_CERT_FILE, directory / CA_KEY_FILE
    _check_ca_dir(directory, create=True)
    if not force and (cert_path.exists() or key_path.exists() or key_path.is_symlink()):
        raise CertError(f"a CA already exists in {directory} (use --force to replace it)")
    cert, key = _build_ca(key_type)
    try:
        _write_private(key_path, _key_pem(key))
        write_private_file(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
        leaves = directory / LEAF_DIR
        if leaves.is_dir() and not leaves.is_symlink():
            for old in leaves.glob("*.pem"):
                old.unlink(missing_ok=True)
    except OSError as exc:
        raise CertError(f"cannot write the CA to {directory}: {exc.strerror or exc}") from None
    return CertificateAuthority(cert=cert, key=key, directory=directory)


def load_ca(directory: Path | None = None) -> CertificateAuthority:
    """Load the CA from ``directory``; :class:`CertError` if it is missing or broken."""
    directory = directory if directory is not None else default_ca_dir()
    cert_path, key_path = directory / CA_CERT_FILE, directory / CA_KEY_FILE
    if not cert_path.exists() and not key_path.exists():
        raise CertError(f"no pop3tap CA in {directory}: run `pop3tap ca init`")
    _check_ca_dir(directory, create=False)
    try:
        cert_pem = read_owned_file(cert_path, "CA certificate", private=False)
        key_pem = read_owned_file(key_path, "CA key", private=True)
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except UnsafePathError as exc:
        raise CertError(str(exc)) from None
    except OSError as exc:
        raise CertError(f"cannot read the CA in {directory}: {exc.strerror or exc}") from None
    except (ValueError, TypeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CertError(f"the CA in {directory} is not readable PEM: {first}") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise CertError(f"the CA key in {directory} is neither RSA nor EC")
    if cert.public_key() != key.public_key():
        raise CertError(f"the CA certificate and key in {directory} do not match")
    return CertificateAuthority(cert=cert, key=key, directory=directory)


def load_or_create_ca(
    directory: Path | None = None, *, key_type: KeyType = "ec"
) -> tuple[CertificateAuthority, bool]:
    """Load the CA, creating it first when the directory holds none; returns (ca, created)."""
    directory = directory if directory is not None else default_ca_dir()
    if (directory / CA_CERT_FILE).exists() and (directory / CA_KEY_FILE).exists():
        return load_ca(directory), False
    # Several processes may start at once (record and replay, pytest-xdist): one creates
    # the CA under an exclusive lock, the others wait and load it.
    _check_ca_dir(directory, create=True)
    try:
        lock_fd = os.open(
            directory / ".lock",
            os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0),
            0o600,
        )
    except OSError as exc:
        raise CertError(f"cannot use the CA directory {directory}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        if (directory / CA_CERT_FILE).exists() or (directory / CA_KEY_FILE).exists():
            return load_ca(directory), False
        return init_ca(directory, key_type=key_type), True
    finally:
        os.close(lock_fd)  # releases the lock


def normalize_names(names: Iterable[str]) -> tuple[str, ...]:
    """Deduplicated names in order: IP addresses in canonical form, host names lowercased.

    Wildcard-free DNS names and IP addresses only; unspecified addresses (``0.0.0.0``,
    ``::``) and empty strings are dropped.
    """
    seen: dict[str, None] = {}
    for raw in names:
        name = raw.strip().strip("[]").rstrip(".")
        if not name:
            continue
        try:
            ip = ipaddress.ip_address(name)
        except ValueError:
            name = name.lower()
            if not _is_dns_name(name):
                continue
        else:
            if ip.is_unspecified:
                continue
            name = str(ip)
        seen.setdefault(name, None)
    return tuple(seen)


def _is_dns_name(name: str) -> bool:
    if len(name) > 253:
        return False
    labels = name.split(".")
    return all(
        0 < len(label) <= 63
        and not label.startswith("-")
        and all(c.isalnum() or c in "-_" for c in label)
        and label.isascii()
        for label in labels
    )


def _san(names: Sequence[str]) -> x509.SubjectAlternativeName:
    general: list[x509.GeneralName] = []
    for name in names:
        try:
            general.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            general.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(general)


@dataclass(frozen=True, slots=True)
class LeafCertificate:
    """A minted server certificate and its key (PEM), for the names in ``names``."""

    names: tuple[str, ...]
    cert: x509.Certificate
    cert_pem: bytes
    key_pem: bytes
    #: The on-disk PEM (certificate then key), when the store caches on disk.
    path: Path | None = None

    @property
    def chain_pem(self) -> bytes:
        """Certificate then key, as ``ssl.SSLContext.load_cert_chain`` reads them."""
        return self.cert_pem + self.key_pem

    @property
    def fingerprint(self) -> str:
        return fingerprint_sha256(self.cert)


class CertStore:
    """Mint leaf certificates signed by a CA, with a bounded in-memory cache.

    With ``disk=True`` leaves are also kept under ``<ca dir>/leaves/`` (mode 0600) and
    reused across runs while they are valid and signed by this CA.
    """

    def __init__(
        self, ca: CertificateAuthority, *, disk: bool = False, capacity: int = CACHE_CAPACITY
    ) -> None:
        self.ca = ca
        self.disk = disk
        self.capacity = max(1, capacity)
        self._cache: OrderedDict[tuple[str, ...], LeafCertificate] = OrderedDict()
        #: How many leaves were minted (not found in a cache); for tests and logs.
        self.minted = 0

    def leaf_for(self, names: Iterable[str], *, persist: bool = True) -> LeafCertificate:
        """A valid leaf for ``names`` (the first one becomes the subject CN).

        ``persist=False`` keeps it in memory only: names a client chose (SNI) must not
        fill the disk.
        """
        key = normalize_names(names)
        if not key:
            raise CertError("no usable host name or address for the certificate")
        cached = self._cache.get(key)
        if cached is not None and self._fresh(cached.cert):
            self._cache.move_to_end(key)
            return cached
        on_disk = self.disk and persist
        leaf = self._load_from_disk(key) if on_disk else None
        if leaf is None:
            leaf = self._mint(key)
            self.minted += 1
            if on_disk:
                leaf = self._save_to_disk(leaf)
        self._cache[key] = leaf
        self._cache.move_to_end(key)
        while len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return leaf

    def __len__(self) -> int:
        return len(self._cache)

    def _fresh(self, cert: x509.Certificate) -> bool:
        return cert.not_valid_after_utc - _now() > RENEW_BEFORE

    def _mint(self, names: tuple[str, ...]) -> LeafCertificate:
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        common_name = names[0][:64]
        cert = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pop3tap"),
                    ]
                )
            )
            .issuer_name(self.ca.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(min(now + LEAF_VALIDITY, self.ca.cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(_san(names), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(self.ca.ski),
                critical=False,
            )
            .sign(self.ca.key, hashes.SHA256())
        )
        return LeafCertificate(
            names=names,
            cert=cert,
            cert_pem=cert.public_bytes(serialization.Encoding.PEM),
            key_pem=_key_pem(key),
        )

    def _leaf_path(self, names: tuple[str, ...]) -> Path:
        digest = hashlib.sha256("\n".join(names).encode()).hexdigest()[:32]
        return self.ca.directory / LEAF_DIR / f"{digest}.pem"

    def _load_from_disk(self, names: tuple[str, ...]) -> LeafCertificate | None:
        path = self._leaf_path(names)
        try:
            data = read_owned_file(path, "leaf certificate", private=True)
            cert = x509.load_pem_x509_certificate(data)
            key_start = data.index(b"-----BEGIN PRIVATE KEY-----")
            key = serialization.load_pem_private_key(data[key_start:], password=None)
        except (OSError, ValueError, TypeError, UnsafePathError):
            return None
        try:
            cert.verify_directly_issued_by(self.ca.cert)
        except (ValueError, TypeError, InvalidSignature):
            return None
        if cert.public_key() != key.public_key() or not self._fresh(cert):
            return None
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        return LeafCertificate(
            names=names, cert=cert, cert_pem=cert_pem, key_pem=data[key_start:], path=path
        )

    def _save_to_disk(self, leaf: LeafCertificate) -> LeafCertificate:
        path = self._leaf_path(leaf.names)
        try:
            create_private_dir(
                path.parent, "leaf certificate directory", owns=lambda name: name.endswith(".pem")
            )
            _write_private(path, leaf.chain_pem)
        except (OSError, UnsafePathError):
            return leaf  # the memory cache still works
        return LeafCertificate(
            names=leaf.names,
            cert=leaf.cert,
            cert_pem=leaf.cert_pem,
            key_pem=leaf.key_pem,
            path=path,
        )
