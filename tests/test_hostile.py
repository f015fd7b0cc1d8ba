"""Hostile input: random clients against the replay server, and broken capture files given
to every command that reads captures. Nothing may crash, hang or grow without bound."""

from __future__ import annotations

import contextlib
import io
import random
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from clients import pop3tap_process, raw_session
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pop3tap.capture import CaptureError, read_capture
from pop3tap.cli import main as cli_main
from pop3tap.replay import ReplayError, load_sessions, replay_server

SHIPPED = Path(__file__).resolve().parent.parent / "captures"
USER_PASS = SHIPPED / "user-pass.p3cap"


def read_until_closed(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    data = bytearray()
    with contextlib.suppress(TimeoutError, ConnectionResetError):
        while len(data) < limit:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return bytes(data)


@pytest.fixture(scope="module")
def shared_replay() -> Iterator[object]:
    """One replay server for every hostile example (it must survive all of them)."""
    with (
        structlog.testing.capture_logs() as logs,
        replay_server(USER_PASS, idle_timeout=5.0, sessions="cycle") as server,
    ):
        yield server, logs


client_junk = st.one_of(
    st.binary(max_size=4096),
    st.lists(
        st.one_of(
            st.sampled_from(
                [
                    b"USER alice",
                    b"PASS x",
                    b"STAT",
                    b"RETR 1",
                    b"AUTH PLAIN",
                    b"*",
                    b"",
                    b"LIST 99999999999999999999",
                    b"\x00\xff",
                    b"QUIT",
                ]
            ),
            st.binary(max_size=64),
        ),
        max_size=40,
    ).map(lambda lines: b"\r\n".join(lines) + b"\r\n"),
    st.integers(min_value=1, max_value=200_000).map(lambda n: b"A" * n),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(junk=client_junk)
def test_random_clients_get_err_or_close_and_never_break_the_server(
    shared_replay: tuple[object, list[dict[str, object]]], junk: bytes
) -> None:
    server, logs = shared_replay
    with socket.create_connection((server.host, server.port), timeout=10) as sock:  # type: ignore[attr-defined]
        greeting = sock.recv(200)
        assert greeting.startswith(b"+OK")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(junk)
        sock.shutdown(socket.SHUT_WR)
        reply = read_until_closed(sock)
    # Every line the server sent is a status line or part of a recorded body.
    recorded = read_capture(USER_PASS).stream("s2c")
    for line in reply.split(b"\r\n"):
        assert line.startswith((b"+OK", b"-ERR", b"+")) or line in recorded
    assert not [e for e in logs if e["event"] == "replay.connection_crashed"]
    # A well-behaved client on the same server still gets the exact recorded bytes.
    client_stream = read_capture(USER_PASS).stream("c2s")
    assert raw_session(server.host, server.port, client_stream) == recorded  # type: ignore[attr-defined]


def test_apop_with_only_whitespace_after_it_gets_an_answer(
    shared_replay: tuple[object, list[dict[str, object]]],
) -> None:
    """A form feed after APOP once crashed the connection (no argument to split)."""
    server, logs = shared_replay
    with socket.create_connection((server.host, server.port), timeout=10) as sock:  # type: ignore[attr-defined]
        sock.recv(200)
        sock.sendall(b"APOP \x0c\r\n")
        sock.shutdown(socket.SHUT_WR)
        reply = read_until_closed(sock)
    assert reply.startswith(b"-ERR")
    assert not [e for e in logs if e["event"] == "replay.connection_crashed"]


def test_flood_of_unknown_commands_is_cut_off(shared_replay: tuple[object, list[object]]) -> None:
    server, _ = shared_replay
    with socket.create_connection((server.host, server.port), timeout=10) as sock:  # type: ignore[attr-defined]
        sock.recv(200)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(b"FROB 1\r\n" * 100_000)
        reply = read_until_closed(sock)
    lines = [line for line in reply.split(b"\r\n") if line]
    assert lines and all(line.startswith(b"-ERR") for line in lines)
    assert len(lines) < 1000  # the server stopped answering and closed


# ---------------------------------------------------------------------------- broken captures


def run_cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli_main(list(args))
    return code, out.getvalue(), err.getvalue()


def mutate(data: bytes, how: str, rng: random.Random) -> bytes:
    if how == "truncate":
        return data[: rng.randrange(len(data))]
    if how == "bitflip":
        flipped = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            pos = rng.randrange(len(flipped))
            flipped[pos] ^= 1 << rng.randrange(8)
        return bytes(flipped)
    if how == "random":
        return rng.randbytes(rng.randrange(1, 4096))
    if how == "oversized":
        # A bin32 record header that claims 4 GiB, after a valid start.
        return data[:200] + b"\xc6\xff\xff\xff\xff" + b"x" * 100
    raise AssertionError(how)


@settings(max_examples=120, deadline=None)
@given(
    how=st.sampled_from(["truncate", "bitflip", "random", "oversized"]),
    seed=st.integers(0, 10_000),
    source=st.sampled_from(sorted(p.name for p in SHIPPED.glob("*.p3cap"))),
)
def test_broken_captures_give_one_line_or_a_partial_read(
    tmp_path_factory: pytest.TempPathFactory, how: str, seed: int, source: str
) -> None:
    rng = random.Random(seed)
    path = tmp_path_factory.mktemp("broken") / "broken.p3cap"
    path.write_bytes(mutate((SHIPPED / source).read_bytes(), how, rng))

    # The reader: a Capture (possibly truncated) or one CaptureError, nothing else.
    try:
        capture = read_capture(path)
    except CaptureError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)
    else:
        capture.exchanges()
        capture.summary()

    # `show`: output, or a one-line error and exit code 2; never a traceback.
    for args in (
        ["show", str(path)],
        ["show", "--bodies", str(path)],
        ["show", "--format", "json", str(path)],
    ):
        code, _out, err = run_cli(*args)
        assert code in (0, 2)
        assert "Traceback" not in err
        if code:
            assert len(err.strip().splitlines()) == 1

    # `replay` loads captures through load_sessions before serving.
    try:
        load_sessions([path])
    except (CaptureError, ReplayError) as exc:
        assert "\n" not in str(exc)


def test_replay_memory_stays_bounded_under_junk_floods(tmp_path: Path) -> None:
    """Eight clients each push 16 MiB without a line end; the server's RSS stays small."""
    chunk = b"J" * (1 << 20)
    recorded = read_capture(USER_PASS)
    with pop3tap_process("replay", tmp_path, str(USER_PASS)) as replay:
        socks = [socket.create_connection((replay.host, replay.port), timeout=30) for _ in range(8)]
        for sock in socks:
            assert sock.recv(200).startswith(b"+OK")
        for _ in range(16):
            for sock in socks:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    sock.sendall(chunk)
        replies = [read_until_closed(sock) for sock in socks]
        peak_kib = replay.rss_peak_kib()
        # The replay server is still there for a well-behaved client.
        assert raw_session(replay.host, replay.port, recorded.stream("c2s")) == recorded.stream(
            "s2c"
        )
    for reply in replies:
        assert reply.startswith(b"-ERR") and reply.count(b"\r\n") == 1
    assert peak_kib < 100 * 1024, f"replay server peaked at {peak_kib / 1024:.0f} MiB"


def test_apop_without_arguments_gets_err_not_a_crash(
    shared_replay: tuple[object, list[dict[str, object]]],
) -> None:
    """An APOP line with no name (or only spaces) once crashed the connection."""
    server, logs = shared_replay
    for line in (b"APOP\r\n", b"APOP   \r\n", b"APOP \t\r\n"):
        with socket.create_connection((server.host, server.port), timeout=10) as sock:  # type: ignore[attr-defined]
            assert sock.recv(200).startswith(b"+OK")
            sock.sendall(line)
            sock.shutdown(socket.SHUT_WR)
            assert read_until_closed(sock).startswith(b"-ERR")
    assert not [e for e in logs if e["event"] == "replay.connection_crashed"]


@given(
    verb=st.sampled_from(["APOP", "AUTH", "PASS", "USER", "RETR", "X"]),
    args=st.binary(max_size=40),
    masked=st.booleans(),
)
def test_argument_keys_never_raise(verb: str, args: bytes, masked: bool) -> None:
    """Whatever argument bytes a client sends, matching computes a key (bytes) for them."""
    from pop3tap.replay import _args_key

    assert isinstance(_args_key(verb, args, masked), bytes)
