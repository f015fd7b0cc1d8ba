"""``pop3tap console`` in a real terminal (tmux) against the test Dovecot.

Each test types into the console as a person would, waits for what the screen shows
(polling capture-pane), and checks the mailbox Dovecot keeps on disk afterwards.
"""

from __future__ import annotations

import os
import poplib
import re
import shutil
import signal
import sys
from pathlib import Path

import pytest
from conftest import _missing_peer
from dovecot import Dovecot, Mailbox
from terminal import Tmux

import pop3tap
from pop3tap.capture import iter_capture_paths, read_capture
from pop3tap.render import render_lines

pytestmark = pytest.mark.realpeer

PROMPT = r"(?m)pop3 127\.0\.0\.1:\d+>"


@pytest.fixture(scope="session")
def tmux_path() -> str:
    path = shutil.which("tmux")
    if path is None:
        _missing_peer("'tmux' is not installed (run: bash scripts/test.sh)")
        raise AssertionError("unreachable")
    return path


def console_command(dovecot: Dovecot, mode: str, captures: Path, *extra: str) -> list[str]:
    port = dovecot.pop3s_port if mode == "tls" else dovecot.pop3_port
    return [
        sys.executable, "-m", "pop3tap", "console", f"127.0.0.1:{port}", f"--{mode}",
        "--upstream-ca", str(dovecot.ca_pem_path), "--captures", str(captures), *extra,
    ]  # fmt: skip


def start_console(tmux_path: str, dovecot: Dovecot, mode: str, tmp_path: Path, *extra: str) -> Tmux:
    # No password in the environment: the console has to ask for it.
    env = {"POP3TAP_PASSWORD": "", "TERM": "xterm-256color", "HOME": str(tmp_path)}
    return Tmux(
        console_command(dovecot, mode, tmp_path / "caps", *extra),
        directory=tmp_path,
        env=env,
        tmux=tmux_path,
    )


def log_in(term: Tmux, box: Mailbox, *, typed_user: bool) -> None:
    """Log in, typing the password at the hidden prompt."""
    if typed_user:
        term.wait_for(PROMPT)
        run(term, f"USER {box.user}", r"(?m)^pop3 .*> USER .*\n\+OK$")
        term.line("PASS")
    term.wait_for("Password for")
    term.type(box.password)
    term.keys("Enter")
    term.wait_for(r"\+OK Logged in\.")
    term.wait_for(PROMPT, count=3 if typed_user else 1)


def run(term: Tmux, line: str, expect: str) -> str:
    """Type a command once the prompt is drawn, wait for ``expect`` and the next prompt."""
    prompts = len(re.findall(PROMPT, term.screen()))
    term.line(line)
    term.wait_for(expect)
    return term.wait_for(PROMPT, count=prompts + 1)


def only_capture(tmp_path: Path) -> Path:
    (path,) = iter_capture_paths([tmp_path / "caps"])
    return path


@pytest.mark.parametrize(("mode", "typed_user"), [("starttls", False), ("tls", True)])
def test_delete_3_and_quit_after_confirmation_removes_exactly_message_3(
    tmux_path: str,
    dovecot: Dovecot,
    corpus: list[bytes],
    tmp_path: Path,
    mode: str,
    typed_user: bool,
) -> None:
    box = dovecot.new_mailbox(corpus)
    extra = () if typed_user else ("--user", box.user)
    with start_console(tmux_path, dovecot, mode, tmp_path, *extra) as term:
        screen = term.wait_for("capabilities:", count=2 if mode == "starttls" else 1)
        assert "TLS is up" in screen if mode == "starttls" else "TLSv1" in screen
        assert "SASL" in screen and "AUTH mechanisms: PLAIN, LOGIN" in screen
        log_in(term, box, typed_user=typed_user)
        run(term, "LIST", r"(?m)^4 3145728$")
        run(term, "headers 1", r"Subject: small message")
        run(term, "DELE 3", r"message 3 is marked")
        term.line("QUIT")
        screen = term.wait_for(r"Send QUIT\? \[y/N\]")
        # The confirmation names the marked message: number, size, subject.
        assert "388 octets" in screen
        assert "Grüße aus Köln" in screen
        assert "Logging out" not in screen  # nothing sent yet
        term.line("y")
        term.wait_for(r"\+OK Logging out, messages deleted\.")
        assert term.wait_exit() == 0
        screen = term.screen()
    assert box.password not in screen
    dovecot.wait_disconnected(box.user)
    assert dovecot.mailbox_messages(box.user) == [corpus[0], corpus[1], corpus[3]]

    # The capture shows the exchanges, with the password masked.
    path = only_capture(tmp_path)
    assert box.password.encode() not in path.read_bytes()
    view = "\n".join(render_lines(read_capture(path)))
    for expected in ("[tx] PASS ********", "[tx] LIST", "[tx] TOP 1 0", "[tx] DELE 3"):
        assert expected in view
    assert "[rx] +OK Logging out, messages deleted." in view


def test_quit_answered_no_sends_nothing_and_ctrl_d_keeps_the_mark(
    tmux_path: str, dovecot: Dovecot, corpus: list[bytes], tmp_path: Path
) -> None:
    box = dovecot.new_mailbox(corpus)
    with start_console(tmux_path, dovecot, "tls", tmp_path, "--user", box.user) as term:
        log_in(term, box, typed_user=False)
        run(term, "DELE 1", "message 1 is marked")
        term.line("QUIT")
        term.wait_for(r"\[y/N\]")
        term.line("n")
        term.wait_for("QUIT not sent")
        run(term, "marks", r"1 message marked for deletion")
        term.keys("C-d")
        term.wait_for("Ctrl-D: connection closed without QUIT")
        assert term.wait_exit() == 0
    dovecot.wait_disconnected(box.user)
    assert dovecot.mailbox_messages(box.user) == corpus
    assert b"QUIT" not in read_capture(only_capture(tmp_path)).stream("c2s")


def test_ctrl_c_after_dele_2_leaves_message_2_on_the_server(
    tmux_path: str, dovecot: Dovecot, corpus: list[bytes], tmp_path: Path
) -> None:
    box = dovecot.new_mailbox(corpus)
    with start_console(tmux_path, dovecot, "starttls", tmp_path, "--user", box.user) as term:
        log_in(term, box, typed_user=False)
        run(term, "DELE 2", r"\+OK Marked to be deleted\.")
        term.keys("C-c")
        screen = term.wait_for("connection closed without QUIT, so nothing was deleted")
        assert "the marks on 2 were dropped" in screen
        assert term.wait_exit() == 130
        assert "Traceback" not in term.screen()
    dovecot.wait_disconnected(box.user)
    assert dovecot.mailbox_messages(box.user) == corpus
    capture = read_capture(only_capture(tmp_path))
    assert capture.complete and b"QUIT" not in capture.stream("c2s")
    assert b"DELE 2" in capture.stream("c2s")


def test_sigterm_closes_without_quit_and_keeps_the_capture(
    tmux_path: str, dovecot: Dovecot, corpus: list[bytes], tmp_path: Path
) -> None:
    box = dovecot.new_mailbox(corpus)
    with start_console(tmux_path, dovecot, "tls", tmp_path, "--user", box.user) as term:
        log_in(term, box, typed_user=False)
        run(term, "DELE 4", r"message 4 is marked")
        os.kill(term.program_pid(), signal.SIGTERM)
        term.wait_for("SIGTERM received: connection closed without QUIT")
        assert term.wait_exit() == 130
        assert "Traceback" not in term.screen()
    dovecot.wait_disconnected(box.user)
    assert dovecot.mailbox_messages(box.user) == corpus
    capture = read_capture(only_capture(tmp_path))
    assert capture.complete and b"QUIT" not in capture.stream("c2s")


def test_history_recalls_commands_and_tab_completes_verbs_and_numbers(
    tmux_path: str, dovecot: Dovecot, corpus: list[bytes], tmp_path: Path
) -> None:
    box = dovecot.new_mailbox(corpus)
    with start_console(tmux_path, dovecot, "tls", tmp_path) as term:
        log_in(term, box, typed_user=True)
        run(term, "LIST", r"(?m)^4 3145728$")
        term.type("hea")
        term.wait_for(PROMPT + " hea$")
        term.keys("Tab")
        term.wait_for(PROMPT + " headers$")
        term.line(" 2")
        term.wait_for("Subject: lines that begin with a dot")
        term.wait_for(PROMPT, count=5)
        term.type("UID")
        term.wait_for(PROMPT + " UID$")
        term.keys("Tab")
        term.wait_for(PROMPT + " UIDL$")
        term.type(" ")
        term.keys("Tab")  # the menu offers the message numbers with their sizes
        term.wait_for(r"4\s+3145728 octets")
        term.keys("Tab")  # selects the first: 1
        term.wait_for(PROMPT + " UIDL 1$")
        term.keys("Enter")
        term.wait_for(r"\+OK 1 00000001")
        term.wait_for(PROMPT, count=6)
        # History: Up recalls earlier commands (the third one back is LIST).
        term.keys("Up", "Up", "Up")
        term.wait_for(PROMPT + " LIST$")
        term.keys("Enter")
        screen = term.wait_for(r"(?m)^4 3145728$", count=2)
        term.keys("C-d")
        term.wait_exit()
    assert box.password not in screen


def test_console_capture_replays_to_a_poplib_client_sending_the_same_commands(
    tmux_path: str, dovecot: Dovecot, corpus: list[bytes], tmp_path: Path
) -> None:
    box = dovecot.new_mailbox(corpus)
    with start_console(tmux_path, dovecot, "starttls", tmp_path, "--user", box.user) as term:
        log_in(term, box, typed_user=False)
        run(term, "LIST", r"(?m)^4 3145728$")
        run(term, "headers 1", "Subject: small message")
        term.line("QUIT")
        term.wait_for(r"\+OK Logging out\.")
        term.wait_exit()
    path = only_capture(tmp_path)
    with pop3tap.replay_server(path, ca_dir=tmp_path / "ca", match="strict") as server:
        client = poplib.POP3(server.host, server.port, timeout=30)
        assert client.stls(server.ssl_context()).startswith(b"+OK")  # CAPA, then STLS
        assert "USER" in client.capa()
        client.user(box.user)
        client.pass_("not the password: masked secrets match anything")
        _resp, listing, _size = client.list()
        assert listing[-1] == b"4 3145728"
        _resp, head, _size = client.top(1, 0)
        assert b"Subject: small message" in head
        assert client.quit().startswith(b"+OK Logging out")
    assert server.all_played and not server.unmatched


def test_a_password_typed_after_pass_out_of_telnet_habit_never_shows(
    tmux_path: str, dovecot: Dovecot, corpus: list[bytes], tmp_path: Path
) -> None:
    """The recipe's habit is ``PASS secret`` on one line: the console refuses the line,
    and the secret is drawn as ``*`` as it is typed, so no screen or scrollback holds it."""
    box = dovecot.new_mailbox(corpus)
    with start_console(tmux_path, dovecot, "tls", tmp_path) as term:
        term.wait_for(PROMPT)
        run(term, f"USER {box.user}", r"(?m)^\+OK$")
        term.type(f"PASS {box.password[:4]}")
        screen = term.wait_for(PROMPT + r" PASS \*{4}$")
        assert box.password[:4] not in screen.splitlines()[-1]
        term.type(box.password[4:])
        term.keys("Enter")
        term.wait_for("PASS takes no secret on the command line")
        term.wait_for(PROMPT, count=3)
        term.line(f"APOP {box.user} {box.password}")
        term.wait_for("APOP takes no secret on the command line")
        term.keys("Up")  # a refused secret line is not in the history either
        term.wait_for(PROMPT + f" USER {box.user}$", count=2)
        term.keys("C-u", "C-d")
        term.wait_exit()
        screen = term.screen()
    assert box.password not in screen
    assert box.password[:4] not in screen


def test_a_pasted_block_with_a_pass_line_never_shows_the_password(
    tmux_path: str, dovecot: Dovecot, corpus: list[bytes], tmp_path: Path
) -> None:
    """Pasting the recipe (``USER x`` and ``PASS secret`` lines at once, bracketed paste)
    puts several lines in the buffer: the secret is masked on every one of them."""
    box = dovecot.new_mailbox(corpus)
    with start_console(tmux_path, dovecot, "tls", tmp_path) as term:
        term.wait_for(PROMPT)
        term._run("set-buffer", "-b", "recipe", f"USER {box.user}\nPASS {box.password}")
        term._run("paste-buffer", "-p", "-b", "recipe", "-t", term.target)
        term.wait_for(r"PASS \*+")
        term.keys("Enter")
        term.wait_for("one command per line")
        term.wait_for(PROMPT, count=2)
        term.keys("Up")  # the pasted block is not in the history either
        term.keys("C-u", "C-d")
        term.wait_exit()
        screen = term.screen()
    assert box.password not in screen
