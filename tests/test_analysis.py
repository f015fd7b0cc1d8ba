"""The streaming body facts do not depend on how the server's bytes were chunked."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import pytest
from handmade import write_capture
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pop3tap import analysis
from pop3tap.analysis import BodyFacts, CaptureStream, _BodyTap, analyse, body_digests
from pop3tap.protocol import Exchange, SessionObserver
from pop3tap.protocol._bodyscan import BodyStats, body_stats, body_stats_python

line_text = st.text(alphabet=".a\r :", max_size=12).map(str.encode)


def reference(body: bytes) -> tuple[int, int, int, int | None]:
    """(stuffed, unstuffed, bare CR, first unstuffed offset) of a whole body, the obvious way."""
    stuffed = unstuffed = 0
    first = None
    offset = 0
    lines = body.split(b"\n")
    for line in lines[:-1]:
        if line.startswith(b".."):
            stuffed += 1
        elif line.startswith(b".") and line[1:2] not in (b"\r", b""):
            unstuffed += 1
            first = offset if first is None else first
        offset += len(line) + 1
    bare_cr = sum(1 for i, b in enumerate(body) if b == 0x0D and body[i + 1 : i + 2] != b"\n")
    return stuffed, unstuffed, bare_cr, first


def facts_for(
    verb: str, response: bytes, cuts: list[int], rest_limit: int | None = None
) -> tuple[Exchange, BodyFacts]:
    tap = _BodyTap(rest_limit=rest_limit)
    observer = SessionObserver(body_listener=tap)
    observer.feed_server(b"+OK hi\r\n", 0.0)
    observer.feed_client(verb.encode() + b"\r\n", 0.0)
    events = []
    bounds = [0, *sorted(set(cuts)), len(response)]
    for start, end in itertools.pairwise(bounds):
        events += observer.feed_server(response[start:end], 0.0)
    (exchange,) = [e for e in events if isinstance(e, Exchange)]
    body = tap.take(exchange)
    assert body is not None
    return exchange, body


STATS = [body_stats_python]
if body_stats is not body_stats_python:
    STATS.append(body_stats)


@pytest.mark.parametrize("stats", STATS, ids=lambda f: "c" if f is not body_stats_python else "py")
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(line_text.filter(lambda b: b != b"."), max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
)
def test_body_facts_do_not_depend_on_chunking(
    stats: BodyStats, lines: list[bytes], cuts: list[int]
) -> None:
    analysis.body_stats = stats
    try:
        check_chunking(lines, cuts)
    finally:
        analysis.body_stats = body_stats


def check_chunking(lines: list[bytes], cuts: list[int]) -> None:
    body = b"".join(line + b"\r\n" for line in lines)
    response = b"+OK\r\n" + body + b".\r\n"
    exchange, whole = facts_for("RETR 1", response, [])
    _, chunked = facts_for("RETR 1", response, [c % (len(response) + 1) for c in cuts])
    assert chunked == whole
    first = None if whole.first_unstuffed is None else whole.first_unstuffed - whole.start
    assert (whole.stuffed, whole.unstuffed, whole.bare_cr, first) == reference(body)
    assert (whole.digest, whole.rest_digest) == body_digests("RETR", body + b".\r\n")
    _, listing = facts_for("UIDL", response, [c % (len(response) + 1) for c in cuts])
    assert listing.digest == hashlib.sha256(body + b".\r\n").hexdigest()[:32]
    assert exchange.body_bytes == len(body)
    assert whole.start == len(b"+OK hi\r\n+OK\r\n")


@given(
    data=st.binary(max_size=64).map(lambda b: b.replace(b"x", b"\n.")),
    pos=st.integers(min_value=0, max_value=80),
    limit=st.integers(min_value=0, max_value=80),
)
def test_c_body_stats_agree_with_python(data: bytes, pos: int, limit: int) -> None:
    limit = min(limit, len(data))
    pos = min(pos, limit)
    assert body_stats(data, pos, limit) == body_stats_python(data, pos, limit)


@settings(max_examples=100)
@given(
    headers=st.lists(st.text(alphabet="abc: ", min_size=1, max_size=10), max_size=6),
    rest=st.lists(line_text.filter(lambda b: not b.startswith(b".")), max_size=6),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=6),
)
def test_message_headers_and_rest_are_split_at_the_blank_line(
    headers: list[str], rest: list[bytes], cuts: list[int]
) -> None:
    head = "".join(h.strip() + "\r\n" for h in headers if h.strip()).encode()
    body = head + b"\r\n" + b"".join(line + b"\r\n" for line in rest)
    response = b"+OK\r\n" + body + b".\r\n"
    _, facts = facts_for("RETR 1", response, [c % (len(response) + 1) for c in cuts])
    assert facts.headers == tuple(head.split(b"\r\n")[:-1])
    assert facts.header_bytes == len(head) + 2
    tail = body[len(head) + 2 :] + b".\r\n"
    assert facts.rest_digest == hashlib.sha256(tail).hexdigest()[:32]
    # Recognising a message by its headers, the start of the rest and the size (lint):
    # the same whatever the chunking, and the same as hashing that prefix in one go.
    chunked = facts_for("RETR 1", response, [c % (len(response) + 1) for c in cuts], 7)[1]
    whole = facts_for("RETR 1", response, [], 7)[1]
    assert chunked.digest == whole.digest
    assert whole.rest_digest == hashlib.sha256(tail[:7]).hexdigest()[:32]


def test_listing_lines_are_kept_unstuffed() -> None:
    _, facts = facts_for("UIDL", b"+OK\r\n1 abc\r\n2 ..x\r\n.\r\n", [7, 8])
    assert facts.listing == (b"1 abc", b"2 ..x")


def test_capture_stream_reports_a_torn_tail(tmp_path: Path) -> None:
    path = write_capture(tmp_path, [("s", b"+OK hi\r\n"), ("c", b"QUIT\r\n")], close=False)
    with open(path, "ab") as f:
        f.write(b"\x84\xa4ty")
    stream = CaptureStream(path)
    items = list(analyse(stream))
    assert stream.truncated and not stream.complete and stream.trailing_bytes == 4
    assert any(isinstance(i.event, Exchange) and i.event.verb == "QUIT" for i in items)
