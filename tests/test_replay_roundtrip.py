"""Round trip: record a poplib session from Dovecot through the relay, replay it without Dovecot."""

from __future__ import annotations

import poplib
import subprocess
import sys
import time
from pathlib import Path

import pytest
from clients import running_relay
from dovecot import Dovecot

import pop3tap
from pop3tap.capture import iter_capture_paths, read_capture

pytestmark = pytest.mark.realpeer


def client_run(host: str, port: int, user: str, password: str) -> list[object]:
    client = poplib.POP3(host, port, timeout=30)
    try:
        client.user(user)
        client.pass_(password)
        out: list[object] = [client.stat(), client.list()[1], client.uidl()[1], client.top(2, 1)]
        out += [client.retr(i)[1] for i in (1, 2, 3)]
        try:
            client.retr(99)
        except poplib.error_proto as exc:
            out.append(exc.args[0])
        out.append(client.quit())
        return out
    finally:
        client.close()


def test_record_then_replay_gives_the_same_client_results(
    dovecot: Dovecot, corpus: list[bytes], tmp_path: Path
) -> None:
    box = dovecot.new_mailbox(corpus[:3])
    with running_relay(dovecot.host, dovecot.pop3_port, tmp_path / "caps") as relay:
        recorded = client_run(relay.host, relay.port, box.user, box.password)
        deadline = time.monotonic() + 10
        while not (relay.capture_files() and relay.only_capture().complete):
            assert time.monotonic() < deadline
            time.sleep(0.02)
    (path,) = iter_capture_paths([tmp_path / "caps"])
    # No Dovecot from here on: the replay answers, whatever the password.
    with pop3tap.replay_server(path) as server:
        replayed = client_run(server.host, server.port, box.user, "some other password")
    assert replayed == recorded
    assert server.all_played and not server.unmatched
    assert read_capture(path).header.upstream == f"{dovecot.host}:{dovecot.pop3_port}"


def test_demo_runs_from_the_shipped_capture(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pop3tap", "demo", "--captures", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "[tx] USER alice" in result.stdout
    assert "[tx] PASS ********" in result.stdout
    assert "[rx] +OK Logging out, messages deleted." in result.stdout
    (path,) = iter_capture_paths([tmp_path])
    assert f"capture written to {path}" in result.stdout
    assert read_capture(path).complete
