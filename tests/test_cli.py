"""The command line: one-line errors with exit codes, signals, and `show`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from clients import raw_session, relay_process
from dovecot import Dovecot, Mailbox

from pop3tap.capture import CaptureWriter, iter_capture_paths, read_capture

PYTHON = sys.executable


def pop3tap(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "pop3tap", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def assert_one_line_error(
    result: subprocess.CompletedProcess[str], code: int, *needles: str
) -> None:
    assert result.returncode == code, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["record", "--upstream", "nohostport"], "expected HOST:PORT"),
        (["record", "--upstream", "host:99999"], "port must be a number"),
        (["record", "--upstream", "::1:110"], "[ADDR]:PORT"),
        (["record", "--upstream", "127.0.0.1:110", "--listen", "127.0.0.1:x"], "port must be"),
        (["record", "--upstream", "127.0.0.1:0"], "cannot be 0"),
        (["record"], "--upstream"),
        (["record", "--upstream", "127.0.0.1:110", "--grace", "-1"], "not negative"),
        (["record", "--upstream", "127.0.0.1:110", "--close-linger", "-1"], "not negative"),
        (["record", "--upstream", "127.0.0.1:110", "--grace", "nan"], "number of seconds"),
        (["record", "--upstream", "127.0.0.1:110", "--connect-timeout", "nan"], "seconds"),
        (["record", "--upstream", "127.0.0.1:110", "--tls-timeout", "nan"], "tls-timeout"),
        (["frobnicate"], "invalid choice"),
        (["show"], "CAPTURE"),
    ],
)
def test_usage_errors_are_one_line(args: list[str], needle: str) -> None:
    assert_one_line_error(pop3tap(*args), 2, needle)


def test_unwritable_captures_directory_fails_fast(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = pop3tap("record", "--upstream", "127.0.0.1:110", "--captures", str(blocker / "sub"))
    assert_one_line_error(result, 2, "captures directory", "cannot create it")


def test_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = pop3tap(
            "record",
            "--upstream",
            "127.0.0.1:110",
            "--listen",
            f"127.0.0.1:{port}",
            "--captures",
            str(tmp_path),
        )
    assert_one_line_error(result, 1, "address already in use")


def test_show_missing_and_corrupt_captures(tmp_path: Path) -> None:
    assert_one_line_error(pop3tap("show", str(tmp_path / "nope.p3cap")), 2, "nope.p3cap")
    corrupt = tmp_path / "corrupt.p3cap"
    corrupt.write_bytes(b"\xc1\x00garbage")
    assert_one_line_error(pop3tap("show", str(corrupt)), 2, "corrupt.p3cap")
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    assert_one_line_error(pop3tap("show", str(empty_dir)), 2, "no capture files")


def test_show_renders_pop3_log_view_and_json(tmp_path: Path) -> None:
    writer = CaptureWriter.create(
        tmp_path, session_id="aaaaaaaaaaaa", header_fields={"client": "c:1", "upstream": "u:2"}
    )
    writer.write_data("s2c", 0.0, b"+OK ready <1.2@x>\r\n")
    writer.write_data("c2s", 0.1, b"USER bob\r\nPASS ********\r\nRETR 1\r\n")
    writer.write_data("s2c", 0.2, b"+OK\r\n+OK in\r\n+OK 5 octets\r\n..a\r\nb\r\n.\r\n")
    writer.write_event("eof", 0.3, dir="s2c")
    writer.close(0.3, "server closed", {"retr_count": 1, "retr_bytes": 7})
    text = pop3tap("show", str(tmp_path))
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert any(line.endswith("[tx] USER bob") for line in lines)
    assert any(line.endswith("[tx] PASS ********") for line in lines)
    assert any(line.endswith("[rx] +OK 5 octets  (2 lines, 8 bytes)") for line in lines)
    assert all(line.startswith("POP3: ") for line in lines)
    bodies = pop3tap("show", "--bodies", str(tmp_path)).stdout.splitlines()
    assert any(line.endswith("[rx] .a") for line in bodies)  # dot-unstuffed (RFC 1939 §3)
    shown = pop3tap("show", "--format", "json", str(tmp_path)).stdout.splitlines()
    as_json = [json.loads(line) for line in shown]
    exchanges = [r for r in as_json if r["kind"] == "exchange"]
    assert [r["verb"] for r in exchanges] == ["USER", "PASS", "RETR"]
    assert as_json[0]["kind"] == "session" and as_json[-1]["kind"] == "summary"


@pytest.mark.realpeer
def test_sigterm_lets_open_sessions_finish_within_grace(
    dovecot: Dovecot, mailbox: Mailbox, tmp_path: Path
) -> None:
    with relay_process(dovecot.host, dovecot.pop3_port, tmp_path, "--grace", "2") as relay:
        client = socket.create_connection((relay.host, relay.port), timeout=10)
        reader = client.makefile("rb")
        assert reader.readline().startswith(b"+OK")
        for command in (f"USER {mailbox.user}", f"PASS {mailbox.password}"):
            client.sendall(command.encode() + b"\r\n")
            assert reader.readline().startswith(b"+OK")
        relay.proc.send_signal(signal.SIGTERM)
        # The open session still works during the grace period...
        client.sendall(b"NOOP\r\n")
        assert reader.readline() == b"+OK\r\n"
        # ...and new clients are refused.
        time.sleep(0.3)
        with pytest.raises(OSError):
            socket.create_connection((relay.host, relay.port), timeout=2).close()
        # The idle session is closed at the end of the grace period; the relay exits 0.
        assert relay.proc.wait(timeout=15) == 0
        assert reader.read() == b""
        client.close()
    (path,) = iter_capture_paths([relay.captures])
    capture = read_capture(path)
    assert capture.complete and capture.records[-1].reason == "shutdown"  # type: ignore[union-attr]
    assert os.stat(path).st_mode & 0o777 == 0o600
    log = relay.log_text()
    assert '"relay.shutdown"' in log and '"session.close"' in log
    assert os.stat(relay.log_file).st_mode & 0o777 == 0o600


@pytest.mark.realpeer
@pytest.mark.lint_findings("pipelining-without-capability")  # pipelines, never asks CAPA
def test_record_command_end_to_end_with_json_log(
    dovecot: Dovecot, mailbox: Mailbox, tmp_path: Path
) -> None:
    with relay_process(dovecot.host, dovecot.pop3_port, tmp_path) as relay:
        commands = f"USER {mailbox.user}\r\nPASS {mailbox.password}\r\nSTAT\r\nQUIT\r\n".encode()
        reply = raw_session(relay.host, relay.port, commands)
        assert reply.count(b"+OK") == 5
        relay.proc.send_signal(signal.SIGINT)
        assert relay.proc.wait(timeout=15) == 0
    log = relay.log_text()
    assert mailbox.password not in log
    events = [json.loads(line) for line in log.splitlines()]
    assert any(e["event"] == "pop3.exchange" and e.get("verb") == "STAT" for e in events)


def test_keylog_file_is_private(tmp_path: Path) -> None:
    keylog = tmp_path / "keys.log"
    old_umask = os.umask(0o022)
    try:
        with relay_process("127.0.0.1", 9, tmp_path, "--keylog", str(keylog), "--no-captures"):
            pass
    finally:
        os.umask(old_umask)
    assert os.stat(keylog).st_mode & 0o777 == 0o600


def test_demo_hint_commands_work_as_printed(tmp_path: Path) -> None:
    demo = pop3tap("demo", "--captures", str(tmp_path), "--log-file", str(tmp_path / "log"))
    assert demo.returncode == 0, demo.stderr
    hints = demo.stdout.split("next:\n", 1)[1].splitlines()
    show = next(h.strip() for h in hints if " show " in h)
    assert show.startswith(f"{PYTHON} -m pop3tap show --bodies ")
    shown = subprocess.run(show, shell=True, capture_output=True, text=True, check=False)
    assert shown.returncode == 0 and "[tx] USER alice" in shown.stdout, shown.stderr


@pytest.mark.realpeer
@pytest.mark.parametrize("mode", ["colour", "NO_COLOR", "quiet"])
def test_live_console_view_in_a_real_terminal(tmp_path: Path, mode: str) -> None:
    """`record` under tmux: one aligned line per exchange, the real port, colours by env."""
    import poplib
    import re
    import shlex
    import shutil

    from pop3tap.replay import replay_server

    tmux = shutil.which("tmux")
    if tmux is None:
        if os.environ.get("POP3TAP_REQUIRE_REAL_PEERS"):
            pytest.fail("tmux is required (apt-get install tmux)")
        pytest.skip("tmux is not installed")
    sock = str(tmp_path / "tmux.sock")
    root = Path(__file__).resolve().parents[1]

    def pane() -> str:
        return subprocess.run(
            [tmux, "-S", sock, "capture-pane", "-p", "-e", "-J", "-t", "relay"],
            capture_output=True, text=True, check=True,
        ).stdout

    def wait_for(pattern: str) -> str:
        for _ in range(1000):
            text = pane()
            if re.search(pattern, text):
                return text
            time.sleep(0.02)
        raise AssertionError(f"{pattern!r} never appeared:\n{pane()}")

    from dovecot import free_port

    # Port 0 (the console shows the real one), except with -q, which shows nothing.
    quiet_port = free_port()
    listen = f"127.0.0.1:{quiet_port if mode == 'quiet' else 0}"
    with replay_server(root / "captures" / "user-pass.p3cap") as upstream:
        env = {"NO_COLOR": "1"} if mode == "NO_COLOR" else {}
        command = " ".join(
            [
                *(f"{k}={v}" for k, v in env.items()),
                shlex.quote(PYTHON), "-m", "pop3tap", "record", "-u",
                f"{upstream.host}:{upstream.port}", "-l", listen,
                "-w", shlex.quote(str(tmp_path / "caps")),
                *(["-q"] if mode == "quiet" else []),
                "; sleep 600",
            ]
        )
        environment = {**os.environ, "TERM": "xterm-256color"}
        environment.pop("NO_COLOR", None)
        environment.pop("FORCE_COLOR", None)
        subprocess.run(
            [tmux, "-S", sock, "new-session", "-d", "-s", "relay", "-x", "200", "-y", "50",
             f"cd {shlex.quote(str(root))} && exec env -u NO_COLOR sh -c {shlex.quote(command)}"],
            check=True, env=environment,
        )
        try:
            if mode == "quiet":
                # Nothing below warning: find the port from the socket table instead.
                port = quiet_port
            else:
                text = wait_for(r"relay\.listening listen=127\.0\.0\.1:\d+")
                plain = re.sub(r"\x1b\[[0-9;]*m", "", text)
                port = int(re.search(r"listen=127\.0\.0\.1:(\d+)", plain).group(1))  # type: ignore[union-attr]
            for _ in range(500):  # with -q nothing says when the relay listens
                try:
                    client = poplib.POP3("127.0.0.1", port, timeout=10)
                    break
                except ConnectionRefusedError:
                    time.sleep(0.02)
            client.user("alice")
            client.pass_("secret")
            assert client.stat() == (3, 954)
            client.retr(1)
            client.quit()
            if mode == "quiet":
                for _ in range(200):  # the capture is complete once the session closed
                    captures = iter_capture_paths([tmp_path / "caps"])
                    if captures and read_capture(captures[0]).complete:
                        break
                    time.sleep(0.02)
                text = pane()
                assert "USER alice" not in text and "open" not in text, text
                return
            text = wait_for(r"<< close")
        finally:
            subprocess.run([tmux, "-S", sock, "kill-server"], check=False)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", text)
    lines = [line for line in plain.splitlines() if line.strip()]
    exchange = [line for line in lines if re.search(r" (USER|PASS|STAT|RETR|QUIT)\b", line)]
    assert len(exchange) == 5, lines  # one line per exchange, nothing else about them
    columns = {line.index("+OK") for line in exchange}
    assert len(columns) == 1, exchange  # the responses line up
    assert any(re.search(rf">> open 127\.0\.0\.1:\d+ -> 127\.0\.0\.1:{port} -> ", x) for x in lines)
    assert "secret" not in plain and "PASS ********" in plain
    assert not any(line.lstrip().startswith("{") for line in lines)  # no JSON on the console
    if mode == "NO_COLOR":
        assert "\x1b[" not in text
    else:
        assert re.search(r"\x1b\[[0-9;]*32m\+OK", text), text  # +OK in green
