"""``pop3tap diff`` on hand-made captures: alignment, fields, volatile parts, output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from handmade import MSG2, Step, clean_session, message, retr_response, write_capture
from hypothesis import given
from hypothesis import strategies as st

from pop3tap.cli import main
from pop3tap.diff import DiffOptions, _lcs, diff_paths

RETR_S, DELE_C = 14, 15


def one(a: Path, b: Path, **options: object) -> list[dict[str, object]]:
    (result,) = diff_paths(a, b, DiffOptions(**options))  # type: ignore[arg-type]
    return result.differences


def test_identical_sessions_have_no_difference(tmp_path: Path) -> None:
    a = write_capture(tmp_path, clean_session())
    b = write_capture(tmp_path, clean_session())
    assert one(a, b) == []


def test_a_command_only_one_side_sent_is_listed_and_the_rest_still_aligned(
    tmp_path: Path,
) -> None:
    steps = clean_session()
    a = write_capture(tmp_path, steps)
    extra: list[Step] = [("c", b"NOOP\r\n"), ("s", b"+OK\r\n")]
    b = write_capture(tmp_path, [*steps[:DELE_C], *extra, *steps[DELE_C:]])
    assert one(a, b) == [{"field": "only_in_b", "where": "#8", "command": "NOOP", "seq_b": 8}]


def test_status_code_and_first_line_differences(tmp_path: Path) -> None:
    steps = clean_session()
    a = write_capture(tmp_path, steps)
    changed = list(steps)
    changed[16] = ("s", b"-ERR [SYS/TEMP] try later\r\n")
    b = write_capture(tmp_path, changed)
    assert [(d["field"], d["command"], d["a"], d["b"]) for d in one(a, b)] == [
        ("status", "DELE 1", "+OK", "-ERR"),
        ("resp_code", "DELE 1", None, "SYS/TEMP"),
    ]
    changed[16] = ("s", b"+OK gone\r\n")
    c = write_capture(tmp_path, changed)
    assert [(d["field"], d["a"], d["b"]) for d in one(a, c)] == [
        ("first_line", "+OK Marked to be deleted.", "+OK gone")
    ]


def dated(date: str) -> bytes:
    return message(["From: a@example.org", f"Date: {date}", "Subject: one"], ["same body"])


def test_ignore_header_leaves_a_header_out_of_the_comparison(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    steps = clean_session()
    old, new = dated("Mon, 1 Jan 2024 10:00:00 +0000"), dated("Tue, 22 Oct 2024 10:00:00 +0000")
    a = write_capture(tmp_path, [*steps[:RETR_S], ("s", retr_response(old)), *steps[RETR_S + 1 :]])
    b = write_capture(tmp_path, [*steps[:RETR_S], ("s", retr_response(new)), *steps[RETR_S + 1 :]])
    diffs = one(a, b)
    assert [(d["field"], d["command"]) for d in diffs] == [
        ("first_line", "RETR 1"),
        ("body", "RETR 1"),
    ]
    body = diffs[1]
    assert body["bytes"] == [len(old), len(new)]
    assert "rest_hash" not in body  # the text after the headers is the same
    assert "-Date: Mon, 1 Jan 2024 10:00:00 +0000" in body["unified"]  # type: ignore[operator]
    assert "+Date: Tue, 22 Oct 2024 10:00:00 +0000" in body["unified"]  # type: ignore[operator]
    assert one(a, b, ignore_headers=frozenset({"date"})) == []
    assert main(["diff", "--ignore-header", "Date", str(a), str(b)]) == 0
    assert main(["diff", str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "#7 RETR 1: body differs" in out


def test_changed_message_text_is_reported_by_hash(tmp_path: Path) -> None:
    steps = clean_session()
    twin = MSG2.replace(b"second", b"SECOND")
    a = write_capture(tmp_path, [*steps[:RETR_S], ("s", retr_response(MSG2)), *steps[RETR_S + 1 :]])
    b = write_capture(tmp_path, [*steps[:RETR_S], ("s", retr_response(twin)), *steps[RETR_S + 1 :]])
    (diff,) = one(a, b)
    assert diff["field"] == "body" and diff["bytes"] == [len(MSG2), len(twin)]
    assert len(diff["rest_hash"]) == 2  # type: ignore[arg-type]
    assert "unified" not in diff


def test_listing_differences_show_the_lines(tmp_path: Path) -> None:
    steps = clean_session()
    a = write_capture(tmp_path, steps)
    changed = list(steps)
    changed[12] = ("s", b"+OK\r\n1 uid-one\r\n2 uid-2\r\n.\r\n")
    b = write_capture(tmp_path, changed)
    (diff,) = one(a, b)
    assert diff["command"] == "UIDL"
    assert [line for line in diff["unified"] if line[:1] in "+-"] == ["-2 uid-two", "+2 uid-2"]  # type: ignore[union-attr]


def test_latency_beyond_the_factor_is_a_difference(tmp_path: Path) -> None:
    steps = clean_session()
    a = write_capture(tmp_path, steps)
    slow = [*steps[:16], ("s", steps[16][1], 3.0), *steps[17:]]
    b = write_capture(tmp_path, slow)
    (diff,) = one(a, b)
    assert (diff["field"], diff["command"]) == ("latency", "DELE 1")
    assert one(a, b, latency_factor=0.0) == []
    assert one(a, b, latency_floor=5.0) == []


def test_greeting_timestamp_and_session_id_are_volatile(tmp_path: Path) -> None:
    steps = clean_session()
    a = write_capture(tmp_path, steps)
    b = write_capture(tmp_path, [("s", b"+OK POP3 ready <99.1@other.example.net>\r\n"), *steps[1:]])
    (result,) = diff_paths(a, b, DiffOptions())
    assert result.equal
    assert result.ignored == ["greeting: APOP timestamp / host name", "session id"]
    (strict,) = diff_paths(a, b, DiffOptions(strict=True))
    assert [d["what"] for d in strict.differences] == ["greeting", "session id"]
    c = write_capture(tmp_path, [("s", b"+OK Other server\r\n"), *steps[1:]])
    assert [d["what"] for d in one(a, c)] == ["greeting"]


def test_directories_pair_sessions_by_user_then_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def session(user: bytes) -> list[Step]:
        steps = clean_session()
        steps[3] = ("c", b"USER " + user + b"\r\n")
        return steps

    left, right = tmp_path / "left", tmp_path / "right"
    left.mkdir()
    right.mkdir()
    write_capture(left, session(b"alice"))
    write_capture(left, session(b"bob"))
    write_capture(right, session(b"bob"))
    write_capture(right, session(b"alice"))
    results = diff_paths(left, right, DiffOptions())
    assert [r.equal for r in results] == [True, True]
    write_capture(right, session(b"carol"))
    assert main(["diff", "--format", "json", str(left), str(right)]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["format"] == "pop3tap-diff" and doc["version"] == 1 and doc["equal"] is False
    last = doc["sessions"][-1]
    assert last["a"] == "(none)" and last["differences"][0]["what"] == "no session to pair with"
    assert main(["diff", str(left), str(left / "nothing.p3cap")]) == 2
    assert "compare two files or two directories" in capsys.readouterr().err


@given(
    a=st.lists(st.sampled_from("ABCD"), max_size=12),
    b=st.lists(st.sampled_from("ABCD"), max_size=12),
)
def test_lcs_alignment_is_complete_ordered_and_longest(a: list[str], b: list[str]) -> None:
    matches = _lcs(a, b)
    assert all(a[i] == b[j] for i, j in matches)
    assert [i for i, _ in matches] == sorted({i for i, _ in matches})
    assert [j for _, j in matches] == sorted({j for _, j in matches})
    # Length of the LCS by the textbook recurrence.
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a)):
        for j in range(len(b)):
            table[i + 1][j + 1] = (
                table[i][j] + 1 if a[i] == b[j] else max(table[i][j + 1], table[i + 1][j])
            )
    assert len(matches) == table[len(a)][len(b)]


def test_cli_text_writes_no_terminal_controls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Command lines, header lines and codes from a hostile capture reach the terminal escaped."""
    esc = "\x1b]0;owned\x07\x1b[2J"
    steps = clean_session(retr=retr_response(message([f"Subject: x{esc}"], ["body"])))
    steps[3] = ("c", f"USER alice{esc}\r\n".encode())
    steps[16] = ("s", f"-ERR [X{esc}] no\r\n".encode())
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = write_capture(tmp_path / "a", steps)
    b = write_capture(tmp_path / "b", clean_session())
    assert main(["diff", str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "USER alice" in out and "Subject: x" in out
    assert "\x1b" not in out and "\x07" not in out
