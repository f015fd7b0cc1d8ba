"""pytest plugin (``pytest11`` entry point): replay recorded POP3 sessions in tests.

A test asks for the ``pop3_replay`` fixture and talks to ``pop3_replay.host`` /
``pop3_replay.port`` with any POP3 client. The capture defaults to
``<test dir>/captures/<module>/<test name>.p3cap``; ``@pytest.mark.pop3_capture(path, **opts)``
names another one (relative to the test file) and passes replay options (``match``,
``timing``, ``sessions``, ``by_user``).

Record modes, as in vcrpy / pytest-recording:

* ``--pop3-record-mode=none`` (default): replay only; a missing capture fails the test.
* ``once``: record through pop3tap's relay to ``--pop3-upstream HOST:PORT`` when the capture
  is missing, otherwise replay.
* ``all``: always record again.

When a test makes several connections while recording, the extra sessions are stored next
to the first as ``<test name>~2.p3cap``, ``~3`` ... and replayed in that order.

TLS: ``pop3_replay.ca_file`` is the CA certificate a TLS client must trust (pop3tap's CA,
``ca_dir=`` in the marker, default as ``pop3tap ca``), and ``pop3_replay.ssl_context()``
a client context trusting it: for ``poplib.POP3.stls`` on STLS captures (RFC 2595 §4) and
``poplib.POP3_SSL`` with ``@pytest.mark.pop3_capture(..., listen_tls=True)`` (RFC 8314).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import ssl
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

_MODES = ("none", "once", "all")


class Pop3ReplayWarning(UserWarning):
    """A replayed test left recorded exchanges unplayed or sent unrecorded commands."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pop3tap", "pop3tap POP3 record/replay")
    group.addoption(
        "--pop3-record-mode",
        choices=_MODES,
        default="none",
        help="none: replay only (default); once: record missing captures; all: record again",
    )
    group.addoption(
        "--pop3-upstream",
        metavar="HOST:PORT",
        default=None,
        help="the real POP3 server to record from (record modes once/all)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "pop3_capture(path=None, **options): the capture the pop3_replay fixture serves "
        "(relative to the test file) and replay options such as match='strict'",
    )
    config.addinivalue_line(
        "markers",
        "pop3_faults(*specs): faults the replay server injects (docs/faults.md), "
        "e.g. pop3_faults('RETR#2:cut=500')",
    )


def default_capture_path(node: pytest.Item) -> Path:
    """``<test dir>/captures/<module>/<Class.test name>.p3cap``.

    The name is the node id after the file (class and test, joined by ``.``). Where it
    holds characters a file name should not (parameters such as ``[1.5]``), they become
    ``_`` and a short hash of the exact id is added, so two tests never share a capture.
    """
    test_file = Path(str(node.path))
    exact = ".".join(node.nodeid.split("::")[1:]) or node.name
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", exact).strip("_") or "test"
    if name != exact:
        name += "-" + hashlib.sha256(exact.encode()).hexdigest()[:8]
    return test_file.parent / "captures" / test_file.stem / f"{name}.p3cap"


def capture_set(path: Path) -> list[Path]:
    """The capture and its numbered siblings (``name~2.p3cap`` ...), in session order.

    ``~`` never appears in a default capture name, so one test's siblings cannot be
    mistaken for another test's capture.
    """
    stem = path.name[: -len(".p3cap")] if path.name.endswith(".p3cap") else path.stem
    pattern = re.compile(re.escape(stem) + r"~(\d+)\.p3cap")
    extra = []
    if path.parent.is_dir():
        for candidate in path.parent.iterdir():
            match = pattern.fullmatch(candidate.name)
            if match:
                extra.append((int(match.group(1)), candidate))
    return ([path] if path.exists() else []) + [p for _n, p in sorted(extra)]


@dataclass
class RecordingSession:
    """What ``pop3_replay`` yields while recording: the relay's address."""

    host: str
    port: int
    capture_path: Path
    recording: bool = True
    unplayed: list[Any] = field(default_factory=list)
    unmatched: list[Any] = field(default_factory=list)
    #: pop3tap's CA directory of the recording relay (None: the default, as ``pop3tap ca``).
    ca_dir: Path | None = None

    @property
    def ca_file(self) -> Path:
        """The CA certificate the relay signs client leaves with (created on first use)."""
        from pop3tap.certs import load_or_create_ca

        ca, _created = load_or_create_ca(self.ca_dir)
        return ca.cert_path

    def ssl_context(self) -> ssl.SSLContext:
        """A client context trusting :attr:`ca_file`."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def all_played(self) -> bool:
        return True


@pytest.fixture
def pop3_replay(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A replay server for this test's capture (or a recording relay, see the record modes)."""
    node = request.node
    marker = node.get_closest_marker("pop3_capture")
    options: dict[str, Any] = dict(marker.kwargs) if marker else {}
    # Every pop3_faults marker counts (the test's own, its class's, a module's pytestmark).
    specs = [str(a) for faults in node.iter_markers("pop3_faults") for a in faults.args]
    if specs:
        options["faults"] = (*options.get("faults", ()), *specs)
    if marker and marker.args:
        path = Path(str(node.path)).parent / str(marker.args[0])
    else:
        path = default_capture_path(node)
    mode = request.config.getoption("--pop3-record-mode")
    upstream = request.config.getoption("--pop3-upstream")
    existing = capture_set(path)
    if mode == "all" or (mode == "once" and not existing):
        if not upstream:
            pytest.fail(
                f"pop3tap: --pop3-record-mode={mode} needs --pop3-upstream HOST:PORT "
                f"to record {path}",
                pytrace=False,
            )
        ca_dir = options.get("ca_dir")
        yield from _record(path, upstream, None if ca_dir is None else Path(str(ca_dir)))
        return
    if not existing:
        pytest.fail(
            f"pop3tap: no capture at {path} (record mode {mode}); record it with "
            f"--pop3-record-mode=once --pop3-upstream HOST:PORT",
            pytrace=False,
        )
    from pop3tap.capture import CaptureError
    from pop3tap.replay import ReplayError, replay_server
    from pop3tap.tls import TlsSetupError

    try:
        context = replay_server(existing, **options)
        handle = context.__enter__()
    except (CaptureError, ReplayError, TlsSetupError, ValueError) as exc:
        pytest.fail(f"pop3tap: {exc}", pytrace=False)
    try:
        handle.capture_path = path
        handle.recording = False
        yield handle
    finally:
        context.__exit__(None, None, None)
    report = handle.report()
    if report:
        warnings.warn(Pop3ReplayWarning(f"{node.nodeid}: {report}"), stacklevel=1)


def _record(path: Path, upstream: str, ca_dir: Path | None) -> Iterator[RecordingSession]:
    import functools

    from pop3tap.background import BackgroundServer
    from pop3tap.capture import iter_capture_paths, read_capture
    from pop3tap.cli._common import CliError, parse_endpoint
    from pop3tap.relay import Endpoint, RelayConfig, RelayServer, serve_relay
    from pop3tap.tls import TlsConfig

    try:
        host, port = parse_endpoint(upstream)
    except CliError as exc:
        pytest.fail(f"pop3tap: --pop3-upstream: {exc}", pytrace=False)
    scratch = Path(tempfile.mkdtemp(prefix="pop3tap-record-"))
    config = RelayConfig(
        upstream=Endpoint(host, port),
        listen=Endpoint("127.0.0.1", 0),
        captures=scratch,
        grace=2.0,
        tls=TlsConfig(ca_dir=ca_dir),
    )
    background: BackgroundServer[RelayServer] = BackgroundServer(
        functools.partial(serve_relay, config), name="pop3tap-record"
    )
    try:
        with background as relay:
            yield RecordingSession(relay.address.host, relay.address.port, path, ca_dir=ca_dir)
            # Let sessions the client already closed write their close record.
            deadline = time.monotonic() + 5.0
            while relay.active_sessions and time.monotonic() < deadline:
                time.sleep(0.01)
        recorded = iter_capture_paths([scratch])
        recorded = [p for p in recorded if read_capture(p).exchanges() or len(recorded) == 1]
        if not recorded:
            pytest.fail(f"pop3tap: no POP3 session was recorded for {path}", pytrace=False)
        for old in capture_set(path):
            old.unlink()
        path.parent.mkdir(parents=True, exist_ok=True)
        for number, source in enumerate(recorded, start=1):
            target = path if number == 1 else path.with_name(
                f"{path.name[: -len('.p3cap')]}~{number}.p3cap"
            )
            shutil.move(str(source), target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
