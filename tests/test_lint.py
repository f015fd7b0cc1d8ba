"""``pop3tap lint``: one hand-made capture per rule, each giving exactly its finding."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest
from handmade import MSG1, MSG2, Step, clean_session, message, retr_response, write_capture
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pop3tap.analysis import CaptureStream
from pop3tap.cli import main
from pop3tap.diff import DiffOptions, diff_paths
from pop3tap.lint import RULES, MailboxMemory, lint_capture

# Step indexes in clean_session(); exchange seqs are CAPA=1 USER=2 PASS=3 STAT=4 LIST=5
# UIDL=6 RETR 1=7 DELE 1=8 QUIT=9.
GREETING, CAPA_S, USER_C, USER_S, PASS_C, PASS_S, STAT_S = 0, 2, 3, 4, 5, 6, 8
LIST_S, UIDL_S, RETR_S, DELE_S, QUIT_C, QUIT_S = 10, 12, 14, 16, 17, 18


def replaced(index: int, *new: Step) -> Callable[[list[Step]], list[Step]]:
    def edit(steps: list[Step]) -> list[Step]:
        return [*steps[:index], *new, *steps[index + 1 :]]

    return edit


def inserted(index: int, *new: Step) -> Callable[[list[Step]], list[Step]]:
    def edit(steps: list[Step]) -> list[Step]:
        return [*steps[:index], *new, *steps[index:]]

    return edit


def lint_steps(tmp_path: Path, steps: list[Step], **kwargs: object) -> list[tuple[object, ...]]:
    path = write_capture(tmp_path, steps, **kwargs)  # type: ignore[arg-type]
    report = lint_capture(CaptureStream(path))
    return [(f.rule, f.seq, f.blamed, RULES[f.rule].rfc) for f in report.findings]


def expect(rule: str, seq: int | None) -> list[tuple[object, ...]]:
    return [(rule, seq, RULES[rule].side, RULES[rule].rfc)]


BARE_CR_MESSAGE = message(["Subject: cr"], ["a\rb", "end"])
NO_PIPELINING_CAPA = b"+OK\r\nUSER\r\nUIDL\r\nRESP-CODES\r\n.\r\n"
STAT_RESPONSE = f"+OK 2 {len(MSG1) + len(MSG2)}\r\n".encode()
LIST_RESPONSE = f"+OK\r\n1 {len(MSG1)}\r\n2 {len(MSG2)}\r\n.\r\n".encode()

CASES: dict[str, tuple[Callable[[list[Step]], list[Step]], list[tuple[object, ...]]]] = {
    "stat-list-mismatch": (
        replaced(STAT_S, ("s", b"+OK 2 999\r\n")),
        expect("stat-list-mismatch", 5),
    ),
    "msg-number-out-of-range": (
        replaced(UIDL_S, ("s", b"+OK\r\n1 uid-one\r\n2 uid-two\r\n3 uid-three\r\n.\r\n")),
        expect("msg-number-out-of-range", 6),
    ),
    "uidl-not-unique": (
        replaced(UIDL_S, ("s", b"+OK\r\n1 same\r\n2 same\r\n.\r\n")),
        expect("uidl-not-unique", 6),
    ),
    "uidl-bad-character": (
        replaced(UIDL_S, ("s", b"+OK\r\n1 uid-one\r\n2 uid\x7ftwo\r\n.\r\n")),
        expect("uidl-bad-character", 6),
    ),
    "uidl-too-long": (
        replaced(UIDL_S, ("s", b"+OK\r\n1 uid-one\r\n2 " + b"x" * 71 + b"\r\n.\r\n")),
        expect("uidl-too-long", 6),
    ),
    "not-dot-stuffed": (
        replaced(RETR_S, ("s", f"+OK {len(MSG1)} octets\r\n".encode() + MSG1 + b".\r\n")),
        expect("not-dot-stuffed", 7),
    ),
    "bare-lf": (replaced(USER_S, ("s", b"+OK\n")), expect("bare-lf", 2)),
    "bare-cr": (
        lambda steps: [
            *steps[:LIST_S],
            ("s", f"+OK\r\n1 {len(BARE_CR_MESSAGE)}\r\n2 {len(MSG2)}\r\n.\r\n".encode()),
            *steps[LIST_S + 1 : RETR_S],
            ("s", retr_response(BARE_CR_MESSAGE)),
            *steps[RETR_S + 1 :],
        ],
        # STAT still counts MSG1's size: its mismatch with LIST is expected as well.
        [*expect("stat-list-mismatch", 5), *expect("bare-cr", 7)],
    ),
    "response-line-too-long": (
        replaced(PASS_S, ("s", b"+OK " + b"x" * 600 + b"\r\n")),
        expect("response-line-too-long", 3),
    ),
    "malformed-response-code": (
        replaced(DELE_S, ("s", b"+OK [SYS/ marked\r\n")),
        expect("malformed-response-code", 8),
    ),
    "unknown-response-code": (
        replaced(DELE_S, ("s", b"+OK [X-FOO] marked\r\n")),
        expect("unknown-response-code", 8),
    ),
    "ok-in-wrong-state": (
        inserted(1, ("c", b"NOOP\r\n"), ("s", b"+OK\r\n")),
        expect("ok-in-wrong-state", 1),
    ),
    "octets-mismatch": (
        replaced(RETR_S, ("s", retr_response(MSG1, announced=len(MSG1) + 5))),
        expect("octets-mismatch", 7),
    ),
    "deleted-message-served": (
        inserted(QUIT_C, ("c", b"LIST 1\r\n"), ("s", f"+OK 1 {len(MSG1)}\r\n".encode())),
        expect("deleted-message-served", 9),
    ),
    "auth-mechanism-refused": (
        inserted(USER_C, ("c", b"AUTH PLAIN\r\n"), ("s", b"-ERR Unsupported mechanism\r\n")),
        expect("auth-mechanism-refused", 2),
    ),
    "stls-plaintext-after-ok": (
        inserted(
            USER_C,
            ("c", b"STLS\r\n"),
            ("s", b"+OK Begin TLS negotiation\r\n+OK injected\r\n"),
            ("event", "tls", {}),
        ),
        expect("stls-plaintext-after-ok", 2),
    ),
    "apop-without-timestamp": (
        lambda steps: [
            ("s", b"+OK POP3 ready\r\n"),
            *steps[1:USER_C],
            ("c", b"APOP alice ********\r\n"),
            ("s", b"+OK Logged in.\r\n"),
            *steps[PASS_S + 1 :],
        ],
        expect("apop-without-timestamp", 2),
    ),
    "stray-line": (
        replaced(USER_S, ("s", b"hello there\r\n+OK\r\n")),
        expect("stray-line", 2),
    ),
    "body-truncated": (
        lambda steps: [*steps[:RETR_S], ("s", retr_response(MSG1)[:40])],
        expect("body-truncated", 7),
    ),
    "unsolicited-response": (
        lambda steps: [*steps, ("s", b"-ERR Disconnected for inactivity.\r\n")],
        expect("unsolicited-response", None),
    ),
    "command-too-long": (
        replaced(USER_C, ("c", b"USER " + b"a" * 260 + b"\r\n")),
        expect("command-too-long", 2),
    ),
    "login-after-login": (
        inserted(STAT_S - 1, ("c", b"USER bob\r\n"), ("s", b"-ERR Already logged in\r\n")),
        expect("login-after-login", 4),
    ),
    "retr-deleted": (
        inserted(QUIT_C, ("c", b"RETR 1\r\n"), ("s", b"-ERR Message is deleted.\r\n")),
        expect("retr-deleted", 9),
    ),
    "pipelining-without-capability": (
        lambda steps: [
            steps[0],
            steps[1],
            ("s", NO_PIPELINING_CAPA),
            *steps[USER_C : STAT_S - 1],
            ("c", b"STAT\r\nLIST\r\n"),
            ("s", STAT_RESPONSE + LIST_RESPONSE),
            *steps[LIST_S + 1 :],
        ],
        expect("pipelining-without-capability", 5),
    ),
    "stls-pipelined": (
        inserted(
            USER_C,
            ("c", b"STLS\r\nUSER x\r\n"),
            ("s", b"+OK Begin TLS negotiation\r\n"),
            ("event", "tls", {}),
        ),
        expect("stls-pipelined", 2),
    ),
    "no-quit-after-dele": (
        lambda steps: steps[:QUIT_C],
        expect("no-quit-after-dele", 8),
    ),
}


def test_every_rule_has_a_corpus_case() -> None:
    covered = set(CASES) | {
        "uidl-changed",
        "plaintext-credentials",
        "capture-truncated",
        "pairing-lost",
        "faults-injected",
    }
    assert covered == set(RULES)


def test_clean_capture_has_no_finding(tmp_path: Path) -> None:
    assert lint_steps(tmp_path, clean_session()) == []


@pytest.mark.parametrize("rule", sorted(CASES))
def test_rule_gives_exactly_its_finding(tmp_path: Path, rule: str) -> None:
    edit, expected = CASES[rule]
    assert lint_steps(tmp_path, edit(clean_session())) == expected


def test_plaintext_credentials_beyond_loopback(tmp_path: Path) -> None:
    findings = lint_steps(tmp_path, clean_session(), upstream="192.0.2.10:110")
    assert findings == expect("plaintext-credentials", 3)
    # The same session over POP3S is fine.
    assert (
        lint_steps(
            tmp_path, clean_session(), upstream="192.0.2.10:995", options={"upstream_tls": True}
        )
        == []
    )


def test_uidl_changed_between_two_captures_of_one_mailbox(tmp_path: Path) -> None:
    first = write_capture(tmp_path, clean_session())
    changed = replaced(UIDL_S, ("s", b"+OK\r\n1 uid-new\r\n2 uid-two\r\n.\r\n"))
    second = write_capture(tmp_path, changed(clean_session()))
    memory = MailboxMemory()
    assert lint_capture(CaptureStream(first), memory).findings == []
    report = lint_capture(CaptureStream(second), memory)
    assert [(f.rule, f.seq, f.blamed) for f in report.findings] == [("uidl-changed", 6, "server")]
    assert "uid-one" in report.findings[0].message


def test_truncated_capture_is_linted_up_to_its_last_record(tmp_path: Path) -> None:
    path = write_capture(tmp_path, [*clean_session()[:STAT_S], ("c", b"STAT\r\n")], close=False)
    with open(path, "ab") as f:
        f.write(b"\x84\xa4type\xa4da")  # a torn record
    unclosed = lint_steps(tmp_path, clean_session()[:STAT_S], close=False)
    assert unclosed == [("capture-truncated", None, "capture", "")]
    report = lint_capture(CaptureStream(path))
    assert [(f.rule, f.seq) for f in report.findings] == [("capture-truncated", None)]
    assert "9 bytes of a torn record" in report.findings[0].message
    assert report.truncated


def test_corrupt_record_stops_the_lint_there(tmp_path: Path) -> None:
    steps = clean_session()
    good = write_capture(tmp_path, steps[:STAT_S], close=False)
    with open(good, "ab") as f:
        f.write(msgpack.packb({"type": "bogus", "t": 1.0}))
        f.write(b"\x00" * 100)
    report = lint_capture(CaptureStream(good))
    assert [(f.rule, f.seq) for f in report.findings] == [("capture-truncated", None)]
    assert "unknown record type 'bogus'" in report.findings[0].message


def test_injected_faults_are_noted(tmp_path: Path) -> None:
    steps = clean_session()
    fault: Step = ("event", "fault", {"seq": 7, "spec": "RETR:err"})
    erred = [*steps[: RETR_S - 1], fault, steps[RETR_S - 1], ("s", b"-ERR injected\r\n")]
    findings = lint_steps(tmp_path, [*erred, *steps[RETR_S + 1 :]])
    assert findings == expect("faults-injected", 7)


def test_pairing_lost_on_a_flood(tmp_path: Path) -> None:
    flood = [("s", b"+OK ready\r\n"), ("c", b"NOOP\r\n" * 17000)]
    findings = lint_steps(tmp_path, flood)
    # Pairing stops before any of the flooded commands completes an exchange.
    assert findings == expect("pairing-lost", None)


def test_findings_per_rule_are_bounded(tmp_path: Path) -> None:
    steps = [*clean_session()[:STAT_S]]
    for _ in range(30):
        steps += [("c", b"USER again\r\n"), ("s", b"-ERR no\r\n")]
    path = write_capture(tmp_path, steps)
    report = lint_capture(CaptureStream(path))
    assert len(report.findings) == 20
    assert report.suppressed == {"login-after-login": 10}
    assert report.counts()["error"] == 30


# --------------------------------------------------------------------------- CLI


def test_cli_text_and_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clean = write_capture(tmp_path, clean_session())
    assert main(["lint", str(clean)]) == 0
    out = capsys.readouterr().out
    assert f"{clean}" in out and ": clean" in out
    bad = write_capture(tmp_path, CASES["octets-mismatch"][0](clean_session()))
    assert main(["lint", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "error   server      #7  octets-mismatch (RFC 1939 §5)" in out
    assert "[tx] RETR 1" in out and f"[rx] +OK {len(MSG1) + 5} octets" in out
    warn = write_capture(tmp_path, clean_session()[:QUIT_C])
    assert main(["lint", str(warn)]) == 0
    capsys.readouterr()
    assert main(["lint", "--fail-on", "warning", str(warn)]) == 1
    capsys.readouterr()
    assert main(["lint", str(tmp_path / "missing.p3cap")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_cli_json_schema(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = tmp_path / "caps"
    directory.mkdir()
    write_capture(directory, clean_session())
    write_capture(directory, CASES["uidl-too-long"][0](clean_session()))
    assert main(["lint", "--format", "json", str(directory)]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["format"] == "pop3tap-lint" and doc["version"] == 1
    assert doc["counts"] == {"error": 1, "warning": 0, "info": 0}
    assert doc["failed"] is True and doc["fail_on"] == "error"
    first, second = doc["captures"]
    assert first["findings"] == [] and first["complete"] is True
    assert second["findings"] == [
        {
            "rule": "uidl-too-long",
            "severity": "error",
            "side": "server",
            "rfc": "RFC 1939 §7",
            "message": "the unique id of message 2 is 71 octets (limit 70)",
            "exchange": {"seq": 6, "tx": "[tx] UIDL", "rx": "[rx] +OK  (2 lines, 86 bytes)"},
        }
    ]


def test_cli_rules_lists_every_rule(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lint", "--rules"]) == 0
    out = capsys.readouterr().out
    for rule in RULES:
        assert rule in out


def test_cli_json_reports_an_unreadable_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.p3cap"
    bad.write_bytes(b"not msgpack at all\n")
    good = write_capture(tmp_path, clean_session())
    assert main(["lint", "--format", "json", str(bad), str(good)]) == 2
    doc = json.loads(capsys.readouterr().out)
    first, second = doc["captures"]
    assert first["error"] == f"{bad}: not a pop3tap capture (no capture header)"
    assert first["complete"] is False and first["findings"] == []
    assert second["findings"] == [] and "error" not in second


pop3ish = st.lists(
    st.tuples(
        st.sampled_from(["c", "s"]),
        st.lists(
            st.sampled_from(
                [
                    b"+OK",
                    b"-ERR",
                    b"[SYS/TEMP]",
                    b"[",
                    b"LIST",
                    b"UIDL",
                    b"RETR 1",
                    b"DELE 1",
                    b"CAPA",
                    b"STLS",
                    b"AUTH PLAIN",
                    b"USER a",
                    b"PASS x",
                    b"QUIT",
                    b".",
                    b"..",
                    b"1 2",
                    b"\r\n",
                    b"\n",
                    b"\r",
                    b" ",
                    b"+",
                    b"\xff",
                    b"x" * 300,
                ]
            ),
            max_size=8,
        ).map(b"".join),
    ),
    max_size=25,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=pop3ish, close=st.booleans())
def test_any_session_lints_and_diffs_with_itself(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[str, bytes]], close: bool
) -> None:
    directory = tmp_path_factory.mktemp("fuzz")
    path = write_capture(directory, list(steps), close=close)
    report = lint_capture(CaptureStream(path))
    assert all(f.rule in RULES for f in report.findings)
    (result,) = diff_paths(path, path, DiffOptions(strict=True))
    assert result.equal


def test_cli_text_writes_no_terminal_controls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Server and client bytes, and the capture's own header, reach the terminal escaped."""
    esc = b"\x1b]0;owned\x07\x1b[2J"
    steps = clean_session()
    steps[16] = ("s", b"-ERR [X" + esc + b"] no\r\n")  # the answer to DELE 1
    steps[15] = ("c", b"DELE 1" + esc + b"\r\n")
    write_capture(tmp_path, steps, upstream="10.0.0.1:110\x1b[31m")
    assert main(["lint", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "malformed-response-code" in out and "10.0.0.1:110" in out
    assert "\x1b" not in out and "\x07" not in out


@pytest.mark.parametrize("command", [b"LAST", b"XTND XMIT"])
def test_obsolete_transaction_commands_answered_before_the_login(
    tmp_path: Path, command: bytes
) -> None:
    """LAST (RFC 1725) and XTND (RFC 1082) are TRANSACTION commands, as the command table
    says: +OK to one before the login is in the wrong state."""
    steps = inserted(1, ("c", command + b"\r\n"), ("s", b"+OK 0\r\n"))(clean_session())
    assert lint_steps(tmp_path, steps) == expect("ok-in-wrong-state", 1)


#: Bytes that separate words as pop3tap's masker splits them (RFC 1734 allows a tab after
#: AUTH; servers split on whatever their C library calls a blank).
_BLANKS = st.sampled_from([b" ", b"\t", b"\x0b", b"\x0c", b"\x00", b" \t"])


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    blank=_BLANKS,
    mechanism=st.sampled_from([b"PLAIN", b"plain", b"Login"]),
)
def test_plaintext_sasl_is_found_whatever_separates_the_mechanism(
    tmp_path_factory: pytest.TempPathFactory, blank: bytes, mechanism: bytes
) -> None:
    """``AUTH PLAIN<TAB>response`` sends the password as surely as with a space: the
    mechanism is the first word by the masker's rule, not what comes before a space."""
    steps: list[Step] = [
        ("s", b"+OK ready\r\n"),
        ("c", b"AUTH " + mechanism + blank + b"AGFsaWNlAHB3\r\n"),
        ("s", b"+OK logged in\r\n"),
        ("c", b"QUIT\r\n"),
        ("s", b"+OK bye\r\n"),
    ]
    findings = lint_steps(tmp_path_factory.mktemp("l"), steps, upstream="192.0.2.10:110")
    assert [f for f in findings if f[0] == "plaintext-credentials"] == expect(
        "plaintext-credentials", 1
    )
