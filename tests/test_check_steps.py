"""``pop3tap check`` against misbehaving servers: one line naming the step, never a hang."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from handmade import Step, clean_session, write_capture
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pop3tap.check._run import load_session
from pop3tap.check._secrets import Secrets
from pop3tap.cli import main
from pop3tap.protocol import WORD_SEPARATORS, mask_line


@pytest.fixture(autouse=True)
def _captures_in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """check writes its new capture in the working directory: not the repository's."""
    monkeypatch.chdir(tmp_path)


@contextmanager
def fake_server(behave: Callable[[socket.socket], None]) -> Iterator[int]:
    """A one-connection server on 127.0.0.1 that runs ``behave`` on the accepted socket."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    received: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            behave(conn)
            conn.settimeout(5)
            try:
                while data := conn.recv(65536):
                    received.append(data)
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        thread.join(10)


def greet_then_silence(conn: socket.socket) -> None:
    conn.sendall(b"+OK ready\r\n")


def greet_then_close(conn: socket.socket) -> None:
    conn.sendall(b"+OK ready\r\n")
    conn.recv(100)
    conn.shutdown(socket.SHUT_RDWR)


def test_a_silent_answer_names_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_capture(tmp_path, clean_session()[:15])  # no DELE
    with fake_server(greet_then_silence) as port:
        code = main(
            [
                "check",
                str(path),
                "--against",
                f"127.0.0.1:{port}",
                "--timeout",
                "0.3",
                "--password",
                "alice=pw",
                "--capture-dir",
                str(tmp_path),
            ]
        )
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"pop3tap: check: response to CAPA (#1): no answer from 127.0.0.1:{port} within 0.3s"
    ]


def test_a_server_that_hangs_up_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_capture(tmp_path, clean_session()[:15])
    with fake_server(greet_then_close) as port:
        code = main(
            [
                "check",
                str(path),
                "--against",
                f"127.0.0.1:{port}",
                "--timeout",
                "5",
                "--password",
                "alice=pw",
                "--capture-dir",
                str(tmp_path),
            ]
        )
    assert code == 1
    out = capsys.readouterr()
    # CAPA got no answer before the close: the diff says so, nothing more was sent.
    assert "pop3tap: the server closed the connection before #2" in out.err
    assert "#1 CAPA: status: '+OK' vs None" in out.out


def test_nothing_listening_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_capture(tmp_path, clean_session()[:15])
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    code = main(
        [
            "check",
            str(path),
            "--against",
            f"127.0.0.1:{port}",
            "--password",
            "alice=pw",
            "--capture-dir",
            str(tmp_path),
        ]
    )
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"pop3tap: check: connect to 127.0.0.1:{port} failed: Connection refused"]


def test_dele_is_refused_before_connecting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_capture(tmp_path, clean_session())
    code = main(["check", str(path), "--against", "127.0.0.1:9", "--password", "alice=pw"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "the capture deletes messages (DELE 1, #8)" in err[0]
    assert "without --allow-dele" in err[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--against", "nohost"], "malformed address 'nohost'"),
        (["--against", "127.0.0.1:0"], "the port cannot be 0"),
        (["--against", "127.0.0.1:1", "--timeout", "0"], "--timeout must be more than 0"),
        (["--against", "127.0.0.1:1", "--password", "nouser"], "--password takes USER=PASSWORD"),
    ],
)
def test_bad_arguments_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    path = write_capture(tmp_path, clean_session()[:15])
    assert main(["check", str(path), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_a_netrc_parse_error_does_not_echo_the_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Python's netrc quotes the token it could not place; here a piece of the password."""
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login alice password hunter2 s3cr3t-half\n")
    netrc.chmod(0o600)
    path = write_capture(tmp_path, clean_session()[:15])
    code = main(["check", str(path), "--against", "127.0.0.1:9", "--netrc", str(netrc)])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"netrc {netrc}" in err[0] and ", line " in err[0]
    assert "s3cr3t" not in err[0] and "hunter2" not in err[0]


def test_a_missing_netrc_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_capture(tmp_path, clean_session()[:15])
    missing = tmp_path / "no-such-netrc"
    code = main(["check", str(path), "--against", "127.0.0.1:9", "--netrc", str(missing)])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"netrc {missing}: no such file" in err[0]


def test_no_quit_after_a_dele_the_live_server_accepted_but_the_recording_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The recorded DELE 1 got -ERR, so the recorded QUIT deleted nothing; live it is +OK.

    Sending the QUIT would delete a message the recorded session never deleted (RFC 1939 §6).
    """
    steps = clean_session()
    steps[16] = ("s", b"-ERR no such message\r\n")
    path = write_capture(tmp_path, steps)
    answers = {steps[i][1].rstrip(b"\r\n"): steps[i + 1][1] for i in range(1, len(steps), 2)}
    answers[b"PASS pw"] = answers.pop(b"PASS ********")
    answers[b"DELE 1"] = b"+OK marked\r\n"
    commands: list[bytes] = []

    def follow_script(conn: socket.socket) -> None:
        conn.sendall(steps[0][1])
        reader = conn.makefile("rb")
        conn.settimeout(10)
        while line := reader.readline():
            commands.append(line.rstrip(b"\r\n"))
            conn.sendall(answers.get(commands[-1], b"-ERR unexpected\r\n"))
            if commands[-1] == b"QUIT":
                return

    with fake_server(follow_script) as port:
        main(
            [
                *("check", str(path), "--against", f"127.0.0.1:{port}"),
                *("--password", "alice=pw", "--allow-dele", "--timeout", "5"),
            ]
        )
    assert b"DELE 1" in commands
    assert b"QUIT" not in commands
    assert "DELE 1" in capsys.readouterr().err


def test_a_dele_the_pairing_masked_is_still_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """After an AUTH the server never paired, the capture shows the next lines as masked
    commands, but a capture with kept secrets still holds ``DELE 1`` and check sends lines."""
    steps: list[Step] = [
        ("s", b"+OK ready\r\n"),
        ("c", b"AUTH X\r\n"),
        ("s", b"garbage\r\n"),
        ("c", b"DELE 1\r\n"),
        ("s", b"+OK\r\n"),
        ("c", b"QUIT\r\n"),
    ]
    path = write_capture(tmp_path, steps)
    code = main(["check", str(path), "--against", "127.0.0.1:9", "--password", "alice=pw"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "without --allow-dele" in err[0]


def test_no_sasl_answer_after_the_server_ended_the_exchange(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A challenge and the final -ERR in one read: the recorded answer is not sent, since
    the server would take it as a command (here ``DELE 1``, never allowed)."""
    steps: list[Step] = [
        ("s", b"+OK ready\r\n"),
        ("c", b"AUTH PLAIN\r\n"),
        ("s", b"+ \r\n"),
        ("c", b"DELE 1\r\n"),
        ("s", b"-ERR bad\r\n"),
    ]
    path = write_capture(tmp_path, steps)
    commands: list[bytes] = []

    def challenge_and_refuse(conn: socket.socket) -> None:
        conn.sendall(b"+OK ready\r\n")
        reader = conn.makefile("rb")
        conn.settimeout(10)
        while line := reader.readline():
            commands.append(line.rstrip(b"\r\n"))
            if commands[-1] == b"AUTH PLAIN":
                conn.sendall(b"+ \r\n-ERR no such mechanism today\r\n")
            else:
                conn.sendall(b"-ERR unknown command\r\n")

    with fake_server(challenge_and_refuse) as port:
        main(["check", str(path), "--against", f"127.0.0.1:{port}", "--timeout", "2"])
    capsys.readouterr()
    assert commands == [b"AUTH PLAIN"]


def _accept_login(commands: list[bytes]) -> Callable[[socket.socket], None]:
    """A server that records each command line and accepts it (QUIT ends the session)."""

    def behave(conn: socket.socket) -> None:
        conn.sendall(b"+OK ready\r\n")
        reader = conn.makefile("rb")
        conn.settimeout(10)
        while line := reader.readline():
            commands.append(line.rstrip(b"\r\n"))
            conn.sendall(b"+OK Logged in.\r\n" if commands[-1] != b"QUIT" else b"+OK bye\r\n")
            if commands[-1] == b"QUIT":
                return

    return behave


_PLAIN = b"AGV2ZQBwdw=="  # base64 of "\0eve\0pw" (RFC 4616 §2)


@pytest.mark.parametrize(
    ("recorded", "sent"),
    [
        # RFC 1734 allows a tab after AUTH: the placeholder itself used to be sent.
        (b"AUTH PLAIN\t********", b"AUTH PLAIN\t" + _PLAIN),
        (b"AUTH PLAIN ********", b"AUTH PLAIN " + _PLAIN),
        (b"auth plain  ********", b"auth plain  " + _PLAIN),
        (b"PASS ********", b"PASS pw"),
        (b"pass\t********", b"pass\tpw"),
    ],
)
def test_a_masked_login_is_sent_with_the_secret_in_place_of_the_mask(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], recorded: bytes, sent: bytes
) -> None:
    """The recorded line goes out as the client wrote it, only the placeholder replaced by
    the secret: never the placeholder, and the same separators and case."""
    steps: list[Step] = [
        ("s", b"+OK ready\r\n"),
        ("c", recorded + b"\r\n"),
        ("s", b"+OK Logged in.\r\n"),
        ("c", b"QUIT\r\n"),
        ("s", b"+OK bye\r\n"),
    ]
    path = write_capture(tmp_path, steps)
    commands: list[bytes] = []
    with fake_server(_accept_login(commands)) as port:
        main(["check", str(path), "--against", f"127.0.0.1:{port}", "--password", "eve=pw"])
    capsys.readouterr()
    assert commands[0] == sent
    assert b"********" not in b"".join(commands)


#: Bytes a server may take as a word separator (pop3tap's masker and split rule).
_SEPARATOR = st.sampled_from(sorted(WORD_SEPARATORS)).map(lambda b: bytes([b]))
_CASED = st.sampled_from((bytes.upper, bytes.lower, bytes.title))


@settings(max_examples=120, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    verb=st.sampled_from((b"PASS", b"AUTH")),
    case=_CASED,
    first=st.lists(_SEPARATOR, min_size=1, max_size=3).map(b"".join),
    second=_SEPARATOR,
)
def test_check_sends_back_the_line_the_client_wrote(
    tmp_path_factory: pytest.TempPathFactory,
    verb: bytes,
    case: Callable[[bytes], bytes],
    first: bytes,
    second: bytes,
) -> None:
    """Masked by the recorder, filled in by check: the client's own line comes back, for
    every separator and case (the secret starts one separator after the last clear word)."""
    if verb == b"PASS":
        original = case(b"PASS") + second + b"pw"
    else:
        original = case(b"AUTH") + first + case(b"PLAIN") + second + _PLAIN
    masked = mask_line(original)
    assert masked != original
    steps: list[Step] = [("s", b"+OK ready\r\n"), ("c", masked + b"\r\n"), ("s", b"+OK\r\n")]
    session, _tls = load_session(write_capture(tmp_path_factory.mktemp("c"), steps))
    (exchange,) = session.exchanges
    assert Secrets("eve", "pw").command(exchange, None) == original  # type: ignore[arg-type]
