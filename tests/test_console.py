"""``pop3tap console``: scripted use against Dovecot, hostile servers, and the pieces of
the console that need no server (secret handling, terminal safety, script checks)."""

from __future__ import annotations

import base64
import io
import os
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
import trustme
from dovecot import Dovecot, Mailbox, free_port
from hypothesis import given
from hypothesis import strategies as st
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document

from pop3tap.capture import EventRecord, iter_capture_paths, read_capture
from pop3tap.console import Console, Outcome, SecretSource, check_script, line_has_secret
from pop3tap.console._link import LinkConfig, Pop3Link, SessionRecorder
from pop3tap.console._render import BodyPreview, terminal_safe
from pop3tap.console._secrets import secret_offset
from pop3tap.console._terminal import Pop3Completer, ScriptDisplay, SecretFreeHistory
from pop3tap.protocol import mask_line
from pop3tap.relay import Endpoint

realpeer = pytest.mark.realpeer


def console(
    server: str, *args: str, script: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``pop3tap console`` with ``script`` on stdin (not a terminal: scripted mode)."""
    environment = {k: v for k, v in os.environ.items() if k != "POP3TAP_PASSWORD"}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "pop3tap", "console", server, *args],
        input=script,
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        check=False,
    )


def dovecot_args(dovecot: Dovecot, tmp_path: Path, mode: str = "starttls") -> list[str]:
    port = dovecot.pop3s_port if mode == "tls" else dovecot.pop3_port
    return [
        f"127.0.0.1:{port}", f"--{mode}", "--upstream-ca", str(dovecot.ca_pem_path),
        "--captures", str(tmp_path / "caps"),
    ]  # fmt: skip


def run_script(
    dovecot: Dovecot, box: Mailbox, tmp_path: Path, script: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    server, *args = dovecot_args(dovecot, tmp_path)
    return console(
        server,
        *args,
        "--user",
        box.user,
        *extra,
        script=script,
        env={"POP3TAP_PASSWORD": box.password},
    )


def captures(tmp_path: Path) -> list[Path]:
    directory = tmp_path / "caps"
    return iter_capture_paths([directory]) if directory.exists() else []


def errors(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("pop3tap:")]


# --------------------------------------------------------------------------- scripted use


@realpeer
def test_script_runs_in_order_and_exits_0(
    dovecot: Dovecot, corpus: list[bytes], tmp_path: Path
) -> None:
    box = dovecot.new_mailbox(corpus)
    result = run_script(dovecot, box, tmp_path, "STAT\nLIST\nheaders 2\n# a comment\nQUIT\n")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "> PASS ********" in out and "+OK Logged in." in out
    assert "+OK 4 3146682" in out
    assert "Subject: lines that begin with a dot" in out
    assert out.rstrip().endswith("+OK Logging out.")
    assert "Traceback" not in result.stderr
    (path,) = captures(tmp_path)
    assert box.password.encode() not in path.read_bytes()
    assert box.password not in out + result.stderr
    dovecot.wait_disconnected(box.user)
    assert dovecot.mailbox_messages(box.user) == corpus


@realpeer
def test_script_stops_at_the_first_err_without_quit(
    dovecot: Dovecot, corpus: list[bytes], tmp_path: Path
) -> None:
    box = dovecot.new_mailbox(corpus)
    result = run_script(dovecot, box, tmp_path, "DELE 1\nRETR 99\nNOOP\nQUIT\n", "--confirm-quit")
    assert result.returncode == 3
    assert errors(result) == ["pop3tap: stdin:2: RETR 99: failed; stopping (--keep-going goes on)"]
    assert "closed without QUIT, so nothing was deleted" in result.stderr
    (path,) = captures(tmp_path)
    sent = read_capture(path).stream("c2s")
    assert b"RETR 99" in sent and b"NOOP" not in sent and b"QUIT" not in sent
    dovecot.wait_disconnected(box.user)
    assert dovecot.mailbox_messages(box.user) == corpus  # the DELE was never committed


@realpeer
def test_keep_going_runs_every_line_and_still_exits_non_zero(
    dovecot: Dovecot, corpus: list[bytes], tmp_path: Path
) -> None:
    box = dovecot.new_mailbox(corpus)
    result = run_script(dovecot, box, tmp_path, "RETR 99\nNOOP\nQUIT\n", "--keep-going")
    assert result.returncode == 3
    assert "-ERR There's no message 99." in result.stdout
    assert result.stdout.rstrip().endswith("+OK Logging out.")


@realpeer
def test_script_with_marks_and_quit_needs_confirm_quit(
    dovecot: Dovecot, corpus: list[bytes], tmp_path: Path
) -> None:
    box = dovecot.new_mailbox(corpus)
    refused = run_script(dovecot, box, tmp_path, "LIST\nDELE 1\nQUIT\n")
    assert refused.returncode == 2
    assert "--confirm-quit" in refused.stderr and "line 2" in refused.stderr
    assert captures(tmp_path) == []  # refused before connecting: nothing was sent
    assert dovecot.mailbox_messages(box.user) == corpus

    confirmed = run_script(dovecot, box, tmp_path, "LIST\nDELE 1\nQUIT\n", "--confirm-quit")
    assert confirmed.returncode == 0, confirmed.stderr
    assert "+OK Logging out, messages deleted." in confirmed.stdout
    dovecot.wait_disconnected(box.user, count=1)
    assert dovecot.mailbox_messages(box.user) == corpus[1:]


@realpeer
def test_rset_before_quit_needs_no_confirmation_and_a_script_without_quit_deletes_nothing(
    dovecot: Dovecot, corpus: list[bytes], tmp_path: Path
) -> None:
    box = dovecot.new_mailbox(corpus)
    result = run_script(dovecot, box, tmp_path, "DELE 1\nRSET\nQUIT\n")
    assert result.returncode == 0, result.stderr
    result = run_script(dovecot, box, tmp_path, "DELE 2\n")
    assert result.returncode == 0, result.stderr
    assert "end of script: connection closed without QUIT" in result.stderr
    dovecot.wait_disconnected(box.user, count=2)
    assert dovecot.mailbox_messages(box.user) == corpus


@realpeer
def test_script_file_retr_all_save_and_summary(
    dovecot: Dovecot, corpus: list[bytes], tmp_path: Path
) -> None:
    box = dovecot.new_mailbox(corpus)
    script = tmp_path / "commands.txt"
    two, four = tmp_path / "two.eml", tmp_path / "four.eml"
    script.write_text(f"RETR 2 --all\nRETR 4\nsave 2 {two}\nsave 4 {four}\nQUIT\n")
    server, *args = dovecot_args(dovecot, tmp_path, "tls")
    result = console(
        server,
        *args,
        "--user",
        box.user,
        "--script",
        str(script),
        env={"POP3TAP_PASSWORD": box.password},
    )
    assert result.returncode == 0, result.stderr
    # RETR --all: the whole message, dot-unstuffed.
    out = result.stdout.split("> RETR 2\n+OK 333 octets\n", 1)[1]
    assert out.startswith(corpus[1].decode().replace("\r\n", "\n"))
    # RETR without --all: headers, size, first lines, and how to see the rest.
    assert "message 4: 3145728 octets" in result.stderr
    assert "RETR 4 --all shows them, save 4 FILE writes the whole message" in result.stderr
    assert len(result.stdout) < 100_000
    # save: the exact message, private to the user.
    assert (tmp_path / "two.eml").read_bytes() == corpus[1]
    assert (tmp_path / "four.eml").read_bytes() == corpus[3]
    assert (tmp_path / "four.eml").stat().st_mode & 0o077 == 0
    again = console(
        server,
        *args,
        "--user",
        box.user,
        script=f"save 2 {two}\n",
        env={"POP3TAP_PASSWORD": box.password},
    )
    assert again.returncode == 3
    assert "two.eml exists; not overwritten" in again.stderr
    assert (tmp_path / "two.eml").read_bytes() == corpus[1]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


@realpeer
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5", "APOP"])
def test_auth_and_apop_log_in_and_mask_every_secret(
    dovecot: Dovecot, corpus: list[bytes], tmp_path: Path, mechanism: str
) -> None:
    box = dovecot.new_mailbox(corpus[:1])
    login = f"APOP {box.user}" if mechanism == "APOP" else f"USER {box.user}\nAUTH {mechanism}"
    server, *args = dovecot_args(dovecot, tmp_path)
    result = console(
        server, *args, script=f"{login}\nSTAT\nQUIT\n", env={"POP3TAP_PASSWORD": box.password}
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "+OK 1 " in result.stdout
    (path,) = captures(tmp_path)
    raw = path.read_bytes()
    secret = box.password.encode()
    for form in (secret, base64.b64encode(secret), base64.b64encode(b"\0" + box.user.encode())):
        assert form not in raw
    assert secret not in (result.stdout + result.stderr).encode()


@realpeer
def test_a_secret_on_the_command_line_is_never_sent(
    dovecot: Dovecot, corpus: list[bytes], tmp_path: Path
) -> None:
    box = dovecot.new_mailbox(corpus[:1])
    server, *args = dovecot_args(dovecot, tmp_path)
    result = console(server, *args, script=f"USER {box.user}\nPASS {box.password}\nQUIT\n")
    assert result.returncode == 3
    assert "PASS takes no secret on the command line" in result.stderr
    assert box.password not in result.stdout + result.stderr
    (path,) = captures(tmp_path)
    assert b"PASS" not in read_capture(path).stream("c2s")


@realpeer
@pytest.mark.parametrize("glue", ["\u00a0", ":", "="])
def test_a_secret_glued_to_pass_is_never_sent_nor_printed(
    dovecot: Dovecot, corpus: list[bytes], tmp_path: Path, glue: str
) -> None:
    """``PASS<no-break space>pw`` (Option-Space on a Mac) carries the password as surely as
    ``PASS pw``: the capture masks it, so the console must not send or print it either."""
    box = dovecot.new_mailbox(corpus[:1])
    server, *args = dovecot_args(dovecot, tmp_path)
    result = console(server, *args, script=f"USER {box.user}\nPASS{glue}{box.password}\nQUIT\n")
    assert result.returncode == 3
    assert "PASS takes no secret on the command line" in result.stderr
    assert box.password not in result.stdout + result.stderr
    (path,) = captures(tmp_path)
    assert b"PASS" not in read_capture(path).stream("c2s")


@realpeer
def test_login_without_a_password_source_stops_the_script(
    dovecot: Dovecot, corpus: list[bytes], tmp_path: Path
) -> None:
    box = dovecot.new_mailbox(corpus[:1])
    server, *args = dovecot_args(dovecot, tmp_path)
    result = console(server, *args, "--user", box.user, script="STAT\n")
    assert result.returncode == 3
    assert "no password: set POP3TAP_PASSWORD or use --netrc FILE" in result.stderr
    assert b"STAT" not in read_capture(captures(tmp_path)[0]).stream("c2s")


@pytest.mark.parametrize(
    "entry",
    [
        "machine 127.0.0.1 login bob password correct horse-battery\n",
        "machine 127.0.0.1 login bob password correct\nhorse-battery\n",
    ],
)
def test_a_malformed_netrc_is_one_line_that_never_quotes_the_file(
    tmp_path: Path, entry: str
) -> None:
    """A password with a space, unquoted, is the usual mistake: Python's netrc error
    quotes the token it stopped at, which is then a piece of the password."""
    netrc = tmp_path / "netrc"
    netrc.write_text(entry)
    netrc.chmod(0o600)
    result = console(
        "127.0.0.1:1", "--netrc", str(netrc), "--captures", str(tmp_path / "caps"),
        script="QUIT\n",
    )  # fmt: skip
    assert result.returncode == 2
    (line,) = errors(result)
    assert line.startswith(f"pop3tap: netrc file {netrc}: cannot be parsed")
    assert "horse" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


@realpeer
def test_netrc_gives_user_and_password_and_must_be_private(
    dovecot: Dovecot, corpus: list[bytes], tmp_path: Path
) -> None:
    box = dovecot.new_mailbox(corpus[:1])
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1 login {box.user} password {box.password}\n")
    netrc.chmod(0o644)
    server, *args = dovecot_args(dovecot, tmp_path)
    shared = console(server, *args, "--netrc", str(netrc), script="QUIT\n")
    assert shared.returncode == 2
    assert errors(shared) == [
        f"pop3tap: netrc file {netrc}: readable by others; run chmod 600 {netrc}"
    ]
    netrc.chmod(0o600)
    result = console(server, *args, "--netrc", str(netrc), script="STAT\nQUIT\n")
    assert result.returncode == 0, result.stderr
    assert f"> USER {box.user}" in result.stdout and "+OK Logged in." in result.stdout


# --------------------------------------------------------------------------- bad input


@realpeer
def test_tls_failure_is_one_line_with_the_upstream_ca_hint(
    dovecot: Dovecot, tmp_path: Path
) -> None:
    for mode, port in (("tls", dovecot.pop3s_port), ("starttls", dovecot.pop3_port)):
        result = console(
            f"127.0.0.1:{port}", f"--{mode}", "--captures", str(tmp_path / mode), script="STAT\n"
        )
        assert result.returncode == 1
        (line,) = errors(result)
        assert line.startswith(f"pop3tap: TLS with 127.0.0.1:{port} failed: certificate verify")
        assert line.endswith("(use --upstream-ca FILE for a private CA)")
        assert "Traceback" not in result.stderr
        (path,) = iter_capture_paths([tmp_path / mode])
        capture = read_capture(path)
        assert capture.complete
        assert any(isinstance(r, EventRecord) and r.name == "tls_failed" for r in capture.records)


def test_unreachable_server_is_one_line_and_keeps_the_capture(tmp_path: Path) -> None:
    port = free_port()
    result = console(f"127.0.0.1:{port}", "--captures", str(tmp_path / "caps"), script="STAT\n")
    assert result.returncode == 1
    assert errors(result) == [f"pop3tap: cannot connect to 127.0.0.1:{port}: Connection refused"]
    assert "Traceback" not in result.stderr
    (path,) = captures(tmp_path)
    capture = read_capture(path)
    assert capture.complete and capture.header.upstream == f"127.0.0.1:{port}"
    names = [r.name for r in capture.records if isinstance(r, EventRecord)]
    assert "upstream_connect_failed" in names


#: In ``fake_server`` replies: do the TLS handshake as the server here.
START_TLS = b"<start tls>"


@contextmanager
def fake_server(
    replies: Sequence[tuple[bytes, bytes | None]], tls: ssl.SSLContext | None = None
) -> Iterator[int]:
    """A server for cases no real one shows: send a greeting, then for each line the
    client sends, the next reply (``None``: close; ``START_TLS``: handshake with ``tls``).
    ``replies[0]`` is (b"", greeting)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            reader = conn.makefile("rb")
            for index, (expected, reply) in enumerate(replies):
                if reply == START_TLS:
                    assert tls is not None
                    conn = tls.wrap_socket(conn, server_side=True)
                    reader = conn.makefile("rb")
                    continue
                if expected:
                    line = reader.readline()
                    assert line.startswith(expected), line
                if reply is None:
                    return
                closes_next = replies[index + 1 :][:1] == [(b"", None)]
                if closes_next and not isinstance(conn, ssl.SSLSocket):
                    # The reply and the FIN leave in one segment, so the client sees both
                    # at once; sent apart, a loaded machine can let the client send its
                    # next command in between, and the case under test would not happen.
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
                    conn.sendall(reply)
                    conn.shutdown(socket.SHUT_WR)
                    return
                conn.sendall(reply)
            with suppress(OSError):
                reader.read()  # until the client closes

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        listener.close()
        thread.join(timeout=10)


GREETING = (b"", b"+OK fake ready\r\n")
NO_CAPA = (b"CAPA", b"-ERR no CAPA here\r\n")


@pytest.mark.parametrize(
    ("replies", "script", "expected"),
    [
        (
            [GREETING, NO_CAPA, (b"RETR 1", b"+OK 500 octets\r\nSubject: cut\r\n\r\nfirst"),
             (b"", None)],
            "RETR 1\n",
            "pop3tap: the server closed the connection inside message 1",
        ),
        (
            [(b"", b"HTTP/1.1 400 Bad Request\r\n")],
            "STAT\n",
            "pop3tap: the server sent this instead of a POP3 greeting: HTTP/1.1 400 Bad Request",
        ),
        (
            [GREETING, NO_CAPA, (b"STAT", b"\x1b[31mgarbage\r\n")],
            "STAT\n",
            "pop3tap: the server answered STAT with a line that is not a POP3 response: "
            "\\x1b[31mgarbage",
        ),
        (
            [GREETING, NO_CAPA, (b"NOOP", b"+OK\r\n-ERR Disconnected for inactivity.\r\n"),
             (b"", None)],
            "NOOP\nSTAT\n",
            "pop3tap: the server closed the connection while the console was idle",
        ),
        (
            [GREETING, NO_CAPA, (b"STAT", b"+OK " + b"x" * 70_000)],
            "STAT\n",
            "pop3tap: the server sent a line longer than 65536 bytes while waiting for the "
            "answer to STAT: not a POP3 server?",
        ),
    ],
    ids=["closed-mid-body", "garbage-greeting", "garbage-answer", "idle-close", "endless-line"],
)  # fmt: skip
def test_a_broken_server_ends_the_session_in_one_line(
    tmp_path: Path, replies: list[tuple[bytes, bytes | None]], script: str, expected: str
) -> None:
    with fake_server(replies) as port:
        result = console(f"127.0.0.1:{port}", "--captures", str(tmp_path / "caps"), script=script)
    assert result.returncode == 1, result.stdout + result.stderr
    assert errors(result) == [expected]
    assert "Traceback" not in result.stderr
    assert "\x1b" not in result.stdout + result.stderr
    (path,) = captures(tmp_path)
    capture = read_capture(path)
    assert capture.complete  # kept, and closed properly
    assert capture.stream("s2c").startswith(replies[0][1] or b"")


def test_stls_refused_ends_the_session_instead_of_going_on_in_plaintext(tmp_path: Path) -> None:
    replies = [GREETING, NO_CAPA, (b"STLS", b"-ERR not here\r\n")]
    with fake_server(replies) as port:
        result = console(
            f"127.0.0.1:{port}", "--starttls", "--captures", str(tmp_path / "caps"),
            script="USER bob\n",
        )  # fmt: skip
    assert result.returncode == 1
    assert errors(result) == [
        "pop3tap: the server refused STLS; not going on without TLS (drop --starttls to "
        "talk to it in plaintext)"
    ]
    assert b"USER" not in read_capture(captures(tmp_path)[0]).stream("c2s")


def test_plaintext_after_the_stls_answer_is_dropped_not_read_as_tls_data(
    tmp_path: Path, tls_ca: trustme.CA
) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("127.0.0.1").configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(ca_file))
    injected = b"+OK injected before TLS\r\n"
    replies = [
        GREETING,
        NO_CAPA,
        (b"STLS", b"+OK begin TLS\r\n" + injected),
        (b"", START_TLS),
        (b"CAPA", b"-ERR still no CAPA\r\n"),
        (b"NOOP", b"+OK inside TLS\r\n"),
        (b"QUIT", b"+OK bye\r\n"),
    ]
    with fake_server(replies, tls=context) as port:
        result = console(
            f"127.0.0.1:{port}", "--starttls", "--upstream-ca", str(ca_file),
            "--captures", str(tmp_path / "caps"), script="NOOP\nQUIT\n",
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"the server sent {len(injected)} bytes after its +OK to STLS" in result.stderr
    assert "injected" not in result.stdout
    assert "> NOOP\n+OK inside TLS" in result.stdout
    capture = read_capture(captures(tmp_path)[0])
    events = {r.name: r.fields for r in capture.records if isinstance(r, EventRecord)}
    assert events["stls_injection"]["s2c"] == len(injected)
    assert events["tls"]["dropped_s2c"] == len(injected)


def test_escape_sequences_from_the_server_never_reach_the_terminal(tmp_path: Path) -> None:
    hostile = b"+OK \x1b]0;owned\x07\x1b[2J hi \xe2\x80\xae evil\r\n"
    with fake_server([(b"", hostile), NO_CAPA, (b"QUIT", b"+OK bye\r\n")]) as port:
        result = console(f"127.0.0.1:{port}", "--captures", str(tmp_path / "caps"), script="QUIT\n")
    assert result.returncode == 0, result.stderr
    assert "+OK \\x1b]0;owned\\x07\\x1b[2J hi \\u202e evil" in result.stdout
    assert "\x1b" not in result.stdout and "\u202e" not in result.stdout


def test_usage_errors_are_one_line(tmp_path: Path) -> None:
    for args, message in [
        (["127.0.0.1", "--tls", "--starttls"], "not allowed with argument"),
        (["127.0.0.1", "--insecure", "--upstream-ca", "x.pem"], "contradict each other"),
        (["127.0.0.1", "--tls", "--upstream-ca", str(tmp_path / "none.pem")], "no such file"),
        (["127.0.0.1", "--insecure"], "add --tls (POP3S) or --starttls (STLS)"),
        (["127.0.0.1", "--starttls", "--upstream-ca", __file__], "not a readable PEM CA file"),
        (["127.0.0.1", "--user", "bob\r\nDELE 1"], "control characters"),
        (["127.0.0.1", "--script", str(tmp_path / "none.txt")], "no such file"),
        (["::1"], "write IPv6 addresses as [ADDR]:PORT"),
        (["127.0.0.1:0"], "the port cannot be 0"),
        (["127.0.0.1", "--timeout", "nan"], "positive number of seconds"),
    ]:
        result = console(*args, "--captures", str(tmp_path / "caps"))
        assert result.returncode == 2, (args, result.stderr)
        (line,) = result.stderr.splitlines()
        assert message in line


# --------------------------------------------------------------------------- pieces


def test_lines_with_secrets_are_recognised_and_kept_out_of_history() -> None:
    for line in (
        "PASS x", "pass  two words", "APOP bob 0123abcd", "AUTH PLAIN AGJvYgBw",
        "PASS\u00a0x", "pass1pw", "PASS:x", "AUTH\u00a0PLAIN x", "USER bob\nPASS x",
    ):  # fmt: skip
        assert line_has_secret(line)
    for line in ("PASS", "APOP bob", "AUTH PLAIN", "AUTH", "USER bob", "LIST 1", "PASSWORD x"):
        assert not line_has_secret(line)
    history = SecretFreeHistory()
    for line in ("USER bob", "PASS hunter2", "LIST"):
        history.append_string(line)
    assert list(history.get_strings()) == ["USER bob", "LIST"]


def test_check_script_follows_marks_through_rset() -> None:
    assert check_script(["LIST", "QUIT"]) is None
    assert check_script(["DELE 1", "RSET", "QUIT"]) is None
    assert check_script(["DELE 1"]) is None
    problem = check_script(["dele 1", "RSET", "dele 2", "quit"])
    assert problem is not None and "line 3" in problem and "line 4" in problem


@given(st.binary(max_size=200))
def test_terminal_safe_never_passes_control_characters(data: bytes) -> None:
    shown = terminal_safe(data)
    assert all(c == "\t" or c.isprintable() for c in shown)


def test_body_preview_keeps_bounded_lines_and_counts_all() -> None:
    preview = BodyPreview(keep_lines=2, message=True)
    for line in (b"Subject: s\r\n", b"\r\n", b"one\r\n", b"two\r\n", b"three\r\n"):
        preview.feed(line, True)
    assert preview.kept == ["one", "two"] and preview.more_lines == 1
    assert preview.size == 31 and preview.head_lines == 1
    assert bytes(preview.head) == b"Subject: s\r\n"


def test_completion_offers_verbs_helpers_and_known_message_numbers(tmp_path: Path) -> None:
    config = LinkConfig(server=Endpoint("127.0.0.1", 1))
    recorder = SessionRecorder(None)
    session = Console(
        Pop3Link(config, recorder),
        ScriptDisplay(confirm_quit=False),
        SecretSource(host="127.0.0.1", environ={}),
    )
    session.count = 3
    session.marks[2] = session._info(2)
    completer = Pop3Completer(session)

    def complete(text: str) -> list[str]:
        found = completer.get_completions(Document(text), CompleteEvent())
        return [c.text for c in found]

    assert complete("RE") == ["RETR"]
    assert complete("he") == ["headers", "help"]
    assert complete("dele ") == ["1", "2", "3"]
    assert complete("TOP 2 ") == []
    assert complete("NOOP ") == []
    meta = completer.get_completions(Document("DELE 2"), CompleteEvent())
    assert [c.display_meta_text for c in meta] == ["marked  "]
    session.count = 10**12  # a hostile STAT: completion stays bounded
    assert len(complete("RETR ")) == 500
    assert complete("RETR 9999") == ["9999", *(str(n) for n in range(99990, 100000))]


def read_body_through_a_socket(wire: bytes) -> tuple[bytes, list[bool]]:
    """What ``Pop3Link.read_body`` hands on for a body sent as ``wire`` (terminator included)."""
    link = Pop3Link(LinkConfig(server=Endpoint("127.0.0.1", 1), timeout=10), SessionRecorder(None))
    ours, theirs = socket.socketpair()
    link._sock = ours
    pieces: list[bytes] = []
    starts: list[bool] = []

    def sink(piece: bytes, line_start: bool) -> None:
        pieces.append(piece)
        starts.append(line_start)

    sender = threading.Thread(target=theirs.sendall, args=(wire,))
    sender.start()
    try:
        link.read_body(sink, "in a test")
    finally:
        sender.join()
        theirs.close()
        link.close()
    return b"".join(pieces), starts


_LINE = st.binary(max_size=80).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


@given(st.lists(_LINE, max_size=40), st.booleans())
def test_read_body_undoes_dot_stuffing_exactly(lines: list[bytes], bare_lf: bool) -> None:
    """RFC 1939 §3: a body line starting with '.' is sent with one more '.'."""
    end = b"\n" if bare_lf else b"\r\n"
    message = b"".join(line + end for line in lines)
    wire = b"".join((b"." + line if line.startswith(b".") else line) + end for line in lines)
    received, _starts = read_body_through_a_socket(wire + b"." + end)
    assert received == message


def test_an_overlong_body_line_comes_in_pieces_unstuffed_once() -> None:
    line = b".." + b"x" * 200_000
    received, starts = read_body_through_a_socket(line + b"\r\nnext\r\n.\r\n")
    assert received == line[1:] + b"\r\nnext\r\n"
    assert starts[0] and not starts[1] and starts[-1]


# ------------------------------------------------------------------ marks the server accepted


class RefusingDisplay(ScriptDisplay):
    """Script output that records each question and answers no."""

    def __init__(self) -> None:
        super().__init__(confirm_quit=False, out=io.StringIO(), err=io.StringIO())
        self.questions: list[str] = []

    def confirm(self, question: str) -> bool:
        self.questions.append(question)
        return False


@realpeer
def test_dele_with_a_leading_zero_is_a_mark_and_quit_asks_first(
    dovecot: Dovecot, corpus: list[bytes]
) -> None:
    """Dovecot deletes message 1 for ``DELE 01``: the console must count it as a mark."""
    box = dovecot.new_mailbox(corpus)
    display = RefusingDisplay()
    session = Console(
        Pop3Link(LinkConfig(Endpoint("127.0.0.1", dovecot.pop3_port)), SessionRecorder(None)),
        display,
        SecretSource(host="127.0.0.1", environ={"POP3TAP_PASSWORD": box.password}),
        user=box.user,
    )
    session.open()
    assert session.run_line("DELE 01") is Outcome.OK
    assert session.run_line("QUIT") is Outcome.REFUSED
    assert len(display.questions) == 1
    session.abandon("test over")
    dovecot.wait_disconnected(box.user)
    assert dovecot.mailbox_messages(box.user) == corpus


def lenient_server(ours: socket.socket, received: list[bytes]) -> None:
    """A server that accepts every command (a LIST N and TOP N 0 look-up included)."""
    with ours, ours.makefile("rb") as reader:
        for line in reader:
            received.append(line)
            words = line.split()
            verb = words[0].upper() if words else b""
            if verb == b"TOP":
                reply = b"+OK\r\nSubject: s\r\n\r\n.\r\n"
            elif verb == b"LIST" and len(words) > 1:
                reply = b"+OK " + words[1] + b" 10\r\n"
            else:
                reply = b"+OK\r\n"
            ours.sendall(reply)


_DELE_ARGUMENT = st.text(max_size=12).map(lambda t: t.translate({0: None, 10: None, 13: None}))


@given(_DELE_ARGUMENT)
def test_every_dele_the_server_accepts_makes_quit_ask(argument: str) -> None:
    """Whatever follows DELE, if the server says +OK something may be deleted at QUIT
    (RFC 1939 §6), so QUIT must ask; and a refused QUIT is never sent."""
    link = Pop3Link(LinkConfig(server=Endpoint("127.0.0.1", 1), timeout=10), SessionRecorder(None))
    ours, theirs = socket.socketpair()
    link._sock = theirs
    received: list[bytes] = []
    server = threading.Thread(target=lenient_server, args=(ours, received))
    server.start()
    display = RefusingDisplay()
    session = Console(link, display, SecretSource(host="127.0.0.1", environ={}))
    try:
        outcome = session.run_line(f"DELE {argument}")
        if outcome is Outcome.OK:
            assert session.run_line("QUIT") is Outcome.REFUSED
            assert len(display.questions) == 1
    finally:
        session.abandon("test over")
        server.join()
    assert not any(line.split()[:1] == [b"QUIT"] for line in received)


def test_a_hostile_certificate_subject_never_reaches_the_terminal(
    tmp_path: Path, tls_ca: trustme.CA
) -> None:
    """The connect line names the server certificate's subject: a hostile server chooses
    it, escape sequences (an OSC 52 clipboard write here) and bidi overrides included."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    hostile = "\x1b]52;c;b3duZWQ=\x07pop\u202eevil"
    tls_ca.issue_cert("127.0.0.1", common_name=hostile).configure_cert(context)
    replies = [(b"", START_TLS), GREETING, NO_CAPA, (b"QUIT", b"+OK bye\r\n")]
    with fake_server(replies, tls=context) as port:
        result = console(
            f"127.0.0.1:{port}", "--tls", "--insecure", "--captures", str(tmp_path / "caps"),
            script="QUIT\n",
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "NOT verified" in result.stderr
    shown = result.stdout + result.stderr
    assert "\x1b" not in shown and "\x07" not in shown and "\u202e" not in shown
    assert "CN=\\x1b]52\\;c\\;b3duZWQ=\\x07pop\\u202eevil" in result.stderr  # RFC 4514 escapes


_TYPED_LINE = st.one_of(
    st.text(max_size=30),
    st.builds(
        lambda verb, glue, rest: verb + glue + rest,
        st.sampled_from(["PASS", "pass", "APOP bob", "AUTH PLAIN", "Auth login", "apop é"]),
        st.text(max_size=3),
        st.text(max_size=20),
    ),
).map(lambda t: t.translate({0: None, 10: None, 13: None}))


@given(_TYPED_LINE)
def test_the_prompt_draws_no_more_of_a_line_than_the_capture_keeps(line: str) -> None:
    """What SecretMask leaves readable is exactly a prefix the capture masker keeps."""
    data = line.encode("utf-8", "surrogateescape")
    offset = secret_offset(line)
    if offset is None:
        assert mask_line(data) == data
    else:
        assert mask_line(data).startswith(line[:offset].encode("utf-8", "surrogateescape"))
        assert mask_line(data) != data


@realpeer
def test_save_to_a_full_disk_reads_the_rest_of_the_message_and_the_session_goes_on(
    dovecot: Dovecot, corpus: list[bytes], tmp_path: Path, tiny_disk: str
) -> None:
    """A write that fails mid-message must not leave the rest of the body in the
    connection, where the next command would read it as its answer."""
    box = dovecot.new_mailbox(corpus)
    target = Path(tiny_disk) / "big.eml"
    big = max(range(len(corpus)), key=lambda i: len(corpus[i])) + 1
    result = run_script(
        dovecot, box, tmp_path, f"save {big} {target}\nSTAT\nQUIT\n", "--keep-going"
    )
    assert result.returncode == 3, result.stdout[-600:] + result.stderr  # the save failed
    assert errors(result) == [f"pop3tap: cannot write {target}: No space left on device"]
    assert f"> STAT\n+OK {len(corpus)} {sum(len(m) for m in corpus)}" in result.stdout
    assert result.stdout.rstrip().endswith("+OK Logging out.")
    assert list(Path(tiny_disk).iterdir()) == []  # no partial file left


@realpeer
def test_a_script_whose_output_is_closed_stops_without_quit_and_exits_1(
    dovecot: Dovecot, corpus: list[bytes], tmp_path: Path
) -> None:
    """``pop3tap console ... | head -1``: once nobody reads the output, the script must not
    go on (its QUIT would commit the marks unseen), and the exit code must say it stopped."""
    box = dovecot.new_mailbox(corpus)
    server, *args = dovecot_args(dovecot, tmp_path)
    environment = {k: v for k, v in os.environ.items() if k != "POP3TAP_PASSWORD"}
    environment["POP3TAP_PASSWORD"] = box.password
    reader, writer = os.pipe()
    os.close(reader)  # the reader is gone before the first line
    with open(writer, "wb") as stdout:
        result = subprocess.run(
            [sys.executable, "-m", "pop3tap", "console", server, *args, "--user", box.user,
             "--confirm-quit"],
            input="DELE 1\nQUIT\n", stdout=stdout, stderr=subprocess.PIPE, text=True,
            env=environment, timeout=120, check=False,
        )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "pop3tap: standard output was closed; stopping" in result.stderr
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
    (path,) = captures(tmp_path)
    capture = read_capture(path)
    # It stops at the first output it cannot deliver: on connect, before the script.
    assert capture.complete and b"DELE" not in capture.stream("c2s")
    assert b"QUIT" not in capture.stream("c2s")
    assert dovecot.mailbox_messages(box.user) == corpus


@realpeer
def test_a_script_line_is_echoed_escaped(
    dovecot: Dovecot, corpus: list[bytes], tmp_path: Path
) -> None:
    """A script is input like any other (it may come with a bug report): the ``> line``
    echo of a command it sends goes through the same filter as the server's lines."""
    box = dovecot.new_mailbox(corpus)
    script = "NOOP \x1b]0;owned\x07 \u202eevil\x9b2J\nQUIT\n"
    result = run_script(dovecot, box, tmp_path, script, "--keep-going")
    assert "> NOOP \\x1b]0;owned\\x07 \\u202eevil\\x9b2J" in result.stdout, result.stdout
    assert not any(c in result.stdout for c in "\x1b\x07\u202e\x9b"), result.stdout
    assert result.stdout.rstrip().endswith("+OK Logging out.")
