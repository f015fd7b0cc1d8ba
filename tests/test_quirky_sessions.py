"""The quirky-session corpus (tests/quirky_sessions.py) through the real relay in front of
a scripted server, and through the sans-IO relay model at every chunking: the capture holds
exactly the pinned client bytes, and the live log, ``show`` and the re-derived exchanges
pair exactly the pinned exchanges."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from clients import relay_process
from faults import scripted_server
from quirky_sessions import CORPUS
from scripted import SPLITS, Case, converse, lockstep_turns, relay_turns, sequential_behaviours

from pop3tap.capture import iter_capture_paths, read_capture
from pop3tap.protocol import Exchange
from pop3tap.render import render_json, render_lines

Pinned = list[tuple[str, str, str | None, tuple[tuple[str, str], ...]]]


def pinned(exchanges: list[Exchange]) -> Pinned:
    return [
        (e.verb, e.args, None if e.status is None else e.status.value, e.sasl) for e in exchanges
    ]


def assert_views_hide(case: Case, *texts: str) -> None:
    for text in texts:
        assert "(stray)" not in text
        for secret in case.secrets:
            assert secret.decode() not in text and secret.decode().upper() not in text


@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
@pytest.mark.parametrize("how", SPLITS)
def test_corpus_through_the_relay_model(case: Case, how: str) -> None:
    session = relay_turns(lockstep_turns(case), how, seed=len(case.name))
    assert session.c2s() == case.expect_c2s
    live = [e for e in session.events if isinstance(e, Exchange)]
    capture = session.capture()
    assert pinned(live) == case.expect_exchanges
    assert pinned(capture.exchanges()) == case.expect_exchanges
    assert_views_hide(case, "\n".join(render_lines(capture)), "\n".join(render_json(capture)))


def test_corpus_through_the_real_relay(tmp_path: Path) -> None:
    with (
        scripted_server(sequential_behaviours(CORPUS)) as server,
        relay_process(server.host, server.port, tmp_path) as relay,
    ):
        for case in CORPUS:
            converse(relay.host, relay.port, case.client)
        deadline = time.monotonic() + 20
        while True:
            paths = iter_capture_paths([relay.captures])
            if len(paths) == len(CORPUS) and all(read_capture(p).complete for p in paths):
                break
            assert time.monotonic() < deadline, "captures did not complete"
            time.sleep(0.02)
        log = relay.log_text()
    sessions: dict[str, list[dict[str, object]]] = {}
    for line in log.splitlines():
        record = json.loads(line)
        if record["event"] == "pop3.exchange":
            sessions.setdefault(str(record["session"]), []).append(record)
    for case, path in zip(CORPUS, paths, strict=True):
        capture = read_capture(path)
        assert capture.stream("c2s") == case.expect_c2s, case.name
        assert pinned(capture.exchanges()) == case.expect_exchanges, case.name
        logged = sessions[capture.header.session]
        expected = case.expect_exchanges or []
        assert [(r["verb"], r.get("args", ""), r["status"]) for r in logged] == [
            (verb, args, status) for verb, args, status, _sasl in expected
        ], case.name
        raw = path.read_bytes().decode("latin-1")
        assert_views_hide(case, "\n".join(render_lines(capture)), raw)
    assert_views_hide(CORPUS[0], log)
