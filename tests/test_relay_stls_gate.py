"""The relay's STLS gate (RFC 2595 §4), driven with bytes through the recorder, no sockets.

The client pump asks the gate, for every parsed chunk, what may go to the server now and
what waits for the STLS answer; the server pump asks where the ``+OK`` ends. These tests
play that part for any chunking of the client's and the server's bytes.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from pop3tap.log import get_logger
from pop3tap.protocol import Direction
from pop3tap.relay import SessionRecorder, StlsGate

GREETING = b"+OK ready\r\n"


class Relay:
    """The decisions both pumps take, without the sockets."""

    def __init__(self, *, intercept: bool = True) -> None:
        self.gate = StlsGate(intercept=intercept)
        self.recorder = SessionRecorder(
            log=get_logger("pop3tap.relay"), clock=lambda: 0.0, stls=self.gate
        )
        self.resolved = 0
        self.gate.on_resolve = self.count_resolution
        self.forwarded = b""
        self.held = b""
        #: Chunks the client sent while the pump held bytes (it does not read then).
        self.unread: list[bytes] = []
        self.to_client = b""

    def count_resolution(self) -> None:
        self.resolved += 1

    def client(self, chunk: bytes) -> None:
        if self.held:
            self.unread.append(chunk)
            return
        start = self.recorder.seen[Direction.CLIENT]
        self.recorder.client_bytes(chunk, 0.0)
        now, held = self.gate.hold(chunk, start)
        self.forwarded += now
        self.held += held

    def server(self, chunk: bytes) -> None:
        if self.gate.switch is not None:
            return  # both pumps stopped at the switch point
        start = self.recorder.seen[Direction.SERVER]
        self.recorder.server_bytes(chunk, 0.0)
        cut = self.gate.server_cut(chunk, start)
        self.to_client += chunk if cut is None else chunk[:cut]
        if not self.gate.pending and self.held:
            now, still_held = self.gate.hold(self.held, len(self.forwarded))
            assert not still_held
            self.forwarded, self.held = self.forwarded + now, b""
            unread, self.unread = self.unread, []
            for later in unread:
                self.client(later)


def _splits(draw: Callable[[st.SearchStrategy[Any]], Any], data: bytes) -> list[bytes]:
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(data) - 1)), max_size=5)))
    edges = [0, *[c for c in cuts if c < len(data)], len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]


def _play(relay: Relay, client: list[bytes], server: list[bytes]) -> None:
    relay.server(GREETING)
    for chunk in client:
        relay.client(chunk)
    for chunk in server:
        relay.server(chunk)


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_bytes_after_stls_are_held_until_the_answer_for_any_chunking(data: st.DataObject) -> None:
    relay = Relay()
    _play(relay, _splits(data.draw, b"STLS\r\nUSER alice\r\n"), [])
    assert relay.forwarded == b"STLS\r\n"
    assert relay.held + b"".join(relay.unread) == b"USER alice\r\n"
    assert relay.gate.pending and relay.resolved == 0


@settings(max_examples=80, deadline=None)
@given(st.data(), st.sampled_from([b"-ERR not now\r\n", b"+ \r\n", b"what?\r\n"]))
def test_any_answer_but_ok_releases_the_held_bytes(data: st.DataObject, answer: bytes) -> None:
    relay = Relay()
    _play(relay, _splits(data.draw, b"STLS\r\nUSER alice\r\n"), _splits(data.draw, answer))
    assert relay.resolved == 1 and not relay.gate.pending
    assert relay.forwarded == b"STLS\r\nUSER alice\r\n"
    assert relay.gate.switch is None


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_ok_marks_the_switch_and_only_the_ok_line_reaches_the_client(
    data: st.DataObject,
) -> None:
    relay = Relay()
    server = b"+OK begin TLS\r\n\x16\x03\x01injected"
    _play(relay, [b"STLS\r\n"], _splits(data.draw, server))
    switch = relay.gate.switch
    assert switch is not None
    assert switch.server_switch == len(GREETING + b"+OK begin TLS\r\n")
    assert relay.to_client == GREETING + b"+OK begin TLS\r\n"
    assert relay.resolved == 0 and relay.gate.pending
    relay.gate.switched()
    assert not relay.gate.pending and relay.gate.switch is None


def test_a_chunk_that_cannot_hold_stls_is_not_held_back() -> None:
    gate = StlsGate(intercept=True)
    assert not gate.may_hold(b"USER alice\r\n", client_line_open=False)
    assert gate.may_hold(b"stls\r\n", client_line_open=False)
    assert gate.may_hold(b"LS\r\n", client_line_open=True)  # completes "ST"
    assert not StlsGate(intercept=False).may_hold(b"STLS\r\n", client_line_open=True)


def test_without_interception_nothing_is_held_and_the_upgrade_is_logged() -> None:
    with structlog.testing.capture_logs() as logs:
        relay = Relay(intercept=False)
        _play(relay, [b"STLS\r\nUSER alice\r\n"], [b"+OK go\r\n"])
    assert relay.forwarded == b"STLS\r\nUSER alice\r\n"
    assert relay.gate.switch is None and not relay.gate.pending
    (stls,) = [e for e in logs if e["event"] == "pop3.stls"]
    assert stls["client_trailing"] == len(b"USER alice\r\n")


@pytest.mark.parametrize("start", [0, 3, 6, 10])
def test_hold_cuts_exactly_at_the_end_of_the_stls_line(start: int) -> None:
    relay = Relay()
    _play(relay, [b"STLS\r\n"], [])
    stream = b"STLS\r\nNOOP\r\n"
    now, held = relay.gate.hold(stream[start:], start)
    assert now + held == stream[start:]
    assert now == stream[start:6]
