"""The table-driven protocol core, in the h11 shape: cases of bytes in, facts out.

Each case of :data:`CASES` is one session (client bytes, server bytes) with the exchanges it
must produce, the phase it ends in and its summary counters. :func:`drive` feeds it whole,
one byte at a time, and cut at random points; every way must give the same events. Then
the command table, the phase table and the one-call client feed are checked against the
observer that reads them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pop3tap.protocol import (
    COMMANDS,
    TRANSITIONS,
    Barrier,
    Counter,
    Event,
    Exchange,
    Multiline,
    SessionObserver,
    SessionPhase,
    StartTls,
    Status,
    Trigger,
    barrier_of,
    command_spec,
    counts_as_login,
    expects_multiline,
    known_verbs,
    login_name,
    mask_arguments,
    mask_line,
    next_phase,
    secret_position,
    summary_counter,
)

GREETING = b"+OK ready <1.2@host>\r\n"


@dataclass(frozen=True)
class Case:
    """One session and what the core must make of it."""

    name: str
    client: bytes
    server: bytes
    #: (verb, status, body lines) per exchange, in order.
    exchanges: list[tuple[str, str | None, int]]
    phase: SessionPhase
    summary: dict[str, int | bool] = field(default_factory=dict)


CASES = [
    Case(
        "user-pass-retr-quit",
        b"USER bob\r\nPASS pw\r\nRETR 1\r\nDELE 1\r\nQUIT\r\n",
        GREETING + b"+OK\r\n+OK in\r\n+OK 9 octets\r\nA: b\r\n\r\n..x\r\n.\r\n+OK\r\n+OK bye\r\n",
        [
            ("USER", "+OK", 0),
            ("PASS", "+OK", 0),
            ("RETR", "+OK", 3),
            ("DELE", "+OK", 0),
            ("QUIT", "+OK", 0),
        ],
        SessionPhase.UPDATE,
        {"retr_count": 1, "dele_count": 1, "authenticated": True, "reached_update": True},
    ),
    Case(
        "failed-login-quit",
        b"USER bob\r\nPASS no\r\nQUIT\r\n",
        GREETING + b"+OK\r\n-ERR denied\r\n+OK bye\r\n",
        [("USER", "+OK", 0), ("PASS", "-ERR", 0), ("QUIT", "+OK", 0)],
        SessionPhase.AUTHORIZATION,
        {"authenticated": False, "reached_update": False},
    ),
    Case(
        "apop-top-list",
        b"APOP bob 0123456789abcdef\r\nTOP 1 0\r\nLIST\r\nLIST 1\r\n",
        GREETING + b"+OK\r\n+OK\r\nA: b\r\n.\r\n+OK\r\n1 10\r\n.\r\n+OK 1 10\r\n",
        [("APOP", "+OK", 0), ("TOP", "+OK", 1), ("LIST", "+OK", 1), ("LIST", "+OK", 0)],
        SessionPhase.TRANSACTION,
        {"top_count": 1, "authenticated": True},
    ),
    Case(
        "auth-plain-with-challenge",
        b"AUTH PLAIN\r\nAGJvYgBwdw==\r\nSTAT\r\n",
        GREETING + b"+ \r\n+OK in\r\n+OK 0 0\r\n",
        [("AUTH", "+OK", 0), ("STAT", "+OK", 0)],
        SessionPhase.TRANSACTION,
        {"authenticated": True, "commands": 2},
    ),
    Case(
        "auth-listing-is-no-login",
        b"AUTH\r\nCAPA\r\n",
        GREETING + b"+OK\r\nPLAIN\r\n.\r\n+OK\r\nSASL PLAIN\r\n.\r\n",
        [("AUTH", "+OK", 1), ("CAPA", "+OK", 1)],
        SessionPhase.AUTHORIZATION,
        {"authenticated": False},
    ),
    Case(
        "stls-refused-releases-held-lines",
        b"STLS\r\nUSER bob\r\n",
        GREETING + b"-ERR no TLS\r\n+OK\r\n",
        [("STLS", "-ERR", 0), ("USER", "+OK", 0)],
        SessionPhase.AUTHORIZATION,
    ),
    Case(
        "stls-accepted-goes-opaque",
        b"STLS\r\n",
        GREETING + b"+OK begin\r\n\x16\x03\x01",
        [("STLS", "+OK", 0)],
        SessionPhase.OPAQUE,
    ),
    Case(
        "xtnd-xlst-and-uidl",
        b"XTND XLST subject\r\nUIDL\r\nUIDL 1\r\n",
        GREETING + b"+OK\r\n1 hi\r\n.\r\n+OK\r\n1 a\r\n.\r\n+OK 1 a\r\n",
        [("XTND", "+OK", 1), ("UIDL", "+OK", 1), ("UIDL", "+OK", 0)],
        SessionPhase.AUTHORIZATION,
    ),
]


def _pieces(data: bytes, mode: str, rng: random.Random) -> list[bytes]:
    if mode == "whole" or not data:
        return [data]
    if mode == "bytes":
        return [data[i : i + 1] for i in range(len(data))]
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 12))))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def drive(case: Case, mode: str, seed: int = 0) -> tuple[SessionObserver, list[Event]]:
    """The greeting, then the client (pipelined), then the server, cut as ``mode`` says."""
    rng = random.Random(seed)
    observer = SessionObserver()
    events: list[Event] = []
    greeting_end = case.server.index(b"\n") + 1
    for piece in _pieces(case.server[:greeting_end], mode, rng):
        events += observer.feed_server(piece, 0.0)
    for piece in _pieces(case.client, mode, rng):
        events += observer.receive_client(piece, 1.0).events
    for piece in _pieces(case.server[greeting_end:], mode, rng):
        events += observer.feed_server(piece, 2.0)
    return observer, events


def _facts(events: list[Event]) -> list[tuple[str, str | None, int]]:
    return [
        (e.verb, None if e.status is None else e.status.value, e.body_lines)
        for e in events
        if isinstance(e, Exchange)
    ]


def _without_starttls_trailing(events: list[Event]) -> list[Event]:
    # Trailing plaintext after a STLS switch depends on where the chunk was cut.
    return [e for e in events if not isinstance(e, StartTls)]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
@pytest.mark.parametrize("mode", ["whole", "bytes", "random"])
def test_cases_whole_bytewise_and_split(case: Case, mode: str) -> None:
    observer, events = drive(case, mode)
    assert _facts(events) == case.exchanges
    assert observer.phase is case.phase
    summary = observer.summary().as_dict()
    assert {key: summary[key] for key in case.summary} == case.summary
    if mode != "whole":
        _, whole = drive(case, "whole")
        assert _without_starttls_trailing(events) == _without_starttls_trailing(whole)


@settings(max_examples=60, deadline=None)
@given(index=st.integers(0, len(CASES) - 1), seed=st.integers(0, 2**32 - 1))
def test_cases_under_any_split(index: int, seed: int) -> None:
    case = CASES[index]
    observer, events = drive(case, "random", seed)
    _, whole = drive(case, "whole")
    assert _without_starttls_trailing(events) == _without_starttls_trailing(whole)
    assert observer.phase is case.phase


# ---------------------------------------------------------------------- the command table


def test_the_table_drives_the_rules_the_core_applies() -> None:
    assert known_verbs() == frozenset(COMMANDS)
    for verb, spec in COMMANDS.items():
        assert command_spec(verb) is spec
        with_arg = expects_multiline(verb, b" 1")
        bare = expects_multiline(verb, b"")
        assert (bare, with_arg) == {
            Multiline.NEVER: (False, False),
            Multiline.ALWAYS: (True, True),
            Multiline.WITHOUT_ARGUMENT: (True, False),
            Multiline.XLST_ARGUMENT: (False, False),
        }[spec.multiline], verb
        assert secret_position(verb) == spec.secret_after
        assert summary_counter(verb) is spec.counter
    assert expects_multiline("XTND", b"xlst subject")
    assert command_spec("FOO") is None and not expects_multiline("FOO", b"")
    assert barrier_of("STLS", b"") is Barrier.STLS
    assert barrier_of("AUTH", b"PLAIN") is Barrier.SASL
    assert barrier_of("AUTH", b"  ") is Barrier.NONE  # lists mechanisms, no SASL follows
    assert barrier_of("PASS", b"x") is Barrier.NONE
    assert counts_as_login("PASS", True) and counts_as_login("APOP", True)
    assert counts_as_login("AUTH", True) and not counts_as_login("AUTH", False)
    assert not counts_as_login("USER", True)
    assert summary_counter("RETR") is Counter.RETR and summary_counter("NOOP") is Counter.NONE
    assert login_name("USER", "bob smith") == "bob"
    assert login_name("APOP", "bob 0123") == "bob"
    assert login_name("PASS", "********") is None and login_name("USER", "") is None


@pytest.mark.parametrize("verb", sorted(v for v, s in COMMANDS.items() if s.secret_after))
def test_every_secret_verb_is_masked_where_the_table_says(verb: str) -> None:
    spec = COMMANDS[verb]
    assert spec.secret_after is not None
    clear = [b"clear%d" % i for i in range(1, spec.secret_after)]
    line = b" ".join([verb.encode(), *clear, b"topsecret"])
    assert mask_line(line) == b" ".join([verb.encode(), *clear, b"********"])
    args = b" ".join([*clear, b"topsecret"])
    assert "topsecret" not in mask_arguments(verb, args)


# ---------------------------------------------------------------------- the phase table


def test_unlisted_pairs_keep_the_phase_and_listed_ones_move_it() -> None:
    for phase in SessionPhase:
        for trigger in Trigger:
            expected = TRANSITIONS.get((phase, trigger), phase)
            assert next_phase(phase, trigger) is expected
    assert next_phase(SessionPhase.LOST, Trigger.LOGIN) is SessionPhase.LOST
    assert next_phase(SessionPhase.OPAQUE, Trigger.QUIT_OK) is SessionPhase.OPAQUE


def test_phases_of_a_session_with_stls_sasl_and_quit() -> None:
    observer = SessionObserver()
    seen = [observer.phase]

    def step(client: bytes, server: bytes) -> None:
        if client:
            observer.feed_client(client, 1.0)
            seen.append(observer.phase)
        if server:
            observer.feed_server(server, 2.0)
            seen.append(observer.phase)

    step(b"", GREETING)
    step(b"STLS\r\n", b"+OK begin\r\n")
    observer.resume_after_tls()
    seen.append(observer.phase)
    step(b"AUTH PLAIN\r\n", b"+ \r\n")
    step(b"AGJvYgBwdw==\r\n", b"+OK in\r\n")
    step(b"QUIT\r\n", b"+OK bye\r\n")
    P = SessionPhase
    assert seen == [
        P.GREETING,
        P.AUTHORIZATION,
        P.STLS_PENDING,
        P.OPAQUE,
        P.AUTHORIZATION,
        P.SASL,
        P.SASL,
        P.SASL,
        P.TRANSACTION,
        P.TRANSACTION,
        P.UPDATE,
    ]
    assert observer.summary().tls and observer.summary().reached_update


def test_a_flood_loses_pairing_and_the_phase_returns_after_it() -> None:
    observer = SessionObserver(max_pending=4)
    observer.feed_server(GREETING, 0.0)
    observer.feed_client(b"USER bob\r\nPASS pw\r\n", 1.0)
    observer.feed_server(b"+OK\r\n+OK in\r\n", 2.0)
    phases = [observer.phase]
    observer.feed_client(b"NOOP\r\n" * 10, 3.0)
    phases.append(observer.phase)
    observer.feed_server(b"+OK\r\n" * 10, 4.0)
    observer.feed_client(b"QUIT\r\n", 5.0)
    observer.feed_server(b"+OK bye\r\n", 6.0)
    phases.append(observer.phase)
    assert phases == [SessionPhase.TRANSACTION, SessionPhase.LOST, SessionPhase.UPDATE]
    assert observer.summary().reached_update and not observer.pairing_lost


# ---------------------------------------------------------------------- complete events


@pytest.mark.parametrize("trailing", [b"", b"\x16\x03\x01\x02\x00", b"USER evil\r\n"])
def test_starttls_is_emitted_complete(trailing: bytes) -> None:
    observer = SessionObserver()
    observer.feed_server(GREETING, 0.0)
    observer.feed_client(b"STLS\r\n", 1.0)
    events = observer.feed_server(b"+OK begin\r\n" + trailing, 2.0)
    (start,) = [e for e in events if isinstance(e, StartTls)]
    assert start.server_trailing == len(trailing)
    assert start.server_switch == len(GREETING) + len(b"+OK begin\r\n")
    assert events[-1] is start  # nothing after it in the same feed could have changed it


# ---------------------------------------------------------------------- one client feed


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_receive_client_records_what_record_then_parse_record(seed: int) -> None:
    rng = random.Random(seed)
    client = b"USER bob\r\nPASS hunter2\r\nAUTH PLAIN\r\nAGJvYgBodW50ZXIy\r\nSTAT\r\nQUIT\r\n"
    server = GREETING + b"+OK\r\n-ERR no\r\n+ \r\n+OK in\r\n+OK 0 0\r\n+OK bye\r\n"
    pieces = _pieces(client, "random", rng)

    def one_call() -> tuple[bytes, list[Event]]:
        observer = SessionObserver()
        observer.feed_server(GREETING, 0.0)
        recorded = b""
        events: list[Event] = []
        for piece in pieces:
            fed = observer.receive_client(piece, 1.0)
            recorded += b"".join(data for _at, data in fed.recorded)
            events += fed.events
        events += observer.feed_server(server[len(GREETING) :], 2.0)
        recorded += b"".join(data for _at, data in observer.take_masked_client())
        return recorded, events

    def two_steps() -> tuple[bytes, list[Event]]:
        observer = SessionObserver()
        observer.feed_server(GREETING, 0.0)
        recorded = b""
        events: list[Event] = []
        for piece in pieces:
            recorded += observer.record_client(piece, 1.0)
            events += observer.parse_recorded_client()
            recorded += b"".join(data for _at, data in observer.take_masked_client())
        events += observer.feed_server(server[len(GREETING) :], 2.0)
        recorded += b"".join(data for _at, data in observer.take_masked_client())
        return recorded, events

    recorded, events = one_call()
    assert (recorded, events) == two_steps()
    assert b"hunter2" not in recorded and b"AGJvYgBodW50ZXIy" not in recorded
    assert recorded.startswith(b"USER bob\r\nPASS ********\r\nAUTH PLAIN\r\n")
    assert [e.status for e in events if isinstance(e, Exchange)][-1] is Status.OK
