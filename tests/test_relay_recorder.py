"""The relay's session recorder, driven with bytes and no sockets (as h11 tests its core).

A session is a list of steps (which side sent which bytes, in the order they crossed the
relay). Whatever the chunking (whole, byte at a time, random splits), the recorder must
write the same capture streams and the same log lines, with every secret masked.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from pop3tap.capture import Capture, EventRecord, iter_capture_paths, read_capture
from pop3tap.log import get_logger
from pop3tap.protocol import Direction
from pop3tap.relay import SessionRecorder, StlsGate

C, S = Direction.CLIENT, Direction.SERVER
Steps = list[tuple[Direction, bytes]]

LOGIN: Steps = [
    (S, b"+OK ready <1.2@example>\r\n"),
    (C, b"USER alice\r\nPASS hunter2secret\r\n"),
    (S, b"+OK hi\r\n+OK logged in\r\n"),
    (C, b"STAT\r\nRETR 1\r\n"),
    (S, b"+OK 1 30\r\n+OK 30 octets\r\nSubject: x\r\n\r\n..dotted\r\n.\r\n"),
    (C, b"QUIT\r\n"),
    (S, b"+OK bye\r\n"),
]

SASL: Steps = [
    (S, b"+OK ready\r\n"),
    (C, b"AUTH PLAIN\r\n"),
    (S, b"+ \r\n"),
    (C, b"AGFsaWNlAHNhc2xzZWNyZXQ=\r\n"),  # \0alice\0saslsecret
    (S, b"+OK welcome\r\n"),
    (C, b"NOOP\r\n"),
    (S, b"+OK\r\n"),
]

SECRETS = (b"hunter2secret", b"AGFsaWNlAHNhc2xzZWNyZXQ=", b"saslsecret")


def _record(
    steps: Steps,
    split: Callable[[bytes], list[bytes]],
    *,
    queued: bool = False,
    budget: int = 0,
    stls: StlsGate | None = None,
) -> tuple[Capture, list[MutableMapping[str, Any]]]:
    """Run ``steps`` through a recorder; the capture it wrote and the log lines."""
    ticks = itertools.count()
    gate = stls if stls is not None else StlsGate(intercept=True)
    with tempfile.TemporaryDirectory() as tmp, structlog.testing.capture_logs() as logs:
        recorder = SessionRecorder(
            log=get_logger("pop3tap.relay"), clock=lambda: float(next(ticks)), stls=gate
        )
        recorder.open_capture(Path(tmp), "0123456789ab", {"client": "test"})
        for direction, data in steps:
            for chunk in split(data):
                at = float(next(ticks))
                if direction is C and queued:
                    # As the client pump does: captured, forwarded, parsed later.
                    recorder.record_client(chunk, at)
                    recorder.queue_client(chunk, at)
                    if budget:
                        recorder.work(budget)
                elif direction is C:
                    recorder.client_bytes(chunk, at)
                elif queued:
                    recorder.queue_server(chunk, at)
                    if budget:  # part of the work now, the rest when the client speaks
                        recorder.work(budget)
                else:
                    recorder.server_bytes(chunk, at)
        recorder.ended(C, "eof")
        recorder.ended(S, "eof")
        recorder.close("client closed")
        (path,) = iter_capture_paths([Path(tmp)])
        capture = read_capture(path)
        raw = path.read_bytes()
    for secret in SECRETS:
        assert secret not in raw
    return capture, logs


def _whole(data: bytes) -> list[bytes]:
    return [data]


def _bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def _exchanges(logs: list[MutableMapping[str, Any]]) -> list[tuple[Any, ...]]:
    """What each ``pop3.exchange`` line says, without its timings."""
    keys = ("verb", "args", "status", "first_line", "body_lines", "body_bytes")
    return [tuple(e.get(k) for k in keys) for e in logs if e["event"] == "pop3.exchange"]


def _commands(logs: list[MutableMapping[str, Any]]) -> list[str]:
    return [" ".join(filter(None, (verb, args))) for verb, args, *_ in _exchanges(logs)]


def _streams(capture: Capture) -> tuple[bytes, bytes]:
    return capture.stream("c2s"), capture.stream("s2c")


def _splits(draw: Callable[[st.SearchStrategy[Any]], Any], data: bytes) -> list[bytes]:
    """``data`` cut at up to six random places."""
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(data) - 1)), max_size=6)))
    edges = [0, *[c for c in cuts if c < len(data)], len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]


def test_a_login_is_captured_masked_and_logged_once_per_exchange() -> None:
    capture, logs = _record(LOGIN, _whole)
    client, server = _streams(capture)
    assert client == b"USER alice\r\nPASS ********\r\nSTAT\r\nRETR 1\r\nQUIT\r\n"
    assert server == b"".join(data for side, data in LOGIN if side is S)
    assert _commands(logs) == [
        "USER alice",
        "PASS ********",
        "STAT",
        "RETR 1",
        "QUIT",
    ]
    (close,) = [e for e in logs if e["event"] == "session.close"]
    assert (close["retr"], close["update"], close["reason"]) == ("1/24", True, "client closed")
    assert capture.complete


def test_sasl_data_is_held_until_the_answer_and_written_masked_in_order() -> None:
    capture, logs = _record(SASL, _whole)
    client, _server = _streams(capture)
    assert client == b"AUTH PLAIN\r\n********\r\nNOOP\r\n"
    assert _commands(logs) == ["AUTH PLAIN", "NOOP"]


def test_byte_at_a_time_gives_the_same_capture_and_log_as_whole_chunks() -> None:
    for steps in (LOGIN, SASL):
        whole, whole_logs = _record(steps, _whole)
        bytewise, bytewise_logs = _record(steps, _bytewise)
        assert _streams(bytewise) == _streams(whole)
        assert _exchanges(bytewise_logs) == _exchanges(whole_logs)


def test_queued_server_bytes_are_recorded_like_parsed_ones() -> None:
    direct, direct_logs = _record(LOGIN, _whole)
    queued, queued_logs = _record(LOGIN, _whole, queued=True)
    assert [type(r) for r in queued.records] == [type(r) for r in direct.records]
    assert _streams(queued) == _streams(direct)
    assert _exchanges(queued_logs) == _exchanges(direct_logs)


#: A pipelined burst, its answers, and a login after it.
BURST: Steps = [
    (S, b"+OK ready\r\n"),
    (C, b"NOOP\r\n" * 600 + b"USER alice\r\n"),
    (S, b"+OK\r\n" * 601),
    (C, b"PASS hunter2secret\r\n"),
    (S, b"+OK welcome\r\n"),
]


@settings(max_examples=80, deadline=None)
@given(st.data(), st.sampled_from([LOGIN, SASL, BURST]), st.booleans(), st.integers(0, 3))
def test_any_chunking_gives_the_same_capture_and_log(
    data: st.DataObject, steps: Steps, queued: bool, budget: int
) -> None:
    whole, whole_logs = _record(steps, _whole)
    split, split_logs = _record(
        steps, lambda chunk: _splits(data.draw, chunk), queued=queued, budget=budget
    )
    assert _streams(split) == _streams(whole)
    assert _exchanges(split_logs) == _exchanges(whole_logs)


def test_a_session_without_a_capture_still_logs() -> None:
    with structlog.testing.capture_logs() as logs:
        recorder = SessionRecorder(
            log=get_logger("pop3tap.relay"), clock=lambda: 0.0, stls=StlsGate(intercept=True)
        )
        for direction, chunk in LOGIN:
            if direction is C:
                recorder.client_bytes(chunk, 0.0)
            else:
                recorder.server_bytes(chunk, 0.0)
        recorder.close("client closed")
    assert len(_exchanges(logs)) == 5
    assert all(b"hunter2" not in repr(e).encode() for e in logs)


def test_a_capture_that_cannot_be_created_is_logged_and_the_session_goes_on(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "no-such-directory"
    with structlog.testing.capture_logs() as logs:
        recorder = SessionRecorder(
            log=get_logger("pop3tap.relay"), clock=lambda: 0.0, stls=StlsGate(intercept=True)
        )
        recorder.open_capture(missing, "0123456789ab", {})
        recorder.server_bytes(b"+OK hi\r\n", 0.0)
        recorder.close("closed")
    assert [e["event"] for e in logs][:1] == ["capture.failed"]
    assert any(e["event"] == "pop3.greeting" for e in logs)


def test_end_records_follow_the_client_lines_they_close() -> None:
    steps: Steps = [
        (S, b"+OK ready\r\n"),
        (C, b"AUTH PLAIN\r\n"),
        (S, b"+ \r\n"),
        (C, b"dGVzdA==\r\n"),
    ]
    capture, _logs = _record(steps, _whole)
    kinds = [
        (r.name, r.fields.get("dir")) if isinstance(r, EventRecord) else type(r).__name__
        for r in capture.records
    ]
    # The SASL line never got a verdict: it is written masked, then the client's eof.
    eof = kinds.index(("eof", "c2s"))
    assert capture.stream("c2s").endswith(b"********\r\n")
    assert kinds[eof - 1] == "DataRecord"


PASSED_THROUGH: Steps = [
    (S, b"+OK ready\r\n"),
    (C, b"STLS\r\n"),
    (S, b"+OK begin TLS\r\n"),
    (C, b"USER alice\r\nPASS hunter2secret\r\nAUTH PLAIN\r\nAGFsaWNlAHNhc2xzZWNyZXQ=\r\n"),
]


@settings(max_examples=60, deadline=None)
@given(st.data(), st.booleans())
def test_plaintext_after_a_passed_through_stls_never_reaches_the_capture_unmasked(
    data: st.DataObject, queued: bool
) -> None:
    # _record fails if a secret is anywhere in the capture file. Without interception no
    # chunk can be held for STLS, so the client pump records, forwards, then parses
    # (queued; the pump works the queue off before it reads on, so the budget here covers
    # it): the injected plaintext goes through the observer's entry for it either way.
    capture, logs = _record(
        PASSED_THROUGH,
        lambda chunk: _splits(data.draw, chunk),
        queued=queued,
        budget=1000 if queued else 0,
        stls=StlsGate(intercept=False),
    )
    assert capture.stream("c2s") == (
        b"STLS\r\nUSER alice\r\nPASS ********\r\nAUTH PLAIN\r\n********\r\n"
    )
    assert [e["event"] for e in logs].count("tls.injection") == 1


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_plaintext_cut_anywhere_by_a_passed_through_stls_ok_never_reaches_the_capture(
    data: st.DataObject,
) -> None:
    """The ``+OK`` to STLS may arrive at any byte of the client's plaintext: the line it
    cuts (a PASS, an APOP, an AUTH or its SASL data) stays masked on both sides of it."""
    plaintext = PASSED_THROUGH[3][1]
    cut = data.draw(st.integers(0, len(plaintext)), label="cut")
    steps: Steps = [
        (S, b"+OK ready\r\n"),
        (C, b"STLS\r\n" + plaintext[:cut]),
        (S, b"+OK begin TLS\r\n"),
    ]
    if cut < len(plaintext):
        steps.append((C, plaintext[cut:]))
    # _record fails if a secret is anywhere in the capture file.
    capture, _ = _record(
        steps, lambda chunk: _splits(data.draw, chunk), stls=StlsGate(intercept=False)
    )
    assert capture.stream("c2s").startswith(b"STLS\r\nUSER alice\r\nPASS ********\r\n")


def test_tls_after_a_passed_through_stls_is_recorded_as_it_is() -> None:
    hello = b"\x16\x03\x01\x00\x06PASS x"
    steps: Steps = [*PASSED_THROUGH[:3], (C, hello)]
    capture, logs = _record(steps, _whole, stls=StlsGate(intercept=False))
    assert capture.stream("c2s") == b"STLS\r\n" + hello
    assert "tls.injection" not in [e["event"] for e in logs]


@pytest.mark.parametrize("split", [_whole, _bytewise])
@pytest.mark.parametrize("queued", [False, True])
def test_plaintext_behind_a_tls_looking_byte_never_reaches_the_capture(
    split: Callable[[bytes], list[bytes]], queued: bool
) -> None:
    # 0x16 opens no TLS record when the next bytes break the record framing (RFC 8446
    # §5.1): the plaintext behind it is masked (_record fails on a secret in the file).
    steps: Steps = [*PASSED_THROUGH[:3], (C, b"\x16" + PASSED_THROUGH[3][1])]
    capture, logs = _record(
        steps, split, queued=queued, budget=3, stls=StlsGate(intercept=False)
    )
    assert capture.stream("c2s") == b"STLS\r\n\x16********"
    assert [e["event"] for e in logs].count("tls.injection") == 1


def test_a_burst_of_answers_is_worked_off_in_bounded_steps_in_order() -> None:
    burst: Steps = [(S, b"+OK ready\r\n"), (C, b"NOOP\r\n" * 300), (S, b"+OK\r\n" * 300)]
    with structlog.testing.capture_logs() as logs:
        recorder = SessionRecorder(
            log=get_logger("pop3tap.relay"), clock=lambda: 0.0, stls=StlsGate(intercept=True)
        )
        recorder.server_bytes(burst[0][1], 0.0)
        recorder.client_bytes(burst[1][1], 0.0)
        recorder.queue_server(burst[2][1], 0.0)
        steps = []
        while True:
            before = len(logs)
            more = recorder.work(32)
            steps.append(len(logs) - before)
            if not more:
                break
    assert max(steps) == 32 and sum(steps) == 300
    assert [e["seq"] for e in logs if e["event"] == "pop3.exchange"] == list(range(1, 301))


def test_a_burst_of_pipelined_commands_is_parsed_in_bounded_steps_in_order() -> None:
    with structlog.testing.capture_logs() as logs:
        recorder = SessionRecorder(
            log=get_logger("pop3tap.relay"), clock=lambda: 0.0, stls=StlsGate(intercept=True)
        )
        recorder.server_bytes(b"+OK ready\r\n", 0.0)
        recorder.record_client(b"NOOP\r\n" * 1000, 0.0)
        recorder.queue_client(b"NOOP\r\n" * 1000, 0.0)
        recorder.queue_server(b"+OK\r\n" * 1000, 0.0)
        parsed = []
        while True:
            before = recorder.seen[C]
            more = recorder.work(32)
            parsed.append((recorder.seen[C] - before) // len(b"NOOP\r\n"))
            if not more:
                break
    assert max(parsed) <= 256 and sum(parsed) == 1000
    assert [e["seq"] for e in logs if e["event"] == "pop3.exchange"] == list(range(1, 1001))


@settings(max_examples=40, deadline=None)
@given(st.data(), st.sampled_from([LOGIN, SASL, PASSED_THROUGH]), st.booleans())
def test_kept_secrets_are_captured_as_sent_and_logged_masked(
    data: st.DataObject, steps: Steps, queued: bool
) -> None:
    """``--keep-secrets``: the capture holds the client's bytes as they were sent, at any
    chunking, parsed at once or later; the log still masks them."""
    gate = StlsGate(intercept=steps is not PASSED_THROUGH)
    ticks = itertools.count()
    with tempfile.TemporaryDirectory() as tmp, structlog.testing.capture_logs() as logs:
        recorder = SessionRecorder(
            log=get_logger("pop3tap.relay"),
            clock=lambda: float(next(ticks)),
            stls=gate,
            keep_secrets=True,
        )
        recorder.open_capture(Path(tmp), "0123456789ab", {"client": "test"})
        for direction, chunk in steps:
            for piece in _splits(data.draw, chunk):
                at = float(next(ticks))
                if direction is S:
                    recorder.server_bytes(piece, at)
                elif queued:
                    recorder.record_client(piece, at)
                    recorder.queue_client(piece, at)
                else:
                    recorder.client_bytes(piece, at)
        recorder.close("client closed")
        (path,) = iter_capture_paths([Path(tmp)])
        capture = read_capture(path)
    assert capture.stream("c2s") == b"".join(chunk for side, chunk in steps if side is C)
    for secret in SECRETS:
        assert secret.decode() not in repr(logs)
