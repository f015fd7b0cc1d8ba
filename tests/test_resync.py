"""Pairing picks up again after a command flood made the observer give it up (issue 10).

The observer gives up pairing past its pending bounds and only counts bytes. It resumes
only where the next client line and the next server line are sure to belong together
(see ``pop3tap/protocol/_resync.py``): every command since the loss had one one-line
answer, the server has answered all of them, and both directions sit at a line start.
Masking never depends on it.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from pop3tap.protocol import (
    Event,
    Exchange,
    PairingLost,
    SessionObserver,
    Status,
    Suppressed,
    mask_line,
)

GREETING = b"+OK ready\r\n"


def _greeted(max_pending: int = 8) -> SessionObserver:
    observer = SessionObserver(max_pending=max_pending)
    observer.feed_server(GREETING, 0.0)
    return observer


def _exchanges(events: list[Event]) -> list[Exchange]:
    return [e for e in events if isinstance(e, Exchange)]


def test_pairing_resumes_once_the_server_has_answered_a_flood_of_one_line_commands() -> None:
    observer = _greeted(max_pending=1000)
    events = observer.feed_client(b"NOOP\r\n" * 5000, 1.0)
    assert any(isinstance(e, PairingLost) for e in events)
    events = observer.feed_server(b"+OK\r\n" * 5000, 2.0)
    assert events == []  # the lost run stays silent until the client starts a new line
    events = observer.feed_client(b"STAT\r\n", 3.0)
    events += observer.feed_server(b"+OK 2 320\r\n", 4.0)
    (stat,) = _exchanges(events)
    assert (stat.verb, stat.status, stat.first_line) == ("STAT", Status.OK, "+OK 2 320")
    assert not observer.pairing_lost
    totals = [e for e in events if isinstance(e, Suppressed)]
    assert [(e.direction.value, e.kind, e.lines, e.final) for e in totals] == [
        ("c2s", "unpaired", 5000 - 1001, True),
        ("s2c", "unpaired", 5000, True),
    ]


def test_pairing_stays_lost_while_answers_are_outstanding() -> None:
    observer = _greeted()
    observer.feed_client(b"NOOP\r\n" * 100, 1.0)
    observer.feed_server(b"+OK\r\n" * 99, 2.0)
    assert observer.feed_client(b"STAT\r\n", 3.0) == []
    assert observer.feed_server(b"+OK\r\n+OK 1 2\r\n", 4.0) == []
    assert observer.pairing_lost


def test_a_body_with_status_lines_never_resumes_pairing_inside_it() -> None:
    # Counting status lines across a RETR would resume inside this body and pair the
    # next command with a body line.
    observer = _greeted()
    observer.feed_client(b"NOOP\r\n" * 20 + b"RETR 1\r\n", 1.0)
    body = b"+OK 1 octets\r\n+OK fake\r\n-ERR fake\r\n.\r\n"
    observer.feed_server(b"+OK\r\n" * 20 + body, 2.0)
    events = observer.feed_client(b"STAT\r\n", 3.0)
    events += observer.feed_server(b"+OK 1 2\r\n", 4.0)
    assert _exchanges(events) == []
    assert observer.pairing_lost


def test_a_lone_cr_or_an_unsolicited_line_keeps_pairing_lost() -> None:
    for client, server in (
        (b"NOOP\r\n" * 20 + b"NOOP\rNOOP\r\n", b"+OK\r\n" * 22),
        (b"NOOP\r\n" * 20, b"+OK\r\n" * 20 + b"-ERR idle\r\n"),
    ):
        observer = _greeted()
        observer.feed_client(client, 1.0)
        observer.feed_server(server, 2.0)
        assert _exchanges(observer.feed_client(b"STAT\r\n", 3.0)) == []
        assert observer.pairing_lost


def _line(kind: str, number: int) -> tuple[bytes, bytes]:
    """A command tagged with ``number`` and its true answer, which repeats the tag."""
    if kind == "list":
        return b"LIST %d\r\n" % number, b"+OK %d 100\r\n" % number
    if kind == "unknown":
        return b"XQ %d\r\n" % number, b"-ERR %d unknown\r\n" % number
    if kind == "pass":
        return b"PASS hunter%d\r\n" % number, b"-ERR %d bad\r\n" % number
    if kind == "listing":  # LIST without an argument: a body whose lines start with numbers
        return b"LIST\r\n", b"+OK %d\r\n1 100\r\n.\r\n" % number
    # RETR: a body whose lines look like answers.
    return b"RETR %d\r\n" % number, b"+OK %d\r\n+OK fake\r\n-ERR fake\r\n.\r\n" % number


def _pieces(data: bytes, rng: random.Random) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(0, 6))))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


@settings(max_examples=150, deadline=None)
@given(
    safe=st.lists(st.sampled_from(["list", "unknown"]), min_size=9, max_size=40),
    unsafe=st.sampled_from([None, "pass", "retr", "listing"]),
    tail=st.integers(min_value=1, max_value=4),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_after_any_flood_in_any_split_every_exchange_is_paired_truly(
    safe: list[str], unsafe: str | None, tail: int, seed: int
) -> None:
    rng = random.Random(seed)
    flood = list(safe)
    if unsafe is not None:
        flood.insert(rng.randint(0, len(flood)), unsafe)
    observer = _greeted()
    flood_lines = [_line(kind, n) for n, kind in enumerate(flood, start=1)]
    events: list[Event] = []
    recorded = b""
    for piece in _pieces(b"".join(c for c, _ in flood_lines), rng):
        fed = observer.receive_client(piece, 1.0)
        recorded += b"".join(data for _at, data in fed.recorded)
        events += fed.events
    for piece in _pieces(b"".join(s for _, s in flood_lines), rng):
        events += observer.feed_server(piece, 2.0)
    assert observer.pairing_lost
    tail_numbers = range(1000, 1000 + tail)
    for number in tail_numbers:  # lock-step: one command, then its answer
        command, answer = _line("list", number)
        for piece in _pieces(command, rng):
            fed = observer.receive_client(piece, 3.0)
            recorded += b"".join(data for _at, data in fed.recorded)
            events += fed.events
        for piece in _pieces(answer, rng):
            events += observer.feed_server(piece, 4.0)
        recorded += b"".join(data for _at, data in observer.take_masked_client())
    # Never a false pair: every answer carries its command's tag.
    exchanges = [ex for ex in _exchanges(events) if ex.args]
    for ex in exchanges:
        assert ex.first_line.split()[1] == ex.args.split()[0], ex
    # Where the flood had only one-line answers and no login, pairing came back.
    paired_tail = [ex for ex in exchanges if int(ex.args.split()[0]) >= 1000]
    if unsafe is None:
        assert [int(ex.args) for ex in paired_tail] == list(tail_numbers)
    else:
        assert paired_tail == []
    # Masking never depends on the pairing.
    sent = [c for c, _ in flood_lines] + [_line("list", n)[0] for n in tail_numbers]
    assert recorded == b"".join(mask_line(line[:-2]) + b"\r\n" for line in sent)
    assert b"hunter" not in recorded


def _tainted_after(*chunks: bytes) -> bool:
    observer = _greeted()
    observer.feed_client(b"NOOP\r\n" * 20, 1.0)
    for chunk in chunks:
        observer.feed_client(chunk, 1.0)
    lines = sum(chunk.count(b"\n") for chunk in chunks)
    observer.feed_server(b"+OK\r\n" * (20 + lines), 2.0)
    events = observer.feed_client(b"STAT\r\n", 3.0) + observer.feed_server(b"+OK 0 0\r\n", 4.0)
    return not _exchanges(events)


def test_a_listing_command_split_anywhere_keeps_pairing_lost() -> None:
    # LIST without an argument answers with a body; with one, with one line.
    for line, unsafe in ((b"LIST\r\n", True), (b"list \t\r\n", True), (b"LIST 5\r\n", False)):
        for cut in range(len(line) + 1):
            assert _tainted_after(line[:cut], line[cut:]) is unsafe, (line, cut)
    padded = b"UIDL" + b" " * 40 + b"\r\n"
    for cut in range(len(padded) + 1):
        assert _tainted_after(padded[:cut], padded[cut:]), cut
    for verb in (b"RETR 1", b"TOP 1 0", b"CAPA", b"AUTH PLAIN", b"STLS", b"PASS x", b"QUIT"):
        line = verb + b"\r\n"
        for cut in range(len(line) + 1):
            assert _tainted_after(line[:cut], line[cut:]), (line, cut)
