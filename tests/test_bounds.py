"""Work, memory and events per byte stay bounded whatever a peer sends (the sans-IO core).

Costs are counted, never timed: events returned, bytes retained (tracemalloc) and Python
lines executed inside pop3tap.protocol (a line tracer), per call and per input byte.
"""

from __future__ import annotations

import functools
import gc
import itertools
import json
import random
import sys
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any
from unittest.mock import patch

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pop3tap.protocol
from pop3tap.capture import CaptureWriter, read_capture
from pop3tap.htmlview.model import build_model
from pop3tap.protocol import (
    CommandSent,
    Event,
    Exchange,
    PairingLost,
    SecretMasker,
    SessionObserver,
    StartTls,
    Status,
    StrayLine,
    Suppressed,
    UnsolicitedLine,
    _masking,
    _masklines,
)
from pop3tap.render import render_json, render_lines

GREETING = b"+OK ready\r\n"
PROTOCOL_DIR = str(Path(pop3tap.protocol.__file__).resolve().parent)


class OperationCounter:
    """Counts Python lines executed in pop3tap/protocol (C-level work counts as nothing)."""

    def __init__(self) -> None:
        self.lines = 0

    def _local(self, frame: FrameType, event: str, arg: Any) -> Callable[..., Any] | None:
        if event == "line":
            self.lines += 1
        return self._local

    def _global(self, frame: FrameType, event: str, arg: Any) -> Callable[..., Any] | None:
        if frame.f_code.co_filename.startswith(PROTOCOL_DIR):
            return self._local
        return None

    @contextmanager
    def counting(self) -> Iterator[None]:
        if pop3tap.protocol.COMPILED:  # compiled code runs no Python lines to count
            pytest.skip("counts Python lines: runs against the pure core (POP3TAP_PURE_PYTHON=1)")
        previous = sys.gettrace()
        sys.settrace(self._global)
        try:
            yield
        finally:
            sys.settrace(previous)


def lines_run(call: Callable[[], object]) -> int:
    counter = OperationCounter()
    with counter.counting():
        call()
    return counter.lines


def retained_after(
    setup: Callable[[], SessionObserver], work: Callable[[SessionObserver], object]
) -> int:
    """Bytes still allocated after ``work`` (its returned events dropped)."""
    gc.collect()
    tracemalloc.start()
    try:
        observer = setup()
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        work(observer)
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def greeted() -> SessionObserver:
    observer = SessionObserver()
    observer.feed_server(GREETING, 0.0)
    return observer


# --------------------------------------------------------------------------- reproductions


def test_client_lf_flood_stops_per_line_work_and_says_so_once() -> None:
    flood = b"\n" * 262144
    observer = greeted()
    events = observer.feed_client(flood, 1.0)
    assert [e for e in events if isinstance(e, PairingLost)] != []
    assert len(events) <= 1030  # at most the pending bound, not one per byte
    assert observer.pairing_lost
    # Later bytes either way are only counted: no events, no per-line work.
    assert observer.feed_client(flood, 2.0) == []
    assert observer.feed_server(b"-ERR\r\n" * 1000, 2.0) == []
    assert lines_run(lambda: observer.feed_client(flood, 3.0)) < 100
    assert lines_run(lambda: observer.feed_server(b"\n" * 262144, 3.0)) < 100
    closing = observer.end_client(4.0) + observer.end_server(4.0)
    totals = {
        (e.direction.value, e.kind): (e.lines, e.bytes)
        for e in closing
        if isinstance(e, Suppressed)
    }
    assert totals[("c2s", "unpaired")][1] >= 2 * len(flood)
    assert totals[("s2c", "unpaired")] == (1000 + 262144, 6000 + 262144)
    assert sum(isinstance(e, PairingLost) for e in events + closing) == 1


def test_client_lf_flood_costs_little_memory_and_work() -> None:
    flood = b"\n" * 262144
    retained = retained_after(greeted, lambda obs: obs.feed_client(flood, 1.0))
    assert retained < 1_000_000
    observer = greeted()
    # Python lines run stay under 2 per byte (per-line parsing of every LF: over 100).
    assert lines_run(lambda: observer.feed_client(flood, 1.0)) < 2 * len(flood)


def test_long_commands_to_a_silent_server_are_bounded_in_bytes() -> None:
    line = b"X" * 8190 + b"\r\n"

    def pipeline(observer: SessionObserver) -> None:
        for _ in range(2000):  # 16 MiB of unanswered commands
            observer.feed_client(line, 1.0)

    assert retained_after(greeted, pipeline) < 2_000_000
    observer = greeted()
    events: list[Event] = []
    for _ in range(2000):
        events += observer.feed_client(line, 1.0)
    assert sum(isinstance(e, PairingLost) for e in events) == 1
    assert sum(isinstance(e, CommandSent) for e in events) < 200


def test_server_lf_flood_becomes_a_bounded_number_of_events() -> None:
    flood = b"\n" * (2 << 20)
    for command in (b"", b"NOOP\r\n"):
        observer = greeted()
        observer.feed_client(command, 1.0)
        events: list[Event] = []
        for pos in range(0, len(flood), 65536):
            events += observer.feed_server(flood[pos : pos + 65536], 2.0)
        events += observer.end_server(3.0)
        anomalies = [e for e in events if isinstance(e, StrayLine | UnsolicitedLine)]
        assert len(anomalies) == 100
        summaries = [e for e in events if isinstance(e, Suppressed)]
        assert [s.final for s in summaries] == [False, True]
        assert (summaries[-1].lines, summaries[-1].bytes) == (len(flood) - 100, len(flood) - 100)
        assert len(events) < 110


def test_server_stray_flood_resynchronises_at_the_next_status_line() -> None:
    observer = greeted()
    observer.feed_client(b"NOOP\r\nLIST\r\n", 1.0)
    noise = b"garbage\r\n" * 50_000 + b"\n" * 50_000 + b"+ not for NOOP\r\n" + b"+OKAY\r\n"
    work = lines_run(lambda: observer.feed_server(noise[:300_000], 2.0))
    events = observer.feed_server(noise[300_000:] + b"+OK fine\r\n+OK 1 m\r\n1 5\r\n.\r\n", 2.0)
    noop, listing = [e for e in events if isinstance(e, Exchange)]
    assert (noop.verb, noop.first_line) == ("NOOP", "+OK fine")
    assert (listing.verb, listing.body_lines) == ("LIST", 1)
    assert work < 100 * 50 + 5000  # per-line work only for the reported lines


def test_a_line_split_across_chunks_is_still_found_while_skipping() -> None:
    observer = greeted()
    observer.feed_client(b"NOOP\r\n", 1.0)
    observer.feed_server(b"junk\r\n" * 200, 2.0)  # past the budget
    events = observer.feed_server(b"junk\r\n+O", 2.0) + observer.feed_server(b"K yes\r\n", 2.0)
    (noop,) = [e for e in events if isinstance(e, Exchange)]
    assert noop.first_line == "+OK yes"


def test_sasl_challenge_flood_reports_a_bounded_number_of_steps() -> None:
    observer = greeted()
    observer.feed_client(b"AUTH X\r\n", 1.0)
    events = observer.feed_server(b"+ \r\n" * 100_000, 2.0)
    assert len(events) <= 64
    (auth,) = [e for e in observer.feed_server(b"-ERR no\r\n", 3.0) if isinstance(e, Exchange)]
    assert auth.sasl[-1] == ("...", str(100_000 - 64))
    observer = greeted()
    observer.feed_client(b"AUTH X\r\n", 1.0)
    observer.feed_server(b"+ \r\n" * 100, 2.0)
    # Past the kept steps a run of challenges is counted in one match.
    assert lines_run(lambda: observer.feed_server(b"+ \r\n" * 100_000, 2.0)) < 200


def test_counted_challenges_release_held_lines_as_one_at_a_time_would() -> None:
    observer = greeted()
    observer.feed_client(b"AUTH X\r\n" + b"c2VjcmV0\r\n" * 10 + b"STAT\r\n", 1.0)
    events = observer.feed_server(b"+ \r\n" * 100 + b"+OK in\r\n+OK 1 2\r\n", 2.0)
    # 100 challenges, the 11 held lines answer the first 11 (STAT among them: SASL data).
    (auth,) = [e for e in events if isinstance(e, Exchange)]
    assert auth.sasl[-1] == ("...", str(100 + 11 - 64))
    assert auth.first_line == "+OK in"
    assert [e.text for e in events if isinstance(e, UnsolicitedLine)] == ["+OK 1 2"]
    assert "c2VjcmV0" not in repr(events) and "STAT" not in repr(events)


# --------------------------------------------------------------------------- STLS (item 4)


def test_any_server_line_ends_the_stls_wait() -> None:
    for answer, status in (
        (b"+ok begin\r\n", None),
        (b"+ \r\n", Status.CONTINUE),
        (b"TLS? never heard of it\r\n", None),
        (b"-ERR no\r\n", Status.ERR),
    ):
        observer = greeted()
        observer.feed_client(b"STLS\r\nNOOP\r\n", 1.0)
        assert observer.stls_pending
        events = observer.feed_server(answer + b"+OK noop\r\n", 2.0)
        stls, noop = [e for e in events if isinstance(e, Exchange)]
        assert (stls.verb, stls.status, stls.first_line) == (
            "STLS",
            status,
            answer.decode().removesuffix("\r\n"),
        )
        assert noop.first_line == "+OK noop"
        assert not observer.stls_pending and not observer.opaque
        assert not any(isinstance(e, StartTls) for e in events)


def test_only_plus_ok_upgrades() -> None:
    observer = greeted()
    observer.feed_client(b"STLS\r\n", 1.0)
    events = observer.feed_server(b"+OK go\r\n", 2.0)
    assert any(isinstance(e, StartTls) for e in events) and observer.opaque


# --------------------------------------------------------------------------- properties

_CLIENT_TOKENS = [
    b"NOOP\r\n",
    b"STAT\r\n",
    b"RETR 1\r\n",
    b"LIST\r\n",
    b"AUTH PLAIN\r\n",
    b"AUTH\r\n",
    b"STLS\r\n",
    b"PASS x\r\n",
    b"*\r\n",
    b"\n",
    b"\r\n",
    b"\r",
    b"x" * 300,
    b"\x00\xff",
]
_SERVER_TOKENS = [
    b"+OK\r\n",
    b"-ERR\r\n",
    b"+ \r\n",
    b"+\r\n",
    b".\r\n",
    b"line\r\n",
    b"\n",
    b"\r\n",
    b"+ok\r\n",
    b"+OK 1\r\n1 2\r\n.\r\n",
    b"x" * 300,
    b"-",
    b"+",
]


def _stream(tokens: list[bytes]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.lists(st.sampled_from(tokens), max_size=60).map(b"".join),
        st.tuples(st.sampled_from(tokens), st.integers(1, 20_000)).map(lambda t: t[0] * t[1]),
        st.binary(max_size=2000),
    )


#: Python lines the core may run per input byte, amortised over a session (a 1-byte line
#: costs about 130 before the bounds apply; a flood beyond them costs nothing per line).
_OPS_PER_BYTE = 200
#: The most one call may run beyond its own bytes: releasing the held-back lines (at most
#: ``max_pending`` of them) when the command they wait for is answered.
_OPS_PER_CALL = 1024 * 150


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    client=st.lists(_stream(_CLIENT_TOKENS), min_size=1, max_size=4).map(b"".join),
    server=st.lists(_stream(_SERVER_TOKENS), min_size=1, max_size=4).map(b"".join),
    seed=st.integers(0, 2**32),
)
def test_events_and_work_per_byte_stay_bounded(client: bytes, server: bytes, seed: int) -> None:
    """Arbitrary streams, arbitrary splits, arbitrary interleaving of the two directions;
    the capture masker's work counts too."""
    rng = random.Random(seed)
    observer = SessionObserver()
    counter = OperationCounter()
    events = 0
    anomalies = 0
    positions = {"c": 0, "s": 0}
    streams = {"c": client, "s": GREETING + server}
    while positions["c"] < len(client) or positions["s"] < len(streams["s"]):
        side = rng.choice([k for k in "cs" if positions[k] < len(streams[k])])
        size = rng.choice([1, 7, 100, 4096, 262144])
        piece = streams[side][positions[side] : positions[side] + size]
        positions[side] += len(piece)
        before = counter.lines
        with counter.counting():
            if side == "c":  # recorded for the capture (masked), then parsed, as the relay does
                observer.record_client(piece, 1.0)
                batch = observer.parse_recorded_client()
            else:
                batch = observer.feed_server(piece, 1.0)
            observer.take_masked_client()
        assert counter.lines - before <= _OPS_PER_CALL + _OPS_PER_BYTE * len(piece)
        assert counter.lines <= 3000 + _OPS_PER_BYTE * sum(positions.values())
        events += len(batch)
        anomalies += sum(isinstance(e, StrayLine | UnsolicitedLine) for e in batch)
    closing = observer.end_client(2.0) + observer.end_server(2.0)
    events += len(closing)
    anomalies += sum(isinstance(e, StrayLine | UnsolicitedLine) for e in closing)
    total = len(client) + len(streams["s"])
    assert events <= 16 + 2 * total  # a 1-byte command line: CommandSent and Exchange
    assert anomalies <= 100
    assert observer._pending_bytes <= (256 << 10) + 8192 + 512


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    token=st.sampled_from([b"\n", b"NOOP\r\n", b"X" * 8190 + b"\r\n", b"AUTH X\r\n", b"STLS\r\n"]),
    count=st.integers(5_000, 200_000),
    chunk=st.sampled_from([4096, 65536, 262144]),
)
def test_retained_memory_does_not_grow_with_the_input(token: bytes, count: int, chunk: int) -> None:
    """Whatever a client pipelines to a server that never answers, a session keeps < 2 MB."""
    data = token * min(count, (16 << 20) // len(token))

    def feed(observer: SessionObserver) -> None:
        for pos in range(0, len(data), chunk):
            observer.feed_client(data[pos : pos + chunk], 1.0)

    assert retained_after(greeted, feed) < 2_000_000


def test_masker_decides_each_line_within_a_few_bytes() -> None:
    """Binary and long lines without blanks are skipped with C-level searches."""
    rng = random.Random(7)
    blob = rng.randbytes(1 << 20)
    no_blanks = (b"A" * 100_000 + b"\r\n") * 10
    for data in (blob, no_blanks):
        work = lines_run(functools.partial(SecretMasker().mask, data))
        assert work < len(data) // 20, work


def test_masker_skips_lone_cr_floods_and_clear_lines_in_every_chunk() -> None:
    """A chunk that starts mid-line (a CR at the last chunk's edge), or a keyword line at a
    chunk's start, must not send the rest of the chunk through the byte steps: lone CRs
    end lines for classification, so a CR flood would be one Python pass per byte."""
    chunk = 65536
    floods = {
        "CRs": b"\r" * (1 << 20),
        "P and CR": b"P\r" * (1 << 19),
        "a word then CRs": (b"NOOP x" + b"\r" * 1000) * 1000,
        "PASS then LFs in every chunk": (b"PASS x\n" + b"\n" * (chunk - 7)) * 16,
        "PASS then CRs in every chunk": (b"PASS x\n" + b"\r" * (chunk - 7)) * 16,
    }
    for name, flood in floods.items():
        masker = SecretMasker()
        pieces = [flood[pos : pos + chunk] for pos in range(0, len(flood), chunk)]
        out: list[bytes] = []

        def feed(
            masker: SecretMasker = masker, pieces: list[bytes] = pieces, out: list[bytes] = out
        ) -> None:
            for piece in pieces:
                out.append(masker.mask(piece))

        work = lines_run(feed)
        assert work < len(flood) // 20, (name, work)
        masker.end_of_stream()
        out += [d for _, d in masker.take_released()]
        slow = SecretMasker()
        expected = [slow.mask_bytewise(piece) for piece in pieces]
        slow.end_of_stream()
        expected += [d for _, d in slow.take_released()]
        assert b"".join(out) == b"".join(expected), name


def _run_maskers() -> list[_masklines.RunMasker]:
    """The Python run masker, and the C one when it is built.

    The C one is imported itself, not taken from ``_masklines``: these tests count Python
    lines, so they run only with ``POP3TAP_PURE_PYTHON=1``, which also makes ``_masklines``
    choose its Python masker.
    """
    run_maskers: list[_masklines.RunMasker] = [_masklines.mask_run_python]
    try:
        from pop3tap.protocol import _maskscan_c
    except ImportError:
        return run_maskers
    run_maskers.append(_maskscan_c.mask_run)
    return run_maskers


def _mask_chunks_counting_lines(
    run_masker: _masklines.RunMasker, pieces: list[bytes]
) -> tuple[int, SecretMasker, list[bytes]]:
    """Mask ``pieces`` in turn with ``run_masker``: the Python lines run, the masker, and
    what it gave back for each piece."""
    masker = SecretMasker()
    out: list[bytes] = []

    def feed() -> None:
        for piece in pieces:
            out.append(masker.mask(piece))

    with patch.object(_masking, "mask_run", run_masker):
        work = lines_run(feed)
    return work, masker, out


_SECRET_FLOODS = {
    "PASS": b"PASS x\r\n" * 32768,
    "APOP": b"APOP u d\r\n" * 26214,
    "mixed case and separators": b"pAsS\x00x\r\nPaSs\tx\napop bob\x0bd\r\nPASS1x\r\n" * 7000,
    "lone CRs": b"PASS\rx\r\nNOOP\rPASS x\r\n\x7fAPOP b\rd\n" * 8000,
    "clear and secret lines": b"NOOP\r\nPASS x\r\n" * 16384,
    "an APOP name without an end": b"APOP " + b"n" * (1 << 20),
    "separators after APOP": b"APOP" + b"\t" * (1 << 20),
}


def test_secret_verb_floods_take_a_bounded_number_of_python_steps_per_chunk() -> None:
    """Lines whose first word is PASS or APOP (any case, any separator, lone CRs) are
    masked by C-level work, with the C run masker and with the Python one: the Python
    lines run per 64 KiB chunk stay under a constant, not one pass per line or per byte
    (issue 10 item 8). The bytes are those of the byte steps."""
    chunk = 65536 - 3  # every chunk boundary falls inside a line
    for run_masker in _run_maskers():
        for name, flood in _SECRET_FLOODS.items():
            pieces = [flood[pos : pos + chunk] for pos in range(0, len(flood), chunk)]
            work, _masker, out = _mask_chunks_counting_lines(run_masker, pieces)
            assert work < 600 * len(pieces), (run_masker, name, work)
            slow = SecretMasker()
            expected = [slow.mask_bytewise(piece) for piece in pieces]
            assert b"".join(out) == b"".join(expected), name
            assert b"x\r" not in b"".join(out) and b" d\r" not in b"".join(out)


_KEYWORD_FLOODS = {
    "a keyword after the first word": b"x PASS\n" * 9363,
    "a keyword glued after a letter": b"xPASS\n" * 10922,
    "keywords on one line without its end": b"x" + b"PASS " * 13107,
    "keywords after words between lone CRs": b"\rx PASS" * 9362,
    "keyword-like words between lone CRs": b"PASSWORD\r" * 7281,
    "verbs after lone CRs without a line end": b"\rpass" * 10922,
    "clear parts before an AUTH part": b"NOOP\r" * 13107 + b"AUTH PLAIN\n",
}


def test_keywords_that_open_no_secret_take_a_bounded_number_of_python_steps() -> None:
    """A keyword that is not a line's first word, or a first word that only begins like
    one, between lone CRs and without a line end, is found clear by C-level searches: the
    Python lines run per 64 KiB chunk stay under a constant, not one pass per keyword or
    per lone-CR part (issue 10 item 8). The bytes are those of the byte steps."""
    chunk = 65536
    for run_masker in _run_maskers():
        for name, unit in _KEYWORD_FLOODS.items():
            flood = unit * 4
            pieces = [flood[pos : pos + chunk] for pos in range(0, len(flood), chunk)]
            work, masker, out = _mask_chunks_counting_lines(run_masker, pieces)
            assert work < 600 * len(pieces), (run_masker, name, work)
            masker.end_of_stream()
            out += [d for _, d in masker.take_released()]
            slow = SecretMasker()
            expected = [slow.mask_bytewise(piece) for piece in pieces]
            slow.end_of_stream()
            expected += [d for _, d in slow.take_released()]
            assert b"".join(out) == b"".join(expected), name


_UNIT_TOKENS = [
    b"PASS", b"pass", b"APOP", b"AUTH", b"PASSWORD", b"x", b" ", b"\t", b"\x00", b"\x7f",
    b"\r", b"\n", b"\r\n", b"1", b"USER", b"PA", b"*",
]  # fmt: skip


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    unit=st.lists(st.sampled_from(_UNIT_TOKENS), min_size=1, max_size=6).map(b"".join),
    offset=st.integers(0, 63),
    after_auth=st.booleans(),
    python_runs=st.booleans(),
)
def test_any_repeated_line_shape_costs_a_bounded_number_of_python_steps_per_chunk(
    unit: bytes, offset: int, after_auth: bool, python_runs: bool
) -> None:
    """Whatever short unit a client repeats (keywords, separators, lone CRs, glued verbs),
    starting anywhere in it, each 64 KiB chunk costs the masker a bounded number of Python
    lines: a constant before an AUTH, and at most a few per held line after one (issue 10
    item 8: one session cannot starve the others)."""
    chunk = 65536
    flood = (unit * (4 * chunk // len(unit) + 2))[offset : offset + 4 * chunk]
    masker = SecretMasker()
    if after_auth:
        masker.mask(b"AUTH X\r\n")

    def feed() -> None:
        for pos in range(0, len(flood), chunk):
            masker.mask(flood[pos : pos + chunk])
            masker.take_released()

    run_masker = _masklines.mask_run_python if python_runs else _masklines.mask_run
    with patch.object(_masking, "mask_run", run_masker):
        work = lines_run(feed)
    per_chunk = 600 + (16 * _masking.MAX_HELD_LINES if masker._holding else 0)
    assert work < 4 * per_chunk, (unit, offset, work)


_MASK_PIECES = [
    b"PASS", b"pass", b"Pa", b"ss", b"APOP", b"AP", b"OP", b"AUTH", b"au", b"th", b"P", b"A",
    b" ", b"\t", b"x", b"bob", b"PLAIN", b"*", b"\r", b"\n", b"\r\n", b"\x00", b"\xff",
    b"NOOP\r\n", b"USER bob\r\n", b"PASS hunter2\r\n", b"PASS \r\r\n", b"pass\tx\ry\n",
    b"AUTH X\r\n", b"AUTH PLAIN abc\r\n", b"*\r\n", b"*\n", b"APOP bob d\r\n", b"APOP bob\rx\n",
    b"PASS\x00x\n", b"\x0b", b"PASSWORD x\n",
    b"apop\tb\tc\n", b"  ", b"\r\r", b"PASS \n", b"\rPASS y\r\n", b"APOP\t\tbob  d\r\n",
]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(
    pieces=st.lists(
        st.one_of(st.sampled_from(_MASK_PIECES), st.binary(max_size=40)), max_size=80
    ).map(b"".join),
    cuts=st.lists(st.integers(0, 4000), max_size=8),
    distrust_at=st.integers(0, 8),
)
def test_masker_fast_paths_match_the_byte_steps(
    pieces: bytes, cuts: list[int], distrust_at: int
) -> None:
    """The searches that skip clear lines give the bytes the step machine gives."""
    bounds = sorted({min(c, len(pieces)) for c in cuts} | {0, len(pieces)})
    fast, slow = SecretMasker(), SecretMasker()
    got: list[bytes] = []
    expected: list[bytes] = []
    for index, (start, end) in enumerate(itertools.pairwise(bounds)):
        chunk = pieces[start:end]
        got += [fast.mask(chunk, 1.0), *(d for _, d in fast.take_released())]
        expected += [slow.mask_bytewise(chunk, 1.0), *(d for _, d in slow.take_released())]
        if index == distrust_at:
            fast.distrust()
            slow.distrust()
    for masker, out in ((fast, got), (slow, expected)):
        masker.end_of_stream()
        masker.abandon()
        out += [d for _, d in masker.take_released()]
    assert b"".join(got) == b"".join(expected)


def test_masker_holds_a_flood_after_auth_in_one_substitution() -> None:
    """After an AUTH, lines wait for a verdict; beyond what may be held they are masked
    a chunk at a time, not one Python pass per line."""
    for flood in (b"\n" * 262144, b"c2VjcmV0\r\n" * 26214):
        masker = SecretMasker()
        masker.mask(b"AUTH X\r\n")
        work = lines_run(functools.partial(masker.mask, flood))
        assert work < len(flood) // 2, (flood[:12], work)
        released = b"".join(d for _, d in masker.take_released())
        assert b"c2VjcmV0" not in released


def test_a_capture_of_client_lfs_derives_a_bounded_number_of_events(tmp_path: Path) -> None:
    """The capture reader and show run the same core: a 1 MiB capture of LFs stays small."""
    writer = CaptureWriter.create(
        tmp_path, session_id="a1b2c3d4e5f6", header_fields={"pop3tap": "test", "secrets": "masked"}
    )
    writer.write_data("s2c", 0.0, GREETING)
    for index in range(16):
        writer.write_data("c2s", 0.1 + index / 100, b"\n" * 65536)
    writer.write_data("s2c", 1.0, b"-ERR\r\n" * 50_000)
    writer.close(2.0, "closed")
    capture = read_capture(writer.path)
    events = capture.events()
    assert len(events) < 1100
    totals = {(e.direction.value, e.kind): e.lines for e in events if isinstance(e, Suppressed)}
    assert totals[("c2s", "unpaired")] > (1 << 20) - 1100
    assert totals[("s2c", "unpaired")] == 50_000
    shown = list(render_lines(capture))
    assert len(shown) < 1200
    assert any("counted, not shown" in line for line in shown)
    records = [json.loads(line) for line in render_json(capture)]
    suppressed = [r for r in records if r["kind"] == "suppressed"]
    assert {(r["direction"], r["what"], r["final"]) for r in suppressed} == {
        ("c2s", "unpaired", True),
        ("s2c", "unpaired", True),
    }
    page = build_model([writer.path])
    assert "counted, not shown" in json.dumps(page)
