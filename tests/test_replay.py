"""The replay server: byte-exact answers from shipped captures, matching, timing, bad input."""

from __future__ import annotations

import poplib
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import msgpack
import pytest
import structlog
import trio
import trio.testing
from clients import curl, raw_session
from hypothesis import given
from hypothesis import strategies as st

import pop3tap
from pop3tap.capture import CaptureWriter, read_capture
from pop3tap.replay import ReplayConfig, ReplayError, ReplayServer, load_sessions, replay_server
from pop3tap.replay._connection import recorded_fault
from pop3tap.testing import run_poplib

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "captures"
NAMES = ["user-pass", "apop", "auth-plain", "pipelined", "failed-login"]


def shipped(name: str) -> Path:
    return SHIPPED / f"{name}.p3cap"


def unstuff(raw: bytes) -> bytes:
    """The message inside a recorded multi-line response (RFC 1939 §3 byte-stuffing undone)."""
    lines = raw.split(b"\r\n")[1:-2]
    return b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n" for line in lines)


# --------------------------------------------------------------------------- shipped captures


@pytest.mark.parametrize("name", NAMES)
def test_raw_client_gets_exactly_the_recorded_server_stream(name: str) -> None:
    capture = read_capture(shipped(name))
    with pop3tap.replay_server(shipped(name)) as server:
        got = raw_session(server.host, server.port, capture.stream("c2s"))
    assert got == capture.stream("s2c")
    assert server.all_played and not server.unmatched


@pytest.mark.parametrize("name", NAMES)
def test_poplib_gets_exactly_the_recorded_server_stream(name: str) -> None:
    capture = read_capture(shipped(name))
    (session,), _ = load_sessions(shipped(name))
    with pop3tap.replay_server(shipped(name)) as server:
        received, _results = run_poplib(server.host, server.port, session, password="not-it")
    assert received == capture.stream("s2c")
    assert server.all_played and server.unmatched == []


CURL_LOGIN = {
    "user-pass": [],
    "pipelined": [],
    "apop": ["-u", "bob:anything", "--login-options", "AUTH=+APOP"],
    "auth-plain": ["-u", "carol:anything", "--login-options", "AUTH=PLAIN"],
    "failed-login": ["-u", "erin:anything", "--login-options", "AUTH=PLAIN"],
}


@pytest.mark.realpeer
@pytest.mark.parametrize("name", NAMES)
def test_curl_gets_the_recorded_message(name: str, curl_path: str) -> None:
    capture = read_capture(shipped(name))
    s2c = capture.stream("s2c")
    retr = [e for e in capture.exchanges() if e.verb == "RETR" and e.args == "1"]
    with pop3tap.replay_server(shipped(name)) as server:
        url = f"pop3://{server.host}:{server.port}/1"
        if name == "failed-login":
            result = subprocess.run(
                [curl_path, "-q", "-sS", *CURL_LOGIN[name], url], capture_output=True, check=False
            )
            assert result.returncode == 67, result.stderr  # CURLE_LOGIN_DENIED
            assert b"Login denied" in result.stderr
        else:
            printed = curl(curl_path, *CURL_LOGIN[name], url)
            (ex,) = retr
            assert printed == unstuff(s2c[ex.response_start : ex.response_end])
    assert server.unmatched == []


# --------------------------------------------------------------------------- matching


def command(host: str, port: int, lines: list[bytes]) -> bytes:
    return raw_session(host, port, b"".join(line + b"\r\n" for line in lines))


def test_unrecorded_command_gets_one_err_line_and_log_names_closest() -> None:
    with (
        structlog.testing.capture_logs() as logs,
        pop3tap.replay_server(shipped("user-pass")) as server,
    ):
        got = command(server.host, server.port, [b"LIST 7", b"QUIT"])
    lines = got.split(b"\r\n")
    assert lines[1] == b'-ERR pop3tap replay: no recorded response for "LIST 7"'
    assert lines[2].startswith(b"+OK Logging out")
    (event,) = [e for e in logs if e["event"] == "replay.no_match"]
    assert event["command"] == "LIST 7"
    assert event["closest"][0] == "#5 LIST (arguments differ)"
    (unmatched,) = server.unmatched
    assert unmatched.command == "LIST 7" and not server.all_played
    close = [e for e in logs if e["event"] == "replay.session.close"]
    assert "#7 TOP 1 0" in close[0]["unplayed"]


def test_secrets_are_masked_in_the_err_line() -> None:
    with pop3tap.replay_server(shipped("auth-plain")) as server:
        got = command(server.host, server.port, [b"AUTH PLAIN c2VjcmV0LXZhbHVl", b"QUIT"])
    assert b"c2VjcmV0" not in got
    assert b'no recorded response for "AUTH PLAIN ********"' in got


def test_repeated_commands_play_in_recorded_order_then_run_out() -> None:
    with pop3tap.replay_server(shipped("pipelined")) as server:
        got = command(server.host, server.port, [b"NOOP", b"NOOP", b"QUIT"])
    no_answer = b'-ERR pop3tap replay: no recorded response for "NOOP"'
    assert got.split(b"\r\n")[1:3] == [b"+OK", no_answer]


def test_match_any_reuses_the_last_answer() -> None:
    with pop3tap.replay_server(shipped("pipelined"), match="any") as server:
        got = command(server.host, server.port, [b"NOOP", b"NOOP", b"QUIT"])
    assert got.split(b"\r\n")[1:3] == [b"+OK", b"+OK"]


def test_strict_mode_fails_the_session_on_an_out_of_order_command() -> None:
    with (
        structlog.testing.capture_logs() as logs,
        pop3tap.replay_server(shipped("user-pass"), match="strict") as server,
    ):
        got = command(server.host, server.port, [b"CAPA", b"STAT", b"QUIT"])
    capture = read_capture(shipped("user-pass"))
    capa = capture.exchanges()[0]
    s2c = capture.stream("s2c")
    assert got.startswith(s2c[: capa.response_end])
    rest = got[capa.response_end :]
    assert rest == b'-ERR pop3tap replay: strict match failed: "STAT" is not the next command\r\n'
    assert any(e["event"] == "replay.no_match" and "expected next" in e["closest"][0] for e in logs)


def test_by_user_picks_the_session_of_that_user() -> None:
    sessions, _ = load_sessions(SHIPPED)
    with pop3tap.replay_server(SHIPPED, by_user=True) as server:
        first = command(server.host, server.port, [b"USER dave", b"PASS x", b"STAT", b"QUIT"])
        second = command(server.host, server.port, [b"USER alice", b"PASS x", b"STAT", b"QUIT"])
    by_name = {s.user: s for s in sessions}
    for got, user in ((first, "dave"), (second, "alice")):
        stat = next(e for e in by_name[user].exchanges if e.verb == "STAT")
        assert stat.response in got
        assert b"-ERR pop3tap" not in got
    assert {s.user for s in sessions} >= {"alice", "bob", "dave", "erin"}


def test_sessions_once_refuses_a_second_connection() -> None:
    with pop3tap.replay_server(shipped("apop"), sessions="once") as server:
        command(server.host, server.port, [b"QUIT"])
        got = command(server.host, server.port, [b"QUIT"])
    assert got.startswith(b"-ERR pop3tap replay: every recorded session was played already")


# --------------------------------------------------------------------------- synthetic captures


def make_capture(
    directory: Path,
    records: list[tuple[float, str, bytes]],
    *,
    name: str = "synthetic",
    events: list[tuple[float, str, str]] = (),  # type: ignore[assignment]
    close: float | None = None,
    options: dict[str, object] | None = None,
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    writer = CaptureWriter.create(
        directory,
        session_id=name,
        header_fields={"secrets": "masked", "options": options or {}},
        now=datetime(2026, 11, 27, tzinfo=UTC),
    )
    items: list[tuple[float, int, object]] = [(t, 0, (d, data)) for t, d, data in records]
    items += [(t, 1, (n, d)) for t, n, d in events]
    for t, kind, payload in sorted(items, key=lambda x: (x[0], x[1])):
        if kind == 0:
            direction, data = payload  # type: ignore[misc]
            writer.write_data(direction, t, data)
        else:
            event_name, direction = payload  # type: ignore[misc]
            writer.write_event(event_name, t, dir=direction)
    if close is not None:
        writer.close(close, "client closed")
    else:
        writer.release()
    return writer.path


TIMED = [
    (0.25, "s2c", b"+OK ready\r\n"),
    (1.0, "c2s", b"CAPA\r\n"),
    (1.5, "s2c", b"+OK\r\nTOP\r\n"),
    (2.0, "s2c", b"UIDL\r\n.\r\n"),
    (3.0, "c2s", b"QUIT\r\n"),
    (3.1, "s2c", b"+OK bye\r\n"),
]


async def read_until(stream: trio.abc.Stream, end: bytes) -> bytes:
    data = b""
    while not data.endswith(end):
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        data += chunk
    return data


@pytest.mark.parametrize(("timing", "scale"), [("recorded", 1.0), ("2", 0.5)])
async def test_recorded_timing_is_reproduced_on_a_mock_clock(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, timing: str, scale: float
) -> None:
    path = make_capture(tmp_path, TIMED, events=[(3.2, "eof", "s2c")], close=3.3)
    server = ReplayServer(ReplayConfig(captures=(path,), timing=timing))
    client, server_side = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        nursery.start_soon(server.handle, server_side)
        assert await read_until(client, b"ready\r\n") == b"+OK ready\r\n"
        assert trio.current_time() - start == pytest.approx(0.25 * scale)
        sent = trio.current_time()
        await client.send_all(b"CAPA\r\n")
        first = await client.receive_some(65536)
        assert first == b"+OK\r\nTOP\r\n"
        assert trio.current_time() - sent == pytest.approx(0.5 * scale)  # recorded latency
        rest = await read_until(client, b".\r\n")
        assert rest == b"UIDL\r\n.\r\n"
        assert trio.current_time() - sent == pytest.approx(1.0 * scale)  # recorded pacing
        await client.send_all(b"QUIT\r\n")
        assert await read_until(client, b"\r\n") == b"+OK bye\r\n"
        assert await client.receive_some(10) == b""


async def test_fast_timing_has_no_delays(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = make_capture(tmp_path, TIMED, close=3.3)
    server = ReplayServer(ReplayConfig(captures=(path,)))
    client, server_side = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        nursery.start_soon(server.handle, server_side)
        await client.send_all(b"CAPA\r\nQUIT\r\n")
        got = await read_until(client, b"bye\r\n")
        assert got == b"".join(d for _t, di, d in TIMED if di == "s2c")
        assert trio.current_time() == start


async def test_idle_client_is_disconnected(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = make_capture(tmp_path, TIMED, close=3.3)
    server = ReplayServer(ReplayConfig(captures=(path,), idle_timeout=30))
    client, server_side = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        nursery.start_soon(server.handle, server_side)
        got = await read_until(client, b"closing\r\n")
        assert got == b"+OK ready\r\n-ERR pop3tap replay: idle timeout, closing\r\n"
        assert trio.current_time() - start == pytest.approx(30)
        assert await client.receive_some(10) == b""


async def test_idle_limit_counts_from_the_client_s_last_line(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # One idle scope serves the whole session; every wait for a line re-arms it.
    path = make_capture(tmp_path, TIMED, close=3.3)
    server = ReplayServer(ReplayConfig(captures=(path,), idle_timeout=30))
    client, server_side = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        nursery.start_soon(server.handle, server_side)
        assert await read_until(client, b"ready\r\n") == b"+OK ready\r\n"
        await trio.sleep(20)
        await client.send_all(b"CAPA\r\n")
        assert await read_until(client, b".\r\n") == b"+OK\r\nTOP\r\nUIDL\r\n.\r\n"
        got = await read_until(client, b"closing\r\n")
        assert got == b"-ERR pop3tap replay: idle timeout, closing\r\n"
        assert trio.current_time() - start == pytest.approx(50)
        assert await client.receive_some(10) == b""


async def test_recorded_pause_is_not_cut_short_by_the_idle_limit(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # The recorded 0.5 s pause is held to the 0.4 s idle limit and then answered: a pause
    # is pop3tap waiting, not the client, so it never ends the session as idle.
    path = make_capture(tmp_path, TIMED, close=3.3)
    config = ReplayConfig(captures=(path,), idle_timeout=0.4, timing="recorded")
    server = ReplayServer(config)
    client, server_side = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.handle, server_side)
        assert await read_until(client, b"ready\r\n") == b"+OK ready\r\n"
        await trio.sleep(0.05)
        sent = trio.current_time()
        await client.send_all(b"CAPA\r\n")
        assert await read_until(client, b".\r\n") == b"+OK\r\nTOP\r\nUIDL\r\n.\r\n"
        assert trio.current_time() - sent == pytest.approx(0.4)
        await client.send_all(b"QUIT\r\n")
        assert await read_until(client, b"\r\n") == b"+OK bye\r\n"
        assert await client.receive_some(10) == b""


def test_server_that_closed_mid_body_is_replayed_up_to_the_same_point(tmp_path: Path) -> None:
    records = [
        (0.1, "s2c", b"+OK hi\r\n"),
        (0.2, "c2s", b"RETR 1\r\n"),
        (0.3, "s2c", b"+OK 100 octets\r\nSubject: x\r\n\r\npartial"),
    ]
    path = make_capture(tmp_path, records, events=[(0.4, "eof", "s2c")], close=0.5)
    with pop3tap.replay_server(path) as server:
        got = command(server.host, server.port, [b"RETR 1", b"QUIT"])
    assert got == b"".join(d for _t, di, d in records if di == "s2c")


def test_unsolicited_err_before_close_is_replayed(tmp_path: Path) -> None:
    records = [
        (0.1, "s2c", b"+OK hi\r\n"),
        (0.2, "c2s", b"NOOP\r\n"),
        (0.3, "s2c", b"+OK\r\n"),
        (9.0, "s2c", b"-ERR Disconnected for inactivity.\r\n"),
    ]
    path = make_capture(tmp_path, records, events=[(9.1, "eof", "s2c")], close=9.2)
    with pop3tap.replay_server(path) as server:
        got = command(server.host, server.port, [b"NOOP", b"STAT"])
    assert got == b"+OK hi\r\n+OK\r\n-ERR Disconnected for inactivity.\r\n"


def test_bare_lf_and_dot_stuffing_are_replayed_verbatim(tmp_path: Path) -> None:
    body = b"+OK\nline\n..dot\r\n.\n"
    records = [(0.1, "s2c", b"+OK hi\r\n"), (0.2, "c2s", b"RETR 1\r\n"), (0.3, "s2c", body)]
    records += [(0.4, "c2s", b"QUIT\r\n"), (0.45, "s2c", b"+OK bye\r\n")]
    path = make_capture(tmp_path, records, close=0.5)
    with pop3tap.replay_server(path) as server:
        got = command(server.host, server.port, [b"RETR 1", b"QUIT"])
    assert got == b"+OK hi\r\n" + body + b"+OK bye\r\n"


# --------------------------------------------------------------------------- hostile clients


def test_overlong_line_gets_err_and_close_other_clients_unaffected() -> None:
    capture = read_capture(shipped("user-pass"))
    with pop3tap.replay_server(shipped("user-pass")) as server:
        with socket.create_connection((server.host, server.port), timeout=30) as hostile:
            hostile.sendall(b"X" * 100_000)
            got = b""
            while chunk := hostile.recv(65536):
                got += chunk
        normal = raw_session(server.host, server.port, capture.stream("c2s"))
    assert got.endswith(b"-ERR pop3tap replay: line too long (limit 8192 bytes)\r\n")
    assert normal == capture.stream("s2c")


def test_binary_junk_and_floods_are_answered_then_cut_off() -> None:
    with pop3tap.replay_server(shipped("user-pass")) as server:
        got = raw_session(server.host, server.port, b"\x00\xff\xfe junk\r\n" * 5000)
    lines = got.split(b"\r\n")
    # The NUL separates words like a blank (one definition of words for every view).
    assert lines[1].startswith(b'-ERR pop3tap replay: no recorded response for "\\xff\\xfe junk')
    flood = b"-ERR pop3tap replay: too many commands without a recorded response, closing"
    assert lines[-2] == flood
    assert len(lines) == 1 + 20 + 1 + 1


# --------------------------------------------------------------------------- loading and CLI


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pop3tap", "replay", "--listen", "127.0.0.1:0", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_opaque_stls_capture_is_refused(tmp_path: Path) -> None:
    # STLS relayed without interception: the bytes after the +OK are TLS records.
    writer = CaptureWriter.create(
        tmp_path,
        session_id="opaque",
        header_fields={"secrets": "masked", "options": {"intercept_stls": False}},
        now=datetime(2026, 11, 27, tzinfo=UTC),
    )
    writer.write_data("s2c", 0.1, b"+OK hi\r\n")
    writer.write_data("c2s", 0.2, b"STLS\r\n")
    writer.write_data("s2c", 0.3, b"+OK Begin TLS\r\n")
    writer.write_event("stls", 0.3, intercepted=False)
    writer.write_data("c2s", 0.4, b"\x16\x03\x01\x00\x05hello")
    writer.close(0.5, "client closed")
    with pytest.raises(ReplayError, match="STLS without interception"):
        load_sessions(writer.path)
    result = run_cli(str(writer.path))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "cannot be replayed" in result.stderr


@pytest.fixture
def bad_captures(tmp_path: Path) -> Iterator[dict[str, Path]]:
    corrupt = tmp_path / "corrupt.p3cap"
    corrupt.write_bytes(b"\xc1\xc1 this is not msgpack")
    newer = tmp_path / "newer.p3cap"
    newer.write_bytes(msgpack.packb({"type": "header", "magic": "pop3tap-capture", "format": 99}))
    yield {"missing": tmp_path / "missing.p3cap", "corrupt": corrupt, "newer": newer}


@pytest.mark.parametrize(
    ("kind", "message"),
    [("missing", "no such file"), ("corrupt", "not a pop3tap capture"), ("newer", "format 99")],
)
def test_cli_bad_capture_is_one_line_exit_2(
    bad_captures: dict[str, Path], kind: str, message: str
) -> None:
    result = run_cli(str(bad_captures[kind]))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_truncated_capture_is_served_up_to_last_complete_exchange(tmp_path: Path) -> None:
    source = read_capture(shipped("user-pass"))
    torn = tmp_path / "torn.p3cap"
    data = shipped("user-pass").read_bytes()
    cut = data.index(b"Marked to be deleted")  # inside the DELE response record
    torn.write_bytes(data[:cut])
    sessions, warnings = load_sessions(torn)
    assert "truncated" in warnings[0]
    verbs = [e.verb for e in sessions[0].exchanges]
    assert verbs == [e.verb for e in source.exchanges()][: len(verbs)]
    assert "DELE" not in verbs and "RETR" in verbs


def test_cli_serves_and_stops_on_sigint(tmp_path: Path) -> None:
    import signal

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pop3tap",
            "replay",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            str(shipped("apop")),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert "replay.listening" in line, line
    import json

    host, port = json.loads(line)["listen"].rsplit(":", 1)
    client = poplib.POP3(host, int(port), timeout=30)
    assert client.getwelcome().startswith(b"+OK Dovecot")
    client.quit()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0


def test_sasl_data_sent_early_is_never_echoed_or_logged(tmp_path: Path) -> None:
    """A client pipelines SASL data after an AUTH that the recording answered with -ERR at
    once; the replay then reads that line as a command and must not show it."""
    secret = b"AGJvYgBodW50ZXIy"
    writer = CaptureWriter.create(tmp_path, session_id="abcdefabcdef", header_fields={})
    writer.write_data("s2c", 0.0, b"+OK ready\r\n")
    writer.write_data("c2s", 0.1, b"AUTH PLAIN ********\r\n")
    writer.write_data("s2c", 0.2, b"-ERR [AUTH] Authentication failed.\r\n")
    writer.write_data("c2s", 0.3, b"QUIT\r\n")
    writer.write_data("s2c", 0.4, b"+OK bye\r\n")
    writer.close(0.5, "server closed", {})
    with (
        structlog.testing.capture_logs() as logs,
        replay_server(writer.path) as server,
        socket.create_connection((server.host, server.port), timeout=10) as sock,
    ):
        reader = sock.makefile("rb")
        reader.readline()
        sock.sendall(b"AUTH PLAIN AGFsaWNlAHB3\r\n" + secret + b"\r\nQUIT\r\n")
        replies = [reader.readline() for _ in range(3)]
    assert replies[0] == b"-ERR [AUTH] Authentication failed.\r\n"
    assert replies[1] == b'-ERR pop3tap replay: no recorded response for "********"\r\n'
    assert replies[2] == b"+OK bye\r\n"
    assert secret.decode() not in repr(logs) and secret.decode().upper() not in repr(logs)


# --------------------------------------------------------------------------- review findings


def test_strict_mode_answers_a_command_the_recording_left_unanswered_with_err(
    tmp_path: Path,
) -> None:
    records = [
        (0.1, "s2c", b"+OK hi\r\n"),
        (0.2, "c2s", b"NOOP\r\n"),
        (0.3, "s2c", b"+OK\r\n"),
        (0.4, "c2s", b"STAT\r\n"),  # the recorded client left before the answer
    ]
    path = make_capture(tmp_path, records, events=[(0.5, "eof", "c2s")], close=0.6)
    with pop3tap.replay_server(path, match="strict") as server:
        got = command(server.host, server.port, [b"NOOP", b"STAT"])
    assert got.startswith(b"+OK hi\r\n+OK\r\n-ERR pop3tap replay: ")
    assert got.count(b"\r\n") == 3


def test_sessions_once_with_by_user_still_serves_each_session_once() -> None:
    captures = [shipped("user-pass"), shipped("apop")]
    with pop3tap.replay_server(captures, sessions="once", by_user=True) as server:
        replies = [command(server.host, server.port, [b"CAPA", b"QUIT"]) for _ in range(3)]
    assert replies[0].startswith(b"+OK") and replies[1].startswith(b"+OK")
    assert replies[2].startswith(b"-ERR pop3tap replay: every recorded session was played already")


def test_unmatched_quit_ends_the_session(tmp_path: Path) -> None:
    path = make_capture(tmp_path, [(0.1, "s2c", b"+OK hi\r\n")], close=0.2)
    with pop3tap.replay_server(path, idle_timeout=60) as server:
        got = command(server.host, server.port, [b"NOOP", b"QUIT"])  # returns at EOF
    assert got.count(b"-ERR pop3tap replay: no recorded response") == 2


@pytest.mark.parametrize("bad_time", [float("nan"), float("inf"), 1e12, -1.0])
def test_captures_with_impossible_times_are_corrupt(tmp_path: Path, bad_time: float) -> None:
    writer = CaptureWriter.create(tmp_path, session_id="badtime", header_fields={})
    writer.write_data("s2c", 0.1, b"+OK hi\r\n")
    writer.write_data("c2s", bad_time, b"NOOP\r\n")
    writer.close(0.5, "closed", {})
    capture = read_capture(writer.path)
    assert capture.truncated and capture.problem and "t" in capture.problem
    assert [type(r).__name__ for r in capture.records] == ["DataRecord"]


@pytest.mark.parametrize("field", ["idle_timeout", "tls_timeout"])
@pytest.mark.parametrize("value", ["30", "x", True, [5]])
def test_a_timeout_that_is_not_a_number_is_named_in_the_error(field: str, value: object) -> None:
    # pop3_config in a conftest.py is a dict a user writes by hand: {"idle_timeout": "30"}.
    with pytest.raises(ValueError, match=f"^{field} must be a positive number of seconds"):
        ReplayConfig(**{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_line", "8192", "max_line must be a whole number of bytes, at least 64"),
        ("max_line", True, "max_line must be a whole number of bytes, at least 64"),
        ("max_line", 100.5, "max_line must be a whole number of bytes, at least 64"),
        ("max_line", float("nan"), "max_line must be a whole number of bytes, at least 64"),
        ("max_line", float("inf"), "max_line must be a whole number of bytes, at least 64"),
        ("max_line", 63, "max_line must be a whole number of bytes, at least 64"),
        ("max_errors", "x", "max_errors must be a whole number, at least 1"),
        ("max_errors", 0, "max_errors must be a whole number, at least 1"),
        ("max_errors", -1, "max_errors must be a whole number, at least 1"),
        ("max_errors", 2.5, "max_errors must be a whole number, at least 1"),
        ("max_errors", True, "max_errors must be a whole number, at least 1"),
        ("grace", "x", "grace must be a number of seconds, not negative"),
        ("grace", True, "grace must be a number of seconds, not negative"),
        ("grace", float("nan"), "grace must be a number of seconds, not negative"),
        ("grace", -1, "grace must be a number of seconds, not negative"),
    ],
)
def test_a_bound_that_is_not_a_whole_number_is_named_in_the_error(
    field: str, value: object, message: str
) -> None:
    # A NaN or infinite max_line let one client's line grow without bound; a string
    # max_errors crashed the connection after its first -ERR; grace="x" was a TypeError.
    with pytest.raises(ValueError, match=f"^{message}$"):
        ReplayConfig(**{field: value})  # type: ignore[arg-type]


@given(
    field=st.sampled_from(["max_line", "max_errors", "grace"]),
    value=st.one_of(
        st.none(), st.booleans(), st.text(max_size=4), st.floats(), st.integers(-(2**70), 2**70)
    ),
)
def test_replay_bounds_are_checked_when_the_config_is_made(field: str, value: object) -> None:
    # Every value either makes a config whose bounds are ordinary numbers, or a ValueError
    # naming the field: never a TypeError, never a bound the reader cannot enforce.
    try:
        config = ReplayConfig(**{field: value})  # type: ignore[arg-type]
    except ValueError as exc:
        assert str(exc).startswith(field)
        return
    assert not isinstance(value, bool)
    if field == "grace":
        assert isinstance(value, int | float) and value >= 0
    else:
        assert type(getattr(config, field)) is int
        assert config.max_line >= 64 and config.max_errors >= 1


def test_by_user_tells_apart_names_that_differ_only_in_bytes_that_are_not_utf8(
    tmp_path: Path,
) -> None:
    # Latin-1 user names: 'jörg' and 'jürg' differ in one byte, neither is UTF-8. Decoded
    # with 'replace' both were 'j\ufffdrg', and jürg was served jörg's recorded mailbox.
    from handmade import write_capture

    for name, count in ((b"j\xf6rg", b"1"), (b"j\xfcrg", b"2")):
        steps = [
            ("s", b"+OK ready\r\n"),
            ("c", b"USER " + name + b"\r\n"),
            ("s", b"+OK\r\n"),
            ("c", b"PASS ********\r\n"),
            ("s", b"+OK in\r\n"),
            ("c", b"STAT\r\n"),
            ("s", b"+OK " + count + b" 100\r\n"),
            ("c", b"QUIT\r\n"),
            ("s", b"+OK bye\r\n"),
        ]
        write_capture(tmp_path, steps)
    with pop3tap.replay_server(tmp_path, by_user=True) as server:
        for name, count in ((b"j\xfcrg", b"2"), (b"j\xf6rg", b"1")):
            answers = raw_session(
                server.host, server.port, b"USER " + name + b"\r\nPASS pw\r\nSTAT\r\nQUIT\r\n"
            )
            assert b"+OK " + count + b" 100\r\n" in answers, (name, answers)


@pytest.mark.parametrize(("idle", "limit"), [(30.0, 30.0), (None, 600.0)])
async def test_a_capture_s_recorded_delay_fault_is_held_no_longer_than_a_recorded_pause(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, idle: float | None, limit: float
) -> None:
    # A capture is hostile input: its fault record may ask for a delay of days, during
    # which a client that left is not noticed and its connection stays open.
    from handmade import write_capture

    steps = [
        ("s", b"+OK ready\r\n"),
        ("c", b"USER a\r\n"),
        ("event", "fault", {"seq": 1, "spec": "USER:delay=100000m"}),
        ("s", b"+OK\r\n"),
    ]
    path = write_capture(tmp_path, steps)
    server = ReplayServer(ReplayConfig(captures=(path,), idle_timeout=idle))
    client, server_side = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.handle, server_side)
        assert await read_until(client, b"ready\r\n") == b"+OK ready\r\n"
        sent = trio.current_time()
        await client.send_all(b"USER a\r\n")
        assert await read_until(client, b"\r\n") == b"+OK\r\n"
        assert trio.current_time() - sent == pytest.approx(limit)
        nursery.cancel_scope.cancel()


_FAULT_WORDS = st.sampled_from(["reset", "stall", "close", "cut=10", "slow=1B/s", "err=x"])


@given(
    idle=st.one_of(st.none(), st.floats(0.001, 1e6)),
    delay=st.tuples(st.integers(0, 10**9), st.sampled_from(["ms", "s", "m", ""])),
    other=_FAULT_WORDS,
)
def test_property_no_recorded_fault_delays_longer_than_a_recorded_pause(
    idle: float | None, delay: tuple[int, str], other: str
) -> None:
    from handmade import write_capture

    from pop3tap.faults import FaultAction
    from pop3tap.replay._connection import ReplayConnection

    with tempfile.TemporaryDirectory() as directory:
        path = write_capture(Path(directory), [("s", b"+OK ready\r\n")])
        server = ReplayServer(ReplayConfig(captures=(path,), idle_timeout=idle))
    connection = ReplayConnection(server, trio.testing.memory_stream_pair()[0], 1)
    longest = 600.0 if idle is None else idle
    fault = connection.fault_of_record(f"RETR:delay={delay[0]}{delay[1]}")
    assert fault is not None and fault.action is FaultAction.DELAY
    assert 0 <= fault.amount <= longest
    if fault.amount < longest:  # only a delay past the limit is shortened
        assert fault == recorded_fault(f"RETR:delay={delay[0]}{delay[1]}")
    assert connection.fault_of_record(f"RETR:{other}") == recorded_fault(f"RETR:{other}")
    assert connection.fault_of_record(None) is None
