"""lint, diff and check against the test Dovecot (real peer)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import poplib
import shutil
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest
from clients import RunningRelay, raw_session, running_relay
from dovecot import Dovecot, Mailbox

from pop3tap.analysis import CaptureStream
from pop3tap.capture import EventRecord, iter_capture_paths, read_capture
from pop3tap.certs import CA_CERT_FILE, init_ca
from pop3tap.cli import main
from pop3tap.diff import DiffOptions, diff_paths
from pop3tap.lint import lint_capture
from pop3tap.tls import TlsConfig

pytestmark = pytest.mark.realpeer


def wait_complete(relay: RunningRelay, count: int) -> list[Path]:
    deadline = time.monotonic() + 15
    while True:
        paths = relay.capture_files()
        if len(paths) >= count and all(read_capture(p).complete for p in paths):
            return paths
        assert time.monotonic() < deadline, f"{count} complete captures expected"
        time.sleep(0.02)


def full_poplib_session(host: str, port: int, box: Mailbox, *, dele: bool = False) -> None:
    client = poplib.POP3(host, port, timeout=30)
    try:
        client.capa()
        client.user(box.user)
        client.pass_(box.password)
        client.stat()
        client.list()
        client.uidl()
        client.list(2)
        client.uidl(3)
        client.top(2, 1)
        for number in range(1, len(box.messages) + 1):
            client.retr(number)
        with pytest.raises(poplib.error_proto):
            client.retr(99)
        client.noop()
        if dele:
            client.dele(1)
        client.quit()
    finally:
        client.close()


def record(dovecot: Dovecot, directory: Path, box: Mailbox, **kwargs: object) -> Path:
    before = set(iter_capture_paths([directory])) if directory.exists() else set()
    with running_relay(dovecot.host, dovecot.pop3_port, directory) as relay:
        full_poplib_session(relay.host, relay.port, box, **kwargs)  # type: ignore[arg-type]
        paths = wait_complete(relay, len(before) + 1)
    (new,) = set(paths) - before
    return new


def errors(path: Path) -> list[tuple[str, int | None]]:
    report = lint_capture(CaptureStream(path))
    return [(f.rule, f.seq) for f in report.findings if f.severity == "error"]


@pytest.fixture
def small_box(dovecot: Dovecot, corpus: list[bytes]) -> Mailbox:
    return dovecot.new_mailbox(corpus[:3])


# --------------------------------------------------------------------------- lint


def test_dovecot_poplib_session_lints_clean(
    dovecot: Dovecot, mailbox: Mailbox, tmp_path: Path
) -> None:
    path = record(dovecot, tmp_path / "caps", mailbox, dele=True)
    report = lint_capture(CaptureStream(path))
    assert report.findings == []


def test_dovecot_apop_auth_and_pipelined_sessions_lint_clean(
    dovecot: Dovecot, small_box: Mailbox, tmp_path: Path
) -> None:
    caps = tmp_path / "caps"
    with running_relay(dovecot.host, dovecot.pop3_port, caps) as relay:
        client = poplib.POP3(relay.host, relay.port, timeout=30)
        client.apop(small_box.user, small_box.password)
        client.stat()
        client.quit()
        import base64

        plain = base64.b64encode(f"\0{small_box.user}\0{small_box.password}".encode())
        client = poplib.POP3(relay.host, relay.port, timeout=30)
        client._shortcmd("AUTH PLAIN " + plain.decode())  # type: ignore[attr-defined]
        client.uidl()
        client.quit()
        raw_session(
            relay.host,
            relay.port,
            f"CAPA\r\nUSER {small_box.user}\r\nPASS {small_box.password}\r\n"
            "STAT\r\nLIST\r\nRETR 1\r\nRETR 2\r\nQUIT\r\n".encode(),
        )
        paths = wait_complete(relay, 3)
    for path in paths:
        assert errors(path) == []


def test_dovecot_pop3s_session_lints_clean(
    dovecot: Dovecot, small_box: Mailbox, tmp_path: Path
) -> None:
    tls = TlsConfig(upstream_tls=True, upstream_ca=dovecot.ca_pem_path, ca_dir=tmp_path / "ca")
    with running_relay(dovecot.host, dovecot.pop3s_port, tmp_path / "caps", tls=tls) as relay:
        full_poplib_session(relay.host, relay.port, small_box)
        (path,) = wait_complete(relay, 1)
    assert lint_capture(CaptureStream(path)).findings == []


# --------------------------------------------------------------------------- diff


def test_diff_of_a_capture_with_itself_is_empty(
    dovecot: Dovecot, small_box: Mailbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = record(dovecot, tmp_path / "caps", small_box)
    assert main(["diff", str(path), str(path)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "no differences"


def test_two_dovecot_sessions_differ_only_in_volatile_parts(
    dovecot: Dovecot, small_box: Mailbox, tmp_path: Path
) -> None:
    first = record(dovecot, tmp_path / "caps", small_box)
    second = record(dovecot, tmp_path / "caps", small_box)
    (result,) = diff_paths(first, second, DiffOptions())
    assert result.differences == []
    assert result.pairs == len(read_capture(first).exchanges())
    assert "session id" in result.ignored
    assert "greeting: APOP timestamp / host name" in result.ignored
    (strict,) = diff_paths(first, second, DiffOptions(strict=True))
    assert {d["what"] for d in strict.differences} == {"greeting", "session id"}


def change_message(dovecot: Dovecot, user: str, number: int) -> None:
    """Flip the case of the last ASCII letter of message ``number``'s maildir file.

    The length stays the same, so every size Dovecot reports holds; only the body changes.
    """
    cur = dovecot.mail_dir / user / "Maildir" / "cur"
    (path,) = [p for p in cur.iterdir() if f".M{number}P0." in p.name]
    content = bytearray(path.read_bytes())
    index = max(i for i, byte in enumerate(content) if chr(byte).isascii() and chr(byte).isalpha())
    content[index] ^= 0x20
    path.write_bytes(bytes(content))


def test_diff_after_a_changed_message_shows_that_message_only(
    dovecot: Dovecot, small_box: Mailbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = record(dovecot, tmp_path / "caps", small_box)
    change_message(dovecot, small_box.user, 2)
    second = record(dovecot, tmp_path / "caps", small_box)
    (result,) = diff_paths(first, second, DiffOptions())
    assert [(d["field"], d["command"]) for d in result.differences] == [("body", "RETR 2")]
    assert "rest_hash" in result.differences[0]
    assert main(["diff", "--format", "json", str(first), str(second)]) == 1
    assert '"command": "RETR 2"' in capsys.readouterr().out


# --------------------------------------------------------------------------- check


def check(*args: str) -> int:
    return main(["check", *args])


def test_check_of_a_dovecot_capture_is_clean(
    dovecot: Dovecot,
    small_box: Mailbox,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = record(dovecot, tmp_path / "caps", small_box)
    out_dir = tmp_path / "checked"
    out_dir.mkdir()
    against = f"{dovecot.host}:{dovecot.pop3_port}"
    password = f"{small_box.user}={small_box.password}"
    assert (
        check(
            str(path), "--against", against, "--password", password, "--capture-dir", str(out_dir)
        )
        == 0
    )
    captured = capsys.readouterr()
    assert captured.out.splitlines()[-1] == "no differences"
    (new,) = iter_capture_paths([out_dir])
    assert f"new session recorded in {new}" in captured.err
    assert b"PASS ********" in read_capture(new).stream("c2s")
    assert small_box.password.encode() not in new.read_bytes()
    assert lint_capture(CaptureStream(new)).findings == []


def test_check_reports_exactly_the_changed_retr(
    dovecot: Dovecot,
    small_box: Mailbox,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = record(dovecot, tmp_path / "caps", small_box)
    change_message(dovecot, small_box.user, 3)
    capsys.readouterr()  # the relay's log lines
    env_name = "POP3TAP_PASSWORD_" + small_box.user.upper()
    os.environ[env_name] = small_box.password
    try:
        code = check(
            str(path),
            "--against",
            f"{dovecot.host}:{dovecot.pop3_port}",
            "--capture-dir",
            str(tmp_path),
            "--format",
            "json",
        )
    finally:
        del os.environ[env_name]
    assert code == 1
    doc = json.loads(capsys.readouterr().out)
    (session,) = doc["sessions"]
    assert [(d["field"], d["command"]) for d in session["differences"]] == [("body", "RETR 3")]


def test_check_without_password_stops_before_sending(
    dovecot: Dovecot,
    small_box: Mailbox,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = record(dovecot, tmp_path / "caps", small_box)
    monkeypatch.setenv("HOME", str(tmp_path))
    logins_before = dovecot.log_text().count(f"user=<{small_box.user}>")
    args = [str(path), "--against", f"{dovecot.host}:{dovecot.pop3_port}", "--capture-dir"]
    args.append(str(tmp_path))
    capsys.readouterr()
    code = check(*args)
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "PASS ******** is masked" in err[0] and "nothing was sent" in err[0]
    assert f"POP3TAP_PASSWORD_{small_box.user.upper()}" in err[0]
    assert dovecot.log_text().count(f"user=<{small_box.user}>") == logins_before
    # A netrc entry for the host is enough.
    netrc = tmp_path / ".netrc"
    netrc.write_text(
        f"machine {dovecot.host} login {small_box.user} password {small_box.password}\n"
    )
    netrc.chmod(0o644)
    code = check(*args)
    assert code == 2
    assert capsys.readouterr().err.strip().endswith("readable or writable by others; chmod 600 it")
    netrc.chmod(0o600)
    assert check(*args) == 0, capsys.readouterr().err


def reset_mailbox(dovecot: Dovecot, box: Mailbox) -> None:
    """Put ``box`` back as ``add_user`` made it (same files, UIDs and order)."""
    home = dovecot.mail_dir / box.user
    shutil.rmtree(home)
    passwd = dovecot.users_path / box.user
    passwd.unlink()
    dovecot.add_user(box.user, box.password, list(box.messages))


def test_check_refuses_dele_unless_allowed_and_deletes_only_as_recorded(
    dovecot: Dovecot,
    small_box: Mailbox,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = record(dovecot, tmp_path / "caps", small_box, dele=True)
    assert "del=1/3" in dovecot.wait_disconnected(small_box.user, 1)
    reset_mailbox(dovecot, small_box)
    args = [
        str(path),
        "--against",
        f"{dovecot.host}:{dovecot.pop3_port}",
        "--password",
        f"{small_box.user}={small_box.password}",
        "--capture-dir",
        str(tmp_path),
    ]
    capsys.readouterr()
    assert check(*args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refusing to send DELE" in err[0] and "--allow-dele" in err[0]
    assert "DELE 1" in err[0]
    assert dovecot.message_count(small_box.user) == 3
    assert check(*args, "--allow-dele") == 0
    assert capsys.readouterr().out.splitlines()[-1] == "no differences"
    assert "del=1/3" in dovecot.wait_disconnected(small_box.user, 2)
    assert dovecot.mailbox_messages(small_box.user) == list(small_box.messages[1:])


def test_check_does_not_dele_once_the_session_diverged(
    dovecot: Dovecot,
    small_box: Mailbox,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = record(dovecot, tmp_path / "caps", small_box, dele=True)
    dovecot.wait_disconnected(small_box.user, 1)
    reset_mailbox(dovecot, small_box)
    change_message(dovecot, small_box.user, 3)
    code = check(
        str(path),
        "--against",
        f"{dovecot.host}:{dovecot.pop3_port}",
        "--allow-dele",
        "--password",
        f"{small_box.user}={small_box.password}",
        "--capture-dir",
        str(tmp_path),
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "stopped before DELE 1 (#" in err and "RETR 3" in err
    assert "del=0/3" in dovecot.wait_disconnected(small_box.user, 2)
    assert dovecot.message_count(small_box.user) == 3


def test_check_never_quits_after_a_dele_the_capture_did_not_commit(
    dovecot: Dovecot,
    corpus: list[bytes],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    box = dovecot.new_mailbox(corpus[:2])
    caps = tmp_path / "caps"
    with running_relay(dovecot.host, dovecot.pop3_port, caps) as relay:
        with socket.create_connection((relay.host, relay.port), timeout=30) as sock:
            reader = sock.makefile("rb")
            reader.readline()
            for line in (f"USER {box.user}", f"PASS {box.password}", "DELE 1"):
                sock.sendall(line.encode() + b"\r\n")
                assert reader.readline().startswith(b"+OK")
            reader.close()  # the client vanishes without QUIT
        (path,) = wait_complete(relay, 1)
    dovecot.wait_disconnected(box.user, 1)
    assert dovecot.message_count(box.user) == 2  # the vanished client deleted nothing
    code = check(
        str(path),
        "--against",
        f"{dovecot.host}:{dovecot.pop3_port}",
        "--allow-dele",
        "--password",
        f"{box.user}={box.password}",
        "--capture-dir",
        str(tmp_path),
    )
    assert code == 0, capsys.readouterr()
    dovecot.wait_disconnected(box.user, 2)
    assert dovecot.message_count(box.user) == 2
    (new,) = [p for p in iter_capture_paths([tmp_path]) if p != path]
    assert b"QUIT" not in read_capture(new).stream("c2s")


def test_check_names_the_step_when_the_server_is_silent(
    tmp_path: Path, small_box: Mailbox, dovecot: Dovecot, capsys: pytest.CaptureFixture[str]
) -> None:
    path = record(dovecot, tmp_path / "caps", small_box)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[socket.socket] = []

    def accept() -> None:
        conn, _ = listener.accept()
        accepted.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        port = listener.getsockname()[1]
        code = check(
            str(path),
            "--against",
            f"127.0.0.1:{port}",
            "--timeout",
            "0.3",
            "--password",
            f"{small_box.user}=x",
            "--capture-dir",
            str(tmp_path),
        )
    finally:
        thread.join(5)
        for conn in accepted:
            conn.close()
        listener.close()
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"pop3tap: check: greeting: no answer from 127.0.0.1:{port} within 0.3s"]


def test_check_over_pop3s_as_recorded(
    dovecot: Dovecot, small_box: Mailbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tls = TlsConfig(upstream_tls=True, upstream_ca=dovecot.ca_pem_path, ca_dir=tmp_path / "ca")
    with running_relay(dovecot.host, dovecot.pop3s_port, tmp_path / "caps", tls=tls) as relay:
        full_poplib_session(relay.host, relay.port, small_box)
        (path,) = wait_complete(relay, 1)
    args = [
        str(path),
        "--against",
        f"{dovecot.host}:{dovecot.pop3s_port}",
        "--password",
        f"{small_box.user}={small_box.password}",
        "--capture-dir",
        str(tmp_path),
    ]
    assert check(*args) == 1  # the system store does not know the test CA
    assert "POP3S handshake" in capsys.readouterr().err
    assert check(*args, "--upstream-ca", str(dovecot.ca_pem_path)) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "no differences"


def test_check_over_stls_as_recorded(
    dovecot: Dovecot, small_box: Mailbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    init_ca(tmp_path / "ca")
    trust = ssl.create_default_context(cafile=str(tmp_path / "ca" / CA_CERT_FILE))
    tls = TlsConfig(ca_dir=tmp_path / "ca", upstream_ca=dovecot.ca_pem_path)
    with running_relay(dovecot.host, dovecot.pop3_port, tmp_path / "caps", tls=tls) as relay:
        client = poplib.POP3(relay.host, relay.port, timeout=30)
        try:
            client.stls(trust)
            client.capa()
            client.user(small_box.user)
            client.pass_(small_box.password)
            client.stat()
            client.retr(1)
            client.quit()
        finally:
            client.close()
        (path,) = wait_complete(relay, 1)
    assert lint_capture(CaptureStream(path)).findings == []
    out_dir = tmp_path / "checked"
    out_dir.mkdir()
    args = [
        str(path),
        "--against",
        f"{dovecot.host}:{dovecot.pop3_port}",
        "--password",
        f"{small_box.user}={small_box.password}",
        "--capture-dir",
        str(out_dir),
        "--upstream-ca",
        str(dovecot.ca_pem_path),
    ]
    capsys.readouterr()
    assert check(*args) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.splitlines()[-1] == "no differences"
    (new,) = iter_capture_paths([out_dir])
    capture = read_capture(new)
    verbs = [e.verb for e in capture.exchanges()]
    assert verbs == ["CAPA", "STLS", "CAPA", "USER", "PASS", "STAT", "RETR", "QUIT"]
    assert any(isinstance(r, EventRecord) and r.name == "tls" for r in capture.records)


def test_check_replays_pipelined_commands_pipelined(
    dovecot: Dovecot, small_box: Mailbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with running_relay(dovecot.host, dovecot.pop3_port, tmp_path / "caps") as relay:
        with socket.create_connection((relay.host, relay.port), timeout=30) as sock:
            reader = sock.makefile("rb")
            reader.readline()
            sock.sendall(b"CAPA\r\n")
            while reader.readline() != b".\r\n":
                pass
            commands = f"USER {small_box.user}\r\nPASS {small_box.password}\r\nSTAT\r\n"
            sock.sendall((commands + "LIST\r\nRETR 1\r\nRETR 2\r\nQUIT\r\n").encode())
            while reader.readline():
                pass
            reader.close()
        (path,) = wait_complete(relay, 1)
    assert lint_capture(CaptureStream(path)).findings == []
    out_dir = tmp_path / "checked"
    out_dir.mkdir()
    args = [str(path), "--against", f"{dovecot.host}:{dovecot.pop3_port}", "--capture-dir"]
    args += [str(out_dir), "--password", f"{small_box.user}={small_box.password}"]
    capsys.readouterr()
    assert check(*args) == 0, capsys.readouterr()
    (new,) = iter_capture_paths([out_dir])
    pipelined = [e.verb for e in read_capture(new).exchanges() if e.pipelined]
    assert pipelined == ["PASS", "STAT", "LIST", "RETR", "RETR", "QUIT"]


def sasl_login(client: poplib.POP3, mechanism: str, user: str, password: str) -> None:
    """Log in with AUTH as a mail client would (RFC 5034)."""
    if mechanism == "PLAIN":
        answer = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        client._shortcmd(f"AUTH PLAIN {answer}")  # type: ignore[attr-defined]
        return
    reply = client._shortcmd(f"AUTH {mechanism}")  # type: ignore[attr-defined]
    if mechanism == "LOGIN":
        reply = client._shortcmd(base64.b64encode(user.encode()).decode())  # type: ignore[attr-defined]
        client._shortcmd(base64.b64encode(password.encode()).decode())  # type: ignore[attr-defined]
        return
    challenge = base64.b64decode(reply[2:])
    digest = hmac.new(password.encode(), challenge, hashlib.md5).hexdigest()
    client._shortcmd(base64.b64encode(f"{user} {digest}".encode()).decode())  # type: ignore[attr-defined]


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_check_fills_in_masked_sasl_data(
    dovecot: Dovecot,
    small_box: Mailbox,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    mechanism: str,
) -> None:
    with running_relay(dovecot.host, dovecot.pop3_port, tmp_path / "caps") as relay:
        client = poplib.POP3(relay.host, relay.port, timeout=30)
        try:
            client.capa()
            sasl_login(client, mechanism, small_box.user, small_box.password)
            client.stat()
            client.retr(2)
            client.quit()
        finally:
            client.close()
        (path,) = wait_complete(relay, 1)
    assert small_box.password.encode() not in path.read_bytes()
    assert lint_capture(CaptureStream(path)).findings == []
    out_dir = tmp_path / "checked"
    out_dir.mkdir()
    args = [str(path), "--against", f"{dovecot.host}:{dovecot.pop3_port}", "--capture-dir"]
    args += [str(out_dir), "--password", f"{small_box.user}={small_box.password}"]
    capsys.readouterr()
    assert check(*args) == 0, capsys.readouterr()
    assert capsys.readouterr().out.splitlines()[-1] == "no differences"
    (new,) = iter_capture_paths([out_dir])
    assert small_box.password.encode() not in new.read_bytes()
    # The SASL lines are in the new capture, masked, as in the recorded one.
    recorded_c2s, new_c2s = read_capture(path).stream("c2s"), read_capture(new).stream("c2s")
    assert new_c2s.count(b"********") == recorded_c2s.count(b"********") > 0
    assert new_c2s.count(b"\r\n") == recorded_c2s.count(b"\r\n")
