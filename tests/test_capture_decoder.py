"""The capture format's pure parts driven with bytes: no files, no sockets.

The writer's record encoding, and :class:`CaptureDecoder` fed whole inputs, one byte at
a time, random splits, every truncation, corrupted records, and files of an older format
version that the upgrade chain brings to the current one.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pop3tap.capture import (
    FORMAT_VERSION,
    MAGIC,
    RECORD_KEYS,
    CaptureDecoder,
    CaptureError,
    CaptureHeader,
    CloseRecord,
    DataRecord,
    Direction,
    EventName,
    EventRecord,
    Record,
    RecordType,
    _compat,
    derive_events,
    read_capture,
)
from pop3tap.capture._writer import data_record_prefix, new_header
from pop3tap.protocol import Exchange

START = datetime(2026, 11, 27, 5, 57, 28, 123456, tzinfo=UTC)
FIELDS: dict[str, Any] = {"pop3tap": "test", "client": "127.0.0.1:1", "upstream": "u:110"}
PACK = msgpack.Packer(use_bin_type=True).pack


def data_record(direction: str, t: float, payload: bytes) -> bytes:
    """A data record exactly as the writer emits it."""
    return data_record_prefix(direction, t, len(payload)) + payload


def sample() -> tuple[bytes, list[int], list[Record]]:
    """The bytes of a small capture, the offset after the header and after each record,
    and the records the decoder must give back."""
    parts = [PACK(new_header("a1b2c3", FIELDS, START))]
    records: list[Record] = [
        DataRecord(0.01, Direction.SERVER, b"+OK ready\r\n"),
        DataRecord(0.02, Direction.CLIENT, b"USER bob\r\n"),
        DataRecord(0.03, Direction.SERVER, bytes(range(256)) * 300),
        EventRecord(0.04, EventName.EOF, {"dir": "c2s"}),
        CloseRecord(0.05, "client closed", {"commands": 1}),
    ]
    for r in records:
        if isinstance(r, DataRecord):
            parts.append(data_record(r.dir, r.t, r.data))
        elif isinstance(r, EventRecord):
            parts.append(PACK({"type": "event", "t": r.t, "name": r.name, "fields": r.fields}))
        else:
            parts.append(PACK({"type": "close", "t": r.t, "reason": r.reason, "summary": {}}))
    records[-1] = CloseRecord(0.05, "client closed", {})
    ends: list[int] = []
    total = 0
    for part in parts:
        total += len(part)
        ends.append(total)
    return b"".join(parts), ends, records


def decode(chunks: list[bytes], **kwargs: Any) -> tuple[CaptureDecoder, list[Record]]:
    """Feed ``chunks`` one after another, draining the decoder after each."""
    decoder = CaptureDecoder(name="cap", **kwargs)
    records: list[Record] = []
    for chunk in chunks:
        decoder.feed(chunk)
        if decoder.read_header() is None:
            continue
        while (record := decoder.next_record()) is not None:
            records.append(record)
    decoder.end_of_input()
    return decoder, records


# ------------------------------------------------------------------ writer encoding


@pytest.mark.parametrize("size", [0, 1, 255, 256, 65535, 65536, 70000])
@pytest.mark.parametrize("direction", list(Direction))
def test_data_record_prefix_is_the_msgpack_of_the_record(direction: Direction, size: int) -> None:
    payload = b"\x00" * size
    expected = PACK({"type": "data", "t": 1.5, "dir": direction.value, "data": payload})
    assert data_record(direction, 1.5, payload) == expected
    assert list(msgpack.unpackb(expected)) == list(RECORD_KEYS[RecordType.DATA])


def test_data_record_prefix_refuses_an_unknown_direction() -> None:
    with pytest.raises(ValueError, match="direction must be 'c2s' or 's2c'"):
        data_record_prefix("sideways", 0.0, 1)


def test_new_header_keeps_its_own_keys_and_the_documented_order() -> None:
    header = new_header("a1b2c3", {**FIELDS, "type": "x", "magic": "y", "format": 99}, START)
    assert (header["type"], header["magic"], header["format"]) == ("header", MAGIC, 1)
    assert header["session"] == "a1b2c3" and header["pop3tap"] == "test"
    assert list(header) == list(RECORD_KEYS[RecordType.HEADER])


@pytest.mark.parametrize("session", ["", "../x", "a b", "-a", "x" * 65, "é"])
def test_new_header_refuses_a_session_id_unfit_for_a_file_name(session: str) -> None:
    with pytest.raises(CaptureError, match="invalid capture session id"):
        new_header(session, FIELDS, START)


# ------------------------------------------------------------------ whole, split, cut


def test_whole_input_gives_the_header_and_every_record() -> None:
    data, _ends, records = sample()
    decoder, got = decode([data])
    assert decoder.header == CaptureHeader(
        format=FORMAT_VERSION,
        pop3tap="test",
        session="a1b2c3",
        started="2026-11-27T05:57:28.123456Z",
        started_unix=START.timestamp(),
        client="127.0.0.1:1",
        listen="",
        upstream="u:110",
        secrets="masked",
        options={},
    )
    assert got == records
    assert isinstance(got[0], DataRecord) and got[0].dir is Direction.SERVER
    assert decoder.complete and decoder.problem is None
    assert (decoder.valid_bytes, decoder.trailing_bytes) == (len(data), 0)
    assert decoder.last_t == 0.05


def test_one_byte_at_a_time_gives_the_same_records() -> None:
    data, _, records = sample()
    decoder, got = decode([data[i : i + 1] for i in range(len(data))])
    assert got == records and decoder.complete and decoder.trailing_bytes == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=1 << 20), max_size=12))
def test_any_split_gives_the_same_records(cuts: list[int]) -> None:
    data, _, records = sample()
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    chunks = [data[a:b] for a, b in itertools.pairwise(points)]
    decoder, got = decode(chunks)
    assert got == records and decoder.valid_bytes == len(data)


def test_a_cut_at_every_offset_keeps_exactly_the_whole_records_before_it() -> None:
    data, ends, records = sample()
    header_end = ends[0]
    for cut in range(len(data) + 1):
        if cut < header_end:
            expected = "empty file" if cut == 0 else "file ends inside the header"
            with pytest.raises(CaptureError, match=expected):
                decode([data[:cut]])
            continue
        decoder, got = decode([data[:cut]])
        whole = sum(1 for end in ends[1:] if end <= cut)
        assert got == records[:whole], cut
        assert decoder.valid_bytes == ends[whole], cut
        assert decoder.trailing_bytes == cut - ends[whole], cut
        assert decoder.problem is None, cut
        assert decoder.complete is (cut == len(data)), cut


# ------------------------------------------------------------------ corruption


def after_header(*records: bytes) -> bytes:
    return PACK(new_header("a1b2c3", FIELDS, START)) + b"".join(records)


def nested(depth: int) -> list[Any]:
    value: list[Any] = [1]
    for _ in range(depth):
        value = [value]
    return value


GOOD = data_record("s2c", 1.0, b"+OK\r\n")
CORRUPT: dict[str, tuple[bytes, str]] = {
    "not a map": (PACK([1, 2]), "record is not a map"),
    "unknown type": (PACK({"type": "blob", "t": 1.0}), "unknown record type 'blob'"),
    "no time": (PACK({"type": "close", "reason": "x", "summary": {}}), "t is not a number"),
    "time is a bool": (PACK({"type": "data", "t": True}), "t is not a number"),
    "negative time": (PACK({"type": "data", "t": -1.0}), "t is out of range"),
    "time is NaN": (PACK({"type": "data", "t": math.nan}), "t is out of range"),
    "time is infinite": (PACK({"type": "data", "t": math.inf}), "t is out of range"),
    "absurd time": (PACK({"type": "data", "t": 1e12}), "t is out of range"),
    "bad dir": (
        PACK({"type": "data", "t": 1.0, "dir": "up", "data": b"x"}),
        "data record without a valid dir/data",
    ),
    "dir is a list": (
        PACK({"type": "data", "t": 1.0, "dir": ["c2s"], "data": b"x"}),
        "data record without a valid dir/data",
    ),
    "data is text": (
        PACK({"type": "data", "t": 1.0, "dir": "c2s", "data": "x"}),
        "data record without a valid dir/data",
    ),
    "event name not text": (
        PACK({"type": "event", "t": 1.0, "name": 7, "fields": {}}),
        "name is not a string",
    ),
    "fields not a map": (
        PACK({"type": "event", "t": 1.0, "name": "eof", "fields": [1]}),
        "fields is not a map of plain values",
    ),
    "summary too deep": (
        PACK({"type": "close", "t": 1.0, "reason": "x", "summary": {"a": nested(40)}}),
        "summary is not a map of plain values",
    ),
}


@pytest.mark.parametrize("name", list(CORRUPT))
def test_a_record_of_the_wrong_shape_stops_decoding_there(name: str) -> None:
    bad, why = CORRUPT[name]
    data = after_header(GOOD, bad, GOOD)
    decoder, got = decode([data])
    assert got == [DataRecord(1.0, "s2c", b"+OK\r\n")]
    offset = len(after_header(GOOD))
    assert decoder.problem == f"invalid record at offset {offset}: {why}"
    assert decoder.valid_bytes == offset
    assert decoder.trailing_bytes == len(data) - offset
    assert not decoder.complete


@pytest.mark.parametrize(
    ("junk", "error"),
    [
        (b"\xc1", "FormatError"),  # a byte msgpack never uses
        (b"\xd4\x01\x00", "ValueError"),  # an extension type (max_ext_len=0)
        (b"\x81\x01\x02", "ValueError"),  # an int map key (strict_map_key)
        (b"\xa2\xff\xfe", "UnicodeDecodeError"),  # a str that is not UTF-8
    ],
)
def test_undecodable_bytes_stop_decoding_with_their_offset(junk: bytes, error: str) -> None:
    data = after_header(GOOD) + junk + GOOD
    decoder, got = decode([data])
    assert len(got) == 1
    offset = len(after_header(GOOD))
    assert decoder.problem == f"corrupt data at offset {offset}: {error}"
    assert decoder.trailing_bytes == len(data) - offset


def test_a_record_over_the_limit_stops_decoding_at_its_length() -> None:
    big = data_record("s2c", 1.0, b"x" * 5000)
    data = after_header(GOOD, big, GOOD)
    chunks = [data[i : i + 512] for i in range(0, len(data), 512)]
    decoder, got = decode(chunks, max_record_bytes=1000)
    assert len(got) == 1
    offset = len(after_header(GOOD))
    assert decoder.problem == f"corrupt data at offset {offset}: ValueError"
    assert decoder.received == len(data) and decoder.trailing_bytes == len(data) - offset


def test_more_input_than_the_buffer_holds_stops_decoding_without_buffering_it() -> None:
    start = after_header(GOOD)
    big = data_record("s2c", 1.0, b"x" * (300 * 1024))
    decoder, got = decode([start, big, GOOD], max_record_bytes=1000)
    assert len(got) == 1  # the oversized feed is refused whole, and what follows it
    assert decoder.problem == f"record at offset {len(start)} is larger than 1000 bytes"
    assert decoder.received == len(start) + len(big) + len(GOOD)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_any_damaged_byte_never_raises_and_keeps_the_records_before_it(data: st.DataObject) -> None:
    raw, ends, records = sample()
    offset = data.draw(st.integers(min_value=ends[0], max_value=len(raw) - 1), label="offset")
    value = data.draw(st.integers(min_value=0, max_value=255), label="value")
    damaged = raw[:offset] + bytes([value]) + raw[offset + 1 :]
    decoder, got = decode([damaged])  # a damaged record is never an exception
    intact = sum(1 for end in ends[1:] if end <= offset)
    assert got[:intact] == records[:intact]
    assert decoder.valid_bytes + decoder.trailing_bytes == len(damaged)
    assert decoder.valid_bytes >= ends[intact]


@pytest.mark.parametrize(
    ("first", "message"),
    [
        (PACK({"type": "data"}), "cap: not a pop3tap capture (no capture header)"),
        (PACK({"type": "header", "magic": "x"}), "cap: not a pop3tap capture (no capture header)"),
        (
            PACK({"type": "header", "magic": MAGIC, "format": "1"}),
            "cap: invalid capture header (bad format version)",
        ),
        (
            PACK({"type": "header", "magic": MAGIC, "format": 9}),
            f"cap: capture format 9 is newer than this pop3tap supports ({FORMAT_VERSION}); "
            "upgrade pop3tap",
        ),
        (
            PACK({**new_header("a1", FIELDS, START), "secrets": "some"}),
            "cap: invalid capture header (secrets must be 'masked' or 'kept')",
        ),
        (b"\xc1" * 4, "cap: not a pop3tap capture (corrupt data at offset 0: FormatError)"),
    ],
)
def test_a_bad_first_record_is_one_error_line(first: bytes, message: str) -> None:
    with pytest.raises(CaptureError) as caught:
        decode([first + GOOD])
    assert str(caught.value) == message


def test_next_record_before_the_header_is_a_programming_error() -> None:
    with pytest.raises(RuntimeError):
        CaptureDecoder().next_record()


# ------------------------------------------------------------------ older versions

# Format 0 is made up for these tests: the header had no ``secrets`` (nothing was
# masked) and data records said ``side: client|server`` and ``bytes`` instead of ``dir``
# and ``data``.


def header_0_to_1(header: dict[str, Any]) -> dict[str, Any]:
    header["secrets"] = "kept"
    header["format"] = 1
    return header


def record_0_to_1(record: dict[str, Any]) -> dict[str, Any]:
    if record.get("type") == "data":
        side = record.pop("side")
        record["dir"] = {"client": "c2s", "server": "s2c"}[side]
        record["data"] = record.pop("bytes")
    return record


@pytest.fixture
def format_0(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(
        _compat.UPGRADES, 0, _compat.Upgrade(0, header=header_0_to_1, record=record_0_to_1)
    )
    yield


def version_0_bytes() -> bytes:
    header = new_header("old0", FIELDS, START)
    del header["secrets"]
    header["format"] = 0
    return b"".join(
        [
            PACK(header),
            PACK({"type": "data", "t": 0.1, "side": "server", "bytes": b"+OK hi\r\n"}),
            PACK({"type": "data", "t": 0.2, "side": "client", "bytes": b"PASS secret\r\n"}),
            PACK({"type": "data", "t": 0.3, "side": "server", "bytes": b"+OK in\r\n"}),
            PACK({"type": "event", "t": 0.4, "name": "eof", "fields": {"dir": "c2s"}}),
            PACK({"type": "close", "t": 0.5, "reason": "client closed", "summary": {}}),
        ]
    )


def test_a_version_0_file_is_upgraded_record_by_record(format_0: None) -> None:
    decoder, got = decode([version_0_bytes()])
    assert decoder.header is not None
    assert decoder.header.format == 0  # the version the file was written in
    assert decoder.header.secrets == "kept"
    assert got[:3] == [
        DataRecord(0.1, "s2c", b"+OK hi\r\n"),
        DataRecord(0.2, "c2s", b"PASS secret\r\n"),
        DataRecord(0.3, "s2c", b"+OK in\r\n"),
    ]
    assert decoder.complete
    exchanges = [e for _r, batch in derive_events(got) for e in batch if isinstance(e, Exchange)]
    assert [(e.verb, e.status.value) for e in exchanges] == [("PASS", "+OK")]


def test_a_version_0_file_on_disk_reads_like_a_current_one(format_0: None, tmp_path: Path) -> None:
    path = tmp_path / "old.p3cap"
    path.write_bytes(version_0_bytes())
    capture = read_capture(path)
    assert capture.header.format == 0 and capture.complete and not capture.truncated
    assert capture.stream("c2s") == b"PASS secret\r\n"


def test_a_version_0_file_without_a_step_is_refused() -> None:
    with pytest.raises(CaptureError) as caught:
        decode([version_0_bytes()])
    assert str(caught.value) == (
        "cap: invalid capture header (format 0 cannot be upgraded: no step from 0)"
    )


def test_a_record_the_step_cannot_convert_stops_decoding_there(format_0: None) -> None:
    data = version_0_bytes()
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(data)
    next(unpacker)
    header_end = unpacker.tell()
    odd = PACK({"type": "data", "t": 0.1, "side": "nowhere", "bytes": b"x"})
    decoder, got = decode([data[:header_end] + odd])
    assert got == []
    assert decoder.problem == f"invalid record at offset {header_end}: cannot upgrade (KeyError)"


def test_steps_run_in_order_from_the_file_version_to_the_current_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_compat, "FORMAT_VERSION", 3)
    for source in (0, 1, 2):

        def step(obj: dict[str, Any], source: int = source) -> dict[str, Any]:
            obj["trail"] = [*obj.get("trail", []), source]
            return obj

        monkeypatch.setitem(_compat.UPGRADES, source, _compat.Upgrade(source, step, step))
    header, upgrade = _compat.upgrader_for(1, {"format": 1})
    assert header["trail"] == [1, 2]
    assert upgrade is not None and upgrade({"type": "data"}) == {"type": "data", "trail": [1, 2]}
    assert upgrade([1]) == [1]  # not a map: left for the shape check to refuse
    assert _compat.upgrader_for(3, {"format": 3}) == ({"format": 3}, None)


def test_a_step_cannot_be_registered_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_compat, "UPGRADES", {})
    _compat.register(0, header=header_0_to_1, record=record_0_to_1)
    with pytest.raises(ValueError, match="already registered"):
        _compat.register(0, header=header_0_to_1, record=record_0_to_1)


def test_the_current_version_has_no_steps_to_run() -> None:
    assert all(source < FORMAT_VERSION for source in _compat.UPGRADES)
    assert _compat.upgrader_for(FORMAT_VERSION, {})[1] is None


def test_a_whole_input_larger_than_the_buffer_decodes_like_small_chunks() -> None:
    # feed() takes any split of the bytes (docs/design.md): one feed of a capture larger
    # than the unpacker's buffer (max_record_bytes + one read chunk) made of small records
    # must not be mistaken for one oversized record.
    records = [data_record("s2c", 0.001 * i, b"+OK " + b"x" * 500 + b"\r\n") for i in range(800)]
    data = after_header(*records)
    assert len(data) > 1000 + 256 * 1024
    whole, got_whole = decode([data], max_record_bytes=1000)
    small, got_small = decode(
        [data[i : i + 512] for i in range(0, len(data), 512)], max_record_bytes=1000
    )
    assert whole.problem is None and small.problem is None
    assert got_whole == got_small and len(got_whole) == 800
    assert whole.valid_bytes == small.valid_bytes == len(data)


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=2100), min_size=1, max_size=8),
    repeat=st.integers(min_value=1, max_value=300),
    cuts=st.lists(st.integers(min_value=0, max_value=600_000), max_size=4),
)
def test_any_split_gives_the_records_and_problem_of_small_chunks(
    sizes: list[int], repeat: int, cuts: list[int]
) -> None:
    # Records under and over the limit, often more bytes in all than the unpacker's
    # buffer, fed whole, in a few large pieces or in small chunks: the same good records,
    # the same stopping offset and the same problem.
    data = after_header(*[data_record("c2s", 0.5, b"y" * size) for size in sizes * repeat])
    bounds = sorted({0, len(data), *(min(cut, len(data)) for cut in cuts)})
    pieces = [data[a:b] for a, b in itertools.pairwise(bounds)]
    reference, expected = decode(
        [data[i : i + 100] for i in range(0, len(data), 100)], max_record_bytes=2000
    )
    for chunks in ([data], pieces):
        decoder, got = decode(chunks, max_record_bytes=2000)
        assert got == expected
        assert (decoder.problem, decoder.valid_bytes) == (reference.problem, reference.valid_bytes)
        assert decoder.received == len(data)
