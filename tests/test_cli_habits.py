"""Command-line habits: bare `pop3tap`, -V, short flags, exit codes in --help, examples,
shell completion, `ca init`/`ca show`, and worker ids on log lines."""

from __future__ import annotations

import json
import os
import poplib
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pop3tap.replay import replay_server

PYTHON = sys.executable
ROOT = Path(__file__).resolve().parents[1]
COMMANDS = [
    "record", "replay", "show", "view", "export", "import", "demo", "ca", "console", "config",
    "completion",
]


def pop3tap(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "pop3tap", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
        env=env,
    )


def test_bare_pop3tap_lists_the_commands_and_is_a_usage_error() -> None:
    result = pop3tap()
    assert result.returncode == 2
    for command in COMMANDS:
        assert f"    {command} " in result.stdout
    assert "exit codes:" in result.stdout


@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_version(flag: str) -> None:
    from pop3tap import __version__

    result = pop3tap(flag)
    assert (result.returncode, result.stdout) == (0, f"pop3tap {__version__}\n")


@pytest.mark.parametrize("command", [[], *([c] for c in COMMANDS)])
def test_every_help_ends_with_examples_and_exit_codes(command: list[str]) -> None:
    result = pop3tap(*command, "--help")
    assert result.returncode == 0
    text = result.stdout
    examples = text.index("examples:\n")
    codes = text.index("exit codes:\n")
    assert examples < codes and "  pop3tap " in text[examples:codes]
    assert "  1  runtime failure" in text[codes:] and "  2  bad usage or bad input" in text[codes:]


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, needle: str) -> None:
    assert result.returncode == code, result
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and needle in result.stderr, result.stderr


def test_short_flags_and_contradictions(tmp_path: Path) -> None:
    assert_one_line_error(
        pop3tap("record", "-u", "127.0.0.1:110", "-w", str(tmp_path), "--no-captures"),
        2,
        "--captures and --no-captures contradict each other",
    )
    assert_one_line_error(pop3tap("record", "-l", "1110"), 2, "-u/--upstream")
    assert_one_line_error(pop3tap("record", "-u", "127.0.0.1:x"), 2, "port must be")
    missing = str(tmp_path / "missing.pem")
    assert_one_line_error(
        pop3tap("record", "-u", "127.0.0.1:110", "--upstream-ca", missing),
        2,
        f"--upstream-ca {missing}: no such file",
    )
    assert_one_line_error(
        pop3tap("replay", str(ROOT / "captures"), "--cert", missing, "--key", missing),
        2,
        f"--cert {missing}: no such file",
    )
    assert_one_line_error(pop3tap("replay", missing), 2, "no such file")
    assert_one_line_error(pop3tap("show", "--status", "-ERR"), 2, "CAPTURE")


def test_bash_completion_generated_from_the_parser(tmp_path: Path) -> None:
    bash = shutil.which("bash")
    assert bash is not None
    script = tmp_path / "pop3tap.bash"
    generated = pop3tap("completion", "bash")
    assert generated.returncode == 0
    script.write_text(generated.stdout)

    def complete(*words: str) -> list[str]:
        quoted = " ".join(f"'{w}'" for w in words)
        program = (
            f"source {script}; COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}; "
            'COMP_LINE="${COMP_WORDS[*]}"; COMP_POINT=${#COMP_LINE}; '
            '_shtab_pop3tap; printf "%s\\n" "${COMPREPLY[@]}"'
        )
        out = subprocess.run(
            [bash, "-c", program], capture_output=True, text=True, check=True, timeout=30
        )
        return sorted(set(out.stdout.split()))

    assert complete("pop3tap", "re") == ["record", "replay"]
    assert "--upstream-ca" in complete("pop3tap", "record", "--upstream-")
    assert complete("pop3tap", "show", "--format", "") == ["html", "json", "text"]
    for shell in ("zsh", "fish"):
        other = pop3tap("completion", shell)
        assert other.returncode == 0 and "upstream-ca" in other.stdout
    assert_one_line_error(pop3tap("completion", "tcsh"), 2, "invalid choice")


def test_ca_init_is_idempotent_and_ca_show_describes_it(tmp_path: Path) -> None:
    ca_dir = tmp_path / "ca"
    first = pop3tap("ca", "init", "--ca-dir", str(ca_dir))
    assert first.returncode == 0 and first.stdout.startswith("created pop3tap CA")
    fingerprint = first.stdout.split("SHA-256 fingerprint: ")[1].strip()
    key = ca_dir / "pop3tap-ca-key.pem"
    before = (key.read_bytes(), key.stat().st_mtime_ns)
    again = pop3tap("ca", "init", "--ca-dir", str(ca_dir))
    assert again.returncode == 0 and "already exists" in again.stdout
    assert f"SHA-256 fingerprint: {fingerprint}\n" in again.stdout
    assert (key.read_bytes(), key.stat().st_mtime_ns) == before
    shown = pop3tap("ca", "show", "--ca-dir", str(ca_dir))
    assert shown.returncode == 0
    fields = dict(line.split(":", 1) for line in shown.stdout.splitlines())
    assert fields["certificate"].strip() == str(ca_dir / "pop3tap-ca.pem")
    assert "pop3tap" in fields["subject"] and fields["SHA-256"].strip() == fingerprint
    assert fields["expires"].strip()[:4].isdigit()
    assert_one_line_error(pop3tap("ca", "show", "--ca-dir", str(tmp_path / "none")), 1, "none")


def test_workers_put_worker_and_pid_on_every_line_and_sigint_is_logged_as_sigint(
    tmp_path: Path,
) -> None:
    log = tmp_path / "relay.log"
    with replay_server(ROOT / "captures" / "user-pass.p3cap") as upstream:
        proc = subprocess.Popen(
            [PYTHON, "-m", "pop3tap", "record", "-u", f"{upstream.host}:{upstream.port}",
             "-l", "127.0.0.1:0", "-w", str(tmp_path / "caps"), "--workers", "2",
             "--log-file", str(log)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        try:
            events: list[dict[str, object]] = []
            for _ in range(1500):  # until both workers listen
                if log.exists():
                    events = [json.loads(x) for x in log.read_text().splitlines()]
                if sum(e["event"] == "relay.listening" for e in events) == 2:
                    break
                time.sleep(0.02)
            port = int(str(events[-1]["listen"]).rsplit(":", 1)[1])
            client = poplib.POP3("127.0.0.1", port, timeout=10)
            client.user("alice")
            client.pass_("x")
            client.stat()
            client.quit()
            for _ in range(1500):
                events = [json.loads(x) for x in log.read_text().splitlines()]
                if any(e["event"] == "session.close" for e in events):
                    break
                time.sleep(0.02)
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    events = [json.loads(x) for x in log.read_text().splitlines()]
    workers = {int(str(e["pid"])) for e in events if "worker" in e}
    assert len(workers) == 2 and os.getpid() not in workers
    session_lines = [e for e in events if e.get("session")]
    assert session_lines and all("worker" in e and "pid" in e for e in session_lines)
    parent = [e for e in events if "worker" not in e]
    assert [e["signal"] for e in parent if e["event"] == "relay.shutdown"] == ["SIGINT"]
    assert all(
        e.get("worker") is not None for e in events if e["event"] != "relay.shutdown"
    ), [e for e in events if "worker" not in e]


def readme_bad_inputs() -> list[tuple[str, str, int]]:
    text = (ROOT / "README.md").read_text()
    table = text.split("<!-- bad-input table", 1)[1].split("<!-- end of bad-input table", 1)[0]
    rows = []
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`pop3tap"):
            rows.append((cells[0].strip("`"), cells[1].strip("`"), int(cells[2])))
    return rows


def test_readme_lists_bad_inputs() -> None:
    assert len(readme_bad_inputs()) >= 15


@pytest.mark.parametrize(("command", "needle", "code"), readme_bad_inputs())
def test_every_bad_input_in_the_readme_is_one_line_with_its_exit_code(
    tmp_path: Path, command: str, needle: str, code: int
) -> None:
    import shlex
    import socket

    (tmp_path / "corrupt.p3cap").write_bytes(b"\xc1\x00garbage")
    (tmp_path / "file.txt").write_text("not a directory")
    (tmp_path / "empty-dir").mkdir()
    shutil.copytree(ROOT / "captures", tmp_path / "captures")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        args = [port if a == "BUSY-PORT" else a for a in shlex.split(command)[1:]]
        result = subprocess.run(
            [PYTHON, "-m", "pop3tap", *args],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
            check=False, cwd=tmp_path,
        )
    assert_one_line_error(result, code, needle)
