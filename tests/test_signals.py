"""Stop signals on the real command line: the first drains, the second closes at once.

The first SIGINT, SIGTERM or SIGHUP (a closed terminal) stops accepting and lets open
sessions finish within the grace period, and says how many are open; a second one closes
every session and capture at once, still writing close records, and the process exits
non-zero. Never a traceback, with or without ``--workers``.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
from clients import Pop3tapProcess, pop3tap_process, relay_process, wait_refused
from faults import greet_and_wait, scripted_server

from pop3tap.capture import iter_capture_paths, read_capture

ROOT = Path(__file__).resolve().parents[1]
SESSIONS = 12
#: Much longer than any wait below: a test that passes cannot have waited for the grace.
GRACE = "120"


def log_events(text: str, name: str) -> list[dict[str, object]]:
    events = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [e for e in events if e["event"] == name]


def wait_for_events(proc: Pop3tapProcess, name: str, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while len(log_events(proc.log_text(), name)) < count:
        assert time.monotonic() < deadline, f"fewer than {count} {name}: {proc.log_text()[-3000:]}"
        time.sleep(0.02)


def open_clients(host: str, port: int, stack: ExitStack, count: int) -> list[socket.socket]:
    clients = []
    for _ in range(count):
        client = stack.enter_context(socket.create_connection((host, port), timeout=30))
        assert client.recv(100).startswith(b"+OK")
        clients.append(client)
    return clients


SIGNAL_PAIRS = [
    (signal.SIGTERM, signal.SIGTERM),
    (signal.SIGHUP, signal.SIGHUP),
    (signal.SIGINT, signal.SIGTERM),
]


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize(("first", "second"), SIGNAL_PAIRS, ids=lambda s: s.name)
def test_record_second_signal_closes_every_capture_and_exits_nonzero(
    tmp_path: Path, workers: str, first: signal.Signals, second: signal.Signals
) -> None:
    with (
        ExitStack() as stack,
        scripted_server(greet_and_wait) as upstream,
        relay_process(
            upstream.host, upstream.port, tmp_path, "--grace", GRACE, "--workers", workers
        ) as relay,
    ):
        wait_for_events(relay, "relay.listening", int(workers))
        clients = open_clients(relay.host, relay.port, stack, SESSIONS)
        wait_for_events(relay, "capture.open", SESSIONS)
        relay.proc.send_signal(first)
        # Every worker says it stops; those holding sessions drain them. The kernel may
        # hand every connection to one worker, so the other may have nothing to drain.
        wait_for_events(relay, "relay.shutdown", int(workers))
        deadline = time.monotonic() + 30
        while True:
            draining = log_events(relay.log_text(), "relay.draining")
            drained = sum(int(e["sessions"]) for e in draining)  # type: ignore[call-overload]
            if drained >= SESSIONS or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert drained == SESSIONS, relay.log_text()[-3000:]
        assert all(e["grace_s"] == float(GRACE) for e in draining)
        # Still draining: the sessions are open.
        time.sleep(0.3)
        assert relay.proc.poll() is None
        relay.proc.send_signal(second)
        code = relay.proc.wait(timeout=30)
        assert code not in (0, -second, -signal.SIGKILL), code
        for client in clients:
            client.settimeout(10)
            assert client.recv(100) == b""
    paths = iter_capture_paths([relay.captures])
    assert len(paths) == SESSIONS
    unclosed = [p.name for p in paths if not read_capture(p).complete]
    assert not unclosed
    stderr = relay.stderr_text()
    assert "Traceback" not in stderr and "Traceback" not in relay.log_text()
    assert f"{SESSIONS} " in stderr or workers == "2"  # the drain line names the open sessions
    assert "again" in stderr  # and says what a second signal does
    assert log_events(relay.log_text(), "relay.abort")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_replay_drains_on_the_first_signal_and_closes_on_the_second(
    tmp_path: Path, workers: str
) -> None:
    capture = ROOT / "captures" / "user-pass.p3cap"
    with (
        ExitStack() as stack,
        pop3tap_process(
            "replay", tmp_path, str(capture), "--grace", GRACE, "--workers", workers
        ) as replay,
    ):
        wait_for_events(replay, "replay.listening", int(workers))
        clients = open_clients(replay.host, replay.port, stack, 4)
        replay.proc.send_signal(signal.SIGTERM)
        wait_for_events(replay, "replay.draining", int(workers))
        # An open connection is still served while draining.
        clients[0].sendall(b"CAPA\r\n")
        assert clients[0].recv(100).startswith(b"+OK")
        replay.proc.send_signal(signal.SIGHUP)
        assert replay.proc.wait(timeout=30) not in (0, -signal.SIGHUP, -signal.SIGKILL)
        for client in clients:
            client.settimeout(10)
            while client.recv(4096):  # the rest of the CAPA answer, then the close
                pass
    assert "Traceback" not in replay.stderr_text() + replay.log_text()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_replay_sigterm_finishes_open_sessions_then_exits_zero(
    tmp_path: Path, workers: str
) -> None:
    """The relay's graceful drain, in replay: the first SIGTERM refuses new clients, the
    open session is played to its QUIT, and the process exits 0 long before the grace."""
    capture = ROOT / "captures" / "user-pass.p3cap"
    with pop3tap_process(
        "replay", tmp_path, str(capture), "--grace", GRACE, "--workers", workers
    ) as replay:
        wait_for_events(replay, "replay.listening", int(workers))
        client = socket.create_connection((replay.host, replay.port), timeout=30)
        reader = client.makefile("rb")
        assert reader.readline().startswith(b"+OK Dovecot")
        replay.proc.send_signal(signal.SIGTERM)
        wait_for_events(replay, "replay.draining", int(workers))
        wait_refused(replay.host, replay.port)
        for command, answer in ((b"USER alice", b"+OK\r\n"), (b"PASS secret", b"+OK Logged in.")):
            client.sendall(command + b"\r\n")
            assert reader.readline().startswith(answer)
        client.sendall(b"STAT\r\n")
        assert reader.readline() == b"+OK 3 954\r\n"
        client.sendall(b"QUIT\r\n")
        assert reader.readline().startswith(b"+OK")
        assert reader.read() == b""
        client.close()
        assert replay.proc.wait(timeout=60) == 0
    log = replay.log_text()
    draining = log_events(log, "replay.draining")
    assert sum(int(e["sessions"]) for e in draining) == 1  # type: ignore[call-overload]
    assert all(e["grace_s"] == float(GRACE) for e in draining)
    stopped = log_events(log, "replay.stopped")
    assert len(stopped) == int(workers) and not any(e["aborted"] for e in stopped)
    assert sum(int(e["connections"]) for e in stopped) == 1  # type: ignore[call-overload]
    # The signal is logged under replay's own name, once per process that got it.
    assert [e["signal"] for e in log_events(log, "replay.shutdown")]
    assert not log_events(log, "relay.shutdown")
    # The connection's lines share one session id, as the relay's do; the capture's own
    # session id is named apart.
    (opened,) = log_events(log, "replay.session.open")
    (closed,) = log_events(log, "replay.session.close")
    assert opened["recorded_session"] == "cb48a6c87f63"
    assert re.fullmatch("[0-9a-f]{12}", str(opened["session"]))
    assert opened["session"] == closed["session"] != opened["recorded_session"]
    assert "Traceback" not in replay.stderr_text() + log


def test_a_single_signal_with_no_open_session_exits_zero(tmp_path: Path) -> None:
    with (
        scripted_server(greet_and_wait) as upstream,
        relay_process(upstream.host, upstream.port, tmp_path, "--grace", GRACE) as relay,
    ):
        relay.proc.send_signal(signal.SIGHUP)
        assert relay.proc.wait(timeout=30) == 0
    assert "Traceback" not in relay.stderr_text()


#: The console script's own code (``from pop3tap.cli import main``), with a real SIGINT
#: sent to the process while the import system loads MODULE: Ctrl-C during start-up.
INTERRUPTED_START = """
import os, signal, sys
MODULE = sys.argv.pop(1)
class InterruptOnImport:
    def find_spec(self, name, path=None, target=None):
        if name == MODULE:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None
sys.meta_path.insert(0, InterruptOnImport())
from pop3tap.cli import main
sys.exit(main())
"""


@pytest.mark.parametrize("module", ["importlib.metadata", "trio", "structlog", "pop3tap.relay"])
def test_ctrl_c_during_start_up_exits_130_without_a_traceback(tmp_path: Path, module: str) -> None:
    args = ["record", "--upstream", "127.0.0.1:9", "--listen", "127.0.0.1:0", "--no-captures"]
    result = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_START, module, *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 130, result


#: The console script's own code, run as the program: once the replay server listens a
#: thread sends FIRST; after main() has returned (the drain is over, the process is on its
#: way out) the process gets LATE, as from an impatient user or a service manager.
LATE_SIGNAL = """
import os, signal, sys, threading, time
first, late, log = int(sys.argv.pop(1)), int(sys.argv.pop(1)), sys.argv.pop(1)
def stop_once_listening():
    while "replay.listening" not in open(log).read():
        time.sleep(0.05)
    os.kill(os.getpid(), first)
threading.Thread(target=stop_once_listening, daemon=True).start()
from pop3tap.cli import main
code = main()
os.kill(os.getpid(), late)
print("still here", flush=True)
sys.exit(code)
"""


@pytest.mark.parametrize("late", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=str)
def test_a_signal_after_the_drain_does_not_change_the_exit_code(
    tmp_path: Path, late: signal.Signals
) -> None:
    capture = Path(__file__).resolve().parents[1] / "captures" / "user-pass.p3cap"
    log = tmp_path / "log.jsonl"
    log.write_text("")
    log.chmod(0o600)
    result = subprocess.run(
        [
            *(sys.executable, "-c", LATE_SIGNAL, str(int(signal.SIGTERM)), str(int(late))),
            *(str(log), "replay", str(capture), "--listen", "127.0.0.1:0"),
            *("--log-format", "json", "--log-file", str(log)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stdout == "still here\n"
    assert result.returncode == 0, result
