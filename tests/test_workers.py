"""``--workers N``: pre-forked record and replay processes sharing one listening port."""

from __future__ import annotations

import json
import os
import poplib
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from clients import pop3tap_process, relay_process, wait_refused
from dovecot import Dovecot, Mailbox

from pop3tap.capture import iter_capture_paths, read_capture
from pop3tap.replay import load_sessions
from pop3tap.testing import run_poplib

REPO = Path(__file__).resolve().parent.parent


def log_events(text: str, name: str) -> list[dict[str, object]]:
    events = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [e for e in events if e["event"] == name]


def wait_for_events(read: object, name: str, count: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while len(log_events(read(), name)) < count:  # type: ignore[operator]
        assert time.monotonic() < deadline, f"fewer than {count} {name} lines"
        time.sleep(0.02)


def stat_through(host: str, port: int, mailbox: Mailbox) -> tuple[int, int]:
    client = poplib.POP3(host, port, timeout=20)
    try:
        client.user(mailbox.user)
        client.pass_(mailbox.password)
        return client.stat()
    finally:
        client.quit()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); read its state.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.realpeer
def test_record_workers_share_the_port_and_capture_every_session(
    dovecot: Dovecot, mailbox: Mailbox, tmp_path: Path
) -> None:
    with relay_process(dovecot.host, dovecot.pop3_port, tmp_path, "--workers", "2") as relay:
        wait_for_events(relay.log_text, "relay.listening", 2)
        listening = log_events(relay.log_text(), "relay.listening")
        pids = {int(e["pid"]) for e in listening}  # type: ignore[call-overload]
        assert len(pids) == 2 and relay.proc.pid not in pids
        assert {e["worker"] for e in listening} == {0, 1}
        with ThreadPoolExecutor(8) as pool:
            stats = list(
                pool.map(lambda _: stat_through(relay.host, relay.port, mailbox), range(24))
            )
        assert set(stats) == {stat_through(dovecot.host, dovecot.pop3_port, mailbox)}
        relay.proc.send_signal(signal.SIGTERM)
        assert relay.proc.wait(timeout=20) == 0
    assert not any(alive(pid) for pid in pids)
    log = relay.log_text()
    stopped = log_events(log, "relay.stopped")
    assert {e["pid"] for e in stopped} == pids
    assert sum(int(e["sessions"]) for e in stopped) == 24  # type: ignore[call-overload]
    paths = list(iter_capture_paths([relay.captures]))
    assert len(paths) == 24
    for path in paths:
        capture = read_capture(path)
        assert capture.complete
        assert [ex.verb for ex in capture.exchanges()][-2:] == ["STAT", "QUIT"]
    assert mailbox.password not in log


@pytest.mark.realpeer
def test_a_dead_worker_stops_the_others_and_fails_the_run(
    dovecot: Dovecot, tmp_path: Path
) -> None:
    with relay_process(dovecot.host, dovecot.pop3_port, tmp_path, "--workers", "2") as relay:
        wait_for_events(relay.log_text, "relay.listening", 2)
        first, second = (int(e["pid"]) for e in log_events(relay.log_text(), "relay.listening"))  # type: ignore[call-overload]
        os.kill(first, signal.SIGKILL)
        assert relay.proc.wait(timeout=20) == 1
    assert not alive(second)
    (failed,) = log_events(relay.log_text(), "worker.failed")
    assert failed["pid"] == first and failed["exit_code"] == -signal.SIGKILL


@pytest.mark.realpeer
@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.lint_findings("pipelining-without-capability")  # pipelines, never asks CAPA
def test_ctrl_c_lets_open_sessions_finish_and_refuses_new_clients(
    dovecot: Dovecot, mailbox: Mailbox, tmp_path: Path, workers: str
) -> None:
    """SIGINT to the whole process group (a terminal's Ctrl-C) drains, with or without
    workers: the open session is answered to its end, a new client is refused at once."""
    with relay_process(
        dovecot.host, dovecot.pop3_port, tmp_path, "--workers", workers, "--grace", "10",
        own_group=True,
    ) as relay:
        wait_for_events(relay.log_text, "relay.listening", int(workers))
        client = socket.create_connection((relay.host, relay.port), timeout=10)
        reader = client.makefile("rb")
        assert reader.readline().startswith(b"+OK")
        os.killpg(relay.proc.pid, signal.SIGINT)
        wait_for_events(relay.log_text, "relay.shutdown", int(workers))
        time.sleep(0.3)  # a second signal from the parent must not cut the session either
        wait_refused(relay.host, relay.port)
        client.sendall(f"USER {mailbox.user}\r\nPASS {mailbox.password}\r\n".encode())
        assert reader.readline().startswith(b"+OK")
        assert reader.readline().startswith(b"+OK")
        client.sendall(b"QUIT\r\n")
        assert reader.readline().startswith(b"+OK")
        assert reader.read() == b""
        client.close()
        assert relay.proc.wait(timeout=20) == 0
    log = relay.log_text()
    (closed,) = log_events(log, "session.close")
    assert closed["reason"] == "server closed"
    assert len(log_events(log, "relay.stopped")) == int(workers)
    assert not log_events(log, "worker.failed")


def test_a_parent_killed_right_after_the_fork_leaves_no_worker(tmp_path: Path) -> None:
    """The worker checks for a dead parent against the pid taken before the fork."""
    mark = tmp_path / "orphan"
    script = tmp_path / "parent.py"
    script.write_text(
        "import os, signal, sys, time\n"
        "import pop3tap.workers as workers\n"
        "real, me = signal.signal, os.getpid()\n"
        "def slow(sig, handler):\n"
        "    if os.getpid() != me:  # the worker is scheduled late, after its parent died\n"
        "        time.sleep(1.0)\n"
        "    return real(sig, handler)\n"
        "signal.signal = slow\n"
        "def child(index):\n"
        "    time.sleep(3)\n"
        f"    open({str(mark)!r}, 'w').write(str(os.getppid()))\n"
        "    return 0\n"
        "workers.run_workers(1, child)\n"
    )
    parent = subprocess.Popen([sys.executable, str(script)], cwd=REPO)
    children = Path(f"/proc/{parent.pid}/task/{parent.pid}/children")
    deadline = time.monotonic() + 20
    while not children.read_text().split():  # forked; the worker now sleeps in signal.signal
        assert time.monotonic() < deadline, "the worker was not forked"
        time.sleep(0.01)
    parent.kill()
    parent.wait(10)
    time.sleep(5)
    assert not mark.exists(), f"a worker outlived its parent: {mark.read_text()}"


_FORK_THEN_SIGTERM = """\
import os, signal, sys
real_fork, forks = os.fork, []
def fork():
    pid = real_fork()
    if pid:
        forks.append(pid)
        if len(forks) == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives as fork() returns
    return pid
os.fork = fork
from pop3tap.cli import main
sys.exit(main(sys.argv[1:]))
"""

_SLOW_WORKER_START = """\
import os, signal, sys, time
real, me = signal.signal, os.getpid()
def slow(sig, handler):
    if os.getpid() != me and sig == signal.SIGINT:  # the worker is scheduled late
        time.sleep(1.0)
    return real(sig, handler)
signal.signal = slow
from pop3tap.cli import main
sys.exit(main(sys.argv[1:]))
"""

_SIGTERM_AS_SIGNALS_ARE_HELD = """\
import os, signal, sys
real, me, blocks = signal.pthread_sigmask, os.getpid(), []
def held(how, signals):
    if os.getpid() == me and how == signal.SIG_BLOCK:
        blocks.append(how)
        if len(blocks) == 2:  # caught just before the second fork holds signals back
            os.kill(me, signal.SIGTERM)
    return real(how, signals)
signal.pthread_sigmask = held
from pop3tap.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize(
    ("wrapper", "signal_parent"),
    [
        (_FORK_THEN_SIGTERM, False),
        (_SLOW_WORKER_START, True),
        (_SIGTERM_AS_SIGNALS_ARE_HELD, False),
    ],
    ids=["as-fork-returns", "before-the-worker-resets-its-handlers", "just-before-a-fork"],
)
def test_a_stop_signal_during_the_forks_stops_every_worker(
    tmp_path: Path, wrapper: str, signal_parent: bool
) -> None:
    """The parent holds SIGINT/SIGTERM back around each fork, so no worker misses it."""
    script = tmp_path / "wrapped.py"
    script.write_text(wrapper)
    proc = subprocess.Popen(
        [sys.executable, str(script), "record", "--upstream", "127.0.0.1:9",
         "--listen", "127.0.0.1:0", "--no-captures", "--workers", "2",
         "--log-format", "json", "--log-file", str(tmp_path / "log.jsonl")],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        if signal_parent:
            # Once both workers are forked, and while they are still slowed down in their
            # first signal.signal call (1 s), signal the parent only.
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
            deadline = time.monotonic() + 20
            while len(children.read_text().split()) < 2:
                assert time.monotonic() < deadline, "the workers were not forked"
                time.sleep(0.01)
            proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_workers_die_with_a_killed_parent(tmp_path: Path) -> None:
    capture = REPO / "captures" / "user-pass.p3cap"
    with pop3tap_process("replay", tmp_path, str(capture), "--workers", "2") as replay:
        wait_for_events(replay.log_text, "replay.listening", 2)
        pids = [int(e["pid"]) for e in log_events(replay.log_text(), "replay.listening")]  # type: ignore[call-overload]
        replay.proc.kill()
        replay.proc.wait(10)
        deadline = time.monotonic() + 20
        while any(alive(pid) for pid in pids):
            assert time.monotonic() < deadline, "a worker outlived its parent"
            time.sleep(0.05)


def test_replay_workers_serve_the_recorded_session(tmp_path: Path) -> None:
    capture = REPO / "captures" / "user-pass.p3cap"
    (session,), _ = load_sessions(capture)
    expected = read_capture(capture).stream("s2c")
    with pop3tap_process("replay", tmp_path, str(capture), "--workers", "2") as replay:
        wait_for_events(replay.log_text, "replay.listening", 2)
        for _ in range(6):
            received, _results = run_poplib(replay.host, replay.port, session)
            assert received == expected
        replay.proc.send_signal(signal.SIGINT)
        assert replay.proc.wait(timeout=20) == 0
    stopped = log_events(replay.log_text(), "replay.stopped")
    assert len(stopped) == 2
    assert sum(int(e["connections"]) for e in stopped) == 6  # type: ignore[call-overload]


def pop3tap(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pop3tap", *args],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (("record", "--upstream", "127.0.0.1:9", "--workers", "0"), 2, "--workers must be"),
        (("record", "--upstream", "127.0.0.1:9", "--workers", "65"), 2, "--workers must be"),
        (
            ("replay", str(REPO / "captures" / "user-pass.p3cap"), "--workers", "2",
             "--sessions", "once"),
            2,
            "needs --sessions cycle",
        ),
    ],
)
def test_bad_worker_options_are_one_line_errors(
    args: tuple[str, ...], code: int, needle: str
) -> None:
    result = pop3tap(*args)
    assert result.returncode == code, result
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert needle in line


def test_workers_on_a_busy_port_is_a_one_line_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = pop3tap(
            "record", "--upstream", "127.0.0.1:9", "--listen", f"127.0.0.1:{port}",
            "--workers", "2", "--no-captures",
        )
    assert result.returncode == 1, result
    (line,) = result.stderr.strip().splitlines()
    assert "address already in use" in line
