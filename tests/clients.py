"""Client-side helpers shared by the real-peer tests: curl, raw sockets, relay fixtures."""

from __future__ import annotations

import contextlib
import functools
import re
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio

from pop3tap.background import BackgroundServer
from pop3tap.capture import Capture, iter_capture_paths, read_capture
from pop3tap.relay import Endpoint, RelayConfig, RelayServer, serve_relay

CURL_TIMEOUT = 60
_GREETING_STAMP = re.compile(rb"<[^>]*>")


def curl(curl_path: str, *args: str, check: bool = True) -> bytes:
    """Run curl (ignoring ~/.curlrc and proxies) and return what it wrote to stdout."""
    result = subprocess.run(
        [curl_path, "-q", "-sS", "--noproxy", "*", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=CURL_TIMEOUT,
        check=False,
    )
    if check:
        assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


def raw_session(host: str, port: int, commands: bytes, *, timeout: float = 30.0) -> bytes:
    """Send ``commands`` in one write (pipelined) and read every byte until the server closes."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(commands)
        chunks = []
        while True:
            data = sock.recv(1 << 20)
            if not data:
                return b"".join(chunks)
            chunks.append(data)


def without_apop_stamp(server_bytes: bytes) -> bytes:
    """Server bytes with the per-connection APOP timestamp of the greeting blanked out."""
    line_end = server_bytes.find(b"\n") + 1
    return _GREETING_STAMP.sub(b"<stamp>", server_bytes[:line_end]) + server_bytes[line_end:]


@dataclass
class RunningRelay:
    """A relay running in a background thread."""

    server: RelayServer
    captures: Path

    @property
    def host(self) -> str:
        return self.server.address.host

    @property
    def port(self) -> int:
        return self.server.address.port

    def capture_files(self) -> list[Path]:
        return iter_capture_paths([self.captures])

    def only_capture(self) -> Capture:
        (path,) = self.capture_files()
        return read_capture(path)


@contextmanager
def running_relay(
    upstream_host: str, upstream_port: int, captures: Path, **options: object
) -> Iterator[RunningRelay]:
    """Start a relay on a free loopback port in front of the upstream."""
    captures.mkdir(parents=True, exist_ok=True)
    config = RelayConfig(
        upstream=Endpoint(upstream_host, upstream_port),
        listen=Endpoint("127.0.0.1", 0),
        captures=captures,
        **options,  # type: ignore[arg-type]
    )
    background: BackgroundServer[RelayServer] = BackgroundServer(
        functools.partial(serve_relay, config)
    )
    with background as server:
        yield RunningRelay(server=server, captures=captures)


@dataclass
class Pop3tapProcess:
    """A ``python -m pop3tap`` server (record or replay) running as a child process."""

    proc: subprocess.Popen[bytes]
    port: int
    log_file: Path
    #: Where ``record`` writes captures (unused for ``replay``).
    captures: Path
    #: Where the process's stderr goes.
    stderr_file: Path

    host = "127.0.0.1"

    def log_text(self) -> str:
        return self.log_file.read_text() if self.log_file.exists() else ""

    def stderr_text(self) -> str:
        return self.stderr_file.read_text(errors="replace") if self.stderr_file.exists() else ""

    def rss_peak_kib(self) -> int:
        """VmHWM of the process (peak resident set size)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise AssertionError("no VmHWM")


@contextmanager
def pop3tap_process(
    command: str, workdir: Path, *args: str, own_group: bool = False, log_format: str = "json"
) -> Iterator[Pop3tapProcess]:
    """Start ``python -m pop3tap COMMAND ... --listen 127.0.0.1:<free port>`` with a JSON log
    file; wait until it logs ``<command>.listening``; SIGKILL it if still running after.

    ``own_group``: start it in its own process group (to signal the group, as a terminal's
    Ctrl-C does).
    """
    import sys
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log_file = workdir / f"{command}.log.jsonl"
    workdir.mkdir(parents=True, exist_ok=True)
    stderr_file = workdir / f"{command}.stderr"
    stderr = stderr_file.open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pop3tap",
            command,
            *args,
            "--listen",
            f"127.0.0.1:{port}",
            "--log-format",
            log_format,
            "--log-file",
            str(log_file),
        ],
        stdin=subprocess.DEVNULL,
        stderr=stderr,
        start_new_session=own_group,
    )
    stderr.close()
    running = Pop3tapProcess(
        proc=proc,
        port=port,
        log_file=log_file,
        captures=workdir / "captures",
        stderr_file=stderr_file,
    )
    ready = "relay.listening" if command == "record" else f"{command}.listening"
    try:
        deadline = time.monotonic() + 30
        while ready not in running.log_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"pop3tap {command} did not start: {running.log_text()[-2000:]}"
                    f"{running.stderr_text()[-2000:]}"
                )
            time.sleep(0.02)
        yield running
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@contextmanager
def relay_process(
    upstream_host: str,
    upstream_port: int,
    workdir: Path,
    *extra: str,
    own_group: bool = False,
    log_format: str = "json",
) -> Iterator[Pop3tapProcess]:
    """``pop3tap record`` in front of the upstream, capturing into ``workdir/captures``
    (unless ``extra`` says ``--no-captures``)."""
    upstream = f"{upstream_host}:{upstream_port}"
    captures = [] if "--no-captures" in extra else ["--captures", str(workdir / "captures")]
    with pop3tap_process(
        "record",
        workdir,
        "--upstream",
        upstream,
        *captures,
        *extra,
        own_group=own_group,
        log_format=log_format,
    ) as running:
        yield running


def wait_refused(host: str, port: int, timeout: float = 10) -> None:
    """New clients are refused soon: the listening sockets close just after accepting stops
    (a client caught in between is reset, never served)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            probe = socket.create_connection((host, port), timeout=5)
        except ConnectionRefusedError:
            return
        with probe:
            probe.settimeout(5)
            with contextlib.suppress(ConnectionResetError):
                assert probe.recv(100) == b"", "a new client was served during shutdown"
        assert time.monotonic() < deadline, "new clients were still accepted"
        time.sleep(0.05)


def relay_in_process(
    upstream_host: str,
    upstream_port: int,
    captures: Path,
    client: Callable[[int], Awaitable[None]],
    *,
    seconds: float = 60,
    instruments: Sequence[trio.abc.Instrument] = (),
) -> None:
    """Run a relay in this process in front of the upstream, let ``client(port)`` speak
    through it, then stop accepting: returns once that session has ended by itself."""
    config = RelayConfig(
        upstream=Endpoint(upstream_host, upstream_port),
        listen=Endpoint("127.0.0.1", 0),
        captures=captures,
    )

    async def main() -> None:
        server = RelayServer(config)
        with trio.fail_after(seconds):
            async with trio.open_nursery() as nursery:
                await nursery.start(server.run)
                await client(server.address.port)
                server.shutdown()

    trio.run(main, instruments=list(instruments))


Made = TypeVar("Made")


def on_each_instance(
    monkeypatch: pytest.MonkeyPatch, cls: type[Made], seen: Callable[[Made], object]
) -> None:
    """Call ``seen`` with every instance of ``cls`` made while ``monkeypatch`` is active,
    once its ``__init__`` has run (``cls`` must be a Python class: a compiled one cannot
    have its ``__init__`` replaced)."""
    original = cls.__init__

    def init(self: Made, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        seen(self)

    monkeypatch.setattr(cls, "__init__", init)
