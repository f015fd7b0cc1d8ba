"""pop3tap's CA and leaf minting: file modes, extensions, verification by ssl, the cache."""

from __future__ import annotations

import ipaddress
import ssl
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import trio
import trio.testing
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from pop3tap.certs import CertError, CertStore, init_ca, load_ca, load_or_create_ca
from pop3tap.cli import main
from pop3tap.tls import server_context_for_ca, server_handshake


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    return tmp_path / "ca"


def test_ca_files_modes_and_extensions(ca_dir: Path) -> None:
    ca = init_ca(ca_dir)
    assert stat.S_IMODE(ca.key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(ca_dir.stat().st_mode) & 0o077 == 0
    cert = ca.cert
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    assert cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert 3650 <= lifetime.days <= 3653
    assert load_ca(ca_dir).fingerprint == ca.fingerprint
    with pytest.raises(CertError, match="already exists"):
        init_ca(ca_dir)


def test_rsa_ca_and_load_or_create(ca_dir: Path) -> None:
    ca, created = load_or_create_ca(ca_dir, key_type="rsa")
    assert created and ca.cert.public_key().key_size == 3072  # type: ignore[union-attr]
    again, created_again = load_or_create_ca(ca_dir)
    assert not created_again and again.fingerprint == ca.fingerprint


def test_missing_or_broken_ca_is_one_line(ca_dir: Path) -> None:
    with pytest.raises(CertError, match="run `pop3tap ca init`"):
        load_ca(ca_dir)
    init_ca(ca_dir)
    (ca_dir / "pop3tap-ca-key.pem").write_text("garbage")
    with pytest.raises(CertError, match="not readable PEM"):
        load_ca(ca_dir)


def test_leaf_contents(ca_dir: Path) -> None:
    ca = init_ca(ca_dir)
    leaf = CertStore(ca).leaf_for(["Pop.Example.ORG.", "127.0.0.1", "0.0.0.0", "localhost"])
    assert leaf.names == ("pop.example.org", "127.0.0.1", "localhost")
    cert = leaf.cert
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["pop.example.org", "localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ca.ski.digest
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert 199 <= (cert.not_valid_after_utc - cert.not_valid_before_utc).days <= 202
    cert.verify_directly_issued_by(ca.cert)


def test_cache_in_memory_bounded_and_on_disk(ca_dir: Path) -> None:
    ca = init_ca(ca_dir)
    store = CertStore(ca, capacity=2)
    first = store.leaf_for(["a.test"])
    assert store.leaf_for(["A.test"]) is first and store.minted == 1
    store.leaf_for(["b.test"])
    store.leaf_for(["c.test"])
    assert len(store) == 2 and store.minted == 3
    assert store.leaf_for(["a.test"]) is not first  # evicted, minted again
    disk = CertStore(ca, disk=True)
    on_disk = disk.leaf_for(["d.test"])
    assert on_disk.path is not None and stat.S_IMODE(on_disk.path.stat().st_mode) == 0o600
    reloaded = CertStore(load_ca(ca_dir), disk=True)
    assert reloaded.leaf_for(["d.test"]).fingerprint == on_disk.fingerprint
    assert reloaded.minted == 0


@pytest.mark.parametrize("name", ["localhost", "127.0.0.1", "pop.other.test"])
async def test_leaf_verifies_with_ssl(ca_dir: Path, name: str) -> None:
    ca = init_ca(ca_dir)
    server_ctx = server_context_for_ca(CertStore(ca), ("pop.example.org", "127.0.0.1", "localhost"))
    client_ctx = ssl.create_default_context(cafile=str(ca.cert_path))
    client_end, server_end = trio.testing.memory_stream_pair()
    peer: list[dict[str, object]] = []

    async def client() -> None:
        tls = trio.SSLStream(client_end, client_ctx, server_hostname=name)
        await tls.do_handshake()
        peer.append(tls.getpeercert())  # type: ignore[arg-type]

    async with trio.open_nursery() as nursery:
        nursery.start_soon(client)
        await server_handshake(server_end, server_ctx)
    # "pop.other.test" is not in the default leaf: it was minted for the client's SNI.
    assert peer and peer[0]["subjectAltName"]


def test_cli_ca_init_and_export(
    ca_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ca", "export", "--ca-dir", str(ca_dir)]) == 1
    assert "pop3tap ca init" in capsys.readouterr().err
    assert main(["ca", "init", "--ca-dir", str(ca_dir)]) == 0
    assert "SHA-256 fingerprint" in capsys.readouterr().out
    assert main(["ca", "init", "--ca-dir", str(ca_dir)]) == 0  # already there: a no-op
    assert "already exists" in capsys.readouterr().out
    assert main(["ca", "export", "--ca-dir", str(ca_dir)]) == 0
    exported = capsys.readouterr().out
    assert exported.startswith("-----BEGIN CERTIFICATE-----")
    out = tmp_path / "ca.pem"
    assert main(["ca", "export", "--ca-dir", str(ca_dir), "--out", str(out)]) == 0
    assert out.read_text() == exported


_RECORD = [sys.executable, "-m", "pop3tap", "record", "--upstream", "127.0.0.1:995"]
_RECORD += ["--no-captures", "--listen", "127.0.0.1:0"]


def _record(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``pop3tap record`` in a child process (it configures logging globally)."""
    return subprocess.run(
        [*_RECORD, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_record_tls_usage_errors(tmp_path: Path) -> None:
    result = _record("--cert", str(tmp_path / "c.pem"))
    assert result.returncode == 2 and "--cert and --key go together" in result.stderr
    result = _record("--upstream-tls", "--upstream-ca", str(tmp_path / "none.pem"))
    assert result.returncode == 2 and "no such file" in result.stderr  # a missing input file
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "pop3tap-ca-key.pem").write_text("garbage")
    (broken / "pop3tap-ca-key.pem").chmod(0o600)  # a shared key is refused before parsing
    (broken / "pop3tap-ca.pem").write_text("garbage")
    result = _record("--listen-tls", "--ca-dir", str(broken))
    assert result.returncode == 1 and "not readable PEM" in result.stderr
    assert "Traceback" not in result.stderr


async def test_leaves_minted_for_client_sni_stay_in_memory(ca_dir: Path) -> None:
    """A client chooses its SNI: the leaves it makes pop3tap mint must not fill the disk."""
    ca = init_ca(ca_dir)
    store = CertStore(ca, disk=True)
    server_ctx = server_context_for_ca(store, ("pop.example.org", "127.0.0.1"))
    client_ctx = ssl.create_default_context(cafile=str(ca.cert_path))
    for index in range(5):
        client_end, server_end = trio.testing.memory_stream_pair()

        async def client(name: str = f"h{index}.attacker.example") -> None:
            tls = trio.SSLStream(client_end, client_ctx, server_hostname=name)  # noqa: B023
            await tls.do_handshake()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(client)
            await server_handshake(server_end, server_ctx)
    on_disk = sorted(p.name for p in (ca_dir / "leaves").glob("*.pem"))
    assert len(on_disk) == 1  # the configured names only
    assert store.minted == 6


_RACE_SCRIPT = """
import sys
from pathlib import Path
from pop3tap.certs import load_or_create_ca
ca, created = load_or_create_ca(Path(sys.argv[1]))
print(ca.fingerprint, created)
"""


def test_concurrent_processes_agree_on_one_ca(tmp_path: Path) -> None:
    for attempt in range(5):
        directory = tmp_path / f"ca{attempt}"
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _RACE_SCRIPT, str(directory)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(8)
        ]
        results = [proc.communicate(timeout=60) for proc in procs]
        assert all(proc.returncode == 0 for proc in procs), results
        fingerprints = {out.split()[0] for out, _err in results}
        created = [out.split()[1] for out, _err in results]
        assert len(fingerprints) == 1 and created.count("True") == 1
        assert load_ca(directory).fingerprint in fingerprints
