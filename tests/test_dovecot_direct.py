"""The Dovecot fixture driven directly by real clients (poplib, curl), without pop3tap.

These prove the test infrastructure itself: if they fail, proxy tests against Dovecot
cannot be trusted.
"""

from __future__ import annotations

import poplib
import ssl
import subprocess
from collections.abc import Iterator

import pytest
from dovecot import Dovecot, Mailbox
from mail_corpus import long_line_message

pytestmark = pytest.mark.realpeer

CURL_TIMEOUT = 60


def joined(lines: list[bytes]) -> bytes:
    """Undo poplib's line splitting (it already removed the byte-stuffing, RFC 1939 s. 3)."""
    return b"".join(line + b"\r\n" for line in lines)


def header_section(message: bytes) -> bytes:
    """Headers plus the empty separator line: what ``TOP n 0`` returns (RFC 1939 s. 7)."""
    return message[: message.index(b"\r\n\r\n") + 4]


@pytest.fixture
def pop(dovecot: Dovecot) -> Iterator[poplib.POP3]:
    """A poplib connection to the plain POP3 port, closed after the test."""
    client = poplib.POP3(dovecot.host, dovecot.pop3_port, timeout=30)
    yield client
    client.close()


def login(client: poplib.POP3, mailbox: Mailbox) -> None:
    client.user(mailbox.user)
    assert client.pass_(mailbox.password).startswith(b"+OK")


def curl(curl_path: str, *args: str) -> bytes:
    """Run curl (ignoring ~/.curlrc and proxies) and return what it wrote to stdout."""
    result = subprocess.run(
        [curl_path, "-q", "-sS", "--noproxy", "*", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=CURL_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


def test_greeting_and_capa(pop: poplib.POP3) -> None:
    assert pop.getwelcome().startswith(b"+OK Dovecot")
    capa = pop.capa()
    for name in ("PIPELINING", "TOP", "UIDL", "USER", "STLS", "RESP-CODES", "SASL"):
        assert name in capa
    assert "PLAIN" in capa["SASL"]


def test_user_pass_stat_list_uidl(pop: poplib.POP3, mailbox: Mailbox) -> None:
    login(pop, mailbox)
    sizes = [len(m) for m in mailbox.messages]
    assert pop.stat() == (len(sizes), sum(sizes))
    _, listing, _ = pop.list()
    assert listing == [b"%d %d" % (i, n) for i, n in enumerate(sizes, start=1)]
    _, uidls, _ = pop.uidl()
    assert uidls == [b"%d %s" % (i, u.encode()) for i, u in enumerate(mailbox.uidls, start=1)]


def test_retr_every_message(pop: poplib.POP3, mailbox: Mailbox) -> None:
    login(pop, mailbox)
    for number, expected in enumerate(mailbox.messages, start=1):
        _, lines, _ = pop.retr(number)
        assert joined(lines) == expected, f"message {number} differs"


def test_top(pop: poplib.POP3, mailbox: Mailbox) -> None:
    login(pop, mailbox)
    for number, expected in enumerate(mailbox.messages, start=1):
        _, lines, _ = pop.top(number, 0)
        assert joined(lines) == header_section(expected)
    _, lines, _ = pop.top(2, 3)
    body = mailbox.messages[1][len(header_section(mailbox.messages[1])) :]
    assert joined(lines) == header_section(mailbox.messages[1]) + b"".join(
        body.splitlines(keepends=True)[:3]
    )
    assert lines[-2] == b"."  # the mailbox line "." was stuffed to ".." on the wire


def test_long_line_retr(
    dovecot: Dovecot, pop: poplib.POP3, monkeypatch: pytest.MonkeyPatch
) -> None:
    message = long_line_message(100 * 1024)
    box = dovecot.new_mailbox([message])
    monkeypatch.setattr(poplib, "_MAXLINE", 200 * 1024)
    login(pop, box)
    _, lines, _ = pop.retr(1)
    assert joined(lines) == message


def test_apop_login(pop: poplib.POP3, mailbox: Mailbox) -> None:
    assert pop.apop(mailbox.user, mailbox.password).startswith(b"+OK")
    assert pop.stat()[0] == len(mailbox.messages)


def test_wrong_password_is_auth_error(pop: poplib.POP3, mailbox: Mailbox) -> None:
    pop.user(mailbox.user)
    with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\]"):
        pop.pass_(mailbox.password + "-wrong")


def test_dele_without_quit_deletes_nothing(
    dovecot: Dovecot, pop: poplib.POP3, mailbox: Mailbox
) -> None:
    login(pop, mailbox)
    assert pop.dele(1).startswith(b"+OK")
    assert pop.dele(2).startswith(b"+OK")
    pop.close()  # drop the connection without QUIT: no UPDATE state (RFC 1939 s. 6)
    line = dovecot.wait_disconnected(mailbox.user)
    assert "Logged out" not in line
    assert dovecot.mailbox_messages(mailbox.user) == list(mailbox.messages)


def test_dele_then_quit_removes_message(
    dovecot: Dovecot, pop: poplib.POP3, mailbox: Mailbox
) -> None:
    login(pop, mailbox)
    assert pop.dele(2).startswith(b"+OK")
    assert pop.quit().startswith(b"+OK")
    remaining = [m for i, m in enumerate(mailbox.messages, start=1) if i != 2]
    assert dovecot.mailbox_messages(mailbox.user) == remaining
    assert dovecot.message_count(mailbox.user) == len(mailbox.messages) - 1
    assert "del=1/4" in dovecot.wait_disconnected(mailbox.user)


def test_poplib_stls(dovecot: Dovecot, pop: poplib.POP3, mailbox: Mailbox) -> None:
    context = ssl.create_default_context(cafile=str(dovecot.ca_pem_path))
    assert pop.stls(context).startswith(b"+OK")
    assert "STLS" not in pop.capa()
    login(pop, mailbox)
    _, lines, _ = pop.retr(3)
    assert joined(lines) == mailbox.messages[2]


def test_poplib_pop3s(dovecot: Dovecot, mailbox: Mailbox) -> None:
    context = ssl.create_default_context(cafile=str(dovecot.ca_pem_path))
    client = poplib.POP3_SSL(dovecot.host, dovecot.pop3s_port, context=context, timeout=30)
    try:
        login(client, mailbox)
        _, lines, _ = client.retr(2)
        assert joined(lines) == mailbox.messages[1]
    finally:
        client.close()


def test_curl_retr_every_message(curl_path: str, dovecot: Dovecot, mailbox: Mailbox) -> None:
    creds = f"{mailbox.user}:{mailbox.password}"
    for number, expected in enumerate(mailbox.messages, start=1):
        url = f"pop3://{dovecot.host}:{dovecot.pop3_port}/{number}"
        assert curl(curl_path, url, "-u", creds) == expected, f"message {number} differs"


def test_curl_list_and_apop(curl_path: str, dovecot: Dovecot, mailbox: Mailbox) -> None:
    url = f"pop3://{dovecot.host}:{dovecot.pop3_port}/"
    out = curl(
        curl_path, url, "-u", f"{mailbox.user}:{mailbox.password}", "--login-options", "AUTH=+APOP"
    )
    sizes = [len(m) for m in mailbox.messages]
    assert out == b"".join(b"%d %d\r\n" % (i, n) for i, n in enumerate(sizes, start=1))


def test_curl_long_line(curl_path: str, dovecot: Dovecot) -> None:
    message = long_line_message(100 * 1024)
    box = dovecot.new_mailbox([message])
    url = f"pop3://{dovecot.host}:{dovecot.pop3_port}/1"
    assert curl(curl_path, url, "-u", f"{box.user}:{box.password}") == message


def test_curl_stls(curl_path: str, dovecot: Dovecot, mailbox: Mailbox) -> None:
    url = f"pop3://{dovecot.host}:{dovecot.pop3_port}/2"
    out = curl(
        curl_path,
        url,
        "-u",
        f"{mailbox.user}:{mailbox.password}",
        "--ssl-reqd",
        "--cacert",
        str(dovecot.ca_pem_path),
    )
    assert out == mailbox.messages[1]


def test_curl_pop3s(curl_path: str, dovecot: Dovecot, mailbox: Mailbox) -> None:
    url = f"pop3s://{dovecot.host}:{dovecot.pop3s_port}/4"
    out = curl(
        curl_path,
        url,
        "-u",
        f"{mailbox.user}:{mailbox.password}",
        "--cacert",
        str(dovecot.ca_pem_path),
    )
    assert out == mailbox.messages[3]
