"""Closing TLS sessions through the relay: a client that leaves reaches the server at once,
and every orderly close sends close_notify (RFC 8446 §6.1)."""

from __future__ import annotations

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
from clients import RunningRelay, running_relay
from dovecot import Dovecot, Mailbox
from mailutils import Mailutils
from show_corpus import validate_json_view

from pop3tap.capture import Capture, read_capture
from pop3tap.certs import CA_CERT_FILE, init_ca
from pop3tap.tls import TlsConfig

pytestmark = pytest.mark.realpeer


@contextmanager
def tls_relay(
    upstream_host: str,
    port: int,
    upstream_ca: Path,
    tmp_path: Path,
    *,
    close_linger: float = 5.0,
    **tls: Any,
) -> Iterator[RunningRelay]:
    if not (tmp_path / "relay-ca" / CA_CERT_FILE).exists():
        init_ca(tmp_path / "relay-ca")
    config = TlsConfig(ca_dir=tmp_path / "relay-ca", upstream_ca=upstream_ca, **tls)
    with running_relay(
        upstream_host, port, tmp_path / "captures", tls=config, close_linger=close_linger
    ) as relay:
        yield relay


def relay_trust(tmp_path: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(tmp_path / "relay-ca" / CA_CERT_FILE))


def mailutils_ca(mailutils: Mailutils, tmp_path: Path) -> Path:
    path = tmp_path / "mailutils-ca.pem"
    mailutils.ca.cert_pem.write_to_path(str(path))
    return path


def login(client: poplib.POP3, mailutils: Mailutils) -> bytes:
    """USER and PASS; the answer to PASS (poplib raises error_proto on -ERR)."""
    client.user(mailutils.user)
    try:
        return client.pass_(mailutils.password)
    except poplib.error_proto as exc:
        return bytes(exc.args[0])


def drop(client: poplib.POP3) -> None:
    """Leave without QUIT: close the socket, as a client that crashed or lost interest."""
    client.sock.close()
    client.file.close()


def complete_captures(relay: RunningRelay, count: int, timeout: float = 10.0) -> list[Capture]:
    """Wait (bounded) until ``count`` captures carry their close record."""
    deadline = time.monotonic() + timeout
    while True:
        captures = [read_capture(p) for p in relay.capture_files()]
        if len(captures) == count and all(c.complete for c in captures):
            return captures
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(captures)} captures, not {count} complete ones")
        time.sleep(0.02)


def test_mailutils_refuses_a_second_login_while_the_first_is_open(mailutils: Mailutils) -> None:
    """The premise: a login to a mailbox still open is refused (RFC 2449 §8.1.2 IN-USE);
    once the first client has left without QUIT, the next login gets +OK at once."""
    first = poplib.POP3_SSL(mailutils.host, mailutils.pop3s_port, context=mailutils.trust())
    assert login(first, mailutils).startswith(b"+OK")
    second = poplib.POP3_SSL(mailutils.host, mailutils.pop3s_port, context=mailutils.trust())
    assert login(second, mailutils).startswith(b"-ERR [IN-USE]")
    second.close()
    drop(first)
    third = poplib.POP3_SSL(mailutils.host, mailutils.pop3s_port, context=mailutils.trust())
    assert login(third, mailutils).startswith(b"+OK")
    third.quit()


def test_pop3s_client_leaving_without_quit_frees_the_mailbox_at_once(
    mailutils: Mailutils, tmp_path: Path
) -> None:
    with tls_relay(
        mailutils.host,
        mailutils.pop3s_port,
        mailutils_ca(mailutils, tmp_path),
        tmp_path,
        listen_tls=True,
        upstream_tls=True,
    ) as relay:
        trust = relay_trust(tmp_path)
        first = poplib.POP3_SSL(relay.host, relay.port, context=trust, timeout=30)
        assert login(first, mailutils).startswith(b"+OK")
        drop(first)
        again = poplib.POP3_SSL(relay.host, relay.port, context=trust, timeout=30)
        assert login(again, mailutils).startswith(b"+OK"), mailutils.log_tail()
        assert again.quit().startswith(b"+OK")
        captures = complete_captures(relay, 2)
    for capture in captures:  # real TLS facts in the JSON view fit its schema
        kinds = [r["kind"] for r in validate_json_view(capture)]
        assert kinds.count("tls") == 2 and kinds[-1] == "summary"


def test_stls_client_leaving_without_quit_frees_the_mailbox_at_once(
    mailutils: Mailutils, tmp_path: Path
) -> None:
    with tls_relay(
        mailutils.host, mailutils.pop3_port, mailutils_ca(mailutils, tmp_path), tmp_path
    ) as relay:
        trust = relay_trust(tmp_path)
        first = poplib.POP3(relay.host, relay.port, timeout=30)
        first.stls(trust)
        assert login(first, mailutils).startswith(b"+OK")
        drop(first)
        again = poplib.POP3(relay.host, relay.port, timeout=30)
        again.stls(trust)
        assert login(again, mailutils).startswith(b"+OK"), mailutils.log_tail()
        assert again.quit().startswith(b"+OK")
        captures = complete_captures(relay, 2)
    for capture in captures:
        records = validate_json_view(capture)
        events = [r["event"] for r in records if r["kind"] == "tls"]
        assert events == ["stls_accepted", "tls_handshake", "tls_handshake", "tls"]


def test_tls_session_ends_as_soon_as_the_client_leaves(
    mailutils: Mailutils, tmp_path: Path
) -> None:
    """The session (and its capture) ends with the server's answer to the close, not after
    a linger: nothing is left for a shutdown to wait for."""
    with (
        structlog.testing.capture_logs() as logs,
        tls_relay(
            mailutils.host,
            mailutils.pop3s_port,
            mailutils_ca(mailutils, tmp_path),
            tmp_path,
            listen_tls=True,
            upstream_tls=True,
        ) as relay,
    ):
        first = poplib.POP3_SSL(relay.host, relay.port, context=relay_trust(tmp_path))
        assert login(first, mailutils).startswith(b"+OK")
        drop(first)
        complete_captures(relay, 1)
    assert not any(e["event"] == "session.close_linger" for e in logs)


def s_client(openssl: str, port: int, ca_file: Path, commands: bytes, *extra: str) -> Any:
    return subprocess.run(
        [
            *(openssl, "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", str(ca_file)),
            *("-verify_return_error", "-quiet", *extra),
        ],
        input=commands,
        capture_output=True,
        timeout=60,
        check=False,
    )


@pytest.mark.lint_findings("pipelining-without-capability")  # s_client sends them at once
def test_openssl_s_client_ends_cleanly_through_the_relay(
    openssl_path: str, dovecot: Dovecot, mailbox: Mailbox, tmp_path: Path
) -> None:
    """QUIT over POP3S and over STLS through the relay in front of Dovecot: the relay
    passes the server's close on with close_notify, so s_client exits 0."""
    commands = f"USER {mailbox.user}\r\nPASS {mailbox.password}\r\nSTAT\r\nQUIT\r\n".encode()
    with tls_relay(
        dovecot.host,
        dovecot.pop3s_port,
        dovecot.ca_pem_path,
        tmp_path,
        listen_tls=True,
        upstream_tls=True,
    ) as relay:
        pop3s = s_client(openssl_path, relay.port, tmp_path / "relay-ca" / CA_CERT_FILE, commands)
    with tls_relay(dovecot.host, dovecot.pop3_port, dovecot.ca_pem_path, tmp_path) as relay:
        stls = s_client(
            openssl_path,
            relay.port,
            tmp_path / "relay-ca" / CA_CERT_FILE,
            commands,
            "-starttls",
            "pop3",
        )
    for result in (pop3s, stls):
        assert result.returncode == 0, result.stderr.decode(errors="replace")
        assert f"+OK {len(mailbox.messages)} ".encode() in result.stdout
        assert result.stdout.endswith(b"+OK Logging out.\r\n")


def test_client_reset_is_passed_on_as_a_reset_not_a_close_notify(
    mailutils: Mailutils, tmp_path: Path
) -> None:
    """A client that resets its TLS connection: the relay resets the upstream too."""
    with (
        structlog.testing.capture_logs() as logs,
        tls_relay(
            mailutils.host,
            mailutils.pop3s_port,
            mailutils_ca(mailutils, tmp_path),
            tmp_path,
            listen_tls=True,
            upstream_tls=True,
        ) as relay,
    ):
        first = poplib.POP3_SSL(relay.host, relay.port, context=relay_trust(tmp_path))
        assert login(first, mailutils).startswith(b"+OK")
        first.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        drop(first)
        (capture,) = complete_captures(relay, 1)
    assert capture.records[-1].reason == "client reset"  # type: ignore[union-attr]
    assert any(e["event"] == "session.reset" for e in logs)


def test_close_linger_bounds_a_tls_server_that_never_closes(tmp_path: Path) -> None:
    """A server that ignores close_notify: the session ends after --close-linger, logged.

    No real server keeps a connection open after close_notify, so this one is scripted."""
    import trio
    import trustme

    from pop3tap.background import BackgroundServer

    ca = trustme.CA()
    ca_file = tmp_path / "upstream-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server_cert = ca.issue_cert("127.0.0.1")
    saw_close_notify: list[bool] = []

    async def deaf_server(stream: trio.SocketStream) -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_cert.configure_cert(context)
        tls = trio.SSLStream(stream, context, server_side=True)
        await tls.send_all(b"+OK ready\r\n")
        while data := await tls.receive_some(100):
            del data
        saw_close_notify.append(True)
        await trio.sleep_forever()  # never answers the close

    async def serve(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(trio.serve_tcp, deaf_server, 0)
            task_status.started(listeners[0].socket.getsockname()[1])

    with (
        BackgroundServer[int](serve) as port,
        structlog.testing.capture_logs() as logs,
        tls_relay(
            "127.0.0.1",
            port,
            ca_file,
            tmp_path,
            close_linger=0.2,
            listen_tls=True,
            upstream_tls=True,
        ) as relay,
    ):
        client = poplib.POP3_SSL(relay.host, relay.port, context=relay_trust(tmp_path))
        assert client.getwelcome() == b"+OK ready"
        drop(client)
        complete_captures(relay, 1)
    assert saw_close_notify == [True]
    (linger,) = [e for e in logs if e["event"] == "session.close_linger"]
    assert linger["side"] == "server" and linger["linger_s"] == 0.2
