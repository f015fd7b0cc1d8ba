"""Capture files: the raw bytes of one POP3 session, as a stream of msgpack records.

Theory of operation
-------------------
One file per session, named ``YYYYmmddTHHMMSS.ffffffZ-<session>.p3cap`` (UTC) so that a
plain sort orders captures by start time. The file is a concatenation of msgpack maps
with ``str`` keys (see docs/capture-format.md): one ``header``, then ``data`` and
``event`` records in the order they happened, then one ``close``.

The writer issues exactly one system call per record (``os.writev`` of the packed record
prefix and the payload, so a large chunk is never copied), with no buffering in Python:
after ``kill -9`` the file holds every record written so far, plus at most one torn
record at the tail. A failing write never raises into the relay; the writer records the
error, stops writing, and the relay reports it.

The reader trusts nothing: it feeds the file in chunks to a bounded ``msgpack.Unpacker``,
checks the shape of every record, and stops at the first thing that does not fit,
keeping the good records before it. Only the raw bytes are authoritative: exchanges are
re-derived by running the data records through a fresh ``SessionObserver``, so a better
parser improves old captures.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
import stat
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import msgpack

from pop3tap.protocol._events import Event, Exchange

if TYPE_CHECKING:
    from pop3tap.protocol import SessionObserver, SessionSummary

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "SUFFIX",
    "Capture",
    "CaptureError",
    "CaptureHeader",
    "CapturePath",
    "CaptureReader",
    "CaptureWriter",
    "CloseRecord",
    "DataRecord",
    "EventRecord",
    "Record",
    "capture_filename",
    "expand_capture_args",
    "iter_capture_paths",
    "read_capture",
]

#: Version of the record layout; independent of the pop3tap release number.
FORMAT_VERSION: Final = 1
#: Value of the header's ``magic`` field.
MAGIC: Final = "pop3tap-capture"
#: File name suffix of capture files.
SUFFIX: Final = ".p3cap"
#: Largest payload the writer puts in one data record; larger chunks are split.
MAX_DATA_CHUNK: Final = 4 * 1024 * 1024
#: Default reader limit on one record (must stay above MAX_DATA_CHUNK plus framing).
DEFAULT_MAX_RECORD_BYTES: Final = 16 * 1024 * 1024

_DIRECTIONS: Final = ("c2s", "s2c")
_SECRETS: Final = ("masked", "kept")
_SESSION_ID_RE: Final = re.compile(r"[0-9A-Za-z][0-9A-Za-z_-]{0,63}")
_READ_CHUNK: Final = 256 * 1024
_DATA_PREFIX: Final = {d: b"\xa3dir\xa3" + d.encode("ascii") + b"\xa4data" for d in _DIRECTIONS}


class CaptureError(Exception):
    """A capture file cannot be created or read; the message is one line naming the path."""


################################################################
# Records
################################################################


@dataclass(frozen=True, slots=True)
class CaptureHeader:
    """The first record of every capture."""

    format: int
    pop3tap: str
    session: str
    started: str
    started_unix: float
    client: str
    listen: str
    upstream: str
    secrets: str
    options: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DataRecord:
    """Bytes seen on the wire in one direction, ``t`` seconds after the session start."""

    t: float
    dir: str
    data: bytes


@dataclass(frozen=True, slots=True)
class EventRecord:
    """A transport event (``eof``, ``reset``, ``error``, ``tls``...)."""

    t: float
    name: str
    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CloseRecord:
    """The last record: why the session ended, with a summary."""

    t: float
    reason: str
    summary: dict[str, Any]


Record = DataRecord | EventRecord | CloseRecord


def capture_filename(session_id: str, when: datetime) -> str:
    """Return the file name of a capture started at ``when`` (converted to UTC)."""
    stamp = when.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{stamp}-{session_id}{SUFFIX}"


################################################################
# Writer
################################################################


def _bin_header(n: int) -> bytes:
    """msgpack ``bin`` header for a payload of ``n`` bytes."""
    if n < 0x100:
        return b"\xc4" + n.to_bytes(1, "big")
    if n < 0x10000:
        return b"\xc5" + n.to_bytes(2, "big")
    return b"\xc6" + n.to_bytes(4, "big")


_PACK_DOUBLE: Final = struct.Struct(">d").pack
_DATA_HEAD: Final = b"\x84\xa4type\xa4data\xa1t\xcb"


class CaptureWriter:
    """Appends records to one capture file; never raises once the file exists.

    Not thread-safe: call it from one thread (or one trio task) at a time.
    """

    def __init__(self, path: Path, fd: int) -> None:
        """Wrap an already open, append-mode file descriptor (use :meth:`create`)."""
        self.path = path
        self._fd: int | None = fd
        self._packer = msgpack.Packer(use_bin_type=True, default=_fallback)
        #: True once a write failed; nothing more is written after that.
        self.failed = False
        #: Why the writer failed (one line), or None.
        self.error: str | None = None
        self.closed = False

    @classmethod
    def create(
        cls,
        directory: str | os.PathLike[str],
        *,
        session_id: str,
        header_fields: Mapping[str, Any],
        now: datetime | None = None,
    ) -> CaptureWriter:
        """Create a new capture file in ``directory`` and write its header.

        Args:
            directory: existing directory for captures.
            session_id: short id of the session (the relay uses 12 hex digits).
            header_fields: ``pop3tap``, ``client``, ``listen``, ``upstream``, ``secrets``,
                ``options`` (and optionally ``started``/``started_unix``).
            now: start time; defaults to the current time.

        Raises:
            CaptureError: the file cannot be created or the header cannot be written.
        """
        if not _SESSION_ID_RE.fullmatch(session_id):
            raise CaptureError(f"invalid capture session id {session_id!r}")
        when = now if now is not None else datetime.now(UTC)
        header: dict[str, Any] = {
            "type": "header",
            "magic": MAGIC,
            "format": FORMAT_VERSION,
            "pop3tap": "unknown",
            "session": session_id,
            "started": when.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "started_unix": when.timestamp(),
            "client": "",
            "listen": "",
            "upstream": "",
            "secrets": "masked",
            "options": {},
        }
        for key, value in header_fields.items():
            if key not in ("type", "magic", "format", "session"):
                header[key] = value
        base = Path(directory)
        name = capture_filename(session_id, when)
        flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        for attempt in range(100):
            path = base / (name if attempt == 0 else name.replace(SUFFIX, f"-{attempt}{SUFFIX}"))
            try:
                fd = os.open(path, flags, 0o600)
            except FileExistsError:
                continue
            except OSError as exc:
                raise CaptureError(f"{path}: cannot create capture file: {_reason(exc)}") from None
            break
        else:
            raise CaptureError(f"{base / name}: cannot create capture file: name already taken")
        writer = cls(path, fd)
        try:
            os.fchmod(fd, 0o600)
        except OSError as exc:
            writer._discard()
            raise CaptureError(f"{path}: cannot set file mode: {_reason(exc)}") from None
        writer._write_record(header)
        if writer.failed:
            # A file without its header is not a capture (a full disk leaves 0 bytes);
            # leaving it would only make readers of the directory stumble on it.
            writer._discard()
            raise CaptureError(f"{path}: cannot write capture header: {writer.error}")
        return writer

    @classmethod
    def open_append(cls, path: str | os.PathLike[str]) -> CaptureWriter:
        """Reopen an unfinished capture, cut any torn or corrupt tail, and append to it.

        Raises:
            CaptureError: unreadable file, no valid header, or the capture is already closed.
        """
        capture = read_capture(path)
        p = Path(path)
        if capture.complete:
            raise CaptureError(f"{p}: capture is already closed; cannot append")
        try:
            fd = os.open(p, os.O_WRONLY | os.O_APPEND | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise CaptureError(f"{p}: cannot open capture for appending: {_reason(exc)}") from None
        try:
            os.ftruncate(fd, capture.valid_bytes)
        except OSError as exc:
            os.close(fd)
            raise CaptureError(f"{p}: cannot truncate torn tail: {_reason(exc)}") from None
        return cls(p, fd)

    # -- records ------------------------------------------------------------------------

    def write_data(self, direction: str, t: float, data: bytes | bytearray | memoryview) -> None:
        """Record bytes seen on the wire (``direction`` is ``"c2s"`` or ``"s2c"``)."""
        if self._fd is None:
            return
        prefix = _DATA_PREFIX.get(direction)
        if prefix is None:
            raise ValueError(f"direction must be 'c2s' or 's2c', not {direction!r}")
        head = _DATA_HEAD + _PACK_DOUBLE(t) + prefix
        if isinstance(data, bytes) and 0 < len(data) <= MAX_DATA_CHUNK:
            self._write((head + _bin_header(len(data)), data))  # the usual case: no views
            return
        view = memoryview(data).cast("B")
        for start in range(0, len(view), MAX_DATA_CHUNK):
            piece = view[start : start + MAX_DATA_CHUNK]
            self._write((head + _bin_header(len(piece)), piece))

    def write_event(self, name: str, t: float, /, **fields: Any) -> None:
        """Record a transport event with free-form msgpack-serialisable fields."""
        if self._fd is None:
            return
        self._write_record({"type": "event", "t": float(t), "name": name, "fields": fields})

    def close(self, t: float, reason: str, summary: Mapping[str, Any] | None = None) -> None:
        """Write the close record and close the file (idempotent)."""
        if self._fd is not None:
            record = {"type": "close", "t": float(t), "reason": reason, "summary": summary or {}}
            self._write_record(record)
        self._abandon()
        self.closed = True

    def release(self) -> None:
        """Close the file without a close record (the capture reads as incomplete)."""
        self._abandon()

    def __enter__(self) -> CaptureWriter:
        """Support ``with``: the file is released (not closed cleanly) on exit if still open."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Release the file descriptor."""
        self._abandon()

    # -- internals ----------------------------------------------------------------------

    def _write_record(self, record: Mapping[str, Any]) -> None:
        try:
            packed = self._packer.pack(record)
        except Exception as exc:  # a field the packer cannot encode: never break the relay
            self._fail(f"cannot encode {record.get('type')} record: {exc}")
            return
        self._write((packed,))

    def _write(self, parts: tuple[bytes | memoryview, ...]) -> None:
        """Write ``parts`` with one writev call, looping on partial writes."""
        fd = self._fd
        if fd is None:
            return
        pending: list[bytes | memoryview] = list(parts)
        try:
            while pending:
                n = os.writev(fd, pending)
                if n <= 0:
                    raise OSError(errno.EIO, "write returned 0")
                while pending and n >= len(pending[0]):
                    n -= len(pending[0])
                    pending.pop(0)
                if n:
                    pending[0] = memoryview(pending[0])[n:]
        except OSError as exc:
            self._fail(_reason(exc))

    def _fail(self, message: str) -> None:
        self.failed = True
        self.error = f"capture write failed: {message}"
        self._abandon()

    def _abandon(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _discard(self) -> None:
        """Close and remove a file this writer created but could not make a capture of."""
        self._abandon()
        with contextlib.suppress(OSError):
            os.unlink(self.path)


def _fallback(value: object) -> object:
    """Packer fallback: sets become sorted lists, enums their value, the rest ``str``."""
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    enum_value = getattr(value, "value", None)
    if isinstance(enum_value, str | int):
        return enum_value
    return str(value)


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


################################################################
# Reader
################################################################


@dataclass(slots=True)
class Capture:
    """A capture file as read back, with the data needed to replay or inspect it."""

    path: Path
    header: CaptureHeader
    records: list[Record]
    #: True when bytes after the last good record were ignored (torn tail or corruption).
    truncated: bool = False
    #: How many bytes after the last good record were ignored.
    trailing_bytes: int = 0
    #: True when the capture ends with a close record.
    complete: bool = False
    #: What stopped the reader early (corruption), or None.
    problem: str | None = None
    #: File offset just after the last good record.
    valid_bytes: int = 0
    _derived: tuple[list[Event], SessionObserver] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    @property
    def last_t(self) -> float:
        """Time of the last record (seconds after the session start)."""
        return max((r.t for r in self.records), default=0.0)

    def iter_records(self) -> Iterator[Record]:
        """The records, in file order (as :meth:`CaptureReader.iter_records` gives them)."""
        return iter(self.records)

    def stream(self, direction: str) -> bytes:
        """All bytes recorded in one direction (``"c2s"`` or ``"s2c"``), concatenated."""
        if direction not in _DIRECTIONS:
            raise ValueError(f"direction must be 'c2s' or 's2c', not {direction!r}")
        return b"".join(
            r.data for r in self.records if isinstance(r, DataRecord) and r.dir == direction
        )

    def events(self) -> list[Event]:
        """Protocol events re-derived from the raw bytes by a fresh ``SessionObserver``."""
        return list(self._derive()[0])

    def exchanges(self) -> list[Exchange]:
        """Command/response pairs re-derived from the raw bytes."""
        return [e for e in self._derive()[0] if isinstance(e, Exchange)]

    def summary(self) -> SessionSummary:
        """The observer's session summary (commands, RETR/TOP/DELE counts, bytes...)."""
        return self._derive()[1].summary()

    def _derive(self) -> tuple[list[Event], SessionObserver]:
        if self._derived is None:
            self._derived = _replay_observer(self.records)
        return self._derived


def derive_events(
    records: Iterable[Record], observer: SessionObserver | None = None
) -> Iterator[tuple[Record | None, list[Event]]]:
    """Feed records, in file order, through an observer; yield each record with its events.

    An ``eof``/``reset`` event with a ``dir`` ends that direction (a ``reset`` without one
    ends both); a ``tls`` event resumes parsing after STLS; a ``mid_session`` event with
    ``greeting="missed"`` says the first server line is an answer, not the greeting.
    Directions still open at the end are ended at the last record's time, client first;
    those final events are yielded with ``None`` as the record.
    """
    from pop3tap.protocol import SessionObserver

    obs = observer if observer is not None else SessionObserver()
    ended = {"c2s": False, "s2c": False}
    last_t = 0.0

    def end(direction: str, at: float) -> list[Event]:
        if ended[direction]:
            return []
        ended[direction] = True
        return obs.end_client(at) if direction == "c2s" else obs.end_server(at)

    for record in records:
        last_t = max(last_t, record.t)
        events: list[Event] = []
        if isinstance(record, DataRecord):
            if not ended[record.dir]:
                if record.dir == "c2s":
                    events = obs.feed_client(record.data, record.t)
                else:
                    events = obs.feed_server(record.data, record.t)
        elif isinstance(record, EventRecord):
            direction = record.fields.get("dir")
            if record.name in ("eof", "reset"):
                if isinstance(direction, str) and direction in ended:
                    events = end(direction, record.t)
                elif record.name == "reset":
                    events = end("c2s", record.t) + end("s2c", record.t)
            elif record.name == "tls" and obs.opaque:
                obs.resume_after_tls()
            elif record.name == "mid_session" and record.fields.get("greeting") == "missed":
                obs.greeting_missed()
        yield record, events
    final = end("c2s", last_t) + end("s2c", last_t)
    if final:
        yield None, final


def _replay_observer(records: Iterable[Record]) -> tuple[list[Event], SessionObserver]:
    """All events of a capture, and the observer that produced them."""
    from pop3tap.protocol import SessionObserver

    obs = SessionObserver()
    events = [e for _record, batch in derive_events(records, obs) for e in batch]
    return events, obs


class _Corrupt(Exception):
    """A record that does not have the expected shape."""


#: Times beyond this (seconds; about 30 years) can only come from a damaged file.
_MAX_TIME = 1e9


def _num(value: object, what: str) -> float:
    """A finite, non-negative time of sane size; anything else marks the record corrupt."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Corrupt(f"{what} is not a number")
    number = float(value)
    if not math.isfinite(number) or not 0 <= number < _MAX_TIME * (
        4 if what == "started_unix" else 1
    ):
        raise _Corrupt(f"{what} is out of range")
    return number


def _str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise _Corrupt(f"{what} is not a string")
    return value


def _plain_map(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not _is_plain(value, 0):
        raise _Corrupt(f"{what} is not a map of plain values")
    return value


def _is_plain(value: object, depth: int) -> bool:
    """True for nested None/bool/int/float/str/bytes/list/str-keyed dict values."""
    if value is None or isinstance(value, bool | int | float | str | bytes):
        return True
    if depth > 32:
        return False
    if isinstance(value, list):
        return all(_is_plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v, depth + 1) for k, v in value.items())
    return False


def _parse_header(obj: object, path: Path) -> CaptureHeader:
    """Check the first record; raise CaptureError if this is not a readable capture."""
    if not isinstance(obj, dict) or obj.get("type") != "header" or obj.get("magic") != MAGIC:
        raise CaptureError(f"{path}: not a pop3tap capture (no capture header)")
    version = obj.get("format")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CaptureError(f"{path}: invalid capture header (bad format version)")
    if version > FORMAT_VERSION:
        raise CaptureError(
            f"{path}: capture format {version} is newer than this pop3tap supports "
            f"({FORMAT_VERSION}); upgrade pop3tap"
        )
    try:
        secrets = _str(obj.get("secrets"), "secrets")
        if secrets not in _SECRETS:
            raise _Corrupt("secrets must be 'masked' or 'kept'")
        return CaptureHeader(
            format=version,
            pop3tap=_str(obj.get("pop3tap"), "pop3tap"),
            session=_str(obj.get("session"), "session"),
            started=_str(obj.get("started"), "started"),
            started_unix=_num(obj.get("started_unix"), "started_unix"),
            client=_str(obj.get("client"), "client"),
            listen=_str(obj.get("listen"), "listen"),
            upstream=_str(obj.get("upstream"), "upstream"),
            secrets=secrets,
            options=_plain_map(obj.get("options"), "options"),
        )
    except _Corrupt as exc:
        raise CaptureError(f"{path}: invalid capture header ({exc})") from None


def _parse_record(obj: object) -> Record:
    """Check one record after the header and turn it into a dataclass."""
    if not isinstance(obj, dict):
        raise _Corrupt("record is not a map")
    kind = obj.get("type")
    t = _num(obj.get("t"), "t")
    if kind == "data":
        direction = obj.get("dir")
        data = obj.get("data")
        if direction not in _DIRECTIONS or not isinstance(data, bytes):
            raise _Corrupt("data record without a valid dir/data")
        return DataRecord(t=t, dir=direction, data=data)
    if kind == "event":
        return EventRecord(
            t=t, name=_str(obj.get("name"), "name"), fields=_plain_map(obj.get("fields"), "fields")
        )
    if kind == "close":
        return CloseRecord(
            t=t,
            reason=_str(obj.get("reason"), "reason"),
            summary=_plain_map(obj.get("summary"), "summary"),
        )
    raise _Corrupt(f"unknown record type {kind!r}")


def _open_file(path: Path) -> Any:
    """Open a capture for reading; only a regular file is one.

    The open does not wait (O_NONBLOCK), so a FIFO or device planted under a capture's
    name is refused at once instead of hanging the reader.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise CaptureError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CaptureError(f"{path}: is a directory, not a capture file") from None
    except PermissionError:
        raise CaptureError(f"{path}: permission denied") from None
    except OSError as exc:
        raise CaptureError(f"{path}: cannot open: {_reason(exc)}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise CaptureError(f"{path}: is a directory, not a capture file")
        if not stat.S_ISREG(mode):
            raise CaptureError(f"{path}: not a regular file, not a capture file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


class CaptureReader:
    """One capture file read record by record, in memory bounded by one record.

    The header is read and checked when the reader is made; :meth:`iter_records` then
    streams the records once. When it is exhausted, ``complete``, ``truncated``,
    ``trailing_bytes``, ``problem`` and ``valid_bytes`` say how the file ended, as
    :class:`Capture` does. Use it as a context manager (or call :meth:`close`).

    Raises (on creation):
        CaptureError: missing/unreadable/empty file, no valid header, or a newer format.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    ) -> None:
        self.path = Path(path)
        self.max_record_bytes = max_record_bytes
        #: True when the records end with a close record.
        self.complete = False
        #: True when bytes after the last good record were ignored.
        self.truncated = False
        #: How many bytes after the last good record were ignored.
        self.trailing_bytes = 0
        #: What stopped the reader early (corruption), or None.
        self.problem: str | None = None
        #: File offset just after the last good record.
        self.valid_bytes = 0
        #: Time of the last good record (seconds after the session start).
        self.last_t = 0.0
        #: True once :meth:`iter_records` has read to the end.
        self.finished = False
        self._file = _open_file(self.path)
        self._size = 0
        self._unpacker = msgpack.Unpacker(
            raw=False,
            strict_map_key=True,
            max_buffer_size=max_record_bytes + _READ_CHUNK,
            max_bin_len=max_record_bytes,
            max_str_len=min(max_record_bytes, 1024 * 1024),
            max_array_len=100_000,
            max_map_len=10_000,
            max_ext_len=0,
        )
        self._objects = self._scan()
        try:
            first = next(self._objects, None)
            if first is None:
                self._no_header()
            self.header = _parse_header(first, self.path)
        except BaseException:
            self.close()
            raise

    def reopen(self) -> CaptureReader:
        """A second, independent reader of the same file (for a second pass)."""
        return CaptureReader(self.path, max_record_bytes=self.max_record_bytes)

    def iter_records(self) -> Iterator[Record]:
        """The records after the header, in file order (one pass only).

        Raises:
            CaptureError: the file cannot be read any more (an I/O error).
        """
        try:
            for obj in self._objects:
                try:
                    record = _parse_record(obj)
                except _Corrupt as exc:
                    self.problem = f"invalid record at offset {self.valid_bytes}: {exc}"
                    self._size += _remaining(self._file)
                    break
                self.valid_bytes = self._unpacker.tell()
                self.complete = isinstance(record, CloseRecord)
                self.last_t = max(self.last_t, record.t)
                yield record
        except OSError as exc:
            raise CaptureError(f"{self.path}: read error: {_reason(exc)}") from None
        self.trailing_bytes = self._size - self.valid_bytes
        self.truncated = self.trailing_bytes > 0 or self.problem is not None
        self.finished = True
        self.close()

    def close(self) -> None:
        """Close the file (idempotent)."""
        self._file.close()

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _scan(self) -> Iterator[object]:
        """Every decoded msgpack object of the file; sets ``problem`` where decoding stops."""
        unpacker = self._unpacker
        while True:
            try:
                chunk = self._file.read(_READ_CHUNK)
            except OSError as exc:
                raise CaptureError(f"{self.path}: read error: {_reason(exc)}") from None
            if not chunk:
                return
            self._size += len(chunk)
            try:
                unpacker.feed(chunk)
            except msgpack.BufferFull:
                self.problem = (
                    f"record at offset {self.valid_bytes} is larger than "
                    f"{self.max_record_bytes} bytes"
                )
                self._size += _remaining(self._file)
                return
            while True:
                try:
                    obj = next(unpacker)
                except StopIteration:
                    break
                except Exception as exc:  # FormatError, StackError, ValueError (limits, UTF-8)
                    self.problem = (
                        f"corrupt data at offset {self.valid_bytes}: {type(exc).__name__}"
                    )
                    self._size += _remaining(self._file)
                    return
                if not hasattr(self, "header"):
                    self.valid_bytes = unpacker.tell()
                yield obj

    def _no_header(self) -> None:
        path = self.path
        if self._size == 0:
            raise CaptureError(f"{path}: empty file, not a pop3tap capture")
        if self.problem is not None:
            raise CaptureError(f"{path}: not a pop3tap capture ({self.problem})")
        raise CaptureError(f"{path}: not a pop3tap capture (file ends inside the header)")


def read_capture(
    path: str | os.PathLike[str], *, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
) -> Capture:
    """Read and validate a whole capture file into memory (see :class:`CaptureReader`).

    A torn or corrupt tail is not an error: the good records before it are returned with
    ``truncated=True`` (and ``problem`` set for corruption).

    Raises:
        CaptureError: missing/unreadable/empty file, no valid header, or a newer format.
    """
    with CaptureReader(path, max_record_bytes=max_record_bytes) as reader:
        records = list(reader.iter_records())
        return Capture(
            path=reader.path,
            header=reader.header,
            records=records,
            truncated=reader.truncated,
            trailing_bytes=reader.trailing_bytes,
            complete=reader.complete,
            problem=reader.problem,
            valid_bytes=reader.valid_bytes,
        )


def _remaining(f: Any) -> int:
    """Bytes left in ``f`` after its current position."""
    here = f.tell()
    end = f.seek(0, os.SEEK_END)
    return int(end - here)


@dataclass(frozen=True, slots=True)
class CapturePath:
    """A capture file to read, and how the user named it."""

    path: Path
    #: Found by listing a directory: a reader skips it, with one warning line, when it
    #: turns out not to be a capture (a 0-byte file from a full disk, a stray file).
    from_directory: bool


def expand_capture_args(args: Iterable[str | os.PathLike[str]]) -> list[CapturePath]:
    """Expand files and directories (all ``*.p3cap`` inside, sorted) into capture paths.

    Raises:
        CaptureError: an argument does not exist.
    """
    paths: list[CapturePath] = []
    for arg in args:
        p = Path(arg)
        if p.is_dir():
            found = sorted(c for c in p.glob(f"*{SUFFIX}") if c.is_file())
            paths.extend(CapturePath(c, from_directory=True) for c in found)
        elif p.exists():
            paths.append(CapturePath(p, from_directory=False))
        else:
            raise CaptureError(f"{p}: no such file or directory")
    return paths


def iter_capture_paths(args: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expand files and directories (all ``*.p3cap`` inside, sorted) into capture paths.

    Raises:
        CaptureError: an argument does not exist.
    """
    return [c.path for c in expand_capture_args(args)]
