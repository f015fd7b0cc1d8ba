"""Recording through pop3tap's relay for the pytest plugin (see :mod:`pop3tap.pytest_plugin`).

A recording whose upstream could not be reached or whose TLS failed is never kept; a test
that failed before any exchange keeps nothing; several connections are stored as
``<name>.p3cap``, ``<name>~2.p3cap``... (:func:`~pop3tap.pytest_plugin._settings.capture_set`).
"""

from __future__ import annotations

import functools
import shutil
import ssl
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pop3tap.pytest_plugin._settings import capture_set, sibling

if TYPE_CHECKING:
    import trio

    from pop3tap.background import BackgroundServer
    from pop3tap.relay import Endpoint, RelayConfig, RelayServer

#: Whether the test's call phase failed, and the recording of a test (set by the fixture).
CALL_FAILED = pytest.StashKey[bool]()
RECORDING = pytest.StashKey["Recording"]()


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


def _relay_config(options: dict[str, Any], scratch: Path) -> RelayConfig:
    """The recording relay's settings; a contradiction or a bad upstream fails the test."""
    from pop3tap.cli._common import CliError, parse_endpoint
    from pop3tap.relay import Endpoint, RelayConfig
    from pop3tap.tls import TlsConfig

    try:
        host, port = parse_endpoint(str(options["upstream"]))
    except CliError as exc:
        pytest.fail(f"pop3tap: --pop3-upstream: {exc}", pytrace=False)
    upstream_tls = bool(options.get("upstream_tls", False))
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
            ca_dir=options.get("ca_dir"),
        ),
    )
    if config.tls.upstream_ca is not None and config.tls.insecure_upstream:
        pytest.fail(
            "pop3tap: --pop3-insecure-upstream and --pop3-upstream-ca contradict each other",
            pytrace=False,
        )
    return config


def _servers(
    config: RelayConfig, replayed: list[Path], replay_options: dict[str, Any]
) -> BackgroundServer[tuple[RelayServer, Endpoint]]:
    """The recording relay, and for ``new_episodes`` the replay of the recorded sessions
    behind a front that sends each connection to one or the other."""
    from pop3tap.background import BackgroundServer
    from pop3tap.relay import Endpoint, serve_relay

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
                functools.partial(_serve_front, len(replayed), replay.address, relay.address)
            )
            task_status.started((relay, front))

    return BackgroundServer(serve, name="pop3tap-record")


def _start(
    background: BackgroundServer[tuple[RelayServer, Endpoint]],
) -> tuple[RelayServer, Endpoint]:
    """Start the servers; a setup error (maybe inside an exception group) fails the test."""
    from pop3tap.capture import CaptureError
    from pop3tap.tls import TlsSetupError

    try:
        return background.start()
    except Exception as exc:
        background.stop()
        cause: BaseException = exc
        while isinstance(cause, BaseExceptionGroup):
            cause = cause.exceptions[0]
        if not isinstance(cause, TlsSetupError | ValueError | CaptureError | OSError):
            raise
        pytest.fail(f"pop3tap: {_pytest_words(str(cause))}", pytrace=False)


def record(
    request: pytest.FixtureRequest,
    path: Path,
    options: dict[str, Any],
    replayed: list[Path],
    notes: list[str],
    replay_options: dict[str, Any],
) -> Iterator[RecordingSession]:
    """Record this test's sessions through pop3tap's relay; keep them as the record mode
    says (see :mod:`pop3tap.pytest_plugin`)."""
    scratch = Path(tempfile.mkdtemp(prefix="pop3tap-record-"))
    try:
        config = _relay_config(options, scratch)
        recording = Recording(path, str(options["upstream"]), scratch)
        background = _servers(config, replayed, replay_options)
        relay, front = _start(background)
        node = request.node
        node.stash[RECORDING] = recording
        try:
            yield RecordingSession(front.host, front.port, path, ca_dir=options.get("ca_dir"))
            # Let sessions the client already closed write their close record.
            deadline = time.monotonic() + 5.0
            while relay.active_sessions and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            background.stop()
        _keep_recording(node, recording, replayed, notes)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _keep_recording(
    node: pytest.Item, recording: Recording, replayed: list[Path], notes: list[str]
) -> None:
    """Keep the sessions that hold an exchange (or the first one), and say what was kept."""
    from pop3tap.capture import CaptureError, read_capture

    path = recording.path
    test_failed = node.stash.get(CALL_FAILED, False)
    problem = recording.problem()
    if problem:
        if not test_failed:
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
            + ", ".join(str(sibling(path, n)) for n in range(1, len(with_exchanges) + 1))
        )
    elif replayed:
        first = len(replayed) + 1
        names = [sibling(path, n).name for n in range(first, first + len(with_exchanges))]
        notes.append(
            f"new_episodes: {node.nodeid} appended {len(with_exchanges)} session(s) as "
            + ", ".join(names)
        )


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
        shutil.move(str(source), sibling(path, number))


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
