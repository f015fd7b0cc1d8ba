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

import functools
import hashlib
import re
import shutil
import ssl
import tempfile
import time
import warnings
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import trio

    from pop3tap.relay import Endpoint

MODES = ("none", "once", "new_episodes", "all", "rewrite")
#: Keys the relay uses while recording.
RECORD_KEYS = (
    "record_mode",
    "upstream",
    "upstream_tls",
    "upstream_ca",
    "insecure_upstream",
    "ca_dir",
    "captures_dir",
)
#: Keys passed on to :func:`pop3tap.replay.replay_server` (``ca_dir`` too).
REPLAY_KEYS = (
    "match",
    "timing",
    "sessions",
    "by_user",
    "listen_tls",
    "cert",
    "key",
    "tls_timeout",
    "idle_timeout",
    "faults",
)
_PATH_KEYS = ("upstream_ca", "ca_dir", "cert", "key", "captures_dir")
_BOOL_KEYS = ("upstream_tls", "insecure_upstream", "by_user", "listen_tls")
#: What the command line, ini file and marker call each recording key (for hints).
OPTION_NAMES = {
    "record_mode": ("--pop3-record-mode", "pop3_record_mode"),
    "upstream": ("--pop3-upstream", "pop3_upstream"),
    "upstream_tls": ("--pop3-upstream-tls", "pop3_upstream_tls"),
    "upstream_ca": ("--pop3-upstream-ca", "pop3_upstream_ca"),
    "insecure_upstream": ("--pop3-insecure-upstream", "pop3_insecure_upstream"),
    "ca_dir": ("--pop3-ca-dir", "pop3_ca_dir"),
    "captures_dir": ("--pop3-captures-dir", "pop3_captures_dir"),
    "match": ("--pop3-match", "pop3_match"),
}

_CALL_FAILED = pytest.StashKey[bool]()
_RECORDING = pytest.StashKey["Recording"]()
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
        item.stash[_CALL_FAILED] = report.failed
        recording = item.stash.get(_RECORDING, None)
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


def default_capture_path(node: pytest.Item, captures_dir: Path | None = None) -> Path:
    """``<test dir>/captures/<module>/<Class.test name>.p3cap``.

    The name is the node id after the file (class and test, joined by ``.``). Parameters
    (``[...]``) never reach the file name, since test ids can hold user names or
    passwords: they become a hash of the exact id. Characters a file name should not hold
    become ``_``, with the same hash, so two tests never share a capture.
    """
    test_file = Path(str(node.path))
    exact = ".".join(node.nodeid.split("::")[1:]) or node.name
    base, bracket, _params = exact.partition("[")
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", base).strip("_") or "test"
    if bracket or name != exact:
        name += "-" + hashlib.sha256(exact.encode()).hexdigest()[:12]
    directory = captures_dir if captures_dir is not None else Path("captures")
    return test_file.parent / directory / test_file.stem / f"{name}.p3cap"


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


def _sibling(path: Path, number: int) -> Path:
    return path if number == 1 else path.with_name(f"{path.name[: -len('.p3cap')]}~{number}.p3cap")


# --------------------------------------------------------------------------- settings


def _command_line(config: pytest.Config) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key in (*RECORD_KEYS, "match"):
        option = "pop3_" + key
        value = getattr(config.option, option, None)
        if value is not None:
            values[key] = value
    base = config.invocation_params.dir
    return {k: base / v if k in _PATH_KEYS else v for k, v in values.items()}


def _ini(config: pytest.Config) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key in (*RECORD_KEYS, "match"):
        value = config.getini("pop3_" + key)
        if value not in ("", None):
            values[key] = value
    base = config.inipath.parent if config.inipath else config.rootpath
    return {k: base / str(v) if k in _PATH_KEYS else v for k, v in values.items()}


def settings(request: pytest.FixtureRequest, fixture: dict[str, Any]) -> dict[str, Any]:
    """The effective settings for one test (see the module docstring for the order)."""
    node = request.node
    marker = node.get_closest_marker("pop3_capture")
    here = Path(str(node.path)).parent
    known = set(RECORD_KEYS + REPLAY_KEYS)
    layers: list[tuple[str, dict[str, Any]]] = [
        ("the ini file", _ini(request.config)),
        ("pop3_config", dict(fixture)),
        ("the pop3_capture marker", dict(marker.kwargs) if marker else {}),
        ("the command line", _command_line(request.config)),
    ]
    merged: dict[str, Any] = {"record_mode": "none"}
    for where, layer in layers:
        unknown = sorted(set(layer) - known)
        if unknown:
            pytest.fail(
                f"pop3tap: unknown setting(s) {', '.join(unknown)} in {where} "
                f"(known: {', '.join(sorted(known))})",
                pytrace=False,
            )
        for key, value in layer.items():
            if key in _PATH_KEYS and isinstance(value, str):
                value = here / value
            merged[key] = value
    if merged["record_mode"] not in MODES:
        pytest.fail(
            f"pop3tap: record mode {merged['record_mode']!r} is not one of {', '.join(MODES)}",
            pytrace=False,
        )
    for key in _BOOL_KEYS:
        if key in merged and not isinstance(merged[key], bool):
            pytest.fail(f"pop3tap: {key} must be True or False", pytrace=False)
    return merged


# --------------------------------------------------------------------------- fixture


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
        """The CA certificate the relay signs client leaves with (created on first use,
        which the run's summary reports)."""
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
def pop3_replay(request: pytest.FixtureRequest, pop3_config: dict[str, Any]) -> Iterator[Any]:
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
            yield from _record(request, path, options, replayed, notes)
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


def _replay(node: pytest.Item, path: Path, existing: list[Path], options: dict[str, Any]) -> Any:
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


# --------------------------------------------------------------------------- recording


_HINTS = (
    (
        "--upstream-ca FILE",
        "--pop3-upstream-ca FILE (pop3_upstream_ca in the ini file, upstream_ca= in "
        "pop3_config or the marker)",
    ),
    ("--insecure-upstream", "--pop3-insecure-upstream"),
)


def _pytest_words(reason: str) -> str:
    """The relay's reason with pop3tap CLI option names turned into the plugin's."""
    for cli, plugin in _HINTS:
        reason = reason.replace(cli, plugin)
    return reason


class Recording:
    """One test's recording: where the relay writes, and what went wrong there."""

    def __init__(self, path: Path, upstream: str, scratch: Path) -> None:
        self.path = path
        self.upstream = upstream
        self.scratch = scratch

    def captures(self) -> list[Path]:
        from pop3tap.capture import iter_capture_paths

        return iter_capture_paths([self.scratch])

    def problem(self) -> str | None:
        """One message when a session could not reach the upstream or its TLS failed."""
        from pop3tap.capture import CaptureError, EventName, EventRecord, read_capture

        for capture_path in self.captures():
            try:
                capture = read_capture(capture_path)
            except CaptureError:
                continue
            for record in capture.records:
                if not isinstance(record, EventRecord):
                    continue
                if record.name == EventName.UPSTREAM_CONNECT_FAILED:
                    error = record.fields.get("error", "?")
                    return (
                        f"pop3tap: recording {self.path.name} failed: cannot reach the "
                        f"upstream {self.upstream}: {error} (check --pop3-upstream)"
                    )
                if record.name == EventName.TLS_FAILED:
                    leg = record.fields.get("leg")
                    reason = _pytest_words(str(record.fields.get("reason", "?")))
                    side = "the upstream" if leg == "server" else "the test's client"
                    hint = ""
                    if leg == "server" and "did not speak TLS" in reason:
                        hint = (
                            " (--pop3-upstream-tls is implicit TLS, POP3S; leave it off "
                            "for a plaintext or STLS port)"
                        )
                    if leg == "client":
                        hint = " (the client must trust pop3_replay.ssl_context())"
                    return (
                        f"pop3tap: recording {self.path.name} failed: TLS with {side} "
                        f"({self.upstream}) failed: {reason}{hint}"
                    )
        return None


def _record(
    request: pytest.FixtureRequest,
    path: Path,
    options: dict[str, Any],
    replayed: list[Path],
    notes: list[str],
) -> Iterator[RecordingSession]:
    from pop3tap.background import BackgroundServer
    from pop3tap.capture import CaptureError, read_capture
    from pop3tap.cli._common import CliError, parse_endpoint
    from pop3tap.relay import Endpoint, RelayConfig, RelayServer, serve_relay
    from pop3tap.tls import TlsConfig, TlsSetupError

    upstream = str(options["upstream"])
    try:
        host, port = parse_endpoint(upstream)
    except CliError as exc:
        pytest.fail(f"pop3tap: --pop3-upstream: {exc}", pytrace=False)
    ca_dir = options.get("ca_dir")
    upstream_tls = bool(options.get("upstream_tls", False))
    scratch = Path(tempfile.mkdtemp(prefix="pop3tap-record-"))
    config = RelayConfig(
        upstream=Endpoint(host, port),
        listen=Endpoint("127.0.0.1", 0),
        captures=scratch,
        grace=2.0,
        tls=TlsConfig(
            upstream_tls=upstream_tls,
            listen_tls=upstream_tls,
            upstream_ca=options.get("upstream_ca"),
            insecure_upstream=bool(options.get("insecure_upstream", False)),
            ca_dir=ca_dir,
        ),
    )
    if config.tls.upstream_ca is not None and config.tls.insecure_upstream:
        shutil.rmtree(scratch, ignore_errors=True)
        pytest.fail(
            "pop3tap: --pop3-insecure-upstream and --pop3-upstream-ca contradict each other",
            pytrace=False,
        )
    recording = Recording(path, upstream, scratch)
    node = request.node
    replay_options = _replay_options(options, replayed) if replayed else {}

    async def serve(*, task_status: trio.TaskStatus[tuple[RelayServer, Endpoint]]) -> None:
        import trio

        async with trio.open_nursery() as nursery:
            relay: RelayServer = await nursery.start(serve_relay, config)
            if not replayed:
                task_status.started((relay, relay.address))
                return
            from pop3tap.replay import ReplayConfig, ReplayServer, serve_replay

            replay_config = ReplayConfig(
                captures=tuple(replayed),
                listen=Endpoint("127.0.0.1", 0),
                **{**replay_options, "sessions": "once"},
            )
            replay: ReplayServer = await nursery.start(serve_replay, replay_config)
            front = await nursery.start(
                functools.partial(
                    _serve_front, len(replayed), replay.address, relay.address
                )
            )
            task_status.started((relay, front))

    background: BackgroundServer[tuple[RelayServer, Endpoint]] = BackgroundServer(
        serve, name="pop3tap-record"
    )
    try:
        try:
            relay, front = background.start()
        except Exception as exc:  # setup errors, maybe inside a nursery's exception group
            background.stop()
            cause: BaseException = exc
            while isinstance(cause, BaseExceptionGroup):
                cause = cause.exceptions[0]
            if not isinstance(cause, TlsSetupError | ValueError | CaptureError | OSError):
                raise
            pytest.fail(f"pop3tap: {_pytest_words(str(cause))}", pytrace=False)
        node.stash[_RECORDING] = recording
        try:
            yield RecordingSession(front.host, front.port, path, ca_dir=ca_dir)
            # Let sessions the client already closed write their close record.
            deadline = time.monotonic() + 5.0
            while relay.active_sessions and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            background.stop()
        problem = recording.problem()
        if problem:
            if not node.stash.get(_CALL_FAILED, False):
                pytest.fail(problem, pytrace=False)
            return  # already the test's error (pytest_runtest_makereport)
        recorded = recording.captures()
        with_exchanges = []
        for capture_path in recorded:
            try:
                if read_capture(capture_path).exchanges():
                    with_exchanges.append(capture_path)
            except CaptureError:
                continue
        test_failed = node.stash.get(_CALL_FAILED, False)
        if not with_exchanges:
            if replayed:
                return  # new_episodes: every connection had a recorded session
            if test_failed:
                notes.append(f"nothing kept for {node.nodeid}: the test failed before any exchange")
                return
            if not recorded:
                pytest.fail(f"pop3tap: no POP3 session was recorded for {path}", pytrace=False)
            with_exchanges = recorded[:1]  # a greeting-only session is still a recording
        _keep(path, with_exchanges, replace=not replayed)
        if test_failed:
            notes.append(
                f"kept a partial recording for {node.nodeid} (the test failed): "
                + ", ".join(str(_sibling(path, n)) for n in range(1, len(with_exchanges) + 1))
            )
        elif replayed:
            first = len(replayed) + 1
            notes.append(
                f"new_episodes: {node.nodeid} appended {len(with_exchanges)} session(s) as "
                + ", ".join(
                    _sibling(path, n).name for n in range(first, first + len(with_exchanges))
                )
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _keep(path: Path, recorded: list[Path], *, replace: bool) -> None:
    """Move the recorded captures into place: replacing the set, or appended to it."""
    first = 1
    if replace:
        for old in capture_set(path):
            old.unlink()
    else:
        first = len(capture_set(path)) + 1
    path.parent.mkdir(parents=True, exist_ok=True)
    for number, source in enumerate(recorded, start=first):
        shutil.move(str(source), _sibling(path, number))


async def _serve_front(
    replayed: int,
    replay: Endpoint,
    relay: Endpoint,
    *,
    task_status: trio.TaskStatus[Endpoint],
) -> None:
    """``new_episodes``: connection i (from 1) goes to the replay while ``i <= replayed``
    (the recorded sessions, in order), later ones to the recording relay. Bytes pass as
    they are, TLS included."""
    import trio

    from pop3tap.relay import Endpoint

    count = 0

    async def handle(client: trio.SocketStream) -> None:
        nonlocal count
        count += 1
        target = replay if count <= replayed else relay
        async with client:
            try:
                backend = await trio.open_tcp_stream(target.host, target.port)
            except OSError:
                return
            async with backend, trio.open_nursery() as pumps:
                pumps.start_soon(_pump, client, backend)
                pumps.start_soon(_pump, backend, client)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    host, port = listeners[0].socket.getsockname()[:2]
    task_status.started(Endpoint(str(host), int(port)))
    await trio.serve_listeners(handle, listeners)


async def _pump(source: trio.SocketStream, sink: trio.SocketStream) -> None:
    import trio

    try:
        while data := await source.receive_some(65536):
            await sink.send_all(data)
        await sink.send_eof()
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass


__all__: list[str] = [
    "MODES",
    "Pop3ReplayWarning",
    "RecordingSession",
    "capture_set",
    "default_capture_path",
    "settings",
]
