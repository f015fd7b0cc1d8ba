"""`pop3tap show` for real work: filters, --stable, --follow, the pager, git textconv."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pop3tap.capture import CaptureWriter

PYTHON = sys.executable
ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "captures"


def pop3tap(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "pop3tap", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
        cwd=cwd,
    )


def write_session(directory: Path, session: str, user: str, *, started: datetime) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    writer = CaptureWriter.create(
        directory,
        session_id=session,
        header_fields={
            "client": "127.0.0.1:40000",
            "upstream": "127.0.0.1:110",
            "started": started.isoformat().replace("+00:00", "Z"),
            "started_unix": started.timestamp(),
        },
    )
    writer.write_data("s2c", 0.0, b"+OK ready\r\n")
    writer.write_data("c2s", 1.0, f"USER {user}\r\nPASS ********\r\nRETR 7\r\nQUIT\r\n".encode())
    writer.write_data("s2c", 2.0, b"+OK\r\n+OK in\r\n-ERR no such message\r\n+OK bye\r\n")
    writer.write_event("eof", 3.0, dir="s2c")
    writer.close(3.0, "server closed", {})
    return writer.path


@pytest.fixture
def two_sessions(tmp_path: Path) -> Path:
    for session, user, hour in (("aaaa00000001", "alice", 6), ("bbbb00000002", "bob", 9)):
        write_session(tmp_path, session, user, started=datetime(2026, 11, 27, hour, tzinfo=UTC))
    return tmp_path


def test_filters_select_sessions_and_exchanges(two_sessions: Path) -> None:
    def lines(*args: str) -> list[str]:
        result = pop3tap("show", str(two_sessions), *args)
        assert result.returncode == 0, result.stderr
        return [line for line in result.stdout.splitlines() if line]

    everything = lines()
    assert sum("Session " in line for line in everything) == 2
    alice = lines("--user", "alice")
    assert sum("Session aaaa00000001" in line for line in alice) == 1
    assert not any("bbbb" in line for line in alice)
    assert lines("--session", "bbbb")[0].endswith("(started 2026-11-27T09:00:00Z, secrets masked)")
    errors = lines("--status", "-ERR")
    assert [line.split("] ", 1)[1] for line in errors if "[db]" not in line] == [
        "RETR 7", "-ERR no such message"] * 2
    assert lines("--status=-ERR", "--user", "bob")[1:] == errors[4:]
    assert [x for x in lines("--verb", "quit") if "[tx]" in x] == [
        "POP3: 06:00:01 [tx] QUIT", "POP3: 09:00:01 [tx] QUIT"]
    assert [x for x in lines("--grep", "no such") if "[rx]" in x] == [
        "POP3: 06:00:02 [rx] -ERR no such message", "POP3: 09:00:02 [rx] -ERR no such message"]
    late = lines("--since", "2026-11-27T08:00Z")
    assert all("aaaa" not in x for x in late) and any("bbbb" in x for x in late)
    early = lines("--until", "2026-11-27T08:00:00+00:00", "--verb", "USER")
    assert early[1:] == ["POP3: 06:00:01 [tx] USER alice", "POP3: 06:00:02 [rx] +OK"]
    assert lines("--user", "carol") == []
    as_json = pop3tap("show", str(two_sessions), "--format", "json", "--status", "-ERR").stdout
    records = [json.loads(line) for line in as_json.splitlines()]
    assert [(r["kind"], r.get("verb")) for r in records] == [
        ("session", None), ("exchange", "RETR"), ("session", None), ("exchange", "RETR")]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--status", "maybe"], "--status 'maybe': use +OK, -ERR"),
        (["--since", "yesterday-ish"], "not a time: 'yesterday-ish'"),
        (["--grep", "("], "not a regular expression"),
    ],
)
def test_bad_filter_values_are_one_line_usage_errors(
    two_sessions: Path, args: list[str], needle: str
) -> None:
    result = pop3tap("show", str(two_sessions), *args)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and needle in result.stderr, result.stderr


def test_stable_text_is_the_same_for_two_recordings_of_one_conversation(tmp_path: Path) -> None:
    one = write_session(tmp_path / "a", "aaaa00000001", "alice", started=datetime.now(UTC))
    old = datetime(2020, 1, 1, tzinfo=UTC)
    two = write_session(tmp_path / "b", "cccc00000003", "alice", started=old)
    texts = [pop3tap("show", "--stable", str(p)).stdout for p in (one, two)]
    assert texts[0] == texts[1] and "aaaa" not in texts[0] and ":4000" not in texts[0]
    assert texts[0].splitlines()[0] == "POP3: [db] Session (secrets masked)"
    jsons = [pop3tap("show", "--stable", "--format", "json", str(p)).stdout for p in (one, two)]
    assert jsons[0] == jsons[1] and '"time"' not in jsons[0]


def test_follow_prints_a_session_recorded_after_it_started(tmp_path: Path) -> None:
    live = tmp_path / "live"
    live.mkdir()
    proc = subprocess.Popen(
        [PYTHON, "-m", "pop3tap", "show", "--follow", str(live)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        write_session(live, "dddd00000004", "dave", started=datetime.now(UTC))
        seen = ""
        while "Closed:" not in seen:
            seen += lines.get(timeout=60)  # a bound on a wait, not a speed assertion
        assert "Session dddd00000004" in seen and "[tx] USER dave" in seen
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert proc.stderr is not None and "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_pager_on_a_terminal(tmp_path: Path) -> None:
    import pty

    paged = tmp_path / "paged.txt"
    primary, secondary = pty.openpty()
    env = {**os.environ, "PAGER": f"sh -c 'cat > {paged}'"}
    try:
        result = subprocess.run(
            [PYTHON, "-m", "pop3tap", "show", str(SHIPPED / "user-pass.p3cap")],
            stdout=secondary, stderr=subprocess.PIPE, env=env, timeout=60, check=False,
        )
    finally:
        os.close(secondary)
        os.close(primary)
    assert result.returncode == 0, result.stderr
    assert "[tx] USER alice" in paged.read_text()


@pytest.mark.realpeer
def test_git_textconv_recipe_gives_a_readable_diff(tmp_path: Path) -> None:
    """The recipe in docs/capture-format.md, in a temporary repository."""
    git = shutil.which("git")
    if git is None:
        pytest.fail("git is required")
    repo = tmp_path / "repo"
    (repo / "captures").mkdir(parents=True)
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.test",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.test"}

    def run(*args: str) -> str:
        return subprocess.run(
            [git, *args], cwd=repo, env=env, check=True, capture_output=True, text=True
        ).stdout

    run("init", "-q")
    (repo / ".gitattributes").write_text("*.p3cap diff=p3cap\n")
    run(
        "config",
        "diff.p3cap.textconv",
        f"env POP3TAP_NO_CONFIG=1 {PYTHON} -m pop3tap show --stable --no-pager",
    )
    capture = repo / "captures" / "fetch.p3cap"
    shutil.copy(SHIPPED / "user-pass.p3cap", capture)
    run("add", ".")
    run("commit", "-q", "-m", "one")
    shutil.copy(SHIPPED / "failed-login.p3cap", capture)
    diff = run("diff", "--", "captures/fetch.p3cap")
    assert "Binary files" not in diff
    assert "-POP3: [tx] USER alice" in diff and "+POP3: [tx] USER erin" in diff
    assert "+POP3: [rx] -ERR [AUTH] Authentication failed." in diff
    assert " POP3: [tx] CAPA" in diff  # unchanged lines are context, not noise


@given(text=st.text(max_size=40) | st.from_regex(r"\d{1,30}(\.\d{0,5})?[smhd]", fullmatch=True))
@settings(max_examples=500, deadline=None)
def test_any_time_text_is_a_time_or_one_selection_error(text: str) -> None:
    """--since/--until take user text: it parses or is a SelectionError, never a traceback."""
    from pop3tap.selection import SelectionError, parse_when

    try:
        when = parse_when(text)
    except SelectionError as exc:
        assert "\n" not in str(exc)
    else:
        assert when.tzinfo is not None
