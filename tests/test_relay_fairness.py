"""One session's burst of answers cannot hold the relay's event loop (one session can
never starve another).

The relay runs in this test's own trio loop with an instrument that marks every task
step; a client pipelines 1000 answered NOOPs in one write and the upstream answers them
in one write. Whatever the machine's speed, the relay must not turn all 1000 answers
into exchanges and log lines in one step: between two steps, other sessions' tasks get
their turn.
"""

from __future__ import annotations

import itertools
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import pytest
import structlog
import trio
from clients import on_each_instance, relay_in_process
from faults import Connection, scripted_server

from pop3tap.capture import iter_capture_paths, read_capture
from pop3tap.relay import _session

COUNT = 1000
GREETING = b"+OK burst upstream\r\n"


def _answer_all_at_once(conn: Connection) -> None:
    conn.send(GREETING)
    for _ in range(COUNT):
        assert conn.readline() == b"NOOP\r\n"
    conn.send(b"+OK\r\n" * COUNT)
    conn.read_all()


class StepMarks(trio.abc.Instrument):
    """How many log lines existed when each task step began."""

    def __init__(self, logs: list[MutableMapping[str, Any]]) -> None:
        self.logs = logs
        self.marks: list[int] = []

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.marks.append(len(self.logs))

    def most_exchanges_in_one_step(self) -> int:
        bounds = [*self.marks, len(self.logs)]
        return max(
            sum(1 for e in self.logs[a:b] if e["event"] == "pop3.exchange")
            for a, b in itertools.pairwise(bounds)
        )


async def _client(port: int) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        received = b""
        while not received.endswith(b"\r\n"):
            received += await stream.receive_some(4096)
        assert received == GREETING
        await stream.send_all(b"NOOP\r\n" * COUNT)
        received = b""
        while received.count(b"\r\n") < COUNT:
            chunk = await stream.receive_some(65536)
            assert chunk, "the relay closed the session"
            received += chunk
        assert received == b"+OK\r\n" * COUNT


def test_a_burst_of_answers_is_worked_off_in_bounded_steps(tmp_path: Path) -> None:
    with scripted_server(_answer_all_at_once) as upstream, structlog.testing.capture_logs() as logs:
        marks = StepMarks(logs)
        relay_in_process(upstream.host, upstream.port, tmp_path, _client, instruments=[marks])
        upstream.wait()
    exchanges = [e for e in logs if e["event"] == "pop3.exchange"]
    # Nothing is lost or reordered ...
    assert [e["seq"] for e in exchanges] == list(range(1, COUNT + 1))
    (path,) = iter_capture_paths([tmp_path])
    capture = read_capture(path)
    assert capture.stream("s2c") == GREETING + b"+OK\r\n" * COUNT
    assert len(capture.exchanges()) == COUNT
    # ... and no single step of the event loop did all of the work.
    busiest = marks.most_exchanges_in_one_step()
    assert busiest <= COUNT // 10


class CommandMarks(trio.abc.Instrument):
    """How many of the session's commands the relay had acted on when each task step began.

    A command counts once its ``CommandSent`` was handled: it is then either still waiting
    for its answer (the recorder's ``unanswered``) or answered (a ``pop3.exchange`` line).
    Read from the outside, so it works whether or not the recorder is compiled (compiled
    classes can be neither wrapped nor patched).
    """

    def __init__(self, logs: list[MutableMapping[str, Any]]) -> None:
        self.logs = logs
        self.sessions: list[_session.RelaySession] = []
        self.marks: list[int] = []
        self._exchanges = 0
        self._counted = 0

    def handled(self) -> int:
        for entry in self.logs[self._counted :]:
            self._exchanges += entry["event"] == "pop3.exchange"
        self._counted = len(self.logs)
        return self.sessions[0].recorder.unanswered + self._exchanges if self.sessions else 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.marks.append(self.handled())

    def per_step(self) -> list[int]:
        marks = [*self.marks, self.handled()]
        return [later - earlier for earlier, later in itertools.pairwise(marks)]


def test_a_burst_of_pipelined_commands_is_parsed_in_bounded_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client's side of the same burst: 1000 commands in one write are not all
    parsed in one step either."""
    with structlog.testing.capture_logs() as logs:
        marks = CommandMarks(logs)
        on_each_instance(monkeypatch, _session.RelaySession, marks.sessions.append)
        with scripted_server(_answer_all_at_once) as upstream:
            relay_in_process(upstream.host, upstream.port, tmp_path, _client, instruments=[marks])
            upstream.wait()
    per_step = marks.per_step()
    # Every command was parsed ...
    assert len(marks.sessions) == 1
    assert sum(per_step) == COUNT
    (path,) = iter_capture_paths([tmp_path])
    assert len(read_capture(path).exchanges()) == COUNT
    # ... and no single step of the event loop parsed them all.
    assert max(per_step) <= COUNT // 3
