"""Replay's pure parts driven with bytes and no sockets: the recorded-session model
(session_from_capture) and the matcher (Matcher, args_key, SessionPicker, Accounting).

Captures are built in memory from (direction, bytes) turns; each turn can be cut into
several data records, as a relay's reads cut them, and the recorded session must not
depend on the cuts (h11's whole / byte-at-a-time / random-split shape).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pop3tap.capture import Capture, CaptureHeader, CloseRecord, DataRecord, EventRecord, Record
from pop3tap.protocol import SECRET_PLACEHOLDER, Command, Status, mask_line, split_command
from pop3tap.replay import RecordedSession, ReplayError, args_key, session_from_capture
from pop3tap.replay._matching import (
    MAX_UNMATCHED_KEPT,
    Accounting,
    Matcher,
    SessionPicker,
    line_key,
)

Turns = Sequence[tuple[str, bytes]]
Cutter = Callable[[bytes], list[bytes]]

USER_PASS: Turns = [
    ("s2c", b"+OK ready <1.2@host>\r\n"),
    ("c2s", b"USER alice\r\n"),
    ("s2c", b"+OK\r\n"),
    ("c2s", b"PASS ********\r\n"),
    ("s2c", b"+OK logged in\r\n"),
    ("c2s", b"LIST\r\n"),
    ("s2c", b"+OK 2 messages\r\n1 120\r\n2 200\r\n.\r\n"),
    ("c2s", b"RETR 1\r\n"),
    ("s2c", b"+OK\r\n..dot-stuffed\nbare LF\r\n.\r\n"),
    ("c2s", b"NOOP\r\n"),
    ("s2c", b"+OK\r\n"),
    ("c2s", b"NOOP\r\n"),
    ("s2c", b"+OK second\r\n"),
    ("c2s", b"QUIT\r\n"),
    ("s2c", b"+OK bye\r\n"),
]
AUTH_PLAIN: Turns = [
    ("s2c", b"+OK ready\r\n"),
    ("c2s", b"AUTH PLAIN\r\n"),
    ("s2c", b"+ \r\n"),
    ("c2s", b"AGNhcm9sAHNlY3JldA==\r\n"),
    ("s2c", b"+OK welcome\r\n"),
    ("c2s", b"STAT\r\n"),
    ("s2c", b"+OK 0 0\r\n"),
]


def whole(data: bytes) -> list[bytes]:
    return [data]


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def capture_of(
    turns: Turns,
    *,
    secrets: str = "masked",
    cut: Cutter = whole,
    end: Sequence[Record] = (),
    complete: bool = True,
) -> Capture:
    header = CaptureHeader(
        format=1,
        pop3tap="test",
        session="s1",
        started="2026-01-01T00:00:00Z",
        started_unix=0.0,
        client="127.0.0.1:5",
        listen="127.0.0.1:6",
        upstream="pop.example.test:110",
        secrets=secrets,
        options={},
    )
    records: list[Record] = []
    t = 0.0
    for direction, data in turns:
        for piece in cut(data):
            t += 0.01
            records.append(DataRecord(t, direction, piece))
    records += end
    if complete and not any(isinstance(r, CloseRecord) for r in records):
        records.append(CloseRecord(t + 0.01, "client closed", {}))
    return Capture(path=Path("mem.p3cap"), header=header, records=records, complete=complete)


def shape(session: RecordedSession) -> list[tuple[object, ...]]:
    """What replay serves of a session, without the timing (which depends on the cuts)."""
    head: tuple[object, ...] = (session.greeting.data, session.user, session.auth_mechanism)
    served = [
        (ex.seq, ex.match_verb, ex.raw_args, ex.line, ex.status, ex.response, ex.sasl_lines)
        for ex in session.exchanges
    ]
    flags = [(ex.closes, ex.after_tls, ex.starts_tls, len(ex.segments)) for ex in session.exchanges]
    return [head, *served, *flags]


# ---------------------------------------------------------------- recorded sessions


def test_exchanges_carry_the_recorded_bytes_unchanged() -> None:
    session = session_from_capture(capture_of(USER_PASS))
    assert session.greeting.data == b"+OK ready <1.2@host>\r\n"
    lines = [ex.line for ex in session.exchanges]
    assert lines == [b"USER alice", b"PASS ********", b"LIST", b"RETR 1", b"NOOP", b"NOOP", b"QUIT"]
    retr = session.exchanges[3]
    assert retr.response == b"+OK\r\n..dot-stuffed\nbare LF\r\n.\r\n"
    assert [ex.status for ex in session.exchanges] == [Status.OK] * 7
    assert session.user == "alice"
    assert not session.truncated and not session.closes_after_greeting


def test_sasl_answers_split_the_response_after_each_challenge() -> None:
    session = session_from_capture(capture_of(AUTH_PLAIN, secrets="kept"))
    auth = session.exchanges[0]
    assert [s.data for s in auth.segments] == [b"+ \r\n", b"+OK welcome\r\n"]
    assert auth.sasl_lines == (b"AGNhcm9sAHNlY3JldA==",)
    assert (session.user, session.auth_mechanism) == ("carol", "PLAIN")


def test_a_masked_sasl_answer_names_no_user() -> None:
    turns = [(d, b"********\r\n" if d == "c2s" and b"AGNh" in x else x) for d, x in AUTH_PLAIN]
    session = session_from_capture(capture_of(turns, secrets="masked"))
    assert (session.user, session.auth_mechanism) == (None, "PLAIN")


def test_the_server_closing_first_is_replayed_with_what_it_sent_before() -> None:
    turns = [
        ("s2c", b"+OK ready\r\n"),
        ("c2s", b"USER x\r\n"),
        ("s2c", b"-ERR go away\r\nbye\r\n"),
    ]
    end = [EventRecord(1.0, "eof", {"dir": "s2c"})]
    session = session_from_capture(capture_of(turns, end=end))
    (only,) = session.exchanges
    assert only.closes and only.response == b"-ERR go away\r\nbye\r\n"


def test_a_torn_capture_keeps_only_whole_exchanges() -> None:
    turns = [*USER_PASS[:9], ("c2s", b"RETR 2\r\n"), ("s2c", b"+OK\r\npartial body")]
    session = session_from_capture(capture_of(turns, complete=False))
    assert session.truncated
    assert [ex.line for ex in session.exchanges][-1] == b"RETR 1"


def test_stls_splits_the_session_in_two_phases() -> None:
    turns = [
        ("s2c", b"+OK ready\r\n"),
        ("c2s", b"STLS\r\n"),
        ("s2c", b"+OK begin TLS\r\n"),
        ("c2s", b"USER bob\r\n"),
        ("s2c", b"+OK\r\n"),
    ]
    capture = capture_of(turns)
    capture.records.insert(3, EventRecord(0.035, "tls", {"mode": "stls"}))
    session = session_from_capture(capture)
    stls, user = session.exchanges
    assert stls.starts_tls and not stls.after_tls and session.stls
    assert user.after_tls and not user.starts_tls


def test_no_greeting_is_a_one_line_error() -> None:
    with pytest.raises(ReplayError, match=r"mem\.p3cap: no server greeting"):
        session_from_capture(capture_of([("c2s", b"USER x\r\n")]))


@pytest.mark.parametrize("turns", [USER_PASS, AUTH_PLAIN])
def test_record_cuts_do_not_change_the_session(turns: Turns) -> None:
    expected = shape(session_from_capture(capture_of(turns, secrets="kept")))
    assert shape(session_from_capture(capture_of(turns, secrets="kept", cut=bytewise))) == expected


@settings(max_examples=50, deadline=None)
@given(
    turns=st.sampled_from([USER_PASS, AUTH_PLAIN]),
    cuts=st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=20),
)
def test_random_record_cuts_do_not_change_the_session(turns: Turns, cuts: list[int]) -> None:
    def cut(data: bytes) -> list[bytes]:
        pieces, pos = [], 0
        for size in cuts:
            if pos >= len(data):
                break
            pieces.append(data[pos : pos + size])
            pos += size
        return [*pieces, data[pos:]] if pos < len(data) else pieces

    expected = shape(session_from_capture(capture_of(turns, secrets="kept")))
    assert shape(session_from_capture(capture_of(turns, secrets="kept", cut=cut))) == expected


# ---------------------------------------------------------------- matching


def matcher(turns: Turns = USER_PASS, mode: str = "default", secrets: str = "masked") -> Matcher:
    session = session_from_capture(capture_of(turns, secrets=secrets))
    return Matcher(Accounting([session]), 0, mode=mode, listen_tls=False)  # type: ignore[arg-type]


def command(line: bytes) -> Command:
    return Command(line, *split_command(line), after_auth=False)


def play(m: Matcher, line: bytes) -> bytes | None:
    found = m.find(command(line))
    if found is None:
        return None
    m.mark(found)
    return found.response


def test_default_mode_answers_repeated_commands_in_recorded_order() -> None:
    m = matcher()
    assert play(m, b"NOOP") == b"+OK\r\n"
    assert play(m, b"NOOP") == b"+OK second\r\n"
    assert play(m, b"NOOP") is None
    assert m.candidates(command(b"NOOP"), "NOOP")[0].endswith("(already played)")


def test_any_mode_reuses_the_last_match() -> None:
    m = matcher(mode="any")
    play(m, b"NOOP")
    play(m, b"NOOP")
    assert play(m, b"NOOP") == b"+OK second\r\n"


def test_strict_mode_wants_exactly_the_next_command() -> None:
    m = matcher(mode="strict")
    assert play(m, b"PASS x") is None
    assert "expected next" in m.candidates(command(b"PASS x"), "PASS x")[0]
    assert play(m, b"USER alice") == b"+OK\r\n"
    assert play(m, b"PASS anything") == b"+OK logged in\r\n"


def test_masked_secrets_match_any_value_kept_ones_must_be_equal() -> None:
    assert play(matcher(), b"PASS hunter2") == b"+OK logged in\r\n"
    kept = [(d, b"PASS right\r\n" if x.startswith(b"PASS") else x) for d, x in USER_PASS]
    assert play(matcher(kept, secrets="kept"), b"PASS wrong") is None
    assert play(matcher(kept, secrets="kept"), b"PASS right") == b"+OK logged in\r\n"


def test_arguments_must_be_equal() -> None:
    m = matcher()
    assert play(m, b"RETR 2") is None
    assert m.candidates(command(b"RETR 2"), "RETR 2")[0] == "#4 RETR 1 (arguments differ)"


@settings(max_examples=300, deadline=None)
@given(
    verb=st.sampled_from([b"PASS", b"APOP", b"AUTH", b"pass", b"Auth"]),
    args=st.binary(max_size=30).filter(lambda a: b"\n" not in a),
)
def test_a_masked_recorded_line_matches_the_line_it_was_masked_from(
    verb: bytes, args: bytes
) -> None:
    """The capture masker and the matcher agree on where the secret sits: the key of the
    live line equals the key of its masked copy, whatever separators it holds."""
    line = verb + b" " + args
    live = line_key(line, True)
    assert line_key(mask_line(line), True) == live
    assert live[0] == split_command(line)[0]
    assert SECRET_PLACEHOLDER.encode() in live[1] or mask_line(line) == line


def test_the_sasl_mechanism_is_case_insensitive() -> None:
    assert args_key("AUTH", b"plain", True) == args_key("AUTH", b"PLAIN", True) == b"PLAIN"
    assert args_key("AUTH", b"plain x", False) == b"PLAIN x"


def test_a_switch_replays_what_was_answered_before() -> None:
    other = [(d, x.replace(b"alice", b"bob")) for d, x in USER_PASS]
    sessions = [session_from_capture(capture_of(t)) for t in (USER_PASS, other)]
    accounting = Accounting(sessions)
    first = Matcher(accounting, 0, mode="default", listen_tls=False)
    moved = first.switched(1, [command(b"NOOP")])
    assert moved.index == 1 and moved.played[4] and not first.played[4]
    assert accounting.counts[1][4] == 1


def test_the_picker_cycles_or_serves_each_session_once() -> None:
    sessions = [session_from_capture(capture_of(USER_PASS))] * 2
    cycle = SessionPicker(sessions, "cycle")
    assert [cycle.assign() for _ in range(3)] == [0, 1, 0]
    once = SessionPicker(sessions, "once")
    assert [once.assign() for _ in range(3)] == [0, 1, None]


def test_the_picker_finds_a_user_and_frees_the_session_it_leaves() -> None:
    bob = [(d, x.replace(b"alice", b"bob")) for d, x in USER_PASS]
    sessions = [session_from_capture(capture_of(t)) for t in (USER_PASS, bob)]
    picker = SessionPicker(sessions, "once")
    first = picker.assign()
    assert first == 0
    assert picker.for_user("bob", None, current=0) == 1
    assert picker.assign() == 0  # alice's session was given back
    assert picker.for_user("nobody", None, current=0) is None


def test_accounting_keeps_a_bounded_list_and_counts_the_rest() -> None:
    session = session_from_capture(capture_of(USER_PASS))
    accounting = Accounting([session])
    for _ in range(MAX_UNMATCHED_KEPT + 5):
        accounting.note_unmatched("mem.p3cap", "XYZZY", ())
    assert len(accounting.unmatched) == MAX_UNMATCHED_KEPT
    assert accounting.unmatched_total == MAX_UNMATCHED_KEPT + 5
    assert [u.seq for u in accounting.unplayed()] == [1, 2, 3, 4, 5, 6, 7]
