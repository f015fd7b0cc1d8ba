"""Mailbox-model replay, sans-IO: the model built from captures, RFC 1939's state machine,
the recorded bytes where the state matches, and properties over random command sequences."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pop3tap.capture import CaptureWriter
from pop3tap.model import (
    ModelError,
    ModelMessage,
    ModelSession,
    ModelStore,
    Next,
    Phase,
    mailbox_from_files,
    mailboxes_from_sessions,
    synthesize,
    top_of,
    unstuff_body,
)
from pop3tap.replay import load_sessions

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "captures"
ALL_SHIPPED = [SHIPPED / f"{n}.p3cap" for n in ("user-pass", "pipelined", "auth-plain", "apop")]


def store_from(paths: list[Path], **options: object) -> ModelStore:
    sessions, _warnings = load_sessions(paths)
    return ModelStore(mailboxes_from_sessions(sessions), **options)  # type: ignore[arg-type]


class Client:
    """Drives a :class:`ModelSession` line by line and splits its answers."""

    def __init__(self, store: ModelStore) -> None:
        self.session = ModelSession(store, stamp="<1.2@test>")
        self.greeting = self.session.greeting().data

    def send(self, line: bytes) -> tuple[bool, bytes, bytes | None, bool]:
        """(ok, status line, multi-line body unstuffed or None, recorded)."""
        reply = self.session.receive_line(line)
        data = reply.data
        first, _sep, rest = data.partition(b"\r\n")
        body = None
        if rest:
            parsed = unstuff_body(data)
            assert parsed is not None, data
            body = parsed[1]
        return first.startswith(b"+OK"), first, body, reply.recorded

    def login(self, user: bytes = b"dave", password: bytes = b"anything") -> None:
        assert self.send(b"USER " + user)[0]
        ok, line, _b, _r = self.send(b"PASS " + password)
        assert ok, line


# --------------------------------------------------------------------------- building


def test_model_from_shipped_captures_knows_sizes_uids_and_bodies() -> None:
    sessions, _ = load_sessions(ALL_SHIPPED)
    boxes = mailboxes_from_sessions(sessions)
    assert set(boxes) == {"alice", "dave", "bob", None}  # AUTH PLAIN masked: user unknown
    dave = boxes["dave"]
    assert [m.size for m in dave.messages] == [233, 333, 388]
    assert [m.uid for m in dave.messages] == [f"{n:08x}5f5e1000" for n in (1, 2, 3)]
    assert all(m.body is not None for m in dave.messages)
    assert dave.greeting is not None and dave.greeting.startswith(b"+OK Dovecot")
    assert dave.capabilities is not None and b"UIDL" in dave.capabilities
    assert dave.wording.retr == "{size} octets"
    assert dave.wording.no_message == "There's no message {n}."


def test_recorded_order_gets_the_recorded_bytes_exactly() -> None:
    """Exact where recorded: the pipelined capture's commands, in order, get its bytes."""
    (session,), _ = load_sessions(SHIPPED / "pipelined.p3cap")
    client = Client(store_from([SHIPPED / "pipelined.p3cap"], tls_available=True))
    assert client.greeting == session.greeting.data
    for ex in session.exchanges:
        if ex.verb == "QUIT":
            break
        reply = client.session.receive_line(ex.line)
        assert reply.data == ex.response, ex.command
        expected_recorded = ex.verb not in ("PASS",)
        assert reply.recorded is expected_recorded, ex.command


def test_other_orders_get_consistent_generated_answers() -> None:
    client = Client(store_from([SHIPPED / "pipelined.p3cap"]))
    client.login()
    ok, line, _body, _ = client.send(b"UIDL 2")
    assert ok and line == b"+OK 2 000000025f5e1000"
    ok, line, _, _ = client.send(b"LIST 3")
    assert ok and line == b"+OK 3 388"
    ok, line, full, recorded = client.send(b"RETR 2")
    assert ok and recorded and full is not None
    ok, line, head, recorded = client.send(b"TOP 2 2")
    assert ok and not recorded and head is not None and full.startswith(head)
    assert head == top_of(full, 2)
    ok, line, _, _ = client.send(b"DELE 2")
    assert ok and line == b"+OK Marked to be deleted."
    assert client.send(b"RETR 2")[1] == b"-ERR Message is deleted."
    assert client.send(b"DELE 2")[0] is False
    assert client.send(b"STAT")[1] == b"+OK 2 621"
    ok, _, listing, _ = client.send(b"LIST")
    assert listing == b"1 233\r\n3 388\r\n"
    assert client.send(b"RETR 4")[1] == b"-ERR There's no message 4."
    assert client.send(b"RSET")[0]
    assert client.send(b"STAT")[1] == b"+OK 3 954"
    assert client.send(b"RETR 2")[0]


def test_commands_in_the_wrong_state_are_refused() -> None:
    client = Client(store_from([SHIPPED / "pipelined.p3cap"]))
    assert client.send(b"STAT")[0] is False
    assert client.send(b"RETR 1")[0] is False
    assert client.send(b"PASS x")[0] is False  # PASS without USER (RFC 1939 §7)
    client.login()
    assert client.send(b"USER dave")[0] is False
    assert client.send(b"RETR")[0] is False
    assert client.send(b"RETR x")[0] is False
    assert client.send(b"TOP 1")[0] is False
    assert client.send(b"XYZZY")[0] is False
    assert client.send(b"CAPA")[0]  # both states (RFC 2449 §5)


def test_quit_ends_the_session_and_nothing_is_read_after() -> None:
    client = Client(store_from([SHIPPED / "pipelined.p3cap"]))
    client.login()
    reply = client.session.receive_line(b"QUIT")
    assert reply.next is Next.CLOSE and reply.data.startswith(b"+OK")
    assert client.session.phase is Phase.DONE


def test_apop_is_checked_when_the_password_is_known() -> None:
    store = store_from([SHIPPED / "apop.p3cap"], passwords={"bob": "s3cret"})
    client = Client(store)
    stamp = client.session.apop_stamp
    assert stamp is not None
    good = hashlib.md5(stamp + b"s3cret", usedforsecurity=False).hexdigest().encode()
    assert client.send(b"APOP bob " + b"0" * 32)[0] is False
    assert client.send(b"APOP bob " + good)[0]


def test_a_masked_password_accepts_any_and_a_given_one_is_checked() -> None:
    open_store = store_from([SHIPPED / "user-pass.p3cap"])
    assert Client(open_store).send(b"USER alice")[0]
    client = Client(open_store)
    client.login(b"alice", b"whatever")
    strict = store_from([SHIPPED / "user-pass.p3cap"], passwords={"alice": "right"})
    client = Client(strict)
    client.send(b"USER alice")
    assert client.send(b"PASS wrong")[1] == b"-ERR [AUTH] Authentication failed."
    client.send(b"USER alice")
    assert client.send(b"PASS right")[0]


@pytest.mark.parametrize("initial", [True, False])
def test_auth_plain_with_and_without_initial_response(initial: bool) -> None:
    store = store_from([SHIPPED / "auth-plain.p3cap"], passwords={"carol": "pw"})
    client = Client(store)
    token = base64.b64encode(b"\0carol\0pw")
    if initial:
        reply = client.session.receive_line(b"AUTH PLAIN " + token)
    else:
        challenge = client.session.receive_line(b"AUTH PLAIN")
        assert challenge.data == b"+ \r\n"
        assert client.session.phase is Phase.SASL
        reply = client.session.receive_line(token)
        assert "carol" not in reply.command and "cw" not in reply.command
    assert reply.data.startswith(b"+OK"), reply.data
    bad = Client(store)
    bad.session.receive_line(b"AUTH PLAIN")
    assert bad.session.receive_line(base64.b64encode(b"\0carol\0no")).data.startswith(b"-ERR")
    cancel = Client(store)
    cancel.session.receive_line(b"AUTH PLAIN")
    assert cancel.session.receive_line(b"*").data.startswith(b"-ERR")
    assert cancel.session.phase is Phase.AUTHORIZATION


def test_lines_after_an_auth_are_logged_only_when_they_are_valid_commands() -> None:
    """SASL data a client sends after the model refused its AUTH is never logged, not even
    upper-cased; a valid command is; an unknown keyword before any AUTH keeps its case."""
    store = store_from([SHIPPED / "auth-plain.p3cap"], passwords={"carol": "pw"})
    client = Client(store)
    assert client.session.receive_line(b"xFoo bar").command == "xFoo bar"
    assert client.session.receive_line(b"AUTH XUNKNOWN").data.startswith(b"-ERR")
    assert client.session.receive_line(b"czNrcjF0").command == "********"
    assert client.session.receive_line(b"noop").command == "NOOP"


def test_second_login_to_a_held_mailbox_is_in_use_unless_shared() -> None:
    store = store_from([SHIPPED / "pipelined.p3cap"])
    first = Client(store)
    first.login()
    second = Client(store)
    second.send(b"USER dave")
    ok, line, _, _ = second.send(b"PASS x")
    assert not ok and line.startswith(b"-ERR [IN-USE]")
    first.session.close()
    third = Client(store)
    third.login()
    shared = store_from([SHIPPED / "pipelined.p3cap"], shared=True)
    Client(shared).login()
    Client(shared).login()


def test_deletions_persist_across_sessions_only_when_asked_and_reset_restores() -> None:
    for persist in (False, True):
        store = store_from([SHIPPED / "pipelined.p3cap"], persist=persist)
        client = Client(store)
        client.login()
        client.send(b"DELE 1")
        client.send(b"QUIT")
        client.session.close()
        again = Client(store)
        again.login()
        _ok, _line, uids, _ = again.send(b"UIDL")
        assert uids is not None
        expected = [b"000000025f5e1000", b"000000035f5e1000"]
        if not persist:
            expected.insert(0, b"000000015f5e1000")
        assert [line.split()[1] for line in uids.splitlines()] == expected
        assert [line.split()[0] for line in uids.splitlines()] == [
            str(n).encode() for n in range(1, len(expected) + 1)
        ]
        again.session.close()
        store.reset()
        assert store.message_count() == 3


def test_deleting_without_quit_deletes_nothing() -> None:
    store = store_from([SHIPPED / "pipelined.p3cap"], persist=True)
    client = Client(store)
    client.login()
    client.send(b"DELE 1")
    client.session.close()  # the client vanished: no UPDATE state (RFC 1939 §6)
    assert store.message_count() == 3


# --------------------------------------------------------------------------- missing bodies


def _capture(directory: Path, user: str, script: list[tuple[bytes, bytes]]) -> Path:
    """A capture of a scripted session: the greeting, then (client line, server answer)."""
    writer = CaptureWriter.create(
        directory,
        session_id=hashlib.sha256(repr(script).encode() + user.encode()).hexdigest()[:12],
        header_fields={"client": "127.0.0.1:1", "upstream": "127.0.0.1:110"},
        now=datetime.now(UTC),
    )
    t = 0.0
    writer.write_data("s2c", t, b"+OK ready <1.1@test>\r\n")
    for line, answer in [(b"USER " + user.encode() + b"\r\n", b"+OK\r\n"), *script]:
        t += 0.001
        writer.write_data("c2s", t, line)
        writer.write_data("s2c", t, answer)
    writer.close(t, "closed")
    return writer.path


LISTING = (b"LIST\r\n", b"+OK 2 messages:\r\n1 40\r\n2 50\r\n.\r\n")
LOGIN = (b"PASS x\r\n", b"+OK Logged in.\r\n")


def test_a_body_never_retrieved_is_an_error_or_synthesized(tmp_path: Path) -> None:
    path = _capture(tmp_path, "eve", [LOGIN, LISTING])
    client = Client(store_from([path]))
    client.login(b"eve")
    ok, line, _, _ = client.send(b"RETR 2")
    assert not ok and b"never retrieved" in line
    synth = Client(store_from([path], missing="synth"))
    synth.login(b"eve")
    ok, line, body, _ = synth.send(b"RETR 2")
    assert ok and body is not None and len(body) == 50 and b"X-Pop3tap-Synthetic" in body


@given(st.integers(min_value=0, max_value=5000))
def test_synthesized_messages_have_exactly_the_recorded_size(size: int) -> None:
    body = synthesize(ModelMessage(size=size), 1)
    assert len(body) == size
    assert body == b"" or body.endswith(b"\r\n") or size == 1


def test_captures_of_different_mailboxes_are_refused(tmp_path: Path) -> None:
    uidl_a = (b"UIDL\r\n", b"+OK\r\n1 aaa\r\n2 bbb\r\n.\r\n")
    uidl_b = (b"UIDL\r\n", b"+OK\r\n1 zzz\r\n2 bbb\r\n.\r\n")
    a = _capture(tmp_path, "eve", [LOGIN, uidl_a])
    b = _capture(tmp_path, "eve", [LOGIN, uidl_b])
    sessions, _ = load_sessions([a, b])
    with pytest.raises(ModelError) as info:
        mailboxes_from_sessions(sessions)
    message = str(info.value)
    assert "\n" not in message and "message 1" in message and "'aaa'" in message
    assert "'zzz'" in message


# --------------------------------------------------------------------------- message files


def test_message_files_are_served_crlf_and_dot_stuffed(tmp_path: Path) -> None:
    (tmp_path / "b.eml").write_bytes(b"Subject: two\n\n.hidden\nend")
    (tmp_path / "a.eml").write_bytes(b"Subject: one\r\n\r\nbody\r\n")
    (tmp_path / "notes.txt").write_bytes(b"ignored")
    box = mailbox_from_files(tmp_path)
    store = ModelStore({None: box})
    client = Client(store)
    client.login(b"anyone", b"anything")
    _ok, _line, listing, _ = client.send(b"LIST")
    assert listing == b"1 22\r\n2 30\r\n"
    raw = client.session.receive_line(b"RETR 2").data
    assert raw == b"+OK 30 octets\r\nSubject: two\r\n\r\n..hidden\r\nend\r\n.\r\n"
    _ok, _line, uids, _ = client.send(b"UIDL")
    assert uids == b"1 a\r\n2 b\r\n"


def test_maildir_and_mbox_are_read(tmp_path: Path) -> None:
    import mailbox

    maildir = mailbox.Maildir(tmp_path / "md", create=True)
    for n in range(3):
        maildir.add(f"Subject: m{n}\n\nbody {n}\n".encode())
    mbox_path = tmp_path / "box.mbox"
    mbox = mailbox.mbox(mbox_path, create=True)
    for n in range(2):
        mbox.add(f"Subject: x{n}\n\nhello {n}\n".encode())
    mbox.flush()
    md_box = mailbox_from_files(tmp_path / "md")
    assert len(md_box.messages) == 3
    bodies = sorted(m.full_body() or b"" for m in md_box.messages)
    assert bodies[0].startswith(b"Subject: m0")
    mb_box = mailbox_from_files(mbox_path)
    assert [m.full_body() for m in mb_box.messages] == [
        b"Subject: x0\n\nhello 0\n",
        b"Subject: x1\n\nhello 1\n",
    ]


def test_message_files_behind_symlinks_are_refused(tmp_path: Path) -> None:
    """A directory others can write could hold a link to a file only we may read."""
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"root:x:0:0\n")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.eml").write_bytes(b"Subject: fine\r\n\r\nok\r\n")
    (inbox / "b.eml").symlink_to(secret)
    with pytest.raises(ModelError, match="symbolic link"):
        mailbox_from_files(inbox)
    (inbox / "b.eml").unlink()
    box = mailbox_from_files(inbox)
    (inbox / "a.eml").unlink()
    (inbox / "a.eml").symlink_to(secret)  # swapped in after start: not served either
    with pytest.raises(OSError):
        box.messages[0].full_body()


def test_bad_message_paths_give_one_line_errors(tmp_path: Path) -> None:
    for bad in (tmp_path / "missing", tmp_path):
        with pytest.raises(ModelError) as info:
            mailbox_from_files(bad)
        assert "\n" not in str(info.value)
    not_mbox = tmp_path / "x.mbox"
    not_mbox.write_bytes(b"hello")
    with pytest.raises(ModelError, match="not an mbox"):
        mailbox_from_files(not_mbox)


# --------------------------------------------------------------------------- properties

_NUMBERS = st.integers(min_value=0, max_value=5)
_COMMANDS = st.one_of(
    st.just(b"STAT"),
    st.just(b"LIST"),
    st.just(b"UIDL"),
    st.just(b"RSET"),
    st.just(b"NOOP"),
    st.just(b"CAPA"),
    _NUMBERS.map(lambda n: b"LIST %d" % n),
    _NUMBERS.map(lambda n: b"UIDL %d" % n),
    _NUMBERS.map(lambda n: b"RETR %d" % n),
    _NUMBERS.map(lambda n: b"DELE %d" % n),
    st.tuples(_NUMBERS, st.integers(0, 30)).map(lambda t: b"TOP %d %d" % t),
    st.binary(max_size=20),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sessions=st.lists(st.lists(_COMMANDS, max_size=25), min_size=1, max_size=3))
def test_random_sessions_never_break_rfc_1939(sessions: list[list[bytes]]) -> None:
    """STAT equals the sum of LIST, deleted messages stay refused until RSET, UIDs are
    stable across sessions, TOP is a prefix of RETR, and nothing raises."""
    store = store_from([SHIPPED / "pipelined.p3cap"], persist=True)
    uid_of_body: dict[bytes, bytes] = {}
    for commands in sessions:
        client = Client(store)
        client.login()
        deleted: set[int] = set()
        for line in [*commands, b"QUIT"]:
            ok, status, body, _ = client.send(line)
            words = line.split()
            verb = words[0].upper() if words else b""
            number = int(words[1]) if len(words) > 1 and words[1].isdigit() else None
            if verb in (b"RETR", b"LIST", b"UIDL", b"TOP", b"DELE") and number in deleted:
                assert not ok, (line, status)
            if verb == b"DELE" and ok and number is not None:
                deleted.add(number)
            if verb == b"RSET" and ok:
                deleted.clear()
            if verb == b"QUIT":
                break
            if verb == b"STAT" and ok:
                _ok, _s, listing, _ = client.send(b"LIST")
                assert listing is not None
                sizes = [int(row.split()[1]) for row in listing.splitlines()]
                count, total = status.split()[1:3]
                assert (int(count), int(total)) == (len(sizes), sum(sizes))
            if verb == b"TOP" and ok and number is not None:
                _ok, _s, full, _ = client.send(b"RETR %d" % number)
                assert full is not None and body is not None and full.startswith(body)
            if verb == b"UIDL" and ok and number is not None:
                uid = status.split()[2]
                _ok, _s, full, _ = client.send(b"RETR %d" % number)
                assert full is not None
                assert uid_of_body.setdefault(full, uid) == uid
        client.session.close()


def test_capa_offers_stls_only_when_tls_can_be_served() -> None:
    """The recorded Dovecot CAPA lists STLS: it is sent as recorded only if STLS works."""
    with_tls = Client(store_from([SHIPPED / "pipelined.p3cap"], tls_available=True))
    ok, _line, capa, recorded = with_tls.send(b"CAPA")
    assert ok and recorded and capa is not None and b"STLS\r\n" in capa
    without = Client(store_from([SHIPPED / "pipelined.p3cap"]))
    ok, _line, capa, recorded = without.send(b"CAPA")
    assert ok and not recorded and capa is not None and b"STLS" not in capa
    assert b"UIDL\r\n" in capa  # the rest of the recorded list is kept
    assert without.send(b"STLS")[0] is False


def test_cram_md5_is_checked_when_the_password_is_known() -> None:
    import hmac

    store = store_from([SHIPPED / "pipelined.p3cap"], passwords={"dave": "pw"})
    client = Client(store)
    challenge = client.session.receive_line(b"AUTH CRAM-MD5").data
    assert challenge.startswith(b"+ ") and client.session.phase is Phase.SASL
    nonce = base64.b64decode(challenge[2:].strip())
    good = hmac.new(b"pw", nonce, "md5").hexdigest()
    reply = client.session.receive_line(base64.b64encode(f"dave {good}".encode()))
    assert reply.data.startswith(b"+OK") and reply.command == "********"
    bad = Client(store)
    bad.session.receive_line(b"AUTH CRAM-MD5")
    wrong = base64.b64encode(b"dave " + b"0" * 32)
    assert bad.session.receive_line(wrong).data.startswith(b"-ERR")


def test_a_fifo_among_message_files_is_an_error_not_a_hang(tmp_path: Path) -> None:
    """Opening a FIFO for reading waits for a writer: a directory others can write must not
    be able to stop the server from starting, or a RETR from ever being answered."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.eml").write_bytes(b"Subject: fine\r\n\r\nok\r\n")
    os.mkfifo(inbox / "b.eml")
    result = subprocess.run(
        [sys.executable, "-m", "pop3tap", "replay", "--model", "--messages", str(inbox)],
        capture_output=True,
        text=True,
        timeout=120,  # a guard against the hang itself, not a speed target
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "b.eml" in result.stderr and "not a regular file" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    # A FIFO given as the mbox itself.
    with pytest.raises(ModelError, match="not a regular file"):
        mailbox_from_files(inbox / "b.eml")
    # A FIFO swapped in after start: the RETR fails at once instead of blocking the server.
    (inbox / "b.eml").unlink()
    swapped = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, sys; from pathlib import Path\n"
            "from pop3tap.model import mailbox_from_files\n"
            "box = mailbox_from_files(Path(sys.argv[1]))\n"
            "path = Path(sys.argv[1]) / 'a.eml'; path.unlink(); os.mkfifo(path)\n"
            "try:\n    box.messages[0].full_body()\nexcept OSError as exc:\n    print(exc)\n",
            str(inbox),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "not a regular file" in swapped.stdout, swapped.stderr


def test_a_hostile_user_name_in_a_capture_reaches_the_terminal_escaped(tmp_path: Path) -> None:
    """The one-line error naming the conflicting captures names their user, which comes from
    the capture: an escape sequence in it must not reach the terminal."""
    user = "e\x1b]0;pwned\x07ve\x1b[2J"
    uidl_a = (b"UIDL\r\n", b"+OK\r\n1 aaa\r\n.\r\n")
    uidl_b = (b"UIDL\r\n", b"+OK\r\n1 zzz\r\n.\r\n")
    a = _capture(tmp_path, user, [LOGIN, uidl_a])
    b = _capture(tmp_path, user, [LOGIN, uidl_b])
    result = subprocess.run(
        [sys.executable, "-m", "pop3tap", "replay", "--model", str(a), str(b)],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert b"captures disagree" in result.stderr
    assert not any(c in result.stderr for c in b"\x1b\x07"), result.stderr
    assert b"\\x1b" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_user_without_a_name_and_stls_forgets_the_user() -> None:
    store = store_from([SHIPPED / "pipelined.p3cap"], tls_available=True)
    client = Client(store)
    assert client.send(b"USER")[1] == b"-ERR No username given."
    assert client.send(b"USER dave")[0]
    assert client.session.receive_line(b"STLS").data.startswith(b"+OK")
    client.session.tls_started()  # RFC 2595 §4: what came before TLS is forgotten
    assert client.send(b"PASS x")[0] is False
