"""The relay against a real Dovecot with real clients: byte-exact, paired, captured, logged."""

from __future__ import annotations

import concurrent.futures
import poplib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from clients import RunningRelay, curl, raw_session, running_relay, without_apop_stamp
from dovecot import Dovecot, Mailbox

from pop3tap.protocol import Flag, Status

pytestmark = pytest.mark.realpeer


@pytest.fixture
def relay(dovecot: Dovecot, tmp_path: Path) -> Iterator[RunningRelay]:
    with running_relay(dovecot.host, dovecot.pop3_port, tmp_path / "captures") as running:
        yield running


def wait_for_captures(relay: RunningRelay, count: int, timeout: float = 10.0) -> None:
    """Sessions close their capture just after the client sees EOF; wait for the close records."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        files = relay.capture_files()
        if len(files) >= count:
            from pop3tap.capture import read_capture

            if all(read_capture(p).complete for p in files):
                return
        time.sleep(0.02)
    raise AssertionError(f"expected {count} complete captures in {relay.captures}")


def full_session(mailbox: Mailbox) -> bytes:
    n = len(mailbox.messages)
    commands = [b"CAPA", b"USER " + mailbox.user.encode(), b"PASS " + mailbox.password.encode()]
    commands += [b"STAT", b"LIST", b"LIST 2", b"UIDL", b"UIDL 3", b"TOP 1 0", b"TOP 2 3"]
    commands += [b"RETR %d" % i for i in range(1, n + 1)]
    commands += [b"RETR 99", b"NOOP", b"QUIT"]
    return b"".join(c + b"\r\n" for c in commands)


def test_pipelined_session_is_byte_identical_and_captured(
    dovecot: Dovecot, relay: RunningRelay, corpus: list[bytes]
) -> None:
    direct_box = dovecot.new_mailbox(corpus)
    proxied_box = dovecot.add_user(dovecot.unique_user(), direct_box.password, corpus)
    direct = raw_session(dovecot.host, dovecot.pop3_port, full_session(direct_box))
    sent = full_session(proxied_box)
    proxied = raw_session(relay.host, relay.port, sent)

    assert without_apop_stamp(proxied) == without_apop_stamp(direct)
    wait_for_captures(relay, 1)
    capture = relay.only_capture()
    assert capture.complete and not capture.truncated
    assert capture.stream("s2c") == proxied
    assert capture.stream("c2s") == sent.replace(
        b"PASS " + proxied_box.password.encode(), b"PASS ********"
    )
    assert capture.header.upstream == f"{dovecot.host}:{dovecot.pop3_port}"
    assert capture.header.secrets == "masked"

    exchanges = capture.exchanges()
    verbs = [(e.verb, e.args, e.status) for e in exchanges]
    assert verbs[:3] == [
        ("CAPA", "", Status.OK),
        ("USER", proxied_box.user, Status.OK),
        ("PASS", "********", Status.OK),
    ]
    assert [e.verb for e in exchanges] == [
        line.split(b" ")[0].decode() for line in sent.split(b"\r\n") if line
    ]
    retrs = [e for e in exchanges if e.verb == "RETR" and e.status is Status.OK]
    assert len(retrs) == len(corpus)
    for ex, message in zip(retrs, corpus, strict=True):
        raw = proxied[ex.response_start : ex.response_end]
        assert raw.startswith(b"+OK") and raw.endswith(b"\r\n.\r\n")
        assert ex.body_bytes == len(raw) - raw.index(b"\r\n") - 2 - 3
        unstuffed = b"".join(
            (line[1:] if line.startswith(b".") else line) + b"\r\n"
            for line in raw.split(b"\r\n")[1:-2]
        )
        assert unstuffed == message
    err = next(e for e in exchanges if e.args == "99")
    assert err.status is Status.ERR and not err.multiline
    assert any(e.pipelined for e in exchanges)
    summary = capture.summary()
    assert summary.retr_count == len(corpus) and summary.reached_update


def test_poplib_through_relay_matches_direct(
    dovecot: Dovecot, relay: RunningRelay, corpus: list[bytes]
) -> None:
    def run(port: int, box: Mailbox) -> list[object]:
        client = poplib.POP3(dovecot.host, port, timeout=30)
        try:
            client.user(box.user)
            client.pass_(box.password)
            out: list[object] = [client.stat(), client.list()[1], client.uidl()[1], client.list(2)]
            out += [client.top(1, 0)[1], client.capa()]
            out += [client.retr(i)[1] for i in range(1, len(box.messages) + 1)]
            client.dele(1)
            client.rset()
            out.append(client.stat())
            out.append(client.quit())
            return out
        finally:
            client.close()

    direct_box = dovecot.new_mailbox(corpus)
    proxied_box = dovecot.add_user(dovecot.unique_user(), direct_box.password, corpus)
    assert run(relay.port, proxied_box) == run(dovecot.pop3_port, direct_box)
    assert dovecot.message_count(proxied_box.user) == len(corpus)


def test_apop_and_wrong_password(dovecot: Dovecot, relay: RunningRelay, mailbox: Mailbox) -> None:
    client = poplib.POP3(relay.host, relay.port, timeout=30)
    client.apop(mailbox.user, mailbox.password)
    assert client.stat()[0] == len(mailbox.messages)
    client.quit()
    bad = poplib.POP3(relay.host, relay.port, timeout=30)
    bad.user(mailbox.user)
    with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\]"):
        bad.pass_("wrong password")
    bad.quit()
    wait_for_captures(relay, 2)
    texts = b"".join(p.read_bytes() for p in relay.capture_files())
    assert mailbox.password.encode() not in texts
    assert b"wrong password" not in texts
    exchanges = [ex for p in relay.capture_files() for ex in _read(p).exchanges()]
    apop = next(e for e in exchanges if e.verb == "APOP")
    assert apop.args == f"{mailbox.user} ********" and apop.status is Status.OK
    failed = next(e for e in exchanges if e.verb == "PASS")
    assert failed.status is Status.ERR and failed.resp_code == "AUTH"


def _read(path: Path):  # type: ignore[no-untyped-def]
    from pop3tap.capture import read_capture

    return read_capture(path)


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_curl_sasl_login_through_relay(
    dovecot: Dovecot, relay: RunningRelay, mailbox: Mailbox, curl_path: str, mechanism: str
) -> None:
    url = f"pop3://{relay.host}:{relay.port}/2"
    body = curl(
        curl_path,
        url,
        "-u",
        f"{mailbox.user}:{mailbox.password}",
        "--login-options",
        f"AUTH={mechanism}",
    )
    assert body == mailbox.messages[1]
    wait_for_captures(relay, 1)
    capture = relay.only_capture()
    raw = relay.capture_files()[0].read_bytes()
    assert mailbox.password.encode() not in raw
    auth = next(e for e in capture.exchanges() if e.verb == "AUTH" and e.args.startswith(mechanism))
    assert auth.status is Status.OK
    assert auth.sasl and all(text in ("********", "") for kind, text in auth.sasl if kind == "c")
    retr = next(e for e in capture.exchanges() if e.verb == "RETR")
    assert retr.args == "2" and retr.multiline


def test_curl_sasl_ir_plain(
    dovecot: Dovecot, relay: RunningRelay, mailbox: Mailbox, curl_path: str
) -> None:
    url = f"pop3://{relay.host}:{relay.port}/3"
    body = curl(
        curl_path,
        url,
        "-u",
        f"{mailbox.user}:{mailbox.password}",
        "--sasl-ir",
        "--login-options",
        "AUTH=PLAIN",
    )
    assert body == mailbox.messages[2]
    wait_for_captures(relay, 1)
    auth = next(e for e in relay.only_capture().exchanges() if e.verb == "AUTH")
    assert auth.args == "PLAIN ********" and auth.status is Status.OK


def test_dele_then_quit_deletes(dovecot: Dovecot, relay: RunningRelay, mailbox: Mailbox) -> None:
    client = poplib.POP3(relay.host, relay.port, timeout=30)
    client.user(mailbox.user)
    client.pass_(mailbox.password)
    client.dele(1)
    client.quit()
    assert dovecot.message_count(mailbox.user) == len(mailbox.messages) - 1
    wait_for_captures(relay, 1)
    assert relay.only_capture().summary().reached_update


def test_client_vanishing_after_dele_deletes_nothing(
    dovecot: Dovecot, relay: RunningRelay, mailbox: Mailbox
) -> None:
    """No QUIT is ever sent for a client that went away (RFC 1939 §6: no UPDATE state)."""
    with structlog.testing.capture_logs() as logs:
        sock = socket.create_connection((relay.host, relay.port), timeout=30)
        stream = sock.makefile("rb")
        stream.readline()
        for command in (
            b"USER " + mailbox.user.encode(),
            b"PASS " + mailbox.password.encode(),
            b"DELE 1",
        ):
            sock.sendall(command + b"\r\n")
            assert stream.readline().startswith(b"+OK")
        stream.close()
        sock.close()
        dovecot.wait_disconnected(mailbox.user)
        wait_for_captures(relay, 1)
    assert dovecot.mailbox_messages(mailbox.user) == list(mailbox.messages)
    capture = relay.only_capture()
    assert b"QUIT" not in capture.stream("c2s")
    assert not capture.summary().reached_update
    close = next(e for e in logs if e["event"] == "session.close")
    assert close["update"] is False and close["dele"] == 1


def test_exchange_log_lines(dovecot: Dovecot, relay: RunningRelay, mailbox: Mailbox) -> None:
    with structlog.testing.capture_logs() as logs:
        client = poplib.POP3(relay.host, relay.port, timeout=30)
        client.user(mailbox.user)
        client.pass_(mailbox.password)
        client.retr(2)
        client.quit()
        wait_for_captures(relay, 1)
    exchanges = [e for e in logs if e["event"] == "pop3.exchange"]
    assert [e["verb"] for e in exchanges] == ["USER", "PASS", "RETR", "QUIT"]
    assert exchanges[1]["args"] == "********"
    retr = exchanges[2]
    assert retr["status"] == "+OK" and retr["multiline"] is True
    assert retr["body_bytes"] > 0 and retr["latency_ms"] >= retr["latency_first_ms"] >= 0
    assert mailbox.password not in repr(logs)
    close = next(e for e in logs if e["event"] == "session.close")
    assert close["retr"].startswith("1/") and close["update"] is True and close["commands"] == 4


def test_upstream_unreachable_gets_one_err_line(tmp_path: Path) -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        dead_port = placeholder.getsockname()[1]
    with (
        structlog.testing.capture_logs() as logs,
        running_relay("127.0.0.1", dead_port, tmp_path / "c") as relay,
    ):
        reply = raw_session(relay.host, relay.port, b"")
        wait_for_captures(relay, 1)
    assert reply.startswith(b"-ERR [SYS/TEMP] pop3tap: cannot reach upstream 127.0.0.1:")
    assert reply.endswith(b"\r\n") and reply.count(b"\n") == 1
    assert any(e["event"] == "upstream.unreachable" for e in logs)
    names = [r.name for r in relay.only_capture().records if hasattr(r, "name")]
    assert "upstream_connect_failed" in names


def test_many_concurrent_sessions(
    dovecot: Dovecot, relay: RunningRelay, corpus: list[bytes]
) -> None:
    boxes = [dovecot.new_mailbox(corpus[:3]) for _ in range(20)]

    def one(box: Mailbox) -> bytes:
        return raw_session(relay.host, relay.port, full_session(box))

    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(one, boxes))
    expected = without_apop_stamp(
        raw_session(dovecot.host, dovecot.pop3_port, full_session(boxes[0]))
    )
    # Each user has the same messages, so only the user name in no response differs.
    for result in results:
        assert without_apop_stamp(result) == expected
    wait_for_captures(relay, len(boxes))
    for path in relay.capture_files():
        capture = _read(path)
        assert capture.complete
        assert capture.summary().retr_count == 3


def test_dotstuffed_and_bare_flags_are_not_raised_for_dovecot(
    relay: RunningRelay, mailbox: Mailbox
) -> None:
    raw_session(relay.host, relay.port, full_session(mailbox))
    wait_for_captures(relay, 1)
    for ex in relay.only_capture().exchanges():
        assert not ex.flags - {Flag.PIPELINED}, ex
