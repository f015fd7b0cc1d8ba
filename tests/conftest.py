"""Shared fixtures. Real-peer fixtures (Dovecot, curl) skip when the binary is missing, unless
POP3TAP_REQUIRE_REAL_PEERS=1 (set by scripts/test.sh), in which case they fail."""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from dovecot import Dovecot, Mailbox
from hypothesis import settings
from mail_corpus import standard_corpus
from mailutils import Mailutils

# A property test never times itself: on a loaded 2-core machine one example can take
# longer than hypothesis's default 200 ms deadline, and a timing failure says nothing
# about the property. Every @settings(...) in the suite inherits this profile.
settings.register_profile("pop3tap", deadline=None)
settings.load_profile("pop3tap")

REQUIRE_REAL_PEERS = os.environ.get("POP3TAP_REQUIRE_REAL_PEERS") == "1"


def _missing_peer(reason: str) -> None:
    """Skip the test, or fail it when real peers are required (CI)."""
    if REQUIRE_REAL_PEERS:
        pytest.fail(f"POP3TAP_REQUIRE_REAL_PEERS=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def _require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        _missing_peer(f"{name!r} is not installed (run: bash scripts/test.sh)")
        raise AssertionError("unreachable")
    return path


def pytest_configure(config: pytest.Config) -> None:
    """Refuse to test compiled modules older than their sources.

    An editable install builds mypyc's modules next to the sources, and Python prefers
    them: after an edit to one of their sources pop3tap warns and loads the sources, and
    the tests would quietly stop testing the compiled core. The extension files are
    compared with their sources only in a checkout (where both come from the same tree);
    ``scripts/test.sh`` rebuilds when the sources change.
    """
    from pop3tap import _pure

    if _pure.requested():
        return
    stale = _pure.stale_compiled_core()
    if stale:
        raise pytest.UsageError(
            f"the compiled modules are older than {', '.join(stale)}: rebuild them "
            "(bash scripts/test.sh, or pip install -e .) or test the sources with "
            "POP3TAP_PURE_PYTHON=1"
        )


# --------------------------------------------------------------------------- TLS


@pytest.fixture(scope="session")
def tls_ca() -> trustme.CA:
    """The session's test CA; it signs Dovecot's certificate (for 127.0.0.1 and localhost)."""
    return trustme.CA()


# --------------------------------------------------------------------------- real peers


@pytest.fixture(scope="session")
def dovecot(tls_ca: trustme.CA) -> Iterator[Dovecot]:
    """One private Dovecot (POP3 + POP3S on ephemeral 127.0.0.1 ports) for the whole session."""
    binary = _require_binary("dovecot")
    if os.geteuid() != 0:
        _missing_peer("the private Dovecot must run as root")
    with Dovecot(ca=tls_ca, binary=binary) as server:
        yield server


@pytest.fixture(scope="session")
def mailutils(tls_ca: trustme.CA) -> Iterator[Mailutils]:
    """A private GNU Mailutils pop3d (STLS and POP3S listeners on 127.0.0.1) under socat."""
    _require_binary("socat")
    _require_binary("openssl")
    if shutil.which("pop3d", path="/usr/sbin:/usr/bin") is None:
        _missing_peer("GNU Mailutils pop3d is not installed (run: bash scripts/test.sh)")
    if os.geteuid() != 0:
        _missing_peer("the private pop3d must run as root")
    with Mailutils(tls_ca) as server:
        yield server


@pytest.fixture(scope="session")
def openssl_path() -> str:
    """Path of the openssl binary (its s_client is a real TLS client)."""
    return _require_binary("openssl")


@pytest.fixture(scope="session")
def curl_path() -> str:
    """Path of the curl binary."""
    return _require_binary("curl")


@pytest.fixture(scope="session")
def corpus() -> list[bytes]:
    """The standard messages: small, dot-stuffed, 8-bit UTF-8, big (3 MiB)."""
    return standard_corpus()


@pytest.fixture(autouse=True)
def dovecot_captures_lint_clean(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every capture a test recorded from the test Dovecot lints clean at error level.

    A test whose captures are expected to carry error findings names the rules with
    ``@pytest.mark.lint_findings("rule-id", ...)``.
    """
    yield
    tmp_path = request.node.funcargs.get("tmp_path") if hasattr(request.node, "funcargs") else None
    if "dovecot" not in request.fixturenames or not isinstance(tmp_path, Path):
        return
    from pop3tap.analysis import CaptureStream
    from pop3tap.capture import CaptureError
    from pop3tap.lint import lint_capture

    server: Dovecot = request.getfixturevalue("dovecot")
    upstreams = {f"{server.host}:{server.pop3_port}", f"{server.host}:{server.pop3s_port}"}
    marker = request.node.get_closest_marker("lint_findings")
    allowed = set(marker.args) if marker is not None else set()
    problems = []
    for path in sorted(tmp_path.rglob("*.p3cap")):
        try:
            stream = CaptureStream(path)
        except CaptureError:
            continue
        if stream.header.upstream not in upstreams or _has_injected_faults(path):
            stream.close()  # not Dovecot's session, or pop3tap broke it on purpose
            continue
        for finding in lint_capture(stream).findings:
            if finding.severity == "error" and finding.rule not in allowed:
                problems.append(f"{path.name} #{finding.seq}: {finding.rule}: {finding.message}")
    if problems:
        pytest.fail("Dovecot captures with lint errors: " + "; ".join(problems), pytrace=False)


def _has_injected_faults(path: Path) -> bool:
    """Whether the relay injected faults (``fault`` records) into this recorded session."""
    from pop3tap.analysis import CaptureStream
    from pop3tap.capture import EventRecord

    return any(
        isinstance(record, EventRecord) and record.name == "fault"
        for record in CaptureStream(path).records()
    )


@pytest.fixture
def mailbox(dovecot: Dovecot, corpus: list[bytes]) -> Mailbox:
    """A fresh Dovecot user whose INBOX holds the standard corpus as messages 1..4."""
    return dovecot.new_mailbox(corpus)


# --------------------------------------------------------------------------- CI guard


_realpeer_outcomes: dict[str, int] = {"passed": 0, "skipped": 0}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Under POP3TAP_REQUIRE_REAL_PEERS=1 a skipped real-peer test is a failure."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if item.get_closest_marker("realpeer") is None:
        return
    if report.skipped:
        _realpeer_outcomes["skipped"] += 1
        if REQUIRE_REAL_PEERS:
            report.outcome = "failed"
            report.longrepr = (
                f"real-peer test skipped under POP3TAP_REQUIRE_REAL_PEERS=1: {report.longrepr}"
            )
    elif report.when == "call" and report.passed:
        _realpeer_outcomes["passed"] += 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """CI must exercise the real peers: fail a run in which no real-peer test passed."""
    collected_realpeer = any(
        item.get_closest_marker("realpeer") is not None for item in session.items
    )
    if REQUIRE_REAL_PEERS and collected_realpeer and _realpeer_outcomes["passed"] == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# --------------------------------------------------------------------------- full disk


@contextlib.contextmanager
def _tmpfs(mount_point: Path, *, fill: bool) -> Iterator[str]:
    """A 64 KiB tmpfs at ``mount_point``, optionally filled to the last byte; needs root."""
    if os.geteuid() != 0:
        _missing_peer("mounting a tmpfs needs root")
    mount_point.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", str(mount_point)],
        check=True,
    )
    try:
        if fill:
            fd = os.open(mount_point / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                while True:
                    os.write(fd, b"\0" * 512)
            except OSError:
                pass
            finally:
                os.close(fd)
        yield str(mount_point)
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[str]:
    """A directory on a tiny tmpfs filled to the last byte (a real ENOSPC); needs root."""
    with _tmpfs(tmp_path / "full", fill=True) as path:
        yield path


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[str]:
    """A directory on an empty 64 KiB tmpfs: it fills up during a session; needs root."""
    with _tmpfs(tmp_path / "tiny", fill=False) as path:
        yield path


@pytest.fixture
def no_cycle_collector() -> Iterator[None]:
    """The cycle collector off for the test: what is not freed by reference counting stays."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
