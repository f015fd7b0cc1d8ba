"""Fault specs, choice and the relay's fault gate, sans-IO (no sockets)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pop3tap.faults import (
    ConnectionFaults,
    FaultAction,
    FaultError,
    FaultPlan,
    garble,
    parse_fault,
    preset_faults,
)
from pop3tap.relay_faults import FaultGate, StepKind


@pytest.mark.parametrize(
    ("spec", "action", "verb", "arguments", "occurrence", "amount", "text"),
    [
        ("greeting:delay=2s", FaultAction.DELAY, "greeting", None, None, 2.0, ""),
        ("RETR:delay=250ms", FaultAction.DELAY, "RETR", None, None, 0.25, ""),
        ("QUIT:delay=1m", FaultAction.DELAY, "QUIT", None, None, 60.0, ""),
        ("RETR 2:slow=1KiB/s", FaultAction.SLOW, "RETR", b"2", None, 1024.0, ""),
        ("retr#3:cut=1000", FaultAction.CUT, "RETR", None, 3, 1000.0, ""),
        ("PASS:reset", FaultAction.RESET, "PASS", None, None, 0.0, ""),
        ("*:stall", FaultAction.STALL, "*", None, None, 0.0, ""),
        ("LIST:close", FaultAction.CLOSE, "LIST", None, None, 0.0, ""),
        (
            'PASS:err="[IN-USE] Mailbox locked, try: later"',
            FaultAction.ERR,
            "PASS",
            None,
            None,
            0.0,
            "[IN-USE] Mailbox locked, try: later",
        ),
        ("TOP 1  0:garble", FaultAction.GARBLE, "TOP", b"1 0", None, 0.0, ""),
        (
            'STAT:unsolicited="-ERR [SYS/TEMP] shutting down"',
            FaultAction.UNSOLICITED,
            "STAT",
            None,
            None,
            0.0,
            "-ERR [SYS/TEMP] shutting down",
        ),
    ],
)
def test_specs_parse(
    spec: str,
    action: FaultAction,
    verb: str,
    arguments: bytes | None,
    occurrence: int | None,
    amount: float,
    text: str,
) -> None:
    fault = parse_fault(spec)
    assert (fault.action, fault.verb, fault.arguments, fault.occurrence) == (
        action,
        verb,
        arguments,
        occurrence,
    )
    assert (fault.amount, fault.text) == (amount, text)


def test_options_parse() -> None:
    fault = parse_fault("RETR:cut=10,p=0.25,seed=7,times=2")
    assert (fault.probability, fault.seed, fault.times) == (0.25, 7, 2)


@pytest.mark.parametrize(
    ("spec", "names"),
    [
        ("RETR", "WHERE:WHAT"),
        (":cut=5", "missing where"),
        ("RETR#0:cut=5", "RETR#0"),
        ("RE TR#x:close", "RE TR#x"),
        ("1RETR:close", "1RETR"),
        ("RETR:explode", "explode"),
        ("RETR:cut", "needs a value"),
        ("RETR:cut=lots", "lots"),
        ("RETR:reset=now", "takes no value"),
        ("RETR:delay=soon", "soon"),
        ("RETR:slow=fast", "fast"),
        ("RETR:slow=0B/s", "positive"),
        ("RETR:close,p=2", "p must be"),
        ("RETR:close,q=1", "'q=1'"),
        ("RETR:close,times=0", "times"),
        ('PASS:err="unclosed', "unclosed quote"),
        ('PASS:err="a\nb"', "CR, LF"),
        ("greeting:garble", "greeting has none"),
    ],
)
def test_bad_specs_name_the_bad_part_in_one_line(spec: str, names: str) -> None:
    with pytest.raises(FaultError) as info:
        parse_fault(spec)
    message = str(info.value)
    assert names in message and "\n" not in message, message


def test_nth_occurrence_is_counted_per_connection() -> None:
    plan = FaultPlan(["RETR#2:close"])
    for connection in range(3):
        faults = ConnectionFaults(plan, connection)
        hits = [faults.choose("RETR", b"1") is not None for _ in range(4)]
        assert hits == [False, True, False, False]


def test_arguments_must_match_and_star_skips_the_greeting() -> None:
    faults = ConnectionFaults(FaultPlan(["RETR 2:close", "*:delay=1s"]))
    assert faults.choose("greeting") is None
    assert faults.choose("RETR", b"1").action is FaultAction.DELAY  # type: ignore[union-attr]
    assert faults.choose("RETR", b" 2 ").action is FaultAction.CLOSE  # type: ignore[union-attr]


def test_times_counts_over_the_whole_server() -> None:
    plan = FaultPlan(["NOOP:close,times=2"])
    hits = sum(ConnectionFaults(plan, n).choose("NOOP") is not None for n in range(5))
    assert hits == 2


def test_the_same_seed_hits_the_same_exchanges() -> None:
    def hits(seed: int) -> list[list[int]]:
        plan = FaultPlan([f"RETR:close,p=0.3,seed={seed}"])
        out = []
        for connection in range(3):
            faults = ConnectionFaults(plan, connection)
            out.append([n for n in range(40) if faults.choose("RETR", b"%d" % n) is not None])
        return out

    first = hits(7)
    assert first == hits(7)
    assert first != hits(8)
    assert all(0 < len(run) < 40 for run in first)


def test_no_fault_plan_costs_no_state_per_exchange() -> None:
    faults = ConnectionFaults(FaultPlan())
    for _ in range(1000):
        assert faults.choose("RETR", b"1") is None
    assert faults._counts == {} and faults._random == {}


def test_runtime_add_and_clear() -> None:
    plan = FaultPlan()
    faults = ConnectionFaults(plan)
    assert faults.choose("STAT") is None
    plan.add("STAT:close")
    assert faults.choose("STAT") is not None
    plan.clear()
    assert faults.choose("STAT") is None


def test_preset_is_repeatable_from_its_seed() -> None:
    assert preset_faults("flaky", 42) == preset_faults("flaky", 42)
    assert preset_faults("flaky", 42) != preset_faults("flaky", 43)
    for spec in preset_faults("flaky", 1):
        parse_fault(spec)
    with pytest.raises(FaultError, match="unknown fault preset"):
        preset_faults("chaos", 1)


_BODY_LINES = st.lists(
    st.binary(max_size=30).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    max_size=20,
)


@settings(deadline=None)  # no timed assertion: a busy machine is not a failure
@given(_BODY_LINES, st.integers(0, 100))
def test_garble_keeps_size_lines_and_framing(lines: list[bytes], seed: int) -> None:
    stuffed = [b"." + line if line.startswith(b".") else line for line in lines]
    response = b"+OK 1 octets\r\n" + b"".join(line + b"\r\n" for line in stuffed) + b".\r\n"
    changed = garble(response, seed)
    assert len(changed) == len(response)
    assert changed.split(b"\r\n")[0] == b"+OK 1 octets"
    old_lines, new_lines = response.split(b"\r\n"), changed.split(b"\r\n")
    assert len(old_lines) == len(new_lines)
    for old, new in zip(old_lines, new_lines, strict=True):
        assert old[:1] == new[:1]  # dot-stuffing and the terminator untouched


_STATUS_LINES = st.sampled_from([b"+OK", b"-ERR", b"+OK 2 320", b"-ERR [IN-USE] locked", b"+"])


@settings(deadline=None)  # no timed assertion: a busy machine is not a failure
@given(_STATUS_LINES, st.one_of(st.none(), _BODY_LINES), st.integers(0, 100))
def test_garble_never_changes_the_status_word(
    status: bytes, lines: list[bytes] | None, seed: int
) -> None:
    """A client reads ``+OK`` or ``-ERR`` first (RFC 1939 §3); garble changes what follows."""
    response = status + b"\r\n"
    if lines is not None:
        stuffed = [b"." + line if line.startswith(b".") else line for line in lines]
        response += b"".join(line + b"\r\n" for line in stuffed) + b".\r\n"
    changed = garble(response, seed)
    word = status.split(b" ")[0]
    assert changed[: len(word) + 1] == response[: len(word) + 1]
    assert len(changed) == len(response)


# --------------------------------------------------------------------------- the relay's gate

RESPONSE = b"+OK 40 octets\r\n" + b"x" * 38 + b"\r\n.\r\n"


def _gate(spec: str) -> FaultGate:
    gate = FaultGate(ConnectionFaults(FaultPlan([spec])))
    gate.on_greeting(10)
    return gate


def _run(gate: FaultGate, data: bytes, start: int, splits: list[int]) -> tuple[bytes, list[str]]:
    """Feed ``data`` in pieces; the bytes the client gets and the other step kinds."""
    sent = bytearray()
    kinds: list[str] = []
    cuts = sorted({0, len(data), *(min(len(data), s) for s in splits)})
    for a, b in itertools.pairwise(cuts):
        if a == b:
            continue
        if a <= len(data) - len(RESPONSE) < b or b == len(data):
            gate.on_exchange(1, len(data) - len(RESPONSE) + start, start + len(data))
        for step in gate.plan(start + a, data[a:b]):
            if step.kind in (StepKind.SEND, StepKind.PACE):
                sent += step.data
            else:
                kinds.append(step.kind.value)
        if "end" in kinds:
            break
    return bytes(sent), kinds


@settings(deadline=None)  # no timed assertion: a busy machine is not a failure
@given(st.lists(st.integers(0, len(RESPONSE)), max_size=6))
def test_cut_sends_exactly_n_octets_whatever_the_chunks(splits: list[int]) -> None:
    gate = _gate("RETR:cut=17")
    gate.on_command(1, "RETR", b"1", 10)
    sent, kinds = _run(gate, RESPONSE, 10, splits)
    assert sent == RESPONSE[:17]
    assert kinds == ["end"]


@settings(deadline=None)  # no timed assertion: a busy machine is not a failure
@given(st.lists(st.integers(0, len(RESPONSE)), max_size=6))
def test_delay_sleeps_once_then_sends_everything(splits: list[int]) -> None:
    gate = _gate("RETR:delay=1s")
    gate.on_command(1, "RETR", b"1", 10)
    sent, kinds = _run(gate, RESPONSE, 10, splits)
    assert sent == RESPONSE and kinds == ["sleep"]
    assert not gate.armed


@settings(deadline=None)  # no timed assertion: a busy machine is not a failure
@given(
    st.sampled_from([b"+OK\r\n", b"-ERR\r\n", b"+OK 40 octets\r\n"]),
    st.lists(st.integers(0, 60), max_size=6),
    st.integers(0, 100),
)
def test_relay_garble_keeps_the_status_word_whatever_the_chunks(
    status: bytes, splits: list[int], seed: int
) -> None:
    """The relay garbles an answer piece by piece, as the server's bytes arrive; a status
    line split over pieces keeps its status word, and a body line keeps its first octet."""
    body = b"".join(b"l%dxyz\r\n" % i for i in range(4)) + b"..dot\r\n.\r\n"
    response = status + (body if status.startswith(b"+OK 40") else b"")
    gate = _gate(f"RETR:garble,seed={seed}")
    gate.on_command(1, "RETR", b"1", 10)
    data = response + b"+OK\r\n"
    cuts = sorted({0, len(response), *(min(len(response), s) for s in splits)})
    sent = bytearray()
    for a, b in itertools.pairwise(cuts):
        if b == len(response):
            gate.on_exchange(1, 10, 10 + len(response))
        for step in gate.plan(10 + a, data[a:b]):
            sent += step.data
    for step in gate.plan(10 + len(response), data[len(response) :]):
        sent += step.data
    assert len(sent) == len(data)
    word = status.split(b" ")[0].rstrip()
    assert sent.startswith(word + status[len(word) : len(word) + 1])
    old_lines, new_lines = data.split(b"\r\n"), bytes(sent).split(b"\r\n")
    assert [line[:1] for line in old_lines] == [line[:1] for line in new_lines]
    assert sent.endswith(b".\r\n+OK\r\n") or not status.startswith(b"+OK 40")


def test_err_replaces_the_answer_and_the_session_goes_on() -> None:
    gate = _gate('RETR:err="[IN-USE] locked"')
    gate.on_command(1, "RETR", b"1", 10)
    gate.on_exchange(1, 10, 10 + len(RESPONSE))
    steps = gate.plan(10, RESPONSE + b"+OK\r\n")
    sent = b"".join(s.data for s in steps if s.kind is StepKind.SEND)
    assert sent == b"-ERR [IN-USE] locked\r\n+OK\r\n"


def test_pipelined_answer_starts_where_the_previous_ends() -> None:
    gate = _gate("RETR#2:close")
    gate.on_command(1, "RETR", b"1", 10)
    gate.on_command(2, "RETR", b"2", 10)  # pipelined: RETR 1 not answered yet
    assert gate.armed[0].start is None
    gate.on_exchange(1, 10, 10 + len(RESPONSE))
    steps = gate.plan(10, RESPONSE + RESPONSE)
    assert steps[0].kind is StepKind.SEND and steps[0].data == RESPONSE
    assert steps[-1].kind is StepKind.END
