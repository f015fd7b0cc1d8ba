"""Secrets stay masked when the server desynchronises the pairing, whatever separates the
words of a secret-bearing line, and commands pipelined behind AUTH are recorded as what
they were once the server's answer proves it (issue 10 items 2, 3, 10; issue 11 items 1, 3).

Each case runs through the real relay (a ``pop3tap record`` process with its JSON log) in
front of a scripted hostile server on 127.0.0.1, or the real Dovecot where it can show the
case; then the capture bytes, the log and ``show``'s text and JSON are searched for every
form of the secret.
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import structlog
from clients import raw_session, relay_process
from dovecot import Dovecot, Mailbox
from faults import scripted_server
from mailutils import Mailutils
from scripted import Case, converse, sequential_behaviours

import pop3tap
from pop3tap.capture import DataRecord, EventRecord, iter_capture_paths, read_capture
from pop3tap.protocol import Status
from pop3tap.render import render_json, render_lines


def _verbs(log: str) -> set[str]:
    """The verbs of the ``pop3.exchange`` lines of a JSON-lines log."""
    events = (json.loads(line) for line in log.splitlines())
    return {e["verb"] for e in events if e.get("event") == "pop3.exchange"}


ROOT = Path(__file__).resolve().parents[1]

#: SASL PLAIN blob for bob / "desync-secret-pw" (RFC 4616).
PLAIN_PASSWORD = b"desync-secret-pw"
PLAIN_BLOB = base64.b64encode(b"\x00bob\x00" + PLAIN_PASSWORD)
#: A CRAM-MD5 answer ("bob <hex digest>", RFC 2195 §2).
CRAM_DIGEST = b"b913a602c7eda7a495b4e6e7334d3890"
CRAM_ANSWER = base64.b64encode(b"bob " + CRAM_DIGEST)
#: An 8-character base64 SASL line that looks like a keyword (issue 10 item 10).
SHORT_SASL = b"czNrcjF0"  # "s3kr1t"


def secret_forms(*secrets: bytes) -> list[bytes]:
    """Every form a secret could leak in: as sent, upper-cased, decoded."""
    forms: list[bytes] = []
    for secret in secrets:
        forms += [secret, secret.upper()]
        try:
            decoded = base64.b64decode(secret, validate=True)
        except ValueError:
            continue
        forms += [part for part in decoded.split(b"\x00") if len(part) >= 6]
    return forms


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def captures_complete(directory: Path, count: int) -> bool:
    paths = iter_capture_paths([directory]) if directory.exists() else []
    return len(paths) >= count and all(read_capture(p).complete for p in paths)


def views(path: Path) -> str:
    """``show``'s text and JSON views of one capture."""
    capture = read_capture(path)
    return "\n".join([*render_lines(capture, bodies=True), *render_json(capture)])


def assert_nowhere(secrets: list[bytes], *places: bytes | str) -> None:
    for place in places:
        data = place.encode("utf-8", "surrogateescape") if isinstance(place, str) else place
        for secret in secrets:
            assert secret not in data, f"{secret!r} leaked"


# ---------------------------------------------------------------------------- desync


DESYNC_CASES = [
    Case(
        "extra +OK before the continuation",
        server=[
            ("read", 1),
            ("send", b"+OK\r\n+ \r\n"),
            ("read", 1),
            ("send", b"+OK Logged in.\r\n"),
            ("read", 1),
            ("send", b"+OK bye\r\n"),
        ],
        client=[
            (b"AUTH PLAIN\r\n", b"+ \r\n"),
            (PLAIN_BLOB + b"\r\n", b"Logged in"),
            (b"QUIT\r\n", b"bye"),
        ],
        secrets=(PLAIN_BLOB,),
    ),
    Case(
        "duplicated answer to an earlier command",
        server=[
            ("read", 2),
            ("send", b"+OK\r\n+OK\r\n+ \r\n"),
            ("read", 1),
            ("send", b"+OK Logged in.\r\n"),
            ("read", 1),
            ("send", b"+OK bye\r\n"),
        ],
        client=[
            (b"NOOP\r\nAUTH PLAIN\r\n", b"+ \r\n"),
            (SHORT_SASL + b"\r\n", b"Logged in"),
            (b"QUIT\r\n", b"bye"),
        ],
        secrets=(SHORT_SASL,),
    ),
    Case(
        "multi-line answer to an unknown command",
        server=[
            ("read", 2),
            ("send", b"+OK list follows\r\n+OK one\r\n.\r\n+ \r\n"),
            ("read", 1),
            ("send", b"+OK Logged in.\r\n"),
            ("read", 1),
            ("send", b"+OK bye\r\n"),
        ],
        client=[
            (b"XLST\r\nAUTH PLAIN\r\n", b"+ \r\n"),
            (PLAIN_BLOB + b"\r\n", b"Logged in"),
            (b"QUIT\r\n", b"bye"),
        ],
        secrets=(PLAIN_BLOB,),
    ),
    Case(
        "CRAM-MD5 answer sent after the server's -ERR",
        server=[
            ("read", 1),
            ("send", b"-ERR [AUTH] Unsupported mechanism\r\n"),
            ("read", 1),
            ("send", b"-ERR Unknown command\r\n"),
            ("read", 1),
            ("send", b"+OK bye\r\n"),
        ],
        client=[
            (b"AUTH CRAM-MD5\r\n", b"-ERR"),
            (CRAM_ANSWER + b"\r\n", b"Unknown"),
            (b"QUIT\r\n", b"bye"),
        ],
        secrets=(CRAM_ANSWER, CRAM_DIGEST),
    ),
    Case(
        "PLAIN blob sent after the server's -ERR",
        server=[
            ("read", 1),
            ("send", b"-ERR [AUTH] Temporary failure\r\n"),
            ("read", 1),
            ("send", b"-ERR Unknown command\r\n"),
            ("read", 1),
            ("send", b"+OK bye\r\n"),
        ],
        client=[
            (b"AUTH PLAIN\r\n", b"-ERR"),
            (PLAIN_BLOB + b"\r\n", b"Unknown"),
            (b"QUIT\r\n", b"bye"),
        ],
        secrets=(PLAIN_BLOB,),
    ),
    Case(
        # The log keeps a line's first 8 KiB; the AUTH after the lone CR is past them,
        # yet a server that ends lines at a lone CR runs it, and the next line is SASL.
        "AUTH after a lone CR past the line limit",
        server=[
            ("read", 1),
            ("send", b"+OK\r\n+ \r\n"),
            ("read", 1),
            ("send", b"+OK Logged in.\r\n"),
            ("read", 1),
            ("send", b"+OK bye\r\n"),
        ],
        client=[
            (b"NOOP " + b"x" * 9000 + b"\rAUTH PLAIN\r\n", b"+ \r\n"),
            (SHORT_SASL + b"\r\n", b"Logged in"),
            (b"QUIT\r\n", b"bye"),
        ],
        secrets=(SHORT_SASL,),
    ),
]

SEPARATOR_CASES = [
    Case(
        "PASS followed by a NUL",
        server=[("read", 2), ("send", b"+OK\r\n+OK\r\n"), ("read", 1), ("send", b"+OK bye\r\n")],
        client=[
            (b"USER bob\r\nPASS\x00 alicepw-secret\r\n", b"+OK\r\n+OK\r\n"),
            (b"QUIT\r\n", b"bye"),
        ],
        secrets=(b"alicepw-secret",),
    ),
    Case(
        "APOP with a vertical tab before the digest",
        server=[("read", 1), ("send", b"+OK\r\n"), ("read", 1), ("send", b"+OK bye\r\n")],
        client=[(b"APOP bob\x0b" + CRAM_DIGEST + b"\r\n", b"+OK"), (b"QUIT\r\n", b"bye")],
        secrets=(CRAM_DIGEST,),
    ),
    Case(
        "AUTH PLAIN with a vertical tab before the initial response",
        server=[("read", 1), ("send", b"+OK\r\n"), ("read", 1), ("send", b"+OK bye\r\n")],
        client=[(b"AUTH PLAIN\x0b" + PLAIN_BLOB + b"\r\n", b"+OK"), (b"QUIT\r\n", b"bye")],
        secrets=(PLAIN_BLOB,),
    ),
    Case(
        # A server that splits words at any C blank (isspace) reads the CR as a separator.
        "PASS and APOP followed by a lone CR",
        server=[("read", 2), ("send", b"+OK\r\n-ERR\r\n"), ("read", 1), ("send", b"+OK bye\r\n")],
        client=[
            (b"PASS\ralicepw-secret\r\nAPOP bob\r" + CRAM_DIGEST + b"\r\n", b"-ERR\r\n"),
            (b"QUIT\r\n", b"bye"),
        ],
        secrets=(b"alicepw-secret", CRAM_DIGEST),
    ),
    Case(
        "pass glued to its argument by a digit",
        server=[("read", 1), ("send", b"+OK\r\n"), ("read", 1), ("send", b"+OK bye\r\n")],
        client=[(b"pass1glued-secret\r\n", b"+OK"), (b"QUIT\r\n", b"bye")],
        secrets=(b"glued-secret",),
    ),
]


def show_cli(directory: Path) -> str:
    """What ``pop3tap show`` prints for a directory, as text (with bodies) and JSON."""
    out = []
    for options in (["--bodies"], ["--format", "json"]):
        shown = subprocess.run(
            [sys.executable, "-m", "pop3tap", "show", *options, str(directory)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert shown.returncode == 0, shown.stderr
        out.append(shown.stdout + shown.stderr)
    return "\n".join(out)


def run_cases(cases: list[Case], tmp_path: Path) -> tuple[str, list[Path]]:
    """Play every case through one relay process; return its log and the captures."""
    with (
        scripted_server(sequential_behaviours(cases)) as server,
        relay_process(server.host, server.port, tmp_path) as relay,
    ):
        for case in cases:
            converse(relay.host, relay.port, case.client)
        wait_for(lambda: captures_complete(relay.captures, len(cases)), "captures")
        log = relay.log_text()
    return log, iter_capture_paths([relay.captures])


@pytest.mark.parametrize("cases", [DESYNC_CASES, SEPARATOR_CASES], ids=["desync", "separators"])
def test_secrets_never_reach_capture_log_or_show(cases: list[Case], tmp_path: Path) -> None:
    log, paths = run_cases(cases, tmp_path)
    assert len(paths) == len(cases)
    everything = secret_forms(*(s for case in cases for s in case.secrets))
    assert_nowhere(everything, log, show_cli(paths[0].parent))
    for path in paths:
        assert_nowhere(everything, path.read_bytes(), views(path))
    # The sessions were still recorded and paired up to the end.
    for path in paths:
        exchanges = read_capture(path).exchanges()
        assert len(exchanges) >= 2 and exchanges[-1].first_line == "+OK bye"


def test_unknown_lines_keep_their_case_and_commands_after_auth_stay_visible(
    tmp_path: Path,
) -> None:
    """Before any AUTH an unknown line is shown as sent (never upper-cased); after a
    completed AUTH a known command with valid arguments is shown, anything else masked."""
    case = Case(
        "unknown lines",
        server=[
            ("read", 1),
            ("send", b"-ERR Unknown command\r\n"),
            ("read", 1),
            ("send", b"+ \r\n"),
            ("read", 1),
            ("send", b"+OK Logged in.\r\n"),
            ("read", 1),
            ("send", b"+OK 1 10\r\n"),
            ("read", 1),
            ("send", b"-ERR Unknown command\r\n"),
            ("read", 1),
            ("send", b"+OK bye\r\n"),
        ],
        client=[
            (b"xTest Mixed\r\n", b"-ERR"),
            (b"AUTH PLAIN\r\n", b"+ \r\n"),
            (PLAIN_BLOB + b"\r\n", b"Logged in"),
            (b"STAT\r\n", b"+OK 1"),
            (b"xOther thing\r\n", b"-ERR"),
            (b"QUIT\r\n", b"bye"),
        ],
        secrets=(PLAIN_BLOB,),
    )
    log, (path,) = run_cases([case], tmp_path)
    shown = [(e.verb, e.args) for e in read_capture(path).exchanges()]
    assert shown == [
        ("xTest", "Mixed"),
        ("AUTH", "PLAIN"),
        ("STAT", ""),
        ("********", ""),
        ("QUIT", ""),
    ]
    assert b"xOther" not in path.read_bytes() and "xOther" not in log
    assert "xTest" in _verbs(log) and "XTEST" not in log


# ---------------------------------------------------------------------------- Dovecot


@pytest.mark.realpeer
@pytest.mark.lint_findings("pipelining-without-capability")  # pipelines, never asks CAPA
def test_pass_with_nul_separator_against_dovecot(dovecot: Dovecot, tmp_path: Path) -> None:
    password = "nul-Separated-pw9"
    box = dovecot.add_user(dovecot.unique_user(), password, [b"Subject: s\r\n\r\nhi\r\n"])
    with relay_process(dovecot.host, dovecot.pop3_port, tmp_path) as relay:
        raw_session(
            relay.host,
            relay.port,
            f"USER {box.user}\r\nPASS\x00 {password}\r\nQUIT\r\n".encode(),
        )
        wait_for(lambda: captures_complete(relay.captures, 1), "capture")
        log = relay.log_text()
    (path,) = iter_capture_paths([relay.captures])
    assert_nowhere([password.encode()], log, path.read_bytes(), views(path))


@pytest.mark.realpeer
def test_pass_with_a_lone_cr_against_mailutils(mailutils: Mailutils, tmp_path: Path) -> None:
    """GNU Mailutils pop3d splits words with isspace(): ``PASS\\rsecret`` logs in."""
    with relay_process(mailutils.host, mailutils.pop3_port, tmp_path) as relay:
        answers = raw_session(
            relay.host,
            relay.port,
            f"USER {mailutils.user}\r\nPASS\r{mailutils.password}\r\nSTAT\r\nQUIT\r\n".encode(),
        )
        wait_for(lambda: captures_complete(relay.captures, 1), "capture")
        log = relay.log_text()
    assert answers.count(b"+OK") == 5, answers  # greeting, USER, PASS, STAT, QUIT
    (path,) = iter_capture_paths([relay.captures])
    c2s = b"".join(
        r.data for r in read_capture(path).records if isinstance(r, DataRecord) and r.dir == "c2s"
    )
    assert mailutils.password.encode() not in c2s
    shown = log + views(path) + show_cli(path.parent)
    for form in ("\\r" + mailutils.password, "\r" + mailutils.password, "PASS secret"):
        assert form not in shown, form


def dovecot_plain_blob(box: Mailbox) -> bytes:
    return base64.b64encode(f"\x00{box.user}\x00{box.password}".encode())


PIPELINED_SCRIPTS: dict[str, Callable[[bytes], bytes]] = {
    "initial response": lambda blob: b"AUTH PLAIN " + blob + b"\r\nSTAT\r\nLIST\r\nQUIT\r\n",
    "before the continuation": lambda blob: (
        b"AUTH PLAIN\r\n" + blob + b"\r\nSTAT\r\nLIST\r\nQUIT\r\n"
    ),
}


@pytest.mark.realpeer
@pytest.mark.parametrize("how", list(PIPELINED_SCRIPTS))
@pytest.mark.lint_findings("pipelining-without-capability")  # pipelines, never asks CAPA
def test_commands_pipelined_behind_auth_are_recorded_clear(
    dovecot: Dovecot, mailbox: Mailbox, tmp_path: Path, how: str
) -> None:
    blob = dovecot_plain_blob(mailbox)
    script = PIPELINED_SCRIPTS[how](blob)
    with relay_process(dovecot.host, dovecot.pop3_port, tmp_path) as relay:
        received = raw_session(relay.host, relay.port, script)
        wait_for(lambda: captures_complete(relay.captures, 1), "capture")
        log = relay.log_text()
    assert received.count(b"+OK") >= 4, received
    (path,) = iter_capture_paths([relay.captures])
    capture = read_capture(path)
    assert b"STAT\r\nLIST\r\nQUIT\r\n" in capture.stream("c2s")
    secrets = secret_forms(blob, mailbox.password.encode())
    assert_nowhere(secrets, log, path.read_bytes(), views(path))
    exchanges = capture.exchanges()
    assert [e.verb for e in exchanges] == ["AUTH", "STAT", "LIST", "QUIT"]
    auth, stat, listing, _quit = exchanges
    assert auth.status is Status.OK and stat.status is Status.OK
    assert listing.multiline and listing.body_lines == len(mailbox.messages)
    text = "\n".join(render_lines(capture))
    assert "(stray)" not in text and "[tx] STAT" in text and "[tx] LIST" in text
    assert {"STAT", "LIST"} <= _verbs(log)
    # Replay answers the same pipelined client with exactly the recorded bytes.
    with pop3tap.replay_server(path) as server:
        replayed = raw_session(server.host, server.port, script)
    assert replayed == capture.stream("s2c")
    assert server.all_played and not server.unmatched


@pytest.mark.realpeer
def test_auth_cancelled_with_star_then_commands(
    dovecot: Dovecot, mailbox: Mailbox, tmp_path: Path
) -> None:
    blob = dovecot_plain_blob(mailbox)
    with relay_process(dovecot.host, dovecot.pop3_port, tmp_path) as relay:
        converse(
            relay.host,
            relay.port,
            [
                (b"AUTH PLAIN\r\n", b"+ "),
                (b"*\r\n", b"-ERR"),
                (b"AUTH PLAIN " + blob + b"\r\n", b"+OK"),
                (b"STAT\r\n", b"+OK"),
                (b"QUIT\r\n", b"+OK"),
            ],
        )
        wait_for(lambda: captures_complete(relay.captures, 1), "capture")
        log = relay.log_text()
    (path,) = iter_capture_paths([relay.captures])
    capture = read_capture(path)
    assert b"*\r\n" in capture.stream("c2s")
    got = [(e.verb, e.args, e.status, e.sasl) for e in capture.exchanges()]
    assert got[0] == ("AUTH", "PLAIN", Status.ERR, (("+", "0"), ("c", "*")))
    assert [g[:3] for g in got[1:]] == [
        ("AUTH", "PLAIN ********", Status.OK),
        ("STAT", "", Status.OK),
        ("QUIT", "", Status.OK),
    ]
    assert_nowhere(secret_forms(blob), log, path.read_bytes(), views(path))


# ---------------------------------------------------------------------------- replay


def replay_lines(path: Path, steps: list[tuple[bytes, int]]) -> tuple[list[bytes], str]:
    """Send each chunk to a replay of ``path`` and read that many lines back."""
    with (
        structlog.testing.capture_logs() as logs,
        pop3tap.replay_server(path) as server,
        socket.create_connection((server.host, server.port), timeout=10) as sock,
    ):
        reader = sock.makefile("rb")
        reader.readline()
        replies: list[bytes] = []
        for data, count in steps:
            sock.sendall(data)
            replies += [reader.readline() for _ in range(count)]
    return replies, repr(logs)


def test_replay_names_the_first_unrecorded_command_after_auth() -> None:
    replies, logs = replay_lines(
        ROOT / "captures" / "auth-plain.p3cap",
        [(b"AUTH PLAIN\r\n", 1), (PLAIN_BLOB + b"\r\n", 1), (b"UIDL\r\n", 1)],
    )
    assert replies[:2] == [b"+ \r\n", b"+OK Logged in.\r\n"]
    assert replies[2] == b'-ERR pop3tap replay: no recorded response for "UIDL"\r\n'
    assert "'command': 'UIDL'" in logs


@pytest.mark.parametrize(
    "before",
    [
        [(b"AUTH PLAIN\r\n", 1), (PLAIN_BLOB + b"\r\n", 1), (b"NOOP\r\n", 1)],
        [(b"AUTH LOGIN\r\n", 1)],  # not recorded: -ERR, then the client answers anyway
    ],
    ids=["after a login", "after an unrecorded AUTH"],
)
def test_replay_never_echoes_a_short_sasl_line_after_auth(before: list[tuple[bytes, int]]) -> None:
    replies, logs = replay_lines(
        ROOT / "captures" / "auth-plain.p3cap", [*before, (SHORT_SASL + b"\r\n", 1)]
    )
    assert replies[-1] == b'-ERR pop3tap replay: no recorded response for "********"\r\n'
    assert_nowhere(secret_forms(SHORT_SASL), b"".join(replies), logs)


def test_replay_shows_unknown_lines_before_auth_as_sent() -> None:
    replies, logs = replay_lines(ROOT / "captures" / "auth-plain.p3cap", [(b"xFoo bar\r\n", 1)])
    assert replies == [b'-ERR pop3tap replay: no recorded response for "xFoo bar"\r\n']
    assert "XFOO" not in logs


@pytest.mark.realpeer
@pytest.mark.lint_findings("pipelining-without-capability")  # pipelines, never asks CAPA
def test_client_that_half_closes_right_after_pipelining_behind_auth(
    dovecot: Dovecot, mailbox: Mailbox, tmp_path: Path
) -> None:
    """The client's end of stream arrives before Dovecot answers the AUTH: the held lines
    are still resolved by the answer, and the capture's client eof follows them."""
    blob = dovecot_plain_blob(mailbox)
    script = b"AUTH PLAIN " + blob + b"\r\nSTAT\r\nQUIT\r\n"
    with relay_process(dovecot.host, dovecot.pop3_port, tmp_path) as relay:
        with socket.create_connection((relay.host, relay.port), timeout=20) as sock:
            sock.sendall(script)
            sock.shutdown(socket.SHUT_WR)
            received = b""
            while data := sock.recv(65536):
                received += data
        wait_for(lambda: captures_complete(relay.captures, 1), "capture")
    assert received.endswith(b"+OK Logging out.\r\n"), received
    (path,) = iter_capture_paths([relay.captures])
    capture = read_capture(path)
    assert capture.stream("c2s") == b"AUTH PLAIN ********\r\nSTAT\r\nQUIT\r\n"
    assert [e.verb for e in capture.exchanges()] == ["AUTH", "STAT", "QUIT"]
    records = capture.records
    client_data = [i for i, r in enumerate(records) if isinstance(r, DataRecord) and r.dir == "c2s"]
    client_end = [
        i
        for i, r in enumerate(records)
        if isinstance(r, EventRecord) and r.fields.get("dir") == "c2s"
    ]
    assert len(client_end) == 1 and client_end[0] > max(client_data)
