"""``pop3tap export``: the mail of captured sessions, byte for byte, safely named."""

from __future__ import annotations

import hashlib
import mailbox
import os
import poplib
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from clients import running_relay
from dovecot import Dovecot, Mailbox, uidl_for
from hypothesis import given, settings
from hypothesis import strategies as st

from pop3tap.capture import Capture, CaptureWriter, iter_capture_paths, read_capture
from pop3tap.cli import main
from pop3tap.export import export_messages, safe_name


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Recorded:
    captures: list[Capture]
    box: Mailbox
    top_only: Mailbox
    directory: Path


def _wait_complete(directory: Path, count: int) -> list[Capture]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        captures = [read_capture(p) for p in iter_capture_paths([directory])]
        if len(captures) >= count and all(c.complete for c in captures):
            return captures
        time.sleep(0.02)
    raise AssertionError(f"expected {count} complete captures in {directory}")


def _mpop(host: str, port: int, box: Mailbox, work: Path, delivery: str) -> None:
    binary = shutil.which("mpop")
    if binary is None:
        from conftest import _missing_peer

        _missing_peer("'mpop' is not installed (run: bash scripts/test.sh)")
        return
    result = subprocess.run(
        [
            binary,
            f"--host={host}",
            f"--port={port}",
            "--tls=off",
            "--auth=user",
            f"--user={box.user}",
            f"--passwordeval=echo {box.password}",
            "--keep=on",
            "--received-header=off",
            f"--uidls-file={work / 'uidls'}",
            f"--delivery={delivery}",
            "--only-new=off",
            "--quiet",
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")


@pytest.fixture(scope="module")
def recorded(
    dovecot: Dovecot, corpus: list[bytes], tmp_path_factory: pytest.TempPathFactory
) -> Recorded:
    """poplib (RETR everything, one message twice, a TOP) and mpop sessions through the
    relay, plus a session that only ever used TOP."""
    work = tmp_path_factory.mktemp("export")
    box = dovecot.new_mailbox(corpus)
    top_only = dovecot.new_mailbox(corpus[:1])
    with running_relay(dovecot.host, dovecot.pop3_port, work / "captures") as relay:
        host, port = relay.host, relay.port
        client = poplib.POP3(host, port, timeout=30)
        client.user(box.user)
        client.pass_(box.password)
        client.uidl()
        for number in range(1, len(corpus) + 1):
            client.retr(number)
        client.retr(1)
        client.top(2, 0)
        client.quit()
        _mpop(host, port, box, work, f"mbox,{work / 'mpop.mbox'}")
        client = poplib.POP3(host, port, timeout=30)
        client.user(top_only.user)
        client.pass_(top_only.password)
        client.uidl()
        client.top(1, 3)
        client.quit()
        captures = _wait_complete(work / "captures", 3)
    return Recorded(captures, box, top_only, work)


@pytest.mark.realpeer
def test_eml_reproduces_every_message_once_named_by_uidl(
    recorded: Recorded, corpus: list[bytes], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "eml"
    assert main(["export", str(recorded.directory / "captures"), "--eml", str(out)]) == 0
    summary = capsys.readouterr().out
    assert "exported 4 message(s)" in summary
    assert "1 partial body(ies) skipped" in summary
    files = sorted(out.iterdir())
    assert [f.name for f in files] == sorted(f"{uidl_for(n)}.eml" for n in range(1, 5))
    for number, message in enumerate(corpus, start=1):
        assert sha((out / f"{uidl_for(number)}.eml").read_bytes()) == sha(message)
    assert all(f.stat().st_mode & 0o777 == 0o600 for f in files)


@pytest.mark.realpeer
def test_partial_bodies_are_written_marked_when_asked(
    recorded: Recorded, corpus: list[bytes], tmp_path: Path
) -> None:
    stats = export_messages(recorded.captures, "eml", tmp_path, partial=True)
    assert stats.written == 4 and stats.partial_written == 1
    partial = [p for p in tmp_path.iterdir() if ".partial" in p.name]
    assert [p.name for p in partial] == [f"{uidl_for(1)}.partial.eml"]
    data = partial[0].read_bytes()
    assert data.startswith(b"X-Pop3tap-Partial: TOP 1 3\r\n")
    head, _, body = corpus[0].partition(b"\r\n\r\n")
    assert data.removeprefix(b"X-Pop3tap-Partial: TOP 1 3\r\n") == (
        head + b"\r\n\r\n" + b"".join(body.splitlines(keepends=True)[:3])
    )


@pytest.mark.realpeer
def test_maildir_reads_back_with_mailbox_and_with_dovecot(
    recorded: Recorded, dovecot: Dovecot, corpus: list[bytes], tmp_path: Path
) -> None:
    out = tmp_path / "Maildir"
    assert main(["export", str(recorded.directory / "captures"), "--maildir", str(out)]) == 0
    assert sorted(os.listdir(out)) == ["cur", "new", "tmp"]
    assert os.listdir(out / "tmp") == []
    folder = mailbox.Maildir(out, create=False)
    assert sorted(sha(folder.get_bytes(key)) for key in folder.iterkeys()) == sorted(
        sha(m) for m in corpus
    )
    # A real reader: Dovecot serves the exported Maildir as a user's INBOX.
    reader = dovecot.add_user(dovecot.unique_user("exp"), "pw-export", [])
    target = dovecot.mail_dir / reader.user / "Maildir" / "new"
    for path in (out / "new").iterdir():
        shutil.copy(path, target / path.name)
        os.chown(target / path.name, dovecot._nobody_uid, dovecot._nogroup_gid)
    (dovecot.mail_dir / reader.user / "Maildir" / "dovecot-uidlist").unlink()
    client = poplib.POP3(dovecot.host, dovecot.pop3_port, timeout=30)
    client.user(reader.user)
    client.pass_(reader.password)
    count, _size = client.stat()
    served = []
    for number in range(1, count + 1):
        _resp, lines, _octets = client.retr(number)
        served.append(b"\r\n".join(lines) + b"\r\n")
    client.quit()
    assert sorted(sha(m) for m in served) == sorted(sha(m) for m in corpus)


@pytest.mark.realpeer
def test_mbox_reads_back_with_mailbox_like_mpops_own_delivery(
    recorded: Recorded, corpus: list[bytes], tmp_path: Path
) -> None:
    out = tmp_path / "export.mbox"
    assert main(["export", str(recorded.directory / "captures"), "--mbox", str(out)]) == 0
    ours = mailbox.mbox(out, create=False)
    ours_bytes = [ours.get_bytes(key) for key in ours.iterkeys()]
    assert ours_bytes == [m.replace(b"\r\n", b"\n") for m in corpus]
    # mpop fetched the same mailbox through the relay and delivered it itself.
    theirs = mailbox.mbox(recorded.directory / "mpop.mbox", create=False)
    assert [theirs.get_bytes(key) for key in theirs.iterkeys()] == ours_bytes
    assert out.stat().st_mode & 0o777 == 0o600


# --------------------------------------------------------------------- hostile captures


def _capture(directory: Path, server: bytes, client: bytes, session: str = "hostile01") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    writer = CaptureWriter.create(
        directory,
        session_id=session,
        header_fields={"client": "127.0.0.1:1", "upstream": "127.0.0.1:2", "listen": ""},
    )
    writer.write_data("s2c", 0.001, b"+OK ready\r\n")
    writer.write_data("c2s", 0.002, client)
    writer.write_data("s2c", 0.003, server)
    writer.close(0.004, "server closed")
    return writer.path


def test_hostile_uidls_never_leave_the_target_directory(tmp_path: Path) -> None:
    uidls = [b"../../../../tmp/evil", b"a/b", b"..", b".", b"%2e%2e", b"~root", b"-rf"]
    listing = b"".join(b"%d %s\r\n" % (n, u) for n, u in enumerate(uidls, start=1))
    client = b"UIDL\r\n" + b"".join(b"RETR %d\r\n" % n for n in range(1, len(uidls) + 1))
    server = b"+OK\r\n" + listing + b".\r\n"
    for n in range(1, len(uidls) + 1):
        server += b"+OK\r\nSubject: %d\r\n\r\nbody %d\r\n.\r\n" % (n, n)
    path = _capture(tmp_path / "caps", server, client)
    out = tmp_path / "out" / "inner"
    stats = export_messages([read_capture(path)], "eml", out)
    assert stats.written == len(uidls)
    names = sorted(os.listdir(out))
    assert len(names) == len(uidls)
    assert all("/" not in n and not n.startswith(".") for n in names)
    assert sorted(os.listdir(tmp_path / "out")) == ["inner"]
    assert "%2E%2E%2F%2E%2E%2F%2E%2E%2F%2E%2E%2Ftmp%2Fevil.eml" in names
    assert not (tmp_path / "evil").exists()


def test_truncated_retr_is_partial_and_a_planted_symlink_is_not_followed(tmp_path: Path) -> None:
    server = b"+OK\r\n1 abc\r\n.\r\n+OK\r\nSubject: cut\r\n\r\nhalf a bo"
    path = _capture(tmp_path / "caps", server, b"UIDL\r\nRETR 1\r\n")
    capture = read_capture(path)
    out = tmp_path / "out"
    assert export_messages([capture], "eml", out).partial_skipped == 1
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    os.symlink(victim, out / "abc.partial.eml")
    stats = export_messages([capture], "eml", out, partial=True)
    assert stats.partial_written == 1
    assert victim.read_bytes() == b"keep me"
    written = out / "abc-2.partial.eml"
    assert (
        written.read_bytes()
        == b"X-Pop3tap-Partial: truncated RETR 1\r\nSubject: cut\r\n\r\nhalf a bo"
    )


def test_export_to_a_symlinked_directory_is_refused(tmp_path: Path) -> None:
    path = _capture(tmp_path / "caps", b"+OK\r\nx\r\n.\r\n", b"RETR 1\r\n")
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    assert main(["export", str(path), "--eml", str(tmp_path / "link")]) == 1
    assert os.listdir(tmp_path / "real") == []


@given(st.text(max_size=300))
def test_safe_name_is_one_plain_component(text: str) -> None:
    name = safe_name(text)
    assert 0 < len(name) <= 180
    assert set(name) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_+=-%~")
    assert name not in (".", "..")


def test_the_empty_uidl_and_a_nul_get_different_names() -> None:
    assert safe_name("") != safe_name("\x00")


@given(st.text(max_size=40), st.text(max_size=40))
def test_safe_name_keeps_different_uidls_apart(first: str, second: str) -> None:
    if first != second:
        assert safe_name(first) != safe_name(second)


def _login_capture(
    directory: Path, session: str, login: bytes, answers: bytes, body: bytes
) -> Path:
    """A session that logs in with ``login`` (answered by ``answers``), then lists UIDL 1 as
    ``00000001cafe`` and retrieves message 1 holding ``body``."""
    directory.mkdir(parents=True, exist_ok=True)
    writer = CaptureWriter.create(
        directory,
        session_id=session,
        header_fields={"client": "127.0.0.1:1", "upstream": "127.0.0.1:2", "listen": ""},
    )
    writer.write_data("s2c", 0.001, b"+OK ready\r\n")
    writer.write_data("c2s", 0.002, login)
    writer.write_data("s2c", 0.003, answers)
    writer.write_data("c2s", 0.004, b"UIDL\r\nRETR 1\r\n")
    writer.write_data("s2c", 0.005, b"+OK\r\n1 00000001cafe\r\n.\r\n+OK\r\n" + body + b".\r\n")
    writer.close(0.006, "server closed")
    return writer.path


@pytest.mark.parametrize(
    ("first", "second"),
    [
        # SASL: who logged in is masked, so the mailbox is unknown.
        (
            (b"AUTH PLAIN AGFsaWNlAHB3\r\n", b"+OK\r\n"),
            (b"AUTH PLAIN AGJvYgBwdw==\r\n", b"+OK\r\n"),
        ),
        # A refused USER is not the mailbox; the accepted one is.
        (
            (b"USER alice\r\nUSER bob\r\nPASS pw\r\n", b"-ERR no\r\n+OK\r\n+OK\r\n"),
            (b"USER alice\r\nPASS pw\r\n", b"+OK\r\n+OK\r\n"),
        ),
    ],
    ids=["sasl", "refused-user"],
)
def test_same_uidl_in_two_mailboxes_is_two_messages(
    tmp_path: Path, first: tuple[bytes, bytes], second: tuple[bytes, bytes]
) -> None:
    bodies = [b"Subject: for the first\r\n\r\none\r\n", b"Subject: for the second\r\n\r\ntwo\r\n"]
    paths = [
        _login_capture(tmp_path / "caps", f"sess{n}", *login, body)
        for n, (login, body) in enumerate(zip((first, second), bodies, strict=True))
    ]
    out = tmp_path / "out"
    stats = export_messages([read_capture(p) for p in paths], "eml", out)
    assert stats.written == 2 and stats.duplicates == 0
    assert sorted(p.read_bytes() for p in out.iterdir()) == sorted(bodies)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from(["sasl", "user", "apop"]), min_size=1, max_size=5))
def test_no_message_of_a_distinct_or_unknown_mailbox_is_dropped(logins: list[str]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        bodies = []
        paths = []
        for n, kind in enumerate(logins):
            login, answers = {
                "sasl": (b"AUTH PLAIN AHUAcHc=\r\n", b"+OK\r\n"),
                "user": (b"USER u%d\r\nPASS pw\r\n" % n, b"+OK\r\n+OK\r\n"),
                "apop": (b"APOP a%d 0123456789abcdef0123456789abcdef\r\n" % n, b"+OK\r\n"),
            }[kind]
            bodies.append(b"Subject: %d\r\n\r\nmailbox %d\r\n" % (n, n))
            paths.append(_login_capture(directory / "caps", f"s{n}", login, answers, bodies[-1]))
        stats = export_messages([read_capture(p) for p in paths], "eml", directory / "out")
        assert stats.written == len(logins)
        written = sorted(p.read_bytes() for p in (directory / "out").iterdir())
        assert written == sorted(bodies)


def test_planted_fifo_and_directory_in_the_target_are_not_read(tmp_path: Path) -> None:
    import threading

    client = b"UIDL\r\nRETR 1\r\nRETR 2\r\n"
    server = b"+OK\r\n1 fifo\r\n2 dir\r\n.\r\n+OK\r\none\r\n.\r\n+OK\r\ntwo\r\n.\r\n"
    capture = read_capture(_capture(tmp_path / "caps", server, client))
    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / "fifo.eml")
    (out / "dir.eml").mkdir()
    result: list[object] = []
    worker = threading.Thread(
        target=lambda: result.append(export_messages([capture], "eml", out)), daemon=True
    )
    worker.start()
    worker.join(60)
    if worker.is_alive():  # blocked reading the FIFO: let it go, then fail
        os.close(os.open(out / "fifo.eml", os.O_WRONLY))
        worker.join(60)
        pytest.fail("export blocked on a FIFO planted in the target directory")
    assert len(result) == 1 and getattr(result[0], "written", None) == 2
    assert (out / "fifo-2.eml").read_bytes() == b"one\r\n"
    assert (out / "dir-2.eml").read_bytes() == b"two\r\n"


def test_mbox_that_is_a_fifo_or_another_users_file_gets_no_mail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _capture(tmp_path / "caps", b"+OK\r\nSubject: private\r\n\r\nx\r\n.\r\n", b"RETR 1\r\n")
    fifo = tmp_path / "planted.mbox"
    os.mkfifo(fifo, 0o666)
    listener = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # someone waiting for the mail
    try:
        assert main(["export", str(path), "--mbox", str(fifo)]) == 1
        try:
            leaked = os.read(listener, 65536)
        except BlockingIOError:
            leaked = b""
        assert leaked == b""
    finally:
        os.close(listener)
    if os.geteuid() != 0:
        return  # only root can give a file to another user
    foreign = tmp_path / "foreign.mbox"
    foreign.write_bytes(b"")
    os.chown(foreign, 65534, 65534)
    foreign.chmod(0o666)
    assert main(["export", str(path), "--mbox", str(foreign)]) == 1
    assert foreign.read_bytes() == b""
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("pop3tap: ") for line in err)


@pytest.mark.parametrize("planted", ["other-writable", "other-owner", "maildir-sub"])
def test_target_another_user_controls_is_refused(tmp_path: Path, planted: str) -> None:
    # Whoever can write the directory can swap a message for their own between the
    # write and the link, or delete it: the export would not be the mail.
    path = _capture(tmp_path / "caps", b"+OK\r\nSubject: x\r\n\r\nx\r\n.\r\n", b"RETR 1\r\n")
    target = tmp_path / "shared"
    target.mkdir(mode=0o700)
    fmt = "--maildir" if planted == "maildir-sub" else "--eml"
    inner = target / "tmp" if planted == "maildir-sub" else target
    inner.mkdir(mode=0o700, exist_ok=True)
    if planted == "other-owner":
        if os.geteuid() != 0:
            pytest.skip("only root can give a directory to another user")
        os.chown(inner, 65534, 65534)
    else:
        inner.chmod(0o777)
    assert main(["export", str(path), fmt, str(target)]) == 1
    assert [p for p in target.rglob("*") if p.is_file()] == []


def test_same_message_in_two_sessions_of_unknown_mailboxes_is_a_duplicate_not_already_there(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = b"Subject: same\r\n\r\nsame bytes\r\n"
    for n in (1, 2):
        _login_capture(tmp_path / "caps", f"sasl{n}", b"AUTH PLAIN AHUAcHc=\r\n", b"+OK\r\n", body)
    out = tmp_path / "out"
    assert main(["export", str(tmp_path / "caps"), "--eml", str(out)]) == 0
    line = capsys.readouterr().out
    assert line == f"exported 1 message(s) to {out} (1 duplicate retrieval(s) written once)\n"
    assert main(["export", str(tmp_path / "caps"), "--eml", str(out)]) == 0
    assert capsys.readouterr().out == f"exported 0 message(s) to {out} (2 already there)\n"
