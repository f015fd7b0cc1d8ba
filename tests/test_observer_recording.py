"""Recording and parsing the client's bytes, in the h11 shape: bytes in, capture and events out.

A caller that captures client bytes goes through the observer's recording entries:
``receive_client`` (mask and parse in one call), or ``record_client`` now and
``parse_recorded_client`` later (the relay forwards a chunk between the two). Whatever the
chunking (whole, one byte at a time, random splits) and however late the parsing, the
recorded bytes and the events must be those of one ``receive_client`` per turn; and a
caller cannot parse client bytes the masker has not seen.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pop3tap.protocol import CommandSent, Event, ObserverUsageError, SessionObserver

Turns = list[tuple[str, bytes]]

GREETING = b"+OK ready <1.2@host>\r\n"
SASL_SECRET = b"AGFsaWNlAGh1bnRlcjI="  # PLAIN: "\0alice\0hunter2"

SESSIONS: dict[str, Turns] = {
    "login": [
        ("s", GREETING),
        ("c", b"USER alice\r\nPASS hunter2\r\n"),
        ("s", b"+OK\r\n+OK in\r\n"),
        ("c", b"STAT\r\nRETR 1\r\nQUIT\r\n"),
        ("s", b"+OK 1 9\r\n+OK\r\nbody\r\n.\r\n+OK bye\r\n"),
    ],
    # Commands pipelined behind the SASL answer: held by the masker until the pairing says
    # what each line was, then written clear (commands) or masked (SASL data).
    "sasl-pipelined": [
        ("s", GREETING),
        ("c", b"AUTH PLAIN\r\n"),
        ("s", b"+ \r\n"),
        ("c", SASL_SECRET + b"\r\nSTAT\r\nLIST 1\r\n"),
        ("s", b"+OK in\r\n+OK 1 9\r\n+OK 1 9\r\n"),
        ("c", b"QUIT\r\n"),
        ("s", b"+OK bye\r\n"),
    ],
    "initial-response-and-cancel": [
        ("s", GREETING),
        ("c", b"AUTH PLAIN " + SASL_SECRET + b"\r\nAUTH LOGIN\r\n"),
        ("s", b"-ERR no\r\n+ VXNlcm5hbWU6\r\n"),
        ("c", b"*\r\nNOOP\r\n"),
        ("s", b"-ERR cancelled\r\n+OK\r\n"),
    ],
    # A stray server line puts the pairing in doubt: every later line after AUTH is masked.
    "stray-answer": [
        ("s", GREETING),
        ("c", b"AUTH PLAIN\r\n"),
        ("s", b"+ \r\n"),
        ("c", SASL_SECRET + b"\r\n"),
        ("s", b"+OK in\r\n-ERR stray\r\n"),
        ("c", b"STAT\r\n"),
        ("s", b"+OK 0 0\r\n"),
    ],
    # Lines the server never answers are masked when the session ends.
    "unanswered": [
        ("s", GREETING),
        ("c", b"AUTH PLAIN\r\n"),
        ("s", b"+ \r\n"),
        ("c", SASL_SECRET + b"\r\nSTAT\r\nPASS hunter2"),
    ],
}

SECRETS = (b"hunter2", SASL_SECRET)


class Recorded:
    """What a caller writes to the capture's client stream, and the events it gets."""

    def __init__(self) -> None:
        self.stream = b""
        self.events: list[Event] = []

    def released(self, observer: SessionObserver) -> None:
        self.stream += b"".join(data for _at, data in observer.take_masked_client())

    def end(self, observer: SessionObserver) -> None:
        self.events += observer.end_client(9.0)
        self.released(observer)
        self.events += observer.end_server(9.0)
        observer.abandon_client_lines()
        self.released(observer)


def one_call_per_turn(turns: Turns) -> Recorded:
    """The reference: each turn whole, through ``receive_client``."""
    observer = SessionObserver()
    out = Recorded()
    for number, (side, data) in enumerate(turns):
        if side == "c":
            fed = observer.receive_client(data, float(number))
            out.stream += b"".join(masked for _at, masked in fed.recorded)
            out.events += fed.events
        else:
            out.events += observer.feed_server(data, float(number))
            out.released(observer)
    out.end(observer)
    return out


def recorded_then_parsed(turns: Turns, pieces: list[list[bytes]], rng: random.Random) -> Recorded:
    """As the relay does: each client piece recorded (then forwarded), parsed some time
    later in steps of any size; every recorded byte parsed before the next server bytes."""
    observer = SessionObserver()
    out = Recorded()
    for number, ((side, data), cut) in enumerate(zip(turns, pieces, strict=True)):
        if side == "s":
            out.events += observer.parse_recorded_client()
            out.released(observer)
            out.events += observer.feed_server(data, float(number))
            out.released(observer)
            continue
        for piece in cut:
            out.stream += observer.record_client(piece, float(number))
            out.released(observer)
            waiting = observer.unparsed_client_bytes
            out.events += observer.parse_recorded_client(rng.randint(0, waiting))
            out.released(observer)
    out.events += observer.parse_recorded_client()
    out.released(observer)
    out.end(observer)
    return out


def _cut(data: bytes, how: str, rng: random.Random) -> list[bytes]:
    if how == "whole" or len(data) < 2:
        return [data]
    if how == "bytes":
        return [data[i : i + 1] for i in range(len(data))]
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 8))))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


@pytest.mark.parametrize("name", sorted(SESSIONS))
@pytest.mark.parametrize("how", ["whole", "bytes"])
def test_record_now_parse_later_records_and_reports_what_one_call_does(
    name: str, how: str
) -> None:
    turns = SESSIONS[name]
    rng = random.Random(0)
    reference = one_call_per_turn(turns)
    subject = recorded_then_parsed(turns, [_cut(d, how, rng) for _s, d in turns], rng)
    assert subject.stream == reference.stream
    assert subject.events == reference.events
    for secret in SECRETS:
        assert secret not in subject.stream


@settings(max_examples=150, deadline=None)
@given(name=st.sampled_from(sorted(SESSIONS)), seed=st.integers(0, 2**32 - 1))
def test_any_chunking_and_any_parse_delay_give_the_same_capture_and_events(
    name: str, seed: int
) -> None:
    turns = SESSIONS[name]
    rng = random.Random(seed)
    subject = recorded_then_parsed(turns, [_cut(d, "random", rng) for _s, d in turns], rng)
    reference = one_call_per_turn(turns)
    assert subject.stream == reference.stream
    assert subject.events == reference.events


def test_the_pinned_capture_of_commands_pipelined_behind_auth() -> None:
    # The bytes a capture holds for this session, as the relay has always written them.
    rng = random.Random(1)
    turns = SESSIONS["sasl-pipelined"]
    subject = recorded_then_parsed(turns, [_cut(d, "random", rng) for _s, d in turns], rng)
    assert subject.stream == b"AUTH PLAIN\r\n********\r\nSTAT\r\nLIST 1\r\nQUIT\r\n"
    unanswered = one_call_per_turn(SESSIONS["unanswered"])
    assert unanswered.stream == b"AUTH PLAIN\r\n********\r\n********\r\n********"


# -- a caller cannot get the order wrong ---------------------------------------------------


def _greeted() -> SessionObserver:
    observer = SessionObserver()
    observer.feed_server(GREETING, 0.0)
    return observer


def test_only_recorded_bytes_can_be_parsed() -> None:
    observer = _greeted()
    with pytest.raises(ObserverUsageError, match="recorded"):
        observer.parse_recorded_client(1)
    observer.record_client(b"USER bob\r\n", 1.0)
    with pytest.raises(ObserverUsageError):
        observer.parse_recorded_client(11)
    with pytest.raises(ObserverUsageError):
        observer.parse_recorded_client(-1)
    # A refused call changed nothing: the recorded bytes parse as they should.
    (command,) = observer.parse_recorded_client(10)
    assert isinstance(command, CommandSent) and command.verb == "USER"
    assert observer.unparsed_client_bytes == 0
    assert observer.parse_recorded_client() == []


def test_an_observer_that_records_parses_nothing_it_did_not_record() -> None:
    # The leak this closes: a caller that parsed bytes its masker never saw got verdicts
    # for lines the masker did not hold, so SASL data reached the capture on a later
    # line's verdict. Now the unrecorded feed is refused outright.
    observer = _greeted()
    observer.receive_client(b"AUTH PLAIN\r\n", 1.0)
    observer.feed_server(b"+ \r\n", 2.0)
    with pytest.raises(ObserverUsageError, match="records client bytes"):
        observer.feed_client(SASL_SECRET + b"\r\n", 3.0)
    assert observer.summary().client_bytes == len(b"AUTH PLAIN\r\n")


def test_an_observer_that_only_reads_cannot_start_recording() -> None:
    observer = _greeted()
    observer.feed_client(b"AUTH PLAIN\r\n", 1.0)
    with pytest.raises(ObserverUsageError, match="did not record"):
        observer.record_client(SASL_SECRET + b"\r\n", 2.0)
    with pytest.raises(ObserverUsageError):
        observer.receive_client(SASL_SECRET + b"\r\n", 2.0)
    assert observer.take_masked_client() == []


def test_injected_plaintext_is_recorded_only_after_an_accepted_stls() -> None:
    observer = _greeted()
    with pytest.raises(ObserverUsageError, match="STLS"):
        observer.record_injected_client(b"PASS hunter2\r\n", 1.0)
    observer.receive_client(b"STLS\r\n", 1.0)
    with pytest.raises(ObserverUsageError, match="STLS"):
        observer.record_injected_client(b"PASS hunter2\r\n", 1.0)  # no answer yet
    observer.feed_server(b"+OK begin TLS\r\n", 2.0)
    assert observer.record_injected_client(b"PASS hunter2\r\n", 3.0) == b"PASS ********\r\n"
    assert observer.parse_recorded_client() == []
    assert observer.summary().client_bytes == len(b"STLS\r\nPASS hunter2\r\n")


PLAINTEXT = b"USER alice\r\nPASS hunter2\r\nAUTH PLAIN\r\n" + SASL_SECRET + b"\r\nNOOP\r\nPA"


def _injected(pieces: list[bytes]) -> bytes:
    """What is recorded of plaintext sent after a passed-through STLS ``+OK``."""
    observer = _greeted()
    stream = b"".join(masked for _at, masked in observer.receive_client(b"STLS\r\n", 1.0)[0])
    observer.feed_server(b"+OK begin TLS\r\n", 2.0)
    for piece in pieces:
        stream += observer.record_injected_client(piece, 3.0)
        observer.parse_recorded_client()
        stream += b"".join(data for _at, data in observer.take_masked_client())
    observer.end_client(4.0)
    observer.abandon_client_lines()
    return stream + b"".join(data for _at, data in observer.take_masked_client())


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
@example(seed=0)
def test_injected_plaintext_is_masked_the_same_at_any_chunking(seed: int) -> None:
    whole = _injected([PLAINTEXT])
    assert whole == b"STLS\r\nUSER alice\r\nPASS ********\r\nAUTH PLAIN\r\n" + (
        b"********\r\n" * 2 + b"********"
    )
    assert _injected(_cut(PLAINTEXT, "random", random.Random(seed))) == whole
    assert _injected(_cut(PLAINTEXT, "bytes", random.Random(seed))) == whole


def _after_passed_through_stls() -> SessionObserver:
    observer = _greeted()
    observer.receive_client(b"STLS\r\n", 1.0)
    observer.feed_server(b"+OK begin TLS\r\n", 2.0)
    return observer


def test_plaintext_after_stls_is_masked_even_through_the_ordinary_entry() -> None:
    # A caller that does not tell injected plaintext apart still records nothing clear:
    # bytes after the switch that do not open a TLS record are masked as plaintext.
    observer = _after_passed_through_stls()
    assert observer.record_client(b"PASS hunter2\r\nAUTH PLAIN\r\n", 3.0) == (
        b"PASS ********\r\nAUTH PLAIN\r\n"
    )
    assert observer.record_client(SASL_SECRET + b"\r\n", 3.0) == b""
    assert observer.take_masked_client() == [(3.0, b"********\r\n")]
    observer.parse_recorded_client()
    # TLS after the switch is recorded as it is, whatever bytes its records carry.
    observer = _after_passed_through_stls()
    record = b"\x16\x03\x01\x00\x05PASS "
    assert observer.record_client(record, 3.0) == record
    assert observer.record_client(b"\x17\x03\x03\x00\x02\xab\xcd", 3.0) == (
        b"\x17\x03\x03\x00\x02\xab\xcd"
    )


@pytest.mark.parametrize(
    "chunks",
    [
        [b"\x16PASS hunter2\r\n"],
        [b"\x16", b"PASS hunter2\r\n"],
        [b"\x16\x03\x01\x00\x05hello", b"PASS hunter2\r\n"],
        [b"\x16\x03\x01\x00\x05helloPASS hunter2\r\n"],
        [b"\x16\x03\x01\x00\x05hel", b"lo\x16\x03", b"\x01PASS hunter2\r\n"],
        [b"\x16\x03\x01\xff\xffPASS hunter2\r\n"],
    ],
)
def test_plaintext_behind_a_tls_looking_first_byte_is_masked(chunks: list[bytes]) -> None:
    # A first byte 0x16 opens no TLS record if what follows breaks the record framing
    # (RFC 8446 §5.1): from the byte that breaks it the stream is not TLS, so its bytes
    # are not known to be ciphertext and are masked (the facts are missing).
    observer = _after_passed_through_stls()
    recorded = b"".join(observer.record_client(chunk, 3.0) for chunk in chunks)
    observer.end_client(4.0)
    observer.abandon_client_lines()
    recorded += b"".join(data for _, data in observer.take_masked_client())
    assert b"hunter2" not in recorded
    assert b"********" in recorded
    observer.parse_recorded_client()


def test_kept_secrets_are_recorded_as_sent_and_still_masked_in_events() -> None:
    turns = SESSIONS["sasl-pipelined"]
    observer = SessionObserver(keep_secrets=True)
    stream = b""
    events: list[Event] = []
    for number, (side, data) in enumerate(turns):
        if side == "c":
            for piece in _cut(data, "bytes", random.Random(0)):
                stream += observer.record_client(piece, float(number))
            events += observer.parse_recorded_client()
        else:
            events += observer.feed_server(data, float(number))
        assert observer.take_masked_client() == []
    assert stream == b"".join(data for side, data in turns if side == "c")
    assert [e.args for e in events if isinstance(e, CommandSent)] == ["PLAIN", "", "1", ""]
    assert SASL_SECRET.decode() not in repr(events)


_tls_records = st.lists(
    st.tuples(st.integers(20, 24), st.integers(0, 4), st.binary(max_size=40)).map(
        lambda r: bytes([r[0], 3, r[1]]) + len(r[2]).to_bytes(2, "big") + r[2]
    ),
    min_size=1,
    max_size=4,
).map(lambda records: bytes([0x16]) + b"".join(records)[1:] if records else b"")


@settings(max_examples=200, deadline=None)
@given(
    records=_tls_records,
    plaintext=st.sampled_from(
        [b"PASS hunter2\r\n", b"APOP alice hunter2\r\n", b"AUTH PLAIN hunter2\r\n"]
    ),
    seed=st.integers(0, 2**32 - 1),
)
def test_tls_records_are_kept_and_plaintext_after_them_is_masked_at_any_chunking(
    records: bytes, plaintext: bytes, seed: int
) -> None:
    # The property behind test_plaintext_behind_a_tls_looking_first_byte_is_masked: what
    # keeps the TLS record framing is recorded byte for byte, whatever follows it outside a
    # record is masked, at any chunking.
    stream = records + plaintext
    rng = random.Random(seed)
    pieces = _cut(stream, "random", rng)
    observer = _after_passed_through_stls()
    recorded = b"".join(observer.record_client(piece, 3.0) for piece in pieces)
    observer.end_client(4.0)
    observer.abandon_client_lines()
    recorded += b"".join(data for _, data in observer.take_masked_client())
    assert recorded == records + b"********"
    observer.parse_recorded_client()


_CLIENT_TOKENS = [
    b"USER alice", b"PASS hunter2", b"pAsS hunter2", b"APOP alice 0123abcd", b"AUTH PLAIN",
    b"AUTH PLAIN " + SASL_SECRET, SASL_SECRET, b"*", b"STAT", b"RETR 1", b"STLS", b"CAPA",
    b"QUIT", b"\r\n", b"\r\n", b"\n", b"\r", b"\x00", b" ", b"\x16", b"\x16\x03\x01\x00\x01x",
]
_SERVER_TOKENS = [
    b"+OK\r\n", b"-ERR no\r\n", b"+ \r\n", b"+ Zm9v\r\n", b"+OK 1 9\r\nbody\r\n.\r\n",
    b"+OK begin TLS\r\n", b"\r\n", b"\r", b".\r\n", b"\x00",
]
_random_turns = st.lists(
    st.one_of(
        st.lists(st.sampled_from(_CLIENT_TOKENS), min_size=1, max_size=8).map(
            lambda parts: ("c", b"".join(parts))
        ),
        st.lists(st.sampled_from(_SERVER_TOKENS), min_size=1, max_size=4).map(
            lambda parts: ("s", b"".join(parts))
        ),
    ),
    max_size=10,
).map(lambda turns: [("s", GREETING), *turns])


@settings(max_examples=300, deadline=None)
@given(turns=_random_turns, seed=st.integers(0, 2**32 - 1))
def test_random_streams_at_any_chunking_record_what_one_call_per_turn_records(
    turns: Turns, seed: int
) -> None:
    # The differential over random client and server streams (secrets split anywhere,
    # lone CR, NUL, mixed case, pipelined STLS, bytes after the switch): recording each
    # chunk and parsing any part of what waits gives the capture and the events of one
    # receive_client per turn.
    rng = random.Random(seed)
    pieces = [_cut(data, rng.choice(["whole", "bytes", "random"]), rng) for _s, data in turns]
    subject = recorded_then_parsed(turns, pieces, rng)
    reference = one_call_per_turn(turns)
    assert subject.stream == reference.stream
    assert subject.events == reference.events
