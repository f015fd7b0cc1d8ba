"""pytest plugin (``pytest11`` entry point): record and replay POP3 sessions in tests.

A test asks for the ``pop3_replay`` fixture and talks to ``pop3_replay.host`` /
``pop3_replay.port`` with any POP3 client. The capture defaults to
``<test dir>/<captures dir>/<module>/<test name>.p3cap``; ``@pytest.mark.pop3_capture(path,
**options)`` names another one (relative to the test file) and sets options for one test.

Settings, each from the first place that has it: the command line (``--pop3-*``), the
marker's keyword arguments, the ``pop3_config`` fixture (a dict; override it in
``conftest.py`` as pytest-recording's ``vcr_config``), the ini file (``pop3_*``), the
default. Keys: ``record_mode``, ``upstream``, ``upstream_tls``, ``upstream_ca``,
``insecure_upstream``, ``ca_dir``, ``captures_dir`` and the replay options ``match``,
``timing``, ``sessions``, ``by_user``, ``listen_tls``, ``cert``, ``key``, ``tls_timeout``,
``idle_timeout``, ``faults`` (also from ``@pytest.mark.pop3_faults(*specs)``, see
docs/faults.md). Relative paths are relative to the ini file's directory for ini values,
to the current directory for the command line, and to the test file's directory otherwise.

Record modes, as in vcrpy / pytest-recording:

* ``none`` (default): replay only; a missing capture fails the test.
* ``once``: record through pop3tap's relay to the upstream when the capture is missing.
* ``new_episodes``: replay the recorded sessions, one per connection in order, and record
  the connections beyond them from the upstream, appended as new sessions (``~N``).
* ``all``: record every session again; the captures are replaced once it succeeded.
* ``rewrite``: delete the captures first, then record (a failed recording leaves none).

A recording whose upstream could not be reached or whose TLS failed is never kept: the
test fails with the reason and the option that fixes it. A test that failed before any
exchange keeps nothing; one that failed later keeps its partial recording, and the
summary says so. Several connections are stored as ``<name>.p3cap``, ``<name>~2.p3cap``...

TLS: ``upstream_tls`` is implicit TLS to the server (POP3S); the relay then speaks TLS to
the test's client too, with a certificate from pop3tap's CA. ``pop3_replay.ca_file`` is
that CA's certificate and ``pop3_replay.ssl_context()`` a client context trusting it, for
``poplib.POP3.stls`` (RFC 2595 §4) and ``poplib.POP3_SSL`` (RFC 8314). Replays of POP3S
captures use TLS without an option. A CA created for a run is reported in the summary.
"""

from __future__ import annotations

import warnings
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pop3tap.pytest_plugin._recording import CALL_FAILED, RECORDING, RecordingSession, record
from pop3tap.pytest_plugin._settings import (
    MODES,
    REPLAY_KEYS,
    capture_set,
    default_capture_path,
    settings,
)

if TYPE_CHECKING:
    from pop3tap.replay import Pop3TestServer

_NOTES = pytest.StashKey[list[str]]()


class Pop3ReplayWarning(UserWarning):
    """A replayed test left recorded exchanges unplayed or sent unrecorded commands."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pop3tap", "pop3tap POP3 record/replay")
    group.addoption(
        "--pop3-record-mode",
        choices=MODES,
        default=None,
        help="none: replay only (default); once: record missing captures; new_episodes: "
        "record connections the captures have no session for; all: record again; "
        "rewrite: delete the captures, then record",
    )
    group.addoption(
        "--pop3-upstream", metavar="HOST:PORT", help="the real POP3 server to record from"
    )
    group.addoption(
        "--pop3-upstream-tls",
        action="store_true",
        default=None,
        help="implicit TLS to the upstream (POP3S, usually port 995)",
    )
    group.addoption(
        "--pop3-upstream-ca",
        metavar="FILE",
        help="trust only this CA (PEM) for the upstream's certificate",
    )
    group.addoption(
        "--pop3-insecure-upstream",
        action="store_true",
        default=None,
        help="do not verify the upstream's certificate (dangerous)",
    )
    group.addoption(
        "--pop3-ca-dir", metavar="DIR", help="pop3tap's CA directory (default as `pop3tap ca`)"
    )
    group.addoption(
        "--pop3-captures-dir",
        metavar="DIR",
        help="captures directory, relative to each test file's directory (default: captures)",
    )
    group.addoption("--pop3-match", choices=("default", "strict", "any"), help="replay matching")
    parser.addini("pop3_record_mode", "default record mode (none, once, ...)", default="")
    parser.addini("pop3_upstream", "the real POP3 server to record from (HOST:PORT)", default="")
    parser.addini("pop3_upstream_tls", "implicit TLS to the upstream", type="bool", default=None)
    parser.addini("pop3_upstream_ca", "CA file (PEM) for the upstream", default="")
    parser.addini(
        "pop3_insecure_upstream", "skip upstream verification", type="bool", default=None
    )
    parser.addini("pop3_ca_dir", "pop3tap's CA directory", default="")
    parser.addini("pop3_captures_dir", "captures directory (relative to test files)", default="")
    parser.addini("pop3_match", "replay matching: default, strict or any", default="")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "pop3_capture(path=None, **options): the capture the pop3_replay fixture serves "
        "(relative to the test file) and options such as match='strict' or upstream_ca=...",
    )
    config.addinivalue_line(
        "markers",
        "pop3_faults(*specs): faults the replay server injects (docs/faults.md), "
        "e.g. pop3_faults('RETR#2:cut=500')",
    )
    config.stash[_NOTES] = []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A recording that failed (upstream or TLS) becomes the test's error, with the fix."""
    report: pytest.TestReport = yield
    if call.when == "call":
        item.stash[CALL_FAILED] = report.failed
        recording = item.stash.get(RECORDING, None)
        if report.failed and recording is not None:
            problem = recording.problem()
            if problem:
                own = call.excinfo.exconly().strip() if call.excinfo else ""
                report.longrepr = problem + (
                    f"\n\n(the test itself then failed with: {own})" if own else ""
                )
    return report


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    notes = config.stash.get(_NOTES, [])
    if notes:
        terminalreporter.section("pop3tap")
        for note in notes:
            terminalreporter.line(note)


@pytest.fixture
def pop3_config() -> dict[str, Any]:
    """Project-wide pop3tap settings for ``pop3_replay``; override it in ``conftest.py``.

    Example: ``return {"upstream": "pop.example.test:995", "upstream_tls": True,
    "upstream_ca": "certs/test-ca.pem"}``.
    """
    return {}


# --------------------------------------------------------------------------- fixture


@pytest.fixture
def pop3_replay(
    request: pytest.FixtureRequest, pop3_config: dict[str, Any]
) -> Iterator[Pop3TestServer]:
    """A replay server for this test's capture (or a recording relay, see the record modes)."""
    node = request.node
    options = settings(request, pop3_config)
    # Every pop3_faults marker counts (the test's own, its class's, a module's pytestmark).
    specs = [str(a) for faults in node.iter_markers("pop3_faults") for a in faults.args]
    if specs:
        options["faults"] = (*options.get("faults", ()), *specs)
    marker = node.get_closest_marker("pop3_capture")
    if marker and marker.args:
        path = Path(str(node.path)).parent / str(marker.args[0])
    else:
        path = default_capture_path(node, options.get("captures_dir"))
    mode = options["record_mode"]
    notes = request.config.stash.get(_NOTES, [])
    with _reporting_new_ca(options.get("ca_dir"), node.nodeid, notes):
        if mode == "rewrite":
            for old in capture_set(path):
                old.unlink()
        existing = capture_set(path)
        if mode in ("all", "rewrite", "new_episodes") or (mode == "once" and not existing):
            if not options.get("upstream"):
                pytest.fail(
                    f"pop3tap: record mode {mode} needs an upstream to record {path}: "
                    "--pop3-upstream HOST:PORT (or pop3_upstream in the ini file, or "
                    "upstream in pop3_config)",
                    pytrace=False,
                )
            replayed = existing if mode == "new_episodes" else []
            replay_options = _replay_options(options, replayed) if replayed else {}
            yield from record(request, path, options, replayed, notes, replay_options)
            return
        if not existing:
            pytest.fail(
                f"pop3tap: no capture at {path} (record mode {mode}); record it with "
                f"--pop3-record-mode=once --pop3-upstream HOST:PORT",
                pytrace=False,
            )
        yield from _replay(node, path, existing, _replay_options(options, existing))


def _replay_options(options: dict[str, Any], captures: list[Path]) -> dict[str, Any]:
    replay = {k: options[k] for k in (*REPLAY_KEYS, "ca_dir") if k in options}
    if "listen_tls" not in replay:
        replay["listen_tls"] = _recorded_listen_tls(captures)
    return replay


def _recorded_listen_tls(captures: list[Path]) -> bool:
    """Whether the first capture's client leg was implicit TLS (RFC 8314)."""
    from pop3tap.capture import CaptureError, read_capture

    try:
        header = read_capture(captures[0]).header
    except CaptureError:
        return False  # replay_server reports the damaged capture
    return header.options.get("listen_tls") is True


def _replay(
    node: pytest.Item, path: Path, existing: list[Path], options: dict[str, Any]
) -> Iterator[Pop3TestServer]:
    from pop3tap.capture import CaptureError
    from pop3tap.replay import ReplayError, replay_server
    from pop3tap.tls import TlsSetupError

    try:
        context = replay_server(existing, **options)
        handle = context.__enter__()
    except (CaptureError, ReplayError, TlsSetupError, ValueError, TypeError) as exc:
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


class _reporting_new_ca:
    """Note in the summary when pop3tap's CA did not exist before a test and does after."""

    def __init__(self, ca_dir: Path | None, nodeid: str, notes: list[str]) -> None:
        from pop3tap.certs import CA_CERT_FILE, default_ca_dir

        self.cert = (ca_dir if ca_dir is not None else default_ca_dir()) / CA_CERT_FILE
        self.nodeid = nodeid
        self.notes = notes
        self.existed = self.cert.exists()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *_exc: object) -> None:
        if not self.existed and self.cert.exists():
            from pop3tap.certs import CertError, load_ca

            try:
                fingerprint = load_ca(self.cert.parent).fingerprint
            except CertError:
                fingerprint = "?"
            self.notes.append(
                f"created pop3tap's CA for {self.nodeid}: {self.cert} (SHA-256 {fingerprint}); "
                "TLS clients of the relay and of replays must trust it"
            )


__all__: list[str] = [
    "MODES",
    "Pop3ReplayWarning",
    "RecordingSession",
    "capture_set",
    "default_capture_path",
    "settings",
]
