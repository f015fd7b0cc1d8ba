"""The two text forms of a UTC instant, formatted once per second, against datetime's own."""

from __future__ import annotations

import re
import time
import types
from datetime import UTC, datetime
from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pop3tap import _utctime
from pop3tap.capture import CaptureWriter, read_capture
from pop3tap.capture._writer import new_header

#: 1970 to 2200, any microsecond; whole seconds (no fraction in the ISO form) often.
instants = st.tuples(
    st.integers(min_value=0, max_value=7_258_118_400),
    st.one_of(st.just(0), st.integers(min_value=0, max_value=999_999)),
)


@given(
    first=instants,
    steps=st.lists(
        st.tuples(st.integers(min_value=-90_000, max_value=90_000), st.integers(0, 999_999)),
        max_size=5,
    ),
    later=instants,
)
def test_both_forms_equal_what_datetime_writes(
    first: tuple[int, int], steps: list[tuple[int, int]], later: tuple[int, int]
) -> None:
    """Instants in a row, near each other (the same second, minute, hour or day, or the
    next) and far apart: the per-second cache must follow every change of second and never
    lend one second's date or time to another."""
    base = first[0]
    sequence = [first, *((max(0, base + step), micros) for step, micros in steps), later, first]
    for seconds, micros in sequence:
        instant = _utctime.UtcInstant(seconds, micros)
        when = datetime.fromtimestamp(seconds, UTC).replace(microsecond=micros)
        assert instant.iso == when.isoformat().replace("+00:00", "Z")
        assert instant.compact == when.strftime("%Y%m%dT%H%M%S.%fZ")
        assert instant.unix == when.timestamp()


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(instants=st.lists(instants, min_size=1, max_size=4))
def test_the_log_timestamp_is_the_iso_form_of_the_clock_reading(
    instants: list[tuple[int, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``iso_now`` reads the per-second cache without a call: it must still follow the
    clock from one second to another."""
    for seconds, micros in instants:
        nanos = (seconds * 1_000_000 + micros) * 1000 + 999
        clock = types.SimpleNamespace(
            time_ns=lambda nanos=nanos: nanos, strftime=time.strftime, gmtime=time.gmtime
        )
        monkeypatch.setattr(_utctime, "time", clock)
        assert _utctime.iso_now() == _utctime.UtcInstant(seconds, micros).iso


def test_a_new_capture_is_named_and_dated_by_one_reading_of_the_clock(tmp_path: Path) -> None:
    """The file name, ``started`` and ``started_unix`` of a capture made without ``now`` name
    the same microsecond, and the header is what ``new_header`` makes for it."""
    before = datetime.now(UTC)
    writer = CaptureWriter.create(tmp_path, session_id="a1b2c3", header_fields={})
    after = datetime.now(UTC)
    writer.close(1.0, "quit")
    assert read_capture(writer.path).complete
    with writer.path.open("rb") as file:
        header = next(iter(msgpack.Unpacker(file)))
    started = datetime.fromisoformat(header["started"].replace("Z", "+00:00"))
    assert before <= started <= after
    assert header["started_unix"] == started.timestamp()
    stamp = re.fullmatch(r"(\d{8}T\d{6}\.\d{6}Z)-a1b2c3\.p3cap", writer.path.name)
    assert stamp is not None
    assert stamp.group(1) == started.strftime("%Y%m%dT%H%M%S.%fZ")
    expected = new_header("a1b2c3", {}, started)
    assert header == expected
