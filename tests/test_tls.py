"""TLS through the relay against a real Dovecot: POP3S on both legs, STLS interception,
pop3tap's CA, failures on either leg, injection after STLS (RFC 2595 §4, RFC 8314 §3)."""

from __future__ import annotations

import contextlib
import poplib
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import structlog
import trio
import trustme
from clients import RunningRelay, curl, raw_session, running_relay
from dovecot import Dovecot, Mailbox

from pop3tap.capture import Capture, EventRecord, read_capture
from pop3tap.certs import CA_CERT_FILE, init_ca
from pop3tap.protocol import Status
from pop3tap.relay import Endpoint, RelayConfig, RelayServer
from pop3tap.render import render_lines
from pop3tap.tls import TlsConfig, client_handshake, describe_failure, server_handshake


def _wait_complete(relay: RunningRelay, count: int = 1, timeout: float = 10.0) -> list[Capture]:
    """Wait (bounded) until ``count`` captures carry their close record; not a timed assertion."""
    deadline = time.monotonic() + timeout
    while True:
        files = relay.capture_files()
        captures = [read_capture(p) for p in files]
        if len(captures) >= count and all(c.complete for c in captures):
            return captures
        if time.monotonic() > deadline:
            raise AssertionError(f"expected {count} complete captures in {relay.captures}")
        time.sleep(0.02)


def _events(capture: Capture, name: str) -> list[dict[str, Any]]:
    return [r.fields for r in capture.records if isinstance(r, EventRecord) and r.name == name]


@contextmanager
def tls_relay(
    dovecot: Dovecot, tmp_path: Path, *, port: int | None = None, **tls: Any
) -> Iterator[RunningRelay]:
    options: dict[str, Any] = {"ca_dir": tmp_path / "ca", "upstream_ca": dovecot.ca_pem_path}
    options.update(tls)
    config = TlsConfig(**options)
    upstream_port = dovecot.pop3_port if port is None else port
    with running_relay(dovecot.host, upstream_port, tmp_path / "captures", tls=config) as relay:
        yield relay


def _ca_pem(tmp_path: Path) -> Path:
    return tmp_path / "ca" / CA_CERT_FILE


def _creds(box: Mailbox) -> str:
    return f"{box.user}:{box.password}"


# --------------------------------------------------------------------------- real peers


@pytest.mark.realpeer
def test_curl_pop3s_through_both_legs(
    curl_path: str, dovecot: Dovecot, mailbox: Mailbox, tmp_path: Path
) -> None:
    direct = curl(
        curl_path,
        f"pop3s://{dovecot.host}:{dovecot.pop3s_port}/4",
        "-u",
        _creds(mailbox),
        "--cacert",
        str(dovecot.ca_pem_path),
    )
    with tls_relay(
        dovecot, tmp_path, port=dovecot.pop3s_port, listen_tls=True, upstream_tls=True
    ) as relay:
        proxied = curl(
            curl_path,
            f"pop3s://{relay.host}:{relay.port}/4",
            "-u",
            _creds(mailbox),
            "--cacert",
            str(_ca_pem(tmp_path)),
        )
        (capture,) = _wait_complete(relay)
    assert proxied == direct == mailbox.messages[3]
    handshakes = {f["leg"]: f for f in _events(capture, "tls_handshake")}
    assert set(handshakes) == {"client", "server"}
    assert handshakes["server"]["version"].startswith("TLS")
    assert handshakes["server"]["sni"] is None  # an IP address gets no SNI (RFC 6066 §3)
    assert "trustme" in handshakes["server"]["peer_subject"]  # Dovecot's test certificate
    assert len(handshakes["server"]["peer_sha256"].split(":")) == 32
    assert "cert_sha256" in handshakes["client"]
    assert not _events(capture, "tls")  # implicit TLS: no STLS switch
    retr = [e for e in capture.exchanges() if e.verb == "RETR"]
    assert retr and retr[0].status is Status.OK
    assert mailbox.messages[3].split(b"\r\n")[0] in capture.stream("s2c")  # decrypted


@pytest.mark.realpeer
def test_curl_stls_is_intercepted_and_recorded_in_clear(
    curl_path: str, dovecot: Dovecot, mailbox: Mailbox, tmp_path: Path
) -> None:
    init_ca(tmp_path / "ca")  # the relay would create it at the first STLS: too late for curl
    with tls_relay(dovecot, tmp_path) as relay:
        out = curl(
            curl_path,
            f"pop3://{relay.host}:{relay.port}/2",
            "-u",
            _creds(mailbox),
            "--ssl-reqd",
            "--cacert",
            str(_ca_pem(tmp_path)),
        )
        (capture,) = _wait_complete(relay)
    assert out == mailbox.messages[1]
    verbs = [e.verb for e in capture.exchanges()]
    stls = verbs.index("STLS")
    after = verbs[stls + 1 :]
    assert "RETR" in after and after[-1] == "QUIT"
    assert {"USER", "AUTH"} & set(after)  # the login happened inside TLS
    retr = next(e for e in capture.exchanges() if e.verb == "RETR")
    assert retr.status is Status.OK and retr.body_bytes > 0
    assert len(_events(capture, "tls")) == 1
    assert {f["leg"] for f in _events(capture, "tls_handshake")} == {"client", "server"}
    assert capture.summary().tls
    assert mailbox.password.encode() not in capture.path.read_bytes()


@pytest.mark.realpeer
def test_poplib_stls_and_pop3_ssl(dovecot: Dovecot, mailbox: Mailbox, tmp_path: Path) -> None:
    init_ca(tmp_path / "ca")
    trust = ssl.create_default_context(cafile=str(_ca_pem(tmp_path)))
    with tls_relay(dovecot, tmp_path) as relay:
        client = poplib.POP3(relay.host, relay.port, timeout=30)
        try:
            assert client.stls(trust).startswith(b"+OK")
            assert "STLS" not in client.capa()
            client.user(mailbox.user)
            client.pass_(mailbox.password)
            assert b"\r\n".join(client.retr(3)[1]) + b"\r\n" == mailbox.messages[2]
            client.quit()
        finally:
            client.close()
    with tls_relay(
        dovecot,
        tmp_path / "s",
        port=dovecot.pop3s_port,
        ca_dir=tmp_path / "ca",
        listen_tls=True,
        upstream_tls=True,
    ) as relay:
        secure = poplib.POP3_SSL(relay.host, relay.port, context=trust, timeout=30)
        try:
            secure.user(mailbox.user)
            secure.pass_(mailbox.password)
            assert secure.stat()[0] == len(mailbox.messages)
            secure.quit()
        finally:
            secure.close()


@pytest.mark.realpeer
@pytest.mark.lint_findings("pipelining-without-capability")  # s_client sends them at once
def test_openssl_s_client_starttls(dovecot: Dovecot, mailbox: Mailbox, tmp_path: Path) -> None:
    init_ca(tmp_path / "ca")
    commands = f"USER {mailbox.user}\nPASS {mailbox.password}\nSTAT\nQUIT\n"
    with tls_relay(dovecot, tmp_path) as relay:
        result = subprocess.run(
            [
                "openssl",
                "s_client",
                "-starttls",
                "pop3",
                "-connect",
                f"{relay.host}:{relay.port}",
                "-CAfile",
                str(_ca_pem(tmp_path)),
                "-verify_return_error",
                "-crlf",
                "-ign_eof",
            ],
            input=commands.encode(),
            capture_output=True,
            timeout=60,
            check=False,
        )
        (capture,) = _wait_complete(relay)
    out = result.stdout.decode(errors="replace")
    assert "Verify return code: 0 (ok)" in out, result.stderr.decode(errors="replace")
    assert f"+OK {len(mailbox.messages)} " in out
    verbs = [e.verb for e in capture.exchanges()]
    assert verbs[-4:] == ["USER", "PASS", "STAT", "QUIT"]


@pytest.mark.realpeer
def test_wrong_upstream_ca_refuses_the_client(dovecot: Dovecot, tmp_path: Path) -> None:
    other = trustme.CA()
    wrong = tmp_path / "wrong-ca.pem"
    other.cert_pem.write_to_path(str(wrong))
    with tls_relay(
        dovecot, tmp_path, port=dovecot.pop3s_port, upstream_tls=True, upstream_ca=wrong
    ) as relay:
        answer = raw_session(relay.host, relay.port, b"")
        (capture,) = _wait_complete(relay)
    assert answer.startswith(b"-ERR [SYS/TEMP] pop3tap: TLS with upstream")
    assert b"certificate verify failed" in answer and answer.count(b"\r\n") == 1
    (failed,) = _events(capture, "tls_failed")
    assert failed["leg"] == "server" and "unable to get local issuer" in failed["reason"]
    assert not capture.stream("s2c")  # no byte of a server session reached the client


@pytest.mark.realpeer
def test_stls_with_wrong_upstream_ca_closes_both(dovecot: Dovecot, tmp_path: Path) -> None:
    init_ca(tmp_path / "ca")
    other = trustme.CA()
    wrong = tmp_path / "wrong-ca.pem"
    other.cert_pem.write_to_path(str(wrong))
    trust = ssl.create_default_context(cafile=str(_ca_pem(tmp_path)))
    with tls_relay(dovecot, tmp_path, upstream_ca=wrong) as relay:
        client = poplib.POP3(relay.host, relay.port, timeout=30)
        with pytest.raises((ssl.SSLError, OSError)):
            client.stls(trust)
        with contextlib.suppress(OSError):
            client.close()
        (capture,) = _wait_complete(relay)
    (failed,) = _events(capture, "tls_failed")
    assert failed["leg"] == "server"
    assert not _events(capture, "tls")


@pytest.mark.realpeer
def test_client_distrusting_the_ca_is_logged(dovecot: Dovecot, tmp_path: Path) -> None:
    with tls_relay(
        dovecot, tmp_path, port=dovecot.pop3s_port, listen_tls=True, upstream_tls=True
    ) as relay:
        distrusting = ssl.create_default_context(cafile=str(dovecot.ca_pem_path))
        with (
            pytest.raises(ssl.SSLCertVerificationError),
            socket.create_connection((relay.host, relay.port), timeout=30) as sock,
        ):
            distrusting.wrap_socket(sock, server_hostname=relay.host)
        (capture,) = _wait_complete(relay)
    (failed,) = _events(capture, "tls_failed")
    assert failed["leg"] == "client"
    assert "client does not trust pop3tap's CA" in failed["reason"]
    assert "unknown ca" in failed["reason"]
    assert not _events(capture, "upstream_connected")  # no session was opened upstream


@pytest.mark.realpeer
@pytest.mark.parametrize(
    "writes",
    [
        [b"STLS\r\nUSER injected\r\n"],
        # The relay forwards client chunks before parsing them unless they may complete
        # an STLS line: a line split across chunks must still be caught.
        [b"ST", b"LS\r\nUSER injected\r\n"],
        [b"stls\r", b"\nUSER injected\r\n"],
    ],
    ids=["one-write", "split-verb", "split-crlf"],
)
@pytest.mark.lint_findings("stls-pipelined")  # the injection this test sends on purpose
def test_plaintext_pipelined_after_stls_is_not_forwarded(
    dovecot: Dovecot, tmp_path: Path, writes: list[bytes]
) -> None:
    init_ca(tmp_path / "ca")
    trust = ssl.create_default_context(cafile=str(_ca_pem(tmp_path)))
    with tls_relay(dovecot, tmp_path) as relay:
        with socket.create_connection((relay.host, relay.port), timeout=30) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            reader = sock.makefile("rb")
            assert reader.readline().startswith(b"+OK")
            for write in writes:
                sock.sendall(write)
                time.sleep(0.2)  # separate chunks at the relay
            assert reader.readline().startswith(b"+OK")
            with trust.wrap_socket(sock, server_hostname=relay.host) as tls:
                # Had "USER injected" reached Dovecot, it would have broken its handshake.
                tls.sendall(b"CAPA\r\nQUIT\r\n")
                answers = b""
                while chunk := tls.recv(65536):
                    answers += chunk
        (capture,) = _wait_complete(relay)
    capa, _, rest = answers.partition(b"\r\n.\r\n")
    assert capa.startswith(b"+OK") and b"\r\nUSER\r\n" in capa  # the CAPA answer, in TLS
    assert b"STLS" not in capa and rest.startswith(b"+OK")  # then QUIT's: nothing for USER
    exchanges = capture.exchanges()
    assert [e.verb for e in exchanges] == ["STLS", "CAPA", "QUIT"]
    assert _events(capture, "stls_injection") == [{"c2s": len(b"USER injected\r\n"), "s2c": 0}]
    assert len(_events(capture, "tls")) == 1


@pytest.mark.realpeer
@pytest.mark.lint_findings("pipelining-without-capability")  # pipelines, never asks CAPA
def test_stls_refused_releases_held_commands(
    dovecot: Dovecot, mailbox: Mailbox, tmp_path: Path
) -> None:
    # After login, Dovecot answers STLS with -ERR: the commands held behind it go on.
    session = (
        f"USER {mailbox.user}\r\nPASS {mailbox.password}\r\nSTLS\r\nSTAT\r\nQUIT\r\n"
    ).encode()
    with tls_relay(dovecot, tmp_path) as relay:
        answers = raw_session(relay.host, relay.port, session)
        (capture,) = _wait_complete(relay)
    exchanges = capture.exchanges()
    assert [e.verb for e in exchanges] == ["USER", "PASS", "STLS", "STAT", "QUIT"]
    assert exchanges[2].status is Status.ERR
    assert exchanges[3].status is Status.OK
    assert answers.endswith(exchanges[4].first_line.encode() + b"\r\n")
    assert not _events(capture, "tls") and not _events(capture, "tls_failed")


@pytest.mark.realpeer
def test_insecure_upstream_and_keylog(dovecot: Dovecot, mailbox: Mailbox, tmp_path: Path) -> None:
    keylog = tmp_path / "keys.log"
    with tls_relay(
        dovecot,
        tmp_path,
        port=dovecot.pop3s_port,
        upstream_tls=True,
        upstream_ca=None,
        insecure_upstream=True,
        keylog=keylog,
    ) as relay:
        client = poplib.POP3(relay.host, relay.port, timeout=30)
        client.user(mailbox.user)
        client.pass_(mailbox.password)
        assert client.stat()[0] == len(mailbox.messages)
        client.quit()
        client.close()
        _wait_complete(relay)
    secrets = keylog.read_text()
    assert "CLIENT_TRAFFIC_SECRET_0" in secrets or "CLIENT_RANDOM" in secrets


# --------------------------------------------------------------------------- no network


def test_insecure_upstream_logs_a_warning(tmp_path: Path) -> None:
    config = RelayConfig(
        upstream=Endpoint("127.0.0.1", 995),
        captures=None,
        tls=TlsConfig(upstream_tls=True, insecure_upstream=True, ca_dir=tmp_path / "ca"),
    )
    with structlog.testing.capture_logs() as logs:
        RelayServer(config).prepare_tls()
    warning = [e for e in logs if e["event"] == "tls.insecure_upstream"]
    assert warning and warning[0]["log_level"] == "warning"
    assert not (tmp_path / "ca").exists()  # no client-side TLS asked for: no CA created


def test_listen_tls_creates_the_ca_and_logs_where(tmp_path: Path) -> None:
    config = RelayConfig(
        upstream=Endpoint("127.0.0.1", 995),
        captures=None,
        tls=TlsConfig(listen_tls=True, ca_dir=tmp_path / "ca"),
    )
    with structlog.testing.capture_logs() as logs:
        RelayServer(config).prepare_tls()
    created = [e for e in logs if e["event"] == "tls.ca_created"]
    assert created and created[0]["ca_cert"] == str(_ca_pem(tmp_path))
    assert _ca_pem(tmp_path).exists()


async def test_hostname_mismatch_is_described() -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("pop.example.org").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    client_end, server_end = trio.testing.memory_stream_pair()
    failure: list[BaseException] = []

    async def serve() -> None:
        with contextlib.suppress(trio.BrokenResourceError):
            await server_handshake(server_end, server_ctx)

    async def connect() -> None:
        try:
            await client_handshake(client_end, client_ctx, "imap.example.org")
        except trio.BrokenResourceError as exc:
            failure.append(exc)
        await client_end.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        nursery.start_soon(connect)
    (exc,) = failure
    reason = describe_failure(exc, leg="server", host="imap.example.org")
    assert reason.startswith("upstream certificate does not match host imap.example.org")


# --------------------------------------------------------------------------- stream endings


@pytest.mark.realpeer
@pytest.mark.lint_findings("pipelining-without-capability")  # pipelines, never asks CAPA
def test_client_half_close_over_pop3s_upstream_keeps_every_answer(
    dovecot: Dovecot, mailbox: Mailbox, tmp_path: Path
) -> None:
    """TLS cannot half-close the upstream; the relay must not close it on the client's EOF
    while answers to commands already sent are still coming."""
    commands = f"USER {mailbox.user}\r\nPASS {mailbox.password}\r\nRETR 4\r\nQUIT\r\n".encode()
    with tls_relay(dovecot, tmp_path, port=dovecot.pop3s_port, upstream_tls=True) as relay:
        with socket.create_connection((relay.host, relay.port), timeout=30) as sock:
            sock.sendall(commands)
            sock.shutdown(socket.SHUT_WR)
            received = bytearray()
            while chunk := sock.recv(1 << 20):
                received += chunk
        (capture,) = _wait_complete(relay)
    assert received.endswith(b"\r\n.\r\n+OK Logging out.\r\n")
    assert len(received) > len(mailbox.messages[3])
    assert [e.verb for e in capture.exchanges()] == ["USER", "PASS", "RETR", "QUIT"]
    assert capture.summary().reached_update


def test_upstream_closing_tls_without_close_notify_is_an_end_not_a_reset(tmp_path: Path) -> None:
    """Many servers drop TCP without a TLS close_notify; every byte must still arrive."""
    ca = trustme.CA()
    ca_file = tmp_path / "upstream-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server_cert = ca.issue_cert("127.0.0.1")
    body = b"+OK\r\n" + b"z" * 70 + b"\r\n" + (b"y" * 70 + b"\r\n") * 1_500 + b".\r\n"

    async def ragged_server(stream: trio.SocketStream) -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_cert.configure_cert(context)
        tls = trio.SSLStream(stream, context, server_side=True)
        await tls.send_all(b"+OK ready\r\n")
        await tls.receive_some(100)
        await tls.send_all(body)
        await stream.aclose()  # TCP close under TLS: no close_notify

    async def serve(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(trio.serve_tcp, ragged_server, 0)
            task_status.started(listeners[0].socket.getsockname()[1])

    from pop3tap.background import BackgroundServer

    with (
        BackgroundServer[int](serve) as port,
        structlog.testing.capture_logs() as logs,
        running_relay(
            "127.0.0.1",
            port,
            tmp_path / "captures",
            tls=TlsConfig(upstream_tls=True, upstream_ca=ca_file, ca_dir=tmp_path / "ca"),
        ) as relay,
    ):
        with socket.create_connection((relay.host, relay.port), timeout=30) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(b"RETR 1\r\n")
            time.sleep(0.3)  # let the relay see the close while data is still queued
            received = bytearray()
            while chunk := sock.recv(65536):
                received += chunk
        (capture,) = _wait_complete(relay)
    assert bytes(received) == b"+OK ready\r\n" + body
    assert any(e["event"] == "tls.no_close_notify" for e in logs)
    assert not any(e["event"] == "session.reset" for e in logs)
    assert capture.records[-1].reason == "server closed"  # type: ignore[union-attr]


def _read_until_closed(sock: socket.socket) -> bytes:
    answers = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            answers += chunk
    return answers


@pytest.mark.realpeer
@pytest.mark.lint_findings("stls-pipelined", "pipelining-without-capability")
@pytest.mark.parametrize(
    ("intercept", "writes"),
    [
        (False, [b"STLS\r\nPASS sekrit-pipelined\r\n"]),
        (True, [b"STLS\r\nPASS sekrit-pipelined\r\n"]),
        (False, [b"STLS\r\n", b"\x16PASS sekrit-tls-looking\r\n"]),
        (False, [b"STLS\r\n", b"\x16\x03\x01\x00\x02ab", b"PASS sekrit-tls-looking\r\n"]),
    ],
    ids=["passed-through-pipelined", "intercepted-pipelined", "0x16-then-pass", "record-then-pass"],
)
def test_a_password_sent_around_stls_never_reaches_capture_log_or_view(
    dovecot: Dovecot, tmp_path: Path, intercept: bool, writes: list[bytes]
) -> None:
    """Dovecot takes the bytes after its ``+OK`` as its TLS handshake and fails it; the
    password the client sent around the switch, in one write with STLS or behind bytes
    that first look like TLS, is masked in the capture, the log and ``show``."""
    init_ca(tmp_path / "ca")
    with (
        structlog.testing.capture_logs() as logs,
        tls_relay(dovecot, tmp_path, intercept_stls=intercept) as relay,
    ):
        with socket.create_connection((relay.host, relay.port), timeout=30) as sock:
            reader = sock.makefile("rb")
            assert reader.readline().startswith(b"+OK")
            sock.sendall(writes[0])
            assert reader.readline().startswith(b"+OK")
            for write in writes[1:]:
                sock.sendall(write)
                time.sleep(0.1)  # separate chunks at the relay
            sock.shutdown(socket.SHUT_WR)
            _read_until_closed(sock)
        (capture,) = _wait_complete(relay)
        (path,) = relay.capture_files()
        raw = path.read_bytes()
    shown = "\n".join(render_lines(capture)).encode()
    for where, text in (("capture", raw), ("log", repr(logs).encode()), ("show", shown)):
        assert b"sekrit" not in text, where
    assert capture.stream("c2s").startswith(b"STLS\r\n")
    assert [e.verb for e in capture.exchanges()][:1] == ["STLS"]
