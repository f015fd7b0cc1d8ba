"""The promises in the README's "Guarantees" section, each proved against real peers where
they can show it: crash-safe captures, masked secrets, bounded memory, load and shutdown."""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import json
import os
import poplib
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from clients import curl, raw_session, relay_process, running_relay
from dovecot import Dovecot, Mailbox
from faults import Connection, fixed_session, greet_and_wait, scripted_server
from mail_corpus import big_message

from pop3tap.capture import iter_capture_paths, read_capture
from pop3tap.protocol import Status


def wait_for(predicate, timeout: float = 20.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def all_complete(captures: Path, count: int) -> bool:
    paths = iter_capture_paths([captures]) if captures.exists() else []
    return len(paths) >= count and all(read_capture(p).complete for p in paths)


# ---------------------------------------------------------------------------- crash safety


@pytest.mark.realpeer
def test_kill_9_mid_session_leaves_a_readable_capture(
    dovecot: Dovecot, mailbox: Mailbox, tmp_path: Path
) -> None:
    with relay_process(dovecot.host, dovecot.pop3_port, tmp_path) as relay:
        client = poplib.POP3(relay.host, relay.port, timeout=30)
        client.user(mailbox.user)
        client.pass_(mailbox.password)
        assert client.retr(4)[1]  # the 3 MiB message
        client.stat()
        os.kill(relay.proc.pid, signal.SIGKILL)
        relay.proc.wait(10)
        with pytest.raises((poplib.error_proto, OSError, EOFError)):
            client.stat()
    (path,) = iter_capture_paths([relay.captures])
    capture = read_capture(path)
    assert not capture.complete
    verbs = [(e.verb, e.status) for e in capture.exchanges()]
    assert verbs[:4] == [
        ("USER", Status.OK),
        ("PASS", Status.OK),
        ("RETR", Status.OK),
        ("STAT", Status.OK),
    ]
    retr = capture.exchanges()[2]
    assert retr.body_bytes >= len(mailbox.messages[3])
    shown = subprocess.run(
        [sys.executable, "-m", "pop3tap", "show", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert "without a close record" in shown.stdout
    # A torn last record (the kill landed mid-write) reads up to the record before it.
    data = path.read_bytes()
    path.write_bytes(data[:-3])
    torn = read_capture(path)
    assert torn.truncated and not torn.complete
    assert len(torn.records) == len(capture.records) - 1


# ---------------------------------------------------------------------------- secrets


def _forms(secret: str) -> list[bytes]:
    raw = secret.encode()
    return [raw, base64.b64encode(raw)]


XOAUTH2_TOKEN = "ya29.token-that-must-never-be-logged"


def _xoauth2_server(conn: Connection) -> None:
    """Offers XOAUTH2, answers the token with Google's error challenge, then -ERR."""
    conn.send(b"+OK scripted ready\r\n")
    while True:
        line = conn.readline()
        if not line:
            return
        verb = line.split(b" ", 1)[0].strip().upper()
        if verb == b"CAPA":
            conn.send(b"+OK\r\nUSER\r\nSASL XOAUTH2 CRAM-MD5\r\n.\r\n")
        elif verb == b"AUTH":
            if len(line.split()) == 2:
                conn.send(b"+ \r\n")
                conn.readline()
            conn.send(b"+ eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiQmVhcmVyIn0=\r\n")
            conn.readline()  # the client's empty SASL line
            conn.send(b"-ERR [AUTH] invalid token\r\n")
        elif verb == b"QUIT":
            conn.send(b"+OK\r\n")
            return
        else:
            conn.send(b"-ERR unknown\r\n")


@pytest.mark.realpeer
@pytest.mark.parametrize("keep_secrets", [False, True])
def test_secrets_never_reach_logs_or_default_captures(
    dovecot: Dovecot, tmp_path: Path, curl_path: str, keep_secrets: bool
) -> None:
    password = "pw-Zq8#sekrit"
    box = dovecot.add_user(dovecot.unique_user(), password, [b"Subject: s\r\n\r\nhello\r\n"])
    extra = ["--keep-secrets"] if keep_secrets else []
    secrets_seen: list[bytes] = []
    with relay_process(dovecot.host, dovecot.pop3_port, tmp_path / "dovecot", *extra) as relay:
        client = poplib.POP3(relay.host, relay.port, timeout=30)
        stamp = client.getwelcome().split(b"<", 1)[1].split(b">", 1)[0]
        client.apop(box.user, password)
        client.quit()
        digest = hashlib.md5(b"<" + stamp + b">" + password.encode()).hexdigest()
        secrets_seen.append(digest.encode())
        client = poplib.POP3(relay.host, relay.port, timeout=30)
        client.user(box.user)
        client.pass_(password)
        client.quit()
        url = f"pop3://{relay.host}:{relay.port}/1"
        for options in (
            ["--sasl-ir", "--login-options", "AUTH=PLAIN"],
            ["--login-options", "AUTH=PLAIN"],
            ["--login-options", "AUTH=LOGIN"],
            ["--login-options", "AUTH=CRAM-MD5"],
        ):
            assert curl(curl_path, url, "-u", f"{box.user}:{password}", *options).startswith(
                b"Subject"
            )
        wait_for(lambda: all_complete(relay.captures, 6), what="six captures")
        dovecot_logs = relay.log_text()
        dovecot_captures = [p.read_bytes() for p in iter_capture_paths([relay.captures])]
    with (
        scripted_server(_xoauth2_server) as server,
        relay_process(server.host, server.port, tmp_path / "scripted", *extra) as relay,
    ):
        url = f"pop3://{relay.host}:{relay.port}/"
        for options in (["--sasl-ir"], []):
            curl(
                curl_path,
                url,
                "-u",
                "bob:",
                "--oauth2-bearer",
                XOAUTH2_TOKEN,
                "--login-options",
                "AUTH=XOAUTH2",
                *options,
                check=False,
            )
        wait_for(lambda: all_complete(relay.captures, 2), what="two captures")
        scripted_logs = relay.log_text()
        scripted_captures = [p.read_bytes() for p in iter_capture_paths([relay.captures])]

    xoauth2 = f"user=bob\x01auth=Bearer {XOAUTH2_TOKEN}\x01\x01"
    needles = [
        *_forms(password),
        *_forms(f"\x00{box.user}\x00{password}"),
        *_forms(XOAUTH2_TOKEN),
        *_forms(xoauth2),
        *secrets_seen,
    ]
    assert dovecot_logs.count('"pop3.exchange"') >= 20
    xoauth2_tries = [
        event
        for event in map(json.loads, scripted_logs.splitlines())
        if event.get("verb") == "AUTH"
    ]
    assert [(e["args"], e["status"]) for e in xoauth2_tries] == [
        ("XOAUTH2 ********", "-ERR"),
        ("XOAUTH2", "-ERR"),
    ]
    for log in (dovecot_logs, scripted_logs):
        for needle in needles:
            assert needle.decode() not in log
        for line in log.splitlines():
            json.loads(line)  # every line is valid JSON
    all_captures = b"".join(dovecot_captures + scripted_captures)
    if keep_secrets:
        kept = [
            password.encode(),  # PASS
            base64.b64encode(f"\x00{box.user}\x00{password}".encode()),  # AUTH PLAIN
            base64.b64encode(password.encode()),  # AUTH LOGIN
            base64.b64encode(xoauth2.encode()),  # AUTH XOAUTH2
            digest.encode(),  # APOP
        ]
        for needle in kept:
            assert needle in all_captures
    else:
        for needle in needles:
            assert needle not in all_captures
    if not keep_secrets:
        assert all_captures.count(b"********") >= 8


def test_non_loopback_listen_warns(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("0.0.0.0", 0))
        port = probe.getsockname()[1]
    log_file = tmp_path / "log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pop3tap",
            "record",
            "--upstream",
            "127.0.0.1:9",
            "--listen",
            f"0.0.0.0:{port}",
            "--no-captures",
            "--log-file",
            str(log_file),
        ],
        stdin=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: log_file.exists() and "relay.listening" in log_file.read_text())
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    assert '"relay.public_listen"' in log_file.read_text()


# ---------------------------------------------------------------------------- memory


@pytest.mark.realpeer
def test_slow_client_reading_64_mib_keeps_relay_memory_flat(
    dovecot: Dovecot, tmp_path: Path
) -> None:
    message = big_message(64 * 1024 * 1024)
    box = dovecot.new_mailbox([message])
    with relay_process(dovecot.host, dovecot.pop3_port, tmp_path, "--no-captures") as relay:
        baseline = relay.rss_peak_kib()
        sock = socket.create_connection((relay.host, relay.port), timeout=60)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(f"USER {box.user}\r\nPASS {box.password}\r\nRETR 1\r\nQUIT\r\n".encode())
        received = bytearray()
        while True:
            data = sock.recv(64 * 1024)
            if not data:
                break
            received += data
            time.sleep(0.0005)
        sock.close()
        peak = relay.rss_peak_kib()
    assert received.endswith(b"\r\n.\r\n+OK Logging out.\r\n")
    assert len(received) > len(message)
    growth_mib = (peak - baseline) / 1024
    assert growth_mib < 32, f"relay RSS grew by {growth_mib:.1f} MiB for a 64 MiB message"
    assert peak / 1024 < 100


# ---------------------------------------------------------------------------- load


def test_hundreds_of_concurrent_sessions_all_byte_exact(tmp_path: Path) -> None:
    script = b"USER a\r\nPASS b\r\nSTAT\r\nRETR 1\r\nQUIT\r\n"
    expected = (
        b"+OK scripted ready <1.1@scripted>\r\n+OK\r\n+OK\r\n+OK\r\n"
        b"+OK\r\nSubject: x\r\n\r\nbody\r\n.\r\n+OK bye\r\n"
    )
    sessions = 300
    with (
        scripted_server(fixed_session) as server,
        running_relay(server.host, server.port, tmp_path / "captures") as relay,
    ):
        with concurrent.futures.ThreadPoolExecutor(max_workers=sessions) as pool:
            replies = list(
                pool.map(lambda _: raw_session(relay.host, relay.port, script), range(sessions))
            )
        wait_for(lambda: all_complete(relay.captures, sessions), what="all captures")
        assert relay.server.total_sessions == sessions
    assert replies == [expected] * sessions
    paths = iter_capture_paths([tmp_path / "captures"])
    assert len(paths) == sessions
    for path in paths:
        capture = read_capture(path)
        assert capture.complete and not capture.truncated
        assert capture.stream("s2c") == expected
        assert [e.verb for e in capture.exchanges()] == ["USER", "PASS", "STAT", "RETR", "QUIT"]


def test_sigterm_with_many_open_sessions(tmp_path: Path) -> None:
    sessions = 100
    with (
        scripted_server(greet_and_wait) as server,
        relay_process(server.host, server.port, tmp_path, "--grace", "1") as relay,
    ):
        clients = []
        for _ in range(sessions):
            sock = socket.create_connection((relay.host, relay.port), timeout=30)
            clients.append(sock)
        for sock in clients:
            assert sock.recv(100) == b"+OK scripted ready\r\n"
        wait_for(lambda: relay.log_text().count('"capture.open"') == sessions, what="sessions")
        relay.proc.send_signal(signal.SIGTERM)
        assert relay.proc.wait(20) == 0
        for sock in clients:
            sock.settimeout(10)
            assert sock.recv(100) == b""
            sock.close()
    paths = iter_capture_paths([relay.captures])
    assert len(paths) == sessions
    for path in paths:
        capture = read_capture(path)
        assert capture.complete and not capture.truncated
        assert capture.records[-1].reason == "shutdown"  # type: ignore[union-attr]
    assert relay.log_text().count('"session.close"') == sessions
