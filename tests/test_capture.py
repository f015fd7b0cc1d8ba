"""Capture files: round trips, crash safety, hostile input, writer failures."""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pop3tap import capture
from pop3tap.capture import (
    FORMAT_VERSION,
    MAGIC,
    Capture,
    CaptureError,
    CaptureWriter,
    CloseRecord,
    DataRecord,
    EventRecord,
    iter_capture_paths,
    read_capture,
)

START = datetime(2026, 11, 27, 5, 57, 28, 123456, tzinfo=UTC)
HEADER_FIELDS: dict[str, Any] = {
    "pop3tap": "0.1.0",
    "client": "127.0.0.1:53124",
    "listen": "127.0.0.1:1110",
    "upstream": "pop.example.com:110",
    "secrets": "masked",
    "options": {"tls": "none", "max_line": 8192},
}
ALL_BYTES = bytes(range(256))


def new_writer(
    directory: Path, session_id: str = "a1b2c3d4e5f6", now: datetime = START
) -> CaptureWriter:
    return CaptureWriter.create(
        directory, session_id=session_id, header_fields=HEADER_FIELDS, now=now
    )


@pytest.fixture
def umask0() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def write_sample(directory: Path) -> tuple[Path, list[int]]:
    """A finished capture; returns its path and the file size after each record."""
    w = new_writer(directory)
    ends = [w.path.stat().st_size]
    w.write_data("s2c", 0.01, b"+OK ready\r\n")
    ends.append(w.path.stat().st_size)
    w.write_data("c2s", 0.02, bytearray(ALL_BYTES))
    ends.append(w.path.stat().st_size)
    w.write_event("eof", 0.03, dir="c2s")
    ends.append(w.path.stat().st_size)
    w.close(0.04, "quit", {"commands": 1})
    ends.append(w.path.stat().st_size)
    return w.path, ends


# ------------------------------------------------------------------ round trip


def test_round_trip_keeps_bytes_and_fields(tmp_path: Path) -> None:
    path, _ = write_sample(tmp_path)
    cap = read_capture(path)
    assert cap.header.format == FORMAT_VERSION
    assert cap.header.session == "a1b2c3d4e5f6"
    assert cap.header.upstream == "pop.example.com:110"
    assert cap.header.options == {"tls": "none", "max_line": 8192}
    assert cap.header.started == "2026-11-27T05:57:28.123456Z"
    assert cap.header.started_unix == START.timestamp()
    assert cap.records == [
        DataRecord(t=0.01, dir="s2c", data=b"+OK ready\r\n"),
        DataRecord(t=0.02, dir="c2s", data=ALL_BYTES),
        EventRecord(t=0.03, name="eof", fields={"dir": "c2s"}),
        CloseRecord(t=0.04, reason="quit", summary={"commands": 1}),
    ]
    assert type(cap.records[1]).__name__ == "DataRecord"
    assert isinstance(cap.records[1], DataRecord) and type(cap.records[1].data) is bytes
    assert cap.complete and not cap.truncated and cap.problem is None
    assert cap.stream("c2s") == ALL_BYTES
    assert cap.stream("s2c") == b"+OK ready\r\n"


def test_records_are_exactly_what_msgpack_packs(tmp_path: Path) -> None:
    w = new_writer(tmp_path)
    header_size = w.path.stat().st_size
    w.write_data("c2s", 1.25, memoryview(b"RETR 1\r\n"))
    w.write_data("s2c", 2.5, b"x" * 70000)
    w.write_data("s2c", 3, b"y" * 300)
    w.release()
    raw = w.path.read_bytes()
    packer = msgpack.Packer(use_bin_type=True)
    expected = packer.pack({"type": "data", "t": 1.25, "dir": "c2s", "data": b"RETR 1\r\n"})
    expected += packer.pack({"type": "data", "t": 2.5, "dir": "s2c", "data": b"x" * 70000})
    expected += packer.pack({"type": "data", "t": 3.0, "dir": "s2c", "data": b"y" * 300})
    assert raw[header_size:] == expected
    header = msgpack.unpackb(raw[:header_size])
    assert header["type"] == "header" and header["magic"] == MAGIC


def test_large_chunks_are_split_into_bounded_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(capture, "MAX_DATA_CHUNK", 100)
    w = new_writer(tmp_path)
    payload = bytes(range(256)) * 2
    w.write_data("s2c", 1.0, payload)
    w.write_data("s2c", 1.0, b"")
    w.close(2.0, "quit")
    cap = read_capture(w.path)
    sizes = [len(r.data) for r in cap.records if isinstance(r, DataRecord)]
    assert sizes == [100, 100, 100, 100, 100, 12]
    assert cap.stream("s2c") == payload


def test_event_fields_named_like_parameters_and_odd_values(tmp_path: Path) -> None:
    w = new_writer(tmp_path)
    w.write_event("error", 1.0, name="n", t=5, where=object.__name__, flags=frozenset({"b", "a"}))
    w.write_event("weird", 2.0, value=object())
    w.close(3.0, "error")
    assert not w.failed
    cap = read_capture(w.path)
    first, second = cap.records[0], cap.records[1]
    assert isinstance(first, EventRecord) and isinstance(second, EventRecord)
    assert first.fields == {"name": "n", "t": 5, "where": "object", "flags": ["a", "b"]}
    assert second.fields["value"].startswith("<object object")


def test_close_is_idempotent_and_later_writes_are_ignored(tmp_path: Path) -> None:
    w = new_writer(tmp_path)
    w.close(1.0, "quit")
    w.close(2.0, "again")
    w.write_data("c2s", 3.0, b"late")
    w.write_event("late", 3.0)
    cap = read_capture(w.path)
    assert cap.records == [CloseRecord(t=1.0, reason="quit", summary={})]


# ------------------------------------------------------------------ files


@pytest.mark.usefixtures("umask0")
def test_file_mode_is_0600_under_umask_0(tmp_path: Path) -> None:
    w = new_writer(tmp_path)
    assert stat.S_IMODE(w.path.stat().st_mode) == 0o600


def test_file_mode_is_forced_under_restrictive_umask(tmp_path: Path) -> None:
    old = os.umask(0o277)
    try:
        w = new_writer(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(w.path.stat().st_mode) == 0o600


def test_names_sort_by_time_and_never_collide(tmp_path: Path) -> None:
    created = []
    for i, sid in enumerate(["ffffffffffff", "000000000000", "7f7f7f7f7f7f"]):
        w = CaptureWriter.create(
            tmp_path,
            session_id=sid,
            header_fields=HEADER_FIELDS,
            now=START + timedelta(microseconds=i),
        )
        created.append(w.path)
        w.release()
    assert sorted(created, key=lambda p: p.name) == created
    assert created[0].name == "20261127T055728.123456Z-ffffffffffff.p3cap"
    twins = [new_writer(tmp_path, "abcabcabcabc").path for _ in range(3)]
    assert len(set(twins)) == 3
    assert all(read_capture(p).header.session == "abcabcabcabc" for p in twins)


def test_create_errors_are_one_clear_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(CaptureError) as info:
        new_writer(missing)
    message = str(info.value)
    assert str(missing) in message and "\n" not in message
    with pytest.raises(CaptureError, match="invalid capture session id"):
        new_writer(tmp_path, "../../etc/x")


def test_iter_capture_paths(tmp_path: Path) -> None:
    a = new_writer(tmp_path, "bbbbbbbbbbbb", now=START + timedelta(seconds=1)).path
    b = new_writer(tmp_path, "aaaaaaaaaaaa", now=START).path
    (tmp_path / "notes.txt").write_text("x")
    other = tmp_path / "single.bin"
    other.write_bytes(b"")
    assert iter_capture_paths([str(tmp_path), str(other)]) == [b, a, other]
    with pytest.raises(CaptureError, match="no such file or directory"):
        iter_capture_paths([str(tmp_path / "missing")])


# ------------------------------------------------------------------ reading errors


def test_missing_empty_directory_and_foreign_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.p3cap"
    empty.write_bytes(b"")
    json_file = tmp_path / "x.json"
    json_file.write_text('{"hello": 1}\n')
    wrong_magic = tmp_path / "wrong.p3cap"
    wrong_magic.write_bytes(msgpack.packb({"type": "header", "magic": "other", "format": 1}))
    cases = {
        tmp_path / "missing.p3cap": "no such file",
        tmp_path: "is a directory",
        empty: "empty file",
        json_file: "not a pop3tap capture",
        wrong_magic: "not a pop3tap capture",
    }
    for path, reason in cases.items():
        with pytest.raises(CaptureError) as info:
            read_capture(path)
        assert str(info.value).startswith(f"{path}: ")
        assert reason in str(info.value)
        assert "\n" not in str(info.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any file")
def test_permission_denied(tmp_path: Path) -> None:
    path, _ = write_sample(tmp_path)
    path.chmod(0)
    with pytest.raises(CaptureError, match="permission denied"):
        read_capture(path)


def test_newer_format_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "future.p3cap"
    header = {"type": "header", "magic": MAGIC, "format": 7, "whatever": [1, 2]}
    path.write_bytes(msgpack.packb(header) + msgpack.packb({"type": "hologram"}))
    with pytest.raises(CaptureError) as info:
        read_capture(path)
    assert str(info.value) == (
        f"{path}: capture format 7 is newer than this pop3tap supports (1); upgrade pop3tap"
    )


def test_invalid_header_fields_are_an_error(tmp_path: Path) -> None:
    w = new_writer(tmp_path)
    w.release()
    header = msgpack.unpackb(w.path.read_bytes())
    header["secrets"] = "sometimes"
    w.path.write_bytes(msgpack.packb(header))
    with pytest.raises(CaptureError, match="invalid capture header"):
        read_capture(w.path)


# ------------------------------------------------------------------ torn tails, crashes


def test_torn_tail_at_every_offset_of_the_last_record(tmp_path: Path) -> None:
    path, ends = write_sample(tmp_path)
    full = path.read_bytes()
    good = read_capture(path).records
    prev_end = ends[-2]
    torn = tmp_path / "torn.p3cap"
    for cut in range(prev_end, len(full)):
        torn.write_bytes(full[:cut])
        cap = read_capture(torn)
        assert cap.records == good[:-1], cut
        assert not cap.complete
        assert cap.truncated == (cut > prev_end)
        assert cap.trailing_bytes == cut - prev_end
        assert cap.valid_bytes == prev_end
        assert cap.problem is None


def test_torn_tail_inside_a_large_data_record(tmp_path: Path) -> None:
    w = new_writer(tmp_path)
    w.write_data("c2s", 1.0, b"USER bob\r\n")
    end = w.path.stat().st_size
    w.write_data("s2c", 2.0, b"z" * 300_000)
    w.release()
    full = w.path.read_bytes()
    for cut in (end + 1, end + 40, end + 150_000, len(full) - 1):
        w.path.write_bytes(full[:cut])
        cap = read_capture(w.path)
        assert cap.records == [DataRecord(t=1.0, dir="c2s", data=b"USER bob\r\n")]
        assert cap.truncated and cap.trailing_bytes == cut - end


def test_file_cut_inside_the_header_is_an_error(tmp_path: Path) -> None:
    path, ends = write_sample(tmp_path)
    full = path.read_bytes()
    for cut in range(1, ends[0]):
        path.write_bytes(full[:cut])
        with pytest.raises(CaptureError, match="ends inside the header"):
            read_capture(path)


KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from pop3tap.capture import CaptureWriter
    w = CaptureWriter.create(Path(sys.argv[1]), session_id="deadbeef0001",
                             header_fields={"secrets": "kept"})
    for i in range(50):
        w.write_data("c2s" if i % 2 else "s2c", i / 10, b"chunk %d\\r\\n" % i)
    w.write_event("error", 5.0, where="test", message="about to die")
    print(w.path, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    w.close(6.0, "never reached")
    """
)


def test_kill_9_mid_session_keeps_every_record(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, str(tmp_path)],
        capture_output=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    cap = read_capture(Path(proc.stdout.decode().strip()))
    assert not cap.complete and not cap.truncated
    assert len(cap.records) == 51
    assert cap.records[-1] == EventRecord(
        t=5.0, name="error", fields={"where": "test", "message": "about to die"}
    )
    assert cap.stream("c2s").count(b"\r\n") == 25
    assert cap.header.secrets == "kept"


def test_open_append_cuts_the_torn_tail_first(tmp_path: Path) -> None:
    w = new_writer(tmp_path)
    w.write_data("s2c", 1.0, b"+OK\r\n")
    w.release()
    with w.path.open("ab") as f:  # half a record, as a crash would leave it
        f.write(msgpack.packb({"type": "data", "t": 2.0, "dir": "c2s", "data": b"x" * 50})[:30])
    again = CaptureWriter.open_append(w.path)
    again.write_data("c2s", 3.0, b"QUIT\r\n")
    again.close(4.0, "quit")
    cap = read_capture(w.path)
    assert cap.complete and not cap.truncated
    assert cap.records == [
        DataRecord(t=1.0, dir="s2c", data=b"+OK\r\n"),
        DataRecord(t=3.0, dir="c2s", data=b"QUIT\r\n"),
        CloseRecord(t=4.0, reason="quit", summary={}),
    ]
    with pytest.raises(CaptureError, match="already closed"):
        CaptureWriter.open_append(w.path)


# ------------------------------------------------------------------ hostile input


def read_or_error(path: Path, **kw: Any) -> Capture | None:
    """read_capture must return a Capture or raise CaptureError, nothing else."""
    try:
        return read_capture(path, **kw)
    except CaptureError as exc:
        assert "\n" not in str(exc)
        return None


def sample_bytes(directory: Path) -> bytes:
    path, _ = write_sample(directory)
    data = path.read_bytes()
    path.unlink()
    return data


def test_garbage_in_the_middle_keeps_the_records_before(tmp_path: Path) -> None:
    path, ends = write_sample(tmp_path)
    full = path.read_bytes()
    for junk in (b"\xc1", msgpack.packb({"type": "hologram", "t": 1.0}), msgpack.packb(42)):
        path.write_bytes(full[: ends[1]] + junk + full[ends[1] :])
        cap = read_capture(path)
        assert cap.records == [DataRecord(t=0.01, dir="s2c", data=b"+OK ready\r\n")]
        assert cap.truncated and not cap.complete
        assert cap.problem is not None and f"offset {ends[1]}" in cap.problem
        assert cap.trailing_bytes == len(full) - ends[1] + len(junk)


def test_wrongly_shaped_records_stop_the_reader(tmp_path: Path) -> None:
    bad_records: Sequence[object] = [
        {"type": "data", "t": 1.0, "dir": "sideways", "data": b"x"},
        {"type": "data", "t": "soon", "dir": "c2s", "data": b"x"},
        {"type": "data", "t": True, "dir": "c2s", "data": b"x"},
        {"type": "data", "t": 1.0, "dir": "c2s", "data": "text, not bytes"},
        {"type": "event", "t": 1.0, "name": 3, "fields": {}},
        {"type": "event", "t": 1.0, "name": "x", "fields": []},
        {"type": "close", "t": 1.0, "reason": "quit"},
        {"type": "event", "t": 1.0, "name": "x", "fields": {b"dir": "c2s"}},
        {"type": "event", "t": 1.0, "name": "x", "fields": {"when": [{"deep": {1: 2}}]}},
        [1, 2, 3],
    ]
    w = new_writer(tmp_path)
    w.release()
    header = w.path.read_bytes()
    for bad in bad_records:
        w.path.write_bytes(header + msgpack.packb(bad) + msgpack.packb({"type": "close"}))
        cap = read_capture(w.path)
        assert cap.records == [] and cap.truncated and cap.problem, bad


def test_huge_declared_lengths_are_bounded(tmp_path: Path) -> None:
    w = new_writer(tmp_path)
    w.release()
    header = w.path.read_bytes()
    bin32_4g = b"\xc6\xff\xff\xff\xff"
    map32_4g = b"\xdf\xff\xff\xff\xff"
    data_prefix = b"\x84\xa4type\xa4data\xa1t\xcb" + b"\0" * 8 + b"\xa3dir\xa3c2s\xa4data"
    for tail in (bin32_4g + b"x" * 5000, map32_4g + b"x" * 10, data_prefix + bin32_4g + b"y" * 9):
        w.path.write_bytes(header + tail)
        cap = read_capture(w.path, max_record_bytes=4096)
        assert cap.records == [] and cap.truncated
        assert cap.trailing_bytes == len(tail)
    # More bytes than the reader may buffer behind a 4 GiB claim: stop, do not keep reading.
    tail = bin32_4g + b"x" * 600_000
    w.path.write_bytes(header + tail)
    cap = read_capture(w.path, max_record_bytes=4096)
    assert cap.records == [] and cap.trailing_bytes == len(tail)
    assert cap.problem is not None and "larger than 4096 bytes" in cap.problem


def test_record_larger_than_the_limit_is_reported(tmp_path: Path) -> None:
    w = new_writer(tmp_path)
    w.write_data("s2c", 1.0, b"a" * 10)
    w.write_data("s2c", 2.0, b"b" * 100_000)
    w.release()
    cap = read_capture(w.path, max_record_bytes=1000)
    assert cap.records == [DataRecord(t=1.0, dir="s2c", data=b"a" * 10)]
    assert cap.truncated and cap.problem is not None


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(junk=st.binary(max_size=400))
def test_random_bytes_never_raise_anything_else(tmp_path: Path, junk: bytes) -> None:
    path = tmp_path / "junk.p3cap"
    path.write_bytes(junk)
    read_or_error(path)
    path.write_bytes(sample_bytes(tmp_path)[:60] + junk)
    read_or_error(path, max_record_bytes=256)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 7)), max_size=6))
def test_bit_flips_give_an_error_or_a_capture(tmp_path: Path, flips: list[tuple[int, int]]) -> None:
    data = bytearray(sample_bytes(tmp_path))
    for index, bit in flips:
        data[index % len(data)] ^= 1 << bit
    path = tmp_path / "flipped.p3cap"
    path.write_bytes(bytes(data))
    cap = read_or_error(path)
    if cap is not None:
        assert cap.valid_bytes + cap.trailing_bytes == len(data)
        for record in cap.records:
            if isinstance(record, DataRecord):
                assert record.dir in ("c2s", "s2c") and isinstance(record.data, bytes)


# ------------------------------------------------------------------ writer failures


def test_enospc_marks_the_writer_failed_without_raising(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = new_writer(tmp_path)
    w.write_data("s2c", 1.0, b"+OK\r\n")

    def no_space(fd: int, buffers: Sequence[bytes]) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "writev", no_space)
    w.write_data("c2s", 2.0, b"USER bob\r\n")
    assert w.failed
    assert w.error is not None and "No space left on device" in w.error
    w.write_data("c2s", 3.0, b"more")
    w.write_event("eof", 3.0, dir="c2s")
    w.close(4.0, "quit")
    monkeypatch.undo()
    cap = read_capture(w.path)
    assert cap.records == [DataRecord(t=1.0, dir="s2c", data=b"+OK\r\n")]
    assert not cap.complete


def test_closed_descriptor_marks_the_writer_failed(tmp_path: Path) -> None:
    w = new_writer(tmp_path)
    assert w._fd is not None
    os.close(w._fd)  # the descriptor vanishes under the writer (EBADF)
    w.write_data("c2s", 1.0, b"x")
    assert w.failed and w.error is not None and "Bad file descriptor" in w.error
    w.close(2.0, "quit")


def test_partial_writes_are_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write
    calls = []

    def dribble(fd: int, buffers: Sequence[bytes]) -> int:
        calls.append(1)
        return real_write(fd, bytes(buffers[0])[:7])

    w = new_writer(tmp_path)
    monkeypatch.setattr(os, "writev", dribble)
    w.write_data("s2c", 1.0, ALL_BYTES)
    w.write_event("tls", 2.0, version="TLSv1.3")
    w.close(3.0, "quit")
    monkeypatch.undo()
    cap = read_capture(w.path)
    assert cap.complete and not cap.truncated
    assert cap.stream("s2c") == ALL_BYTES
    assert len(calls) > 40


def test_header_write_failure_is_a_capture_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(fd: int, buffers: Sequence[bytes]) -> int:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "writev", broken)
    with pytest.raises(CaptureError, match="cannot write capture header"):
        new_writer(tmp_path)


# ------------------------------------------------------------------ re-derived exchanges

SERVER = [
    b"+OK POP3 ready <1.2@host>\r\n",
    b"+OK\r\n",
    b"+OK logged in\r\n",
    b"+OK 2 320\r\n",
    b"+OK 12 octets\r\nline one\r\n..dot\r\n.\r\n",
    b"+OK bye\r\n",
]
CLIENT = [b"USER bob\r\n", b"PASS hunter2\r\n", b"STAT\r\n", b"RETR 1\r\n", b"QUIT\r\n"]


def session_capture(directory: Path, chunk: int) -> Capture:
    """A plain session, each direction's bytes written ``chunk`` bytes at a time."""
    w = new_writer(directory, session_id=f"{chunk:012x}")
    t = 0.0

    def send(direction: str, data: bytes) -> None:
        nonlocal t
        for i in range(0, len(data), chunk):
            t += 0.001
            w.write_data(direction, t, data[i : i + chunk])

    send("s2c", SERVER[0])
    for command, response in zip(CLIENT, SERVER[1:], strict=True):
        send("c2s", command)
        send("s2c", response)
    w.write_event("eof", t, dir="s2c")
    w.write_event("eof", t, dir="c2s")
    w.close(t, "quit", {})
    return read_capture(w.path)


@pytest.mark.parametrize("chunk", [1, 3, 1000])
def test_exchanges_are_rederived_from_the_raw_bytes(tmp_path: Path, chunk: int) -> None:
    cap = session_capture(tmp_path, chunk)
    exchanges = cap.exchanges()
    assert [e.verb for e in exchanges] == ["USER", "PASS", "STAT", "RETR", "QUIT"]
    assert "hunter2" not in exchanges[1].args
    retr = exchanges[3]
    assert retr.multiline and retr.body_lines == 2
    assert retr.status is not None and retr.status.value == "+OK"
    assert cap.stream("c2s")[retr.request_start : retr.request_end] == b"RETR 1\r\n"
    assert cap.stream("s2c")[retr.response_start : retr.response_end] == SERVER[4]
    assert all(not e.flags for e in exchanges)
    summary = cap.summary()
    assert summary.retr_count == 1 and summary.commands == 5 and summary.reached_update
    assert cap.exchanges() == exchanges


def test_exchanges_of_a_capture_cut_short(tmp_path: Path) -> None:
    w = new_writer(tmp_path)
    w.write_data("s2c", 0.1, SERVER[0])
    w.write_data("c2s", 0.2, b"RETR 1\r\n")
    w.write_data("s2c", 0.3, b"+OK 12 octets\r\nline one\r\n")
    w.write_event("eof", 0.4, dir="s2c")
    w.write_event("error", 0.9, where="relay", message="boom")
    w.release()
    exchanges = read_capture(w.path).exchanges()
    assert len(exchanges) == 1
    assert [f.value for f in exchanges[0].flags] == ["truncated"]
    assert exchanges[0].at == 0.4  # the server's EOF, not the end of the file


def test_exchanges_continue_after_tls_interception(tmp_path: Path) -> None:
    w = new_writer(tmp_path)
    w.write_data("s2c", 0.1, SERVER[0])
    w.write_data("c2s", 0.2, b"STLS\r\n")
    w.write_data("s2c", 0.3, b"+OK begin TLS\r\n")
    w.write_event("tls", 0.4, version="TLSv1.3")
    w.write_data("c2s", 0.5, b"CAPA\r\n")
    w.write_data("s2c", 0.6, b"+OK\r\nUIDL\r\n.\r\n")
    w.close(0.7, "client_eof")
    cap = read_capture(w.path)
    assert [e.verb for e in cap.exchanges()] == ["STLS", "CAPA"]
    assert cap.summary().tls


def test_data_record_is_one_write_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Crash safety: each record reaches the file with one system call, bytes or views."""
    w = new_writer(tmp_path)
    calls: list[int] = []
    real_writev = os.writev

    def spy(fd: int, parts: list[bytes | memoryview]) -> int:
        calls.append(len(parts))
        return real_writev(fd, parts)

    monkeypatch.setattr(os, "writev", spy)
    w.write_data("c2s", 1.0, b"NOOP\r\n")
    w.write_data("s2c", 1.5, bytearray(b"+OK\r\n"))
    w.write_data("s2c", 1.6, memoryview(b"xx+OK\r\n")[2:])
    w.close(2.0, "quit")
    assert len(calls) == 4
    cap = read_capture(w.path)
    assert cap.stream("c2s") == b"NOOP\r\n"
    assert cap.stream("s2c") == b"+OK\r\n+OK\r\n"


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    records=st.lists(
        st.tuples(
            st.sampled_from(["c2s", "s2c"]),
            st.floats(min_value=0, max_value=1e6, allow_nan=False),
            st.one_of(
                st.binary(min_size=1, max_size=300),
                st.integers(0x100, 0x10100).map(lambda n: b"x" * n),
            ),
            st.sampled_from([bytes, bytearray, memoryview]),
        ),
        max_size=6,
    )
)
def test_data_records_are_exactly_what_msgpack_packs(
    tmp_path: Path,
    records: list[tuple[str, float, bytes, type[bytes] | type[bytearray] | type[memoryview]]],
) -> None:
    """Every size class and buffer type: the record bytes equal the packed record map, so
    the writer's inline packing of short chunks cannot drift from the format."""
    directory = tmp_path / str(len(list(tmp_path.iterdir())))
    directory.mkdir()
    w = new_writer(directory)
    start = w.path.stat().st_size
    for direction, t, data, kind in records:
        w.write_data(direction, t, kind(data))
    end = w.path.stat().st_size
    w.close(1.0, "quit")
    expected = b"".join(
        msgpack.packb({"type": "data", "t": t, "dir": d, "data": data}, use_bin_type=True)
        for d, t, data, _ in records
    )
    assert w.path.read_bytes()[start:end] == expected
