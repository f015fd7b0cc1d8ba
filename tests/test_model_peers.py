"""Mailbox-model replay against real peers: a differential test with Dovecot, and curl,
poplib, fetchmail and mpop fetching every message from a model built from a Dovecot capture."""

from __future__ import annotations

import hashlib
import os
import poplib
import random
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
import trustme
from clients import curl, pop3tap_process, running_relay
from conftest import _require_binary
from dovecot import Dovecot, Mailbox

from pop3tap.replay import replay_server

pytestmark = pytest.mark.realpeer
ROOT = Path(__file__).resolve().parents[1]

#: Commands whose +OK answer is multi-line when they carry no message number (RFC 1939 §5).
_MULTI_WITHOUT_ARG = {b"LIST", b"UIDL", b"CAPA"}


def _record_full_session(dovecot: Dovecot, mailbox: Mailbox, directory: Path) -> Path:
    """Record, through the relay, a poplib session that looks at every message."""
    with running_relay(dovecot.host, dovecot.pop3_port, directory) as relay:
        client = poplib.POP3(relay.host, relay.port, timeout=30)
        client.capa()
        client.user(mailbox.user)
        client.pass_(mailbox.password)
        client.stat()
        client.list()
        client.uidl()
        for number in range(1, len(mailbox.messages) + 1):
            client.top(number, 0)
            client.retr(number)
        client.quit()
    (path,) = relay.capture_files()
    return path


@pytest.fixture
def recorded(dovecot: Dovecot, corpus: list[bytes], tmp_path: Path) -> tuple[Mailbox, Path]:
    mailbox = dovecot.new_mailbox(corpus)
    return mailbox, _record_full_session(dovecot, mailbox, tmp_path / "captures")


class _Conversation:
    """A raw POP3 connection that sends one command at a time and reads its whole answer."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=30)
        self.file = self.sock.makefile("rb")
        self.greeting = self.file.readline()

    def command(self, line: bytes) -> tuple[bytes, bytes | None]:
        """(status line, multi-line body as sent or None)."""
        self.sock.sendall(line + b"\r\n")
        status = self.file.readline()
        words = line.split()
        multi = words[0].upper() in (b"RETR", b"TOP") or (
            words[0].upper() in _MULTI_WITHOUT_ARG and len(words) == 1
        )
        if not (status.startswith(b"+OK") and multi):
            return status, None
        body = bytearray()
        while True:
            chunk = self.file.readline()
            if chunk in (b".\r\n", b""):
                return status, bytes(body)
            body += chunk

    def drop(self) -> None:
        """Leave without QUIT: nothing marked is deleted (RFC 1939 §6)."""
        self.file.close()
        self.sock.close()


def _random_commands(rng: random.Random, count: int, length: int) -> list[bytes]:
    def number() -> int:
        return rng.randint(0, count + 1)

    makers = [
        lambda: b"STAT",
        lambda: b"LIST",
        lambda: b"UIDL",
        lambda: b"RSET",
        lambda: b"NOOP",
        lambda: b"LIST %d" % number(),
        lambda: b"UIDL %d" % number(),
        lambda: b"RETR %d" % number(),
        lambda: b"DELE %d" % number(),
        lambda: b"TOP %d %d" % (number(), rng.randint(0, 6)),
    ]
    return [rng.choice(makers)() for _ in range(length)]


def _same_answer(
    line: bytes, dovecot: tuple[bytes, bytes | None], model: tuple[bytes, bytes | None]
) -> None:
    verb = line.split()[0]
    assert dovecot[0][:3] == model[0][:3], (line, dovecot[0], model[0])
    if not dovecot[0].startswith(b"+OK"):
        return
    if verb == b"STAT" or (verb in (b"LIST", b"UIDL") and len(line.split()) == 2):
        assert dovecot[0] == model[0], line  # "+OK n size", "+OK n uid" (RFC 1939 §5, §7)
    assert dovecot[1] == model[1], line


def test_model_answers_like_dovecot_for_random_command_sequences(
    dovecot: Dovecot, recorded: tuple[Mailbox, Path]
) -> None:
    """The same random sessions against Dovecot and against the model of its capture give
    the same statuses, counts, listings and message bytes."""
    mailbox, capture = recorded
    rng = random.Random(20261205)
    with replay_server(capture, model=True, model_shared=True) as model:
        for _round in range(12):
            commands = _random_commands(rng, len(mailbox.messages), 14)
            real = _Conversation(dovecot.host, dovecot.pop3_port)
            fake = _Conversation(model.host, model.port)
            try:
                for conversation in (real, fake):
                    assert conversation.command(b"USER " + mailbox.user.encode())[0][:3] == b"+OK"
                    password = b"PASS " + mailbox.password.encode()
                    assert conversation.command(password)[0][:3] == b"+OK"
                for line in commands:
                    _same_answer(line, real.command(line), fake.command(line))
            finally:
                real.drop()
                fake.drop()
    assert len(dovecot.mailbox_messages(mailbox.user)) == len(mailbox.messages)


def _lf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")


def _fetch_poplib(host: str, port: int, mailbox: Mailbox, _work: Path) -> list[bytes]:
    client = poplib.POP3(host, port, timeout=30)
    client.user(mailbox.user)
    client.pass_(mailbox.password)
    count, _size = client.stat()
    messages = [b"\r\n".join(client.retr(n)[1]) + b"\r\n" for n in range(count, 0, -1)]
    client.quit()
    return messages[::-1]


def _fetch_curl(host: str, port: int, mailbox: Mailbox, _work: Path) -> list[bytes]:
    url = f"pop3://{host}:{port}/"
    listing = curl(_require_binary("curl"), url, "-u", f"{mailbox.user}:{mailbox.password}")
    count = len(listing.splitlines())
    return [
        curl(_require_binary("curl"), f"{url}{n}", "-u", f"{mailbox.user}:{mailbox.password}")
        for n in range(1, count + 1)
    ]


def _fetch_mpop(host: str, port: int, mailbox: Mailbox, work: Path) -> list[bytes]:
    binary = _require_binary("mpop")
    maildir = work / "mpop"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    result = subprocess.run(
        [
            binary,
            f"--host={host}",
            f"--port={port}",
            "--tls=off",
            "--auth=user",
            f"--user={mailbox.user}",
            f"--passwordeval=echo {mailbox.password}",
            f"--deliver=maildir,{maildir}",
            "--keep=on",
            "--only-new=off",
            f"--uidls-file={work / 'mpop.uidls'}",
            "--received-header=off",
        ],
        capture_output=True,
        timeout=60,
        check=False,
        env={**os.environ, "HOME": str(work)},
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    files = sorted((maildir / "new").iterdir(), key=lambda p: p.name)
    return [p.read_bytes() for p in files]


def _fetch_fetchmail(host: str, port: int, mailbox: Mailbox, work: Path) -> list[bytes]:
    binary = _require_binary("fetchmail")
    out = work / "fetchmail"
    out.mkdir()
    rc = work / "fetchmailrc"
    rc.write_text(
        "set no syslog\nset invisible\n"
        f"poll {host} service {port} protocol POP3 uidl auth password timeout 30:\n"
        f'  user "{mailbox.user}" there password "{mailbox.password}" is root here\n'
        "  keep fetchall sslproto ''\n"
        f"  mda \"/bin/sh -c 'cat > {out}/%F.$$'\"\n"
    )
    rc.chmod(0o600)
    result = subprocess.run(
        [binary, "-f", str(rc), "-N", "--pidfile", str(work / "fetchmail.pid")],
        capture_output=True,
        timeout=60,
        check=False,
        env={**os.environ, "HOME": str(work)},
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    files = sorted(out.iterdir(), key=lambda p: int(p.name.rsplit(".", 1)[1]))
    return [p.read_bytes() for p in files]


_FETCHERS = {
    "poplib": _fetch_poplib,
    "curl": _fetch_curl,
    "mpop": _fetch_mpop,
    "fetchmail": _fetch_fetchmail,
}


@pytest.mark.parametrize("client", sorted(_FETCHERS))
def test_real_clients_fetch_every_message_from_the_model(
    client: str, recorded: tuple[Mailbox, Path], tmp_path: Path
) -> None:
    mailbox, capture = recorded
    with replay_server(capture, model=True) as model:
        got = _FETCHERS[client](model.host, model.port, mailbox, tmp_path)
    if client in ("mpop", "fetchmail"):  # local delivery ends lines with LF
        assert [_lf(m) for m in got] == [_lf(m) for m in mailbox.messages]
    else:
        assert got == list(mailbox.messages)


def test_a_deletion_persists_across_connections_and_reset_restores(
    recorded: tuple[Mailbox, Path],
) -> None:
    mailbox, capture = recorded
    count = len(mailbox.messages)
    with replay_server(capture, model=True, model_persist=True) as model:
        client = poplib.POP3(model.host, model.port, timeout=30)
        client.user(mailbox.user)
        client.pass_("any: the capture masked it")
        first_uids = client.uidl()[1]
        client.dele(1)
        client.quit()
        client = poplib.POP3(model.host, model.port, timeout=30)
        client.user(mailbox.user)
        client.pass_("x")
        assert client.stat()[0] == count - 1
        assert client.uidl()[1] == [
            b"%d %s" % (n, line.split()[1]) for n, line in enumerate(first_uids[1:], start=1)
        ]
        client.quit()
        model.reset_model()
        assert model.message_count(mailbox.user) == count


def test_a_second_login_gets_in_use(recorded: tuple[Mailbox, Path]) -> None:
    mailbox, capture = recorded
    with replay_server(capture, model=True) as model:
        holder = poplib.POP3(model.host, model.port, timeout=30)
        holder.user(mailbox.user)
        holder.pass_("x")
        other = poplib.POP3(model.host, model.port, timeout=30)
        other.user(mailbox.user)
        with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
            other.pass_("x")
        other.quit()
        holder.quit()


# --------------------------------------------------------------------------- message files


def _write_messages(directory: Path, count: int, body_size: int) -> list[bytes]:
    directory.mkdir()
    messages = []
    filler = (b"y" * 70 + b"\r\n") * (body_size // 72 + 1)
    for n in range(count):
        message = f"Subject: message {n}\r\nMessage-ID: <{n}@test>\r\n\r\n".encode() + filler
        (directory / f"{n:05d}.eml").write_bytes(message)
        messages.append(message)
    return messages


def _serve_and_fetch_all(tmp_path: Path, name: str, body_size: int) -> tuple[int, list[str]]:
    """Start ``pop3tap replay --model --messages``; poplib fetches every message."""
    messages = _write_messages(tmp_path / name, 1000, body_size)
    work = tmp_path / f"{name}-run"
    work.mkdir()
    with pop3tap_process("replay", work, "--model", "--messages", str(tmp_path / name)) as proc:
        client = poplib.POP3(proc.host, proc.port, timeout=60)
        client.user("tester")
        client.pass_("x")
        assert client.stat()[0] == len(messages)
        digests = [
            hashlib.sha256(b"\r\n".join(client.retr(n)[1]) + b"\r\n").hexdigest()
            for n in range(1, len(messages) + 1)
        ]
        client.quit()
        peak = proc.rss_peak_kib()
    assert digests == [hashlib.sha256(m).hexdigest() for m in messages]
    return peak, digests


def test_a_thousand_message_files_are_served_with_flat_memory(tmp_path: Path) -> None:
    """Bodies are read from disk on RETR: 1000 messages of 32 KiB (32 MiB in all) cost
    the server about what 1000 messages of 100 bytes do."""
    small_peak, _ = _serve_and_fetch_all(tmp_path, "small", 100)
    large_peak, _ = _serve_and_fetch_all(tmp_path, "large", 32 * 1024)
    assert large_peak - small_peak < 12 * 1024, (small_peak, large_peak)


def test_message_files_over_pop3s_and_stls(tmp_path: Path, tls_ca: trustme.CA) -> None:
    messages = _write_messages(tmp_path / "msgs", 3, 500)
    leaf = tls_ca.issue_cert("127.0.0.1", "localhost")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    leaf.private_key_and_cert_chain_pem.write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    context = ssl.create_default_context()
    tls_ca.configure_trust(context)
    options = {"model": True, "messages": tmp_path / "msgs", "cert": cert, "key": key}
    with replay_server([], listen_tls=True, **options) as model:
        client = poplib.POP3_SSL(model.host, model.port, context=context, timeout=30)
        client.user("u")
        client.pass_("p")
        assert b"\r\n".join(client.retr(2)[1]) + b"\r\n" == messages[1]
        client.quit()
    with replay_server([], **options) as model:
        client = poplib.POP3(model.host, model.port, timeout=30)
        assert "STLS" in client.capa()
        client.stls(context)
        assert "STLS" not in client.capa()
        client.user("u")
        client.pass_("p")
        assert client.stat()[0] == 3
        client.quit()


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    import sys

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pop3tap", "replay", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    missing = run("--model", "--messages", str(tmp_path / "nope"))
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
    assert "no such file" in missing.stderr
    unreadable_dir = tmp_path / "bad"
    unreadable_dir.mkdir()
    (unreadable_dir / "a.eml").symlink_to(tmp_path / "dangling")
    bad = run("--model", "--messages", str(unreadable_dir))
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert "a.eml" in bad.stderr
    no_model = run("--messages", str(unreadable_dir))
    assert no_model.returncode == 2 and "--model" in no_model.stderr
    for extra in (["--by-user"], ["--workers", "2"], ["--match", "strict"]):
        refused = run("--model", str(ROOT / "captures"), *extra)
        assert refused.returncode == 2, (extra, refused.stderr)
        assert len(refused.stderr.strip().splitlines()) == 1 and extra[0] in refused.stderr


@pytest.mark.realpeer
def test_noise_after_a_message_number_is_refused_as_dovecot_does(
    dovecot: Dovecot, recorded: tuple[Mailbox, Path]
) -> None:
    """RFC 1939 §5 gives RETR, DELE, LIST and UIDL one message number: Dovecot refuses more
    (``-ERR Noise after message number``). The model must too, or ``DELE 1 2`` marks a
    message the real server keeps, and every later answer differs."""
    mailbox, capture = recorded
    lines = [b"DELE 1 2", b"RETR 2 3", b"LIST 1 1", b"UIDL 2 x", b"TOP 1 0 0", b"STAT", b"LIST"]
    with replay_server(capture, model=True) as model:
        real = _Conversation(dovecot.host, dovecot.pop3_port)
        fake = _Conversation(model.host, model.port)
        try:
            for conversation in (real, fake):
                assert conversation.command(b"USER " + mailbox.user.encode())[0][:3] == b"+OK"
                assert conversation.command(b"PASS " + mailbox.password.encode())[0][:3] == b"+OK"
            for line in lines:
                _same_answer(line, real.command(line), fake.command(line))
        finally:
            real.drop()
            fake.drop()
