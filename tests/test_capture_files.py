"""Capture files on a hostile or broken disk: full disks, foreign files, truncated records.

Readers given a directory skip what is not a capture (one warning line each) instead of
refusing the lot, and views of a cut capture show only what was recorded.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
from clients import pop3tap_process, raw_session, relay_process
from faults import Connection, greet_and_wait, scripted_server
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pop3tap.capture import (
    CaptureError,
    CaptureReader,
    CaptureWriter,
    EventRecord,
    iter_capture_paths,
    read_capture,
)
from pop3tap.log import Pop3ConsoleRenderer, exchange_fields
from pop3tap.protocol import Exchange
from pop3tap.render import MAX_SHOWN_LINE, json_records, render_json, render_lines
from pop3tap.replay import ReplayError, load_sessions

PYTHON = sys.executable


def pop3tap(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "pop3tap", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def good_capture(directory: Path, session_id: str = "aaaaaaaaaaaa") -> Path:
    """A complete plain session: greeting, USER/PASS, STAT, QUIT."""
    writer = CaptureWriter.create(
        directory, session_id=session_id, header_fields={"client": "c:1", "upstream": "u:2"}
    )
    writer.write_data("s2c", 0.0, b"+OK ready\r\n")
    writer.write_data("c2s", 0.1, b"USER bob\r\nPASS ********\r\nSTAT\r\nQUIT\r\n")
    writer.write_data("s2c", 0.2, b"+OK\r\n+OK in\r\n+OK 2 320\r\n+OK bye\r\n")
    writer.write_event("eof", 0.3, dir="s2c")
    writer.write_event("eof", 0.3, dir="c2s")
    writer.close(0.3, "server closed", {"commands": 4})
    return writer.path


# --------------------------------------------------------------------------- full disk


def test_capture_that_cannot_get_its_header_is_removed(full_disk: str) -> None:
    with pytest.raises(CaptureError, match="cannot write capture header"):
        CaptureWriter.create(full_disk, session_id="bbbbbbbbbbbb", header_fields={})
    assert not list(Path(full_disk).glob("*.p3cap"))


def test_relay_on_a_full_disk_leaves_no_empty_capture(full_disk: str, tmp_path: Path) -> None:
    with (
        scripted_server(greet_and_wait) as upstream,
        relay_process(upstream.host, upstream.port, tmp_path, "--captures", full_disk) as relay,
    ):
        with socket.create_connection((relay.host, relay.port), timeout=10) as client:
            assert client.makefile("rb").readline() == b"+OK scripted ready\r\n"
        upstream.wait()
    assert '"capture.failed"' in relay.log_text()
    assert not list(Path(full_disk).glob("*.p3cap"))


# ------------------------------------------------------------------ directories with junk


def junk_directory(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A directory holding one good capture, a 0-byte file and a foreign file."""
    directory = tmp_path / "captures"
    directory.mkdir()
    good = good_capture(directory)
    empty = directory / "20260101T000000.000000Z-cccccccccccc.p3cap"
    empty.touch()
    foreign = directory / "notes.p3cap"
    foreign.write_bytes(b"just some notes\n")
    return good, empty, foreign


def test_show_directory_skips_files_that_are_not_captures(tmp_path: Path) -> None:
    good, empty, foreign = junk_directory(tmp_path)
    result = pop3tap("show", str(good.parent))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "[tx] USER bob" in result.stdout
    warnings = result.stderr.strip().splitlines()
    assert len(warnings) == 2, result.stderr
    assert any(empty.name in w and "skipped" in w and "empty" in w for w in warnings)
    assert any(foreign.name in w and "skipped" in w for w in warnings)


def test_show_of_a_named_non_capture_is_still_an_error(tmp_path: Path) -> None:
    _good, empty, _foreign = junk_directory(tmp_path)
    result = pop3tap("show", str(empty))
    assert result.returncode == 2
    assert empty.name in result.stderr and "Traceback" not in result.stderr


def test_show_directory_with_nothing_readable_fails(tmp_path: Path) -> None:
    good, _empty, _foreign = junk_directory(tmp_path)
    good.unlink()
    result = pop3tap("show", str(good.parent))
    assert result.returncode == 2
    assert "no readable capture" in result.stderr.strip().splitlines()[-1]


def tls_handshake_failure_capture(tmp_path: Path) -> Path:
    """What the relay writes when a client's TLS handshake fails: a capture with no greeting."""
    work = tmp_path / "record"
    work.mkdir()
    with (
        scripted_server(greet_and_wait) as upstream,
        relay_process(
            upstream.host,
            upstream.port,
            work,
            "--listen-tls",
            "--ca-dir",
            str(tmp_path / "ca"),
            "--tls-timeout",
            "5",
        ) as relay,
    ):
        with socket.create_connection((relay.host, relay.port), timeout=10) as sock:
            sock.sendall(b"USER not-tls\r\n")
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(4096):
                pass
        (path,) = iter_capture_paths([relay.captures])
        for _ in range(200):
            if read_capture(path).complete:
                break
            import time

            time.sleep(0.05)
    return path


def test_replay_directory_skips_a_capture_without_greeting(tmp_path: Path) -> None:
    bad = tls_handshake_failure_capture(tmp_path)
    directory = tmp_path / "serve"
    directory.mkdir()
    good = good_capture(directory)
    bad = bad.rename(directory / bad.name)
    (directory / "empty.p3cap").touch()
    with pop3tap_process("replay", tmp_path, str(directory)) as replay:
        reply = raw_session(replay.host, replay.port, b"USER bob\r\nPASS x\r\nSTAT\r\nQUIT\r\n")
        assert reply == read_capture(good).stream("s2c")
        warnings = replay.stderr_text().strip().splitlines()
    assert len(warnings) == 2, warnings
    assert any(bad.name in w and "skipped" in w and "greeting" in w for w in warnings)
    assert any("empty.p3cap" in w and "skipped" in w for w in warnings)


def test_replay_directory_with_nothing_to_serve_fails(tmp_path: Path) -> None:
    directory = tmp_path / "serve"
    directory.mkdir()
    (directory / "empty.p3cap").touch()
    (directory / "junk.p3cap").write_bytes(b"\xc1junk")
    result = pop3tap("replay", "--listen", "127.0.0.1:0", str(directory))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr
    assert "nothing left to serve" in lines[-1]
    assert sum("skipped" in line for line in lines) == 2


def test_capture_modes_are_private_even_when_skipped(tmp_path: Path) -> None:
    """A skipped file is only read, never changed or removed."""
    _good, empty, foreign = junk_directory(tmp_path)
    before = {p: (p.stat().st_mode, p.read_bytes()) for p in (empty, foreign)}
    pop3tap("show", str(empty.parent))
    assert {p: (p.stat().st_mode, p.read_bytes()) for p in (empty, foreign)} == before
    assert os.path.exists(empty)


# ------------------------------------------------------------------ honest endings


def test_close_reason_names_the_side_that_left_first(tmp_path: Path) -> None:
    """A plaintext client that leaves first: the server closing after it is not the reason."""
    with (
        scripted_server(greet_and_wait) as upstream,
        relay_process(upstream.host, upstream.port, tmp_path) as relay,
    ):
        with socket.create_connection((relay.host, relay.port), timeout=10) as client:
            assert client.makefile("rb").readline() == b"+OK scripted ready\r\n"
        upstream.wait()
        path = wait_for_closed_capture(relay.captures)
    capture = read_capture(path)
    assert capture.records[-1].reason == "client closed"  # type: ignore[union-attr]
    shown = pop3tap("show", str(path)).stdout
    assert "Connection closed by the client" in shown
    assert "Connection closed by the server" in shown  # it did close, after the client
    assert "Closed: client closed" in shown


def wait_for_closed_capture(directory: Path) -> Path:
    import time

    for _ in range(400):
        paths = iter_capture_paths([directory])
        if paths and read_capture(paths[0]).complete:
            return paths[0]
        time.sleep(0.05)
    raise AssertionError("no closed capture")


def body_then_stall(conn: Connection) -> None:
    """Greet, answer RETR with part of a body, then hang (as a slow server would)."""
    conn.send(b"+OK scripted ready\r\n")
    conn.readline()
    conn.send(b"+OK 4000 octets\r\n" + b"x" * 70 + b"\r\n" + b"y" * 30)
    conn.read_all()


def test_show_of_a_capture_cut_by_kill_9_invents_no_ending(tmp_path: Path) -> None:
    with (
        scripted_server(body_then_stall) as upstream,
        relay_process(upstream.host, upstream.port, tmp_path) as relay,
    ):
        client = socket.create_connection((relay.host, relay.port), timeout=10)
        reader = client.makefile("rb")
        assert reader.readline().startswith(b"+OK")
        client.sendall(b"RETR 1\r\n")
        assert reader.readline() == b"+OK 4000 octets\r\n"
        reader.readline()
        relay.proc.kill()
        relay.proc.wait(10)
        client.close()
        (path,) = iter_capture_paths([relay.captures])
    result = pop3tap("show", str(path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert not [line for line in lines if "closed by" in line.lower()], lines
    assert not [line for line in lines if "Closed:" in line], lines
    assert "Record stops here" in lines[-1] and "without a close record" in lines[-1]
    assert "unknown" in lines[-1]


# ------------------------------------------------------------------ terminal escapes

HOSTILE_GREETING = b"+OK \x1b]0;owned\x07\x1b[2J\x1b[31mready\x9b1m \xe2\x80\xae\r\n"


def hostile_terminal_server(conn: Connection) -> None:
    conn.send(HOSTILE_GREETING)
    while line := conn.readline():
        if line.upper().startswith(b"QUIT"):
            conn.send(b"+OK bye\x1b[2J\r\n")
            return
        if line.upper().startswith(b"RETR"):
            conn.send(b"+OK \x1bc\r\nbody \x1b]52;c;AAAA\x07\r\n.\r\n")
        else:
            conn.send(b"-ERR \x1b[1A\x1b[2Kfake line \xc2\x9b31m\r\n")


CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202e]")


def test_hostile_escapes_never_reach_show_or_the_console_log(tmp_path: Path) -> None:
    with (
        scripted_server(hostile_terminal_server) as upstream,
        relay_process(upstream.host, upstream.port, tmp_path, log_format="console") as relay,
    ):
        reply = raw_session(relay.host, relay.port, b"NOOP\x1b[5m\r\nRETR 1\r\nQUIT\r\n")
        assert reply.startswith(HOSTILE_GREETING)  # relayed unchanged
        path = wait_for_closed_capture(relay.captures)
        log = relay.log_text()
    assert "fake line" in log and "owned" in log
    assert not CONTROL.findall(log), [line for line in log.splitlines() if CONTROL.search(line)]
    for args in ([], ["--bodies"]):
        shown = pop3tap("show", *args, str(path)).stdout
        assert "owned" in shown and "\\x1b]0;owned\\x07" in shown
        assert not CONTROL.findall(shown), shown
    assert "body \\x1b]52;c;AAAA\\x07" in pop3tap("show", "--bodies", str(path)).stdout
    as_json = pop3tap("show", "--format", "json", str(path)).stdout
    assert "\\u001b" in as_json and not CONTROL.findall(as_json), as_json


# ------------------------------------------------------------------ properties


def sample_capture_bytes(tmp_path: Path) -> bytes:
    """A finished capture with an eof per side, control bytes and a body, as file bytes."""
    writer = CaptureWriter.create(
        tmp_path, session_id="dddddddddddd", header_fields={"client": "c:1", "upstream": "u:2"}
    )
    writer.write_data("s2c", 0.0, b"+OK ready \x1b[2J\r\n")
    writer.write_data("c2s", 0.1, b"USER bob\r\nPASS secret\r\nRETR 1\r\n")
    writer.write_data("s2c", 0.2, b"+OK\r\n+OK in\r\n+OK 9 octets\r\n\x1b]0;t\x07\r\n")
    writer.write_data("s2c", 0.3, b"more\r\n.\r\n")
    writer.write_event("tls_failed", 0.35, leg="client", reason="\x1b[31mred")
    writer.write_data("c2s", 0.4, b"QUIT\r\n")
    writer.write_data("s2c", 0.5, b"+OK bye\r\n")
    writer.write_event("eof", 0.6, dir="s2c")
    writer.write_event("eof", 0.7, dir="c2s")
    writer.close(0.8, "server closed", {})
    data = writer.path.read_bytes()
    writer.path.unlink()
    return data


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    cut=st.integers(min_value=0, max_value=1000),
    flips=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=1000), st.integers(min_value=0, max_value=255)
        ),
        max_size=3,
    ),
)
def test_views_of_cut_or_corrupt_captures_show_only_recorded_endings(
    tmp_path: Path, cut: int, flips: list[tuple[int, int]]
) -> None:
    data = bytearray(sample_capture_bytes(tmp_path))
    for offset, value in flips:
        if offset < len(data):
            data[offset] = value
    path = tmp_path / "cut.p3cap"
    path.write_bytes(bytes(data[: min(cut, len(data))]))
    try:
        reader = CaptureReader(path)
    except CaptureError:
        return
    with reader:
        lines = list(render_lines(reader, bodies=True))
    kept = read_capture(path)
    ended = {
        r.fields.get("dir")
        for r in kept.records
        if isinstance(r, EventRecord) and r.name in ("eof", "reset")
    }
    for side, direction in (("client", "c2s"), ("server", "s2c")):
        if any(f"Connection closed by the {side}" in line for line in lines):
            assert direction in ended or any(
                isinstance(r, EventRecord) and r.name == "reset" for r in kept.records
            )
    if not kept.complete:
        assert "Record stops here" in lines[-1]
    assert not [line for line in lines if CONTROL.search(line)]
    # Replay loads the same file or refuses it with one clear line, never anything else.
    try:
        sessions, _warnings = load_sessions(path)
    except (CaptureError, ReplayError) as exc:
        assert "\n" not in str(exc)
    else:
        assert len(sessions) == 1


# ------------------------------------------------------------------ constant memory


def capture_of_size(directory: Path, messages: int) -> Path:
    """A session retrieving ``messages`` bodies of 256 KiB, written in 64 KiB records."""
    writer = CaptureWriter.create(
        directory,
        session_id=f"{messages:012x}",
        header_fields={"client": "c:1", "upstream": "u:2"},
    )
    writer.write_data("s2c", 0.0, b"+OK ready\r\n")
    line = b"x" * 1022 + b"\r\n"
    for number in range(1, messages + 1):
        writer.write_data("c2s", 0.1, f"RETR {number}\r\n".encode())
        writer.write_data("s2c", 0.2, f"+OK {256 * 1024} octets\r\n".encode())
        for _ in range(4):
            writer.write_data("s2c", 0.2, line * 64)
        writer.write_data("s2c", 0.2, b".\r\n")
    writer.close(0.3, "client closed", {})
    return writer.path


def peak_bytes_of_show(path: Path, *, bodies: bool, json: bool = False) -> int:
    tracemalloc.start()
    try:
        with CaptureReader(path) as reader:
            lines = render_json(reader) if json else render_lines(reader, bodies=bodies)
            count = sum(1 for _ in lines)
        assert count >= 4
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(("bodies", "json"), [(False, False), (True, False), (False, True)])
def test_show_memory_does_not_grow_with_the_capture(
    tmp_path: Path, bodies: bool, json: bool
) -> None:
    small = capture_of_size(tmp_path, 4)  # 1 MiB of bodies
    large = capture_of_size(tmp_path, 32)  # 8 MiB of bodies
    small_peak = peak_bytes_of_show(small, bodies=bodies, json=json)
    large_peak = peak_bytes_of_show(large, bodies=bodies, json=json)
    assert large_peak < 1.3 * small_peak + 64 * 1024, (small_peak, large_peak)


def capture_of_stray_lines(directory: Path, lines: int) -> Path:
    """One answered NOOP, then ``lines`` server lines nobody asked for (a babbling server)."""
    writer = CaptureWriter.create(
        directory,
        session_id=f"{lines:012x}",
        header_fields={"client": "c:1", "upstream": "u:2"},
    )
    writer.write_data("s2c", 0.0, b"+OK ready\r\n")
    writer.write_data("c2s", 0.1, b"NOOP\r\n")
    writer.write_data("s2c", 0.2, b"+OK\r\n")
    for _ in range(lines // 1000):
        writer.write_data("s2c", 0.3, b"junk line\r\n" * 1000)
    writer.close(0.4, "server closed", {})
    return writer.path


def test_json_view_memory_does_not_grow_with_stray_lines(tmp_path: Path) -> None:
    """The exchange's stray count is known only after its stray lines: they are not all
    held in memory until then."""
    small = peak_bytes_of_show(capture_of_stray_lines(tmp_path, 10_000), bodies=False, json=True)
    large = peak_bytes_of_show(capture_of_stray_lines(tmp_path, 80_000), bodies=False, json=True)
    assert large < 1.3 * small + 64 * 1024, (small, large)


def test_json_view_of_many_stray_lines_accounts_for_every_line_in_order(tmp_path: Path) -> None:
    lines = 5_000
    with CaptureReader(capture_of_stray_lines(tmp_path, lines)) as reader:
        records = list(json_records(reader))
    kinds = [r["kind"] for r in records]
    exchange = kinds.index("exchange")
    shown = records[exchange]["stray_lines"]
    assert isinstance(shown, int) and 0 < shown < lines
    strays = records[exchange + 1 : exchange + 1 + shown]
    assert all(r["kind"] == "stray" and r["text"] == "junk line" for r in strays)
    suppressed = [r for r in records if r["kind"] == "suppressed"]
    assert suppressed[-1]["final"] is True
    assert shown + suppressed[-1]["lines"] == lines  # type: ignore[operator]
    assert kinds[-1] == "summary" and kinds.count("end") == 2


def test_a_file_name_with_escapes_is_shown_escaped(tmp_path: Path) -> None:
    """Another user who can write the directory names a junk file with a terminal escape."""
    directory = tmp_path / "captures"
    directory.mkdir()
    (directory / "\x1b]0;owned\x07.p3cap").write_bytes(b"junk")
    replayed = pop3tap("replay", "--listen", "127.0.0.1:0", str(directory))
    assert replayed.returncode == 2
    good_capture(directory)
    shown = pop3tap("show", str(directory))
    page = pop3tap("show", "--format", "html", str(directory), "-o", str(tmp_path / "r.html"))
    exported = pop3tap("export", str(directory), "--eml", str(tmp_path / "mail"))
    for result in (replayed, shown, page, exported):
        assert "\x1b" not in result.stderr, result.stderr
        assert "\\x1b]0;owned\\x07.p3cap" in result.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["show", "--format", "html", "-o", "{out}/page.html"],
        ["show", "--format", "html", "-o", "-"],
        ["export", "--eml", "{out}/mail"],
        ["export", "--mbox", "{out}/mail.mbox"],
    ],
)
def test_a_hostile_file_name_reaches_no_terminal_raw(tmp_path: Path, command: list[str]) -> None:
    """A junk file whose name holds an escape, a C1 control, a bidi override and a byte
    that is not UTF-8: every command that names it prints it escaped, and none fails."""
    directory = tmp_path / "captures"
    directory.mkdir()
    name = b"\x1b]0;owned\x07\xc2\x9b\xe2\x80\xae\xff.p3cap"
    Path(os.fsdecode(os.fsencode(directory) + b"/" + name)).write_bytes(b"junk")
    good_capture(directory)
    out = tmp_path / "out"
    out.mkdir()
    result = pop3tap(*[arg.format(out=out) for arg in command], str(directory))
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 0, result.stderr
    # stdout is an HTML page for "-o -": the browser, not the terminal, shows that.
    for text in (result.stderr, "" if "-" in command else result.stdout):
        assert not re.search("[\x1b\x07\x9b\u202e\udc80-\udcff]", text), text
    assert "\\x1b]0;owned\\x07\\x9b\\u202e" in result.stderr, result.stderr


def big_body_then_wait(conn: Connection) -> None:
    """Greet, answer RETR with a 256 KiB body (more than the disk holds), then QUIT."""
    conn.send(b"+OK scripted ready\r\n")
    conn.readline()
    conn.send(b"+OK 262144 octets\r\n" + (b"z" * 1022 + b"\r\n") * 256 + b".\r\n")
    if conn.readline().upper().startswith(b"QUIT"):
        conn.send(b"+OK bye\r\n")


def test_show_after_the_disk_filled_up_blames_no_one(tiny_disk: str, tmp_path: Path) -> None:
    with (
        scripted_server(big_body_then_wait) as upstream,
        relay_process(upstream.host, upstream.port, tmp_path, "--captures", tiny_disk) as relay,
    ):
        reply = raw_session(relay.host, relay.port, b"RETR 1\r\nQUIT\r\n")
        assert reply.endswith(b".\r\n+OK bye\r\n")  # relaying went on
        upstream.wait()
        for _ in range(200):
            if '"session.close"' in relay.log_text():
                break
            import time

            time.sleep(0.05)
        assert '"capture.incomplete"' in relay.log_text()
    (path,) = iter_capture_paths([Path(tiny_disk)])
    result = pop3tap("show", str(path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert not [line for line in lines if "closed by" in line.lower()], lines
    assert "Record stops here" in lines[-1] and "capture.incomplete" in lines[-1]


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    server=st.lists(st.binary(max_size=200), min_size=1, max_size=6),
    client=st.lists(st.binary(max_size=80), max_size=4),
    reason=st.text(max_size=40),
)
def test_no_control_character_reaches_text_output(
    tmp_path: Path, server: list[bytes], client: list[bytes], reason: str
) -> None:
    """Whatever bytes the peers sent, show's lines and console log lines hold no control."""
    directory = tmp_path / f"c{abs(hash((tuple(server), tuple(client), reason)))}"
    directory.mkdir()
    writer = CaptureWriter.create(directory, session_id="eeeeeeeeeeee", header_fields={})
    for index, chunk in enumerate(server):
        writer.write_data("s2c", index * 0.1, b"+OK " + chunk + b"\r\n")
        if index < len(client):
            writer.write_data("c2s", index * 0.1 + 0.05, client[index] + b"\r\n")
    writer.write_event("tls_failed", 1.0, leg="client", reason=reason)
    writer.close(1.0, reason, {})
    with CaptureReader(writer.path) as reader:
        lines = list(render_lines(reader, bodies=True))
    assert not [line for line in lines if CONTROL.search(line) or "\n" in line]
    console = Pop3ConsoleRenderer(colors=False)
    for event in read_capture(writer.path).events():
        fields = (
            {"event": "pop3.exchange", **exchange_fields(event)}
            if isinstance(event, Exchange)
            else {"event": "pop3.stray", "line": getattr(event, "text", ""), "reason": reason}
        )
        rendered = console(None, "info", fields)
        assert not CONTROL.search(rendered) and "\n" not in rendered, rendered


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(junk=st.lists(st.binary(max_size=300), min_size=1, max_size=5))
def test_a_directory_with_any_junk_still_loads_its_good_capture(
    tmp_path: Path, junk: list[bytes]
) -> None:
    directory = tmp_path / f"d{abs(hash(tuple(junk)))}"
    directory.mkdir()
    good = good_capture(directory)
    for number, data in enumerate(junk):
        (directory / f"junk{number}.p3cap").write_bytes(data)
    sessions, warnings = load_sessions(directory)
    assert [s.path for s in sessions] == [good]  # random bytes never carry the magic
    assert len(warnings) == len(junk)
    assert all("skipped" in w and "junk" in w for w in warnings)
    assert all("\n" not in w for w in warnings)


def test_a_huge_body_line_is_cut_in_the_bodies_view(tmp_path: Path) -> None:
    writer = CaptureWriter.create(tmp_path, session_id="ffffffffffff", header_fields={})
    writer.write_data("s2c", 0.0, b"+OK ready\r\n")
    writer.write_data("c2s", 0.1, b"RETR 1\r\n")
    writer.write_data("s2c", 0.2, b"+OK\r\n" + b"a" * 100_000)
    writer.write_data("s2c", 0.2, b"b" * 100_000 + b"\r\nshort\r\n.\r\n")
    writer.close(0.3, "client closed", {})
    with CaptureReader(writer.path) as reader:
        lines = list(render_lines(reader, bodies=True))
    (long_line,) = [line for line in lines if "more bytes" in line]
    assert long_line.endswith(f"... ({200_000 - MAX_SHOWN_LINE} more bytes)")
    assert len(long_line) < MAX_SHOWN_LINE + 100
    assert any(line.endswith("[rx] short") for line in lines)


@pytest.mark.parametrize("command", [["show"], ["lint"], ["replay", "--listen", "127.0.0.1:0"]])
def test_a_fifo_named_as_a_capture_is_refused_at_once(tmp_path: Path, command: list[str]) -> None:
    """Opening a FIFO blocks until a writer comes; a reader must refuse it, not hang."""
    fifo = tmp_path / "planted.p3cap"
    os.mkfifo(fifo)
    result = subprocess.run(
        [sys.executable, "-m", "pop3tap", *command[:1], str(fifo), *command[1:]],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "not a regular file" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
