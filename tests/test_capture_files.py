"""Capture files on a hostile or broken disk: full disks, foreign files, truncated records.

Readers given a directory skip what is not a capture (one warning line each) instead of
refusing the lot, and views of a cut capture show only what was recorded.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from clients import pop3tap_process, raw_session, relay_process
from faults import greet_and_wait, scripted_server

from pop3tap.capture import CaptureError, CaptureWriter, iter_capture_paths, read_capture

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
