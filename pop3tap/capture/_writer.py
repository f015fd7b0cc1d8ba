"""Writing a capture: one system call per record, no buffering, never raising once open.

The writer issues exactly one system call per record (``os.writev`` of the packed record
prefix and the payload, so a large chunk is never copied), with no buffering in Python:
after ``kill -9`` the file holds every record written so far, plus at most one torn
record at the tail. A failing write never raises into the relay; the writer records the
error, stops writing, and the relay reports it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import struct
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import msgpack

from pop3tap._utctime import utc_now
from pop3tap.capture._records import (
    CaptureError,
    capture_filename,
    os_reason,
    stamped_filename,
)
from pop3tap.capture._vocabulary import (
    FORMAT_VERSION,
    MAGIC,
    SUFFIX,
    Direction,
    RecordType,
    Secrets,
)

__all__ = ["CaptureWriter", "data_record_prefix", "new_header"]

_SESSION_ID_RE: Final = re.compile(r"[0-9A-Za-z][0-9A-Za-z_-]{0,63}")
#: Header keys the writer owns; ``header_fields`` cannot override them.
_OWN_HEADER_KEYS: Final = frozenset({"type", "magic", "format", "session"})
_PACK_DOUBLE: Final = struct.Struct(">d").pack
_PACKB: Final = msgpack.Packer(use_bin_type=True).pack
# A data record is a 4-key map; everything before the payload is packed once here, so a
# record costs two byte concatenations and no copy of the payload.
_DATA_HEAD: Final = b"\x84" + _PACKB("type") + _PACKB(RecordType.DATA.value) + _PACKB("t") + b"\xcb"
_DATA_DIR: Final = {d.value: _PACKB("dir") + _PACKB(d.value) + _PACKB("data") for d in Direction}
#: ``n.to_bytes(1, "big")`` for every ``n`` below 256.
_ONE_BYTE: Final = tuple(bytes((n,)) for n in range(0x100))
_HEADER_TYPE: Final = RecordType.HEADER.value


def _bin_header(n: int) -> bytes:
    """msgpack ``bin`` header for a payload of ``n`` bytes."""
    if n < 0x100:
        return b"\xc4" + n.to_bytes(1, "big")
    if n < 0x10000:
        return b"\xc5" + n.to_bytes(2, "big")
    return b"\xc6" + n.to_bytes(4, "big")


def data_record_prefix(direction: str, t: float, size: int) -> bytes:
    """The packed bytes of a data record up to its payload of ``size`` bytes.

    Raises:
        ValueError: ``direction`` is not ``"c2s"`` or ``"s2c"``.
    """
    middle = _DATA_DIR.get(direction)
    if middle is None:
        raise ValueError(f"direction must be 'c2s' or 's2c', not {direction!r}")
    return _DATA_HEAD + _PACK_DOUBLE(t) + middle + _bin_header(size)


def new_header(session_id: str, header_fields: Mapping[str, Any], when: datetime) -> dict[str, Any]:
    """The header record of a capture started at ``when`` (see :meth:`CaptureWriter.create`).

    Raises:
        CaptureError: ``session_id`` is not a safe file name part.
    """
    started = when.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return _header(session_id, header_fields, started, when.timestamp())


def _header(
    session_id: str, header_fields: Mapping[str, Any], started: str, started_unix: float
) -> dict[str, Any]:
    if not _SESSION_ID_RE.fullmatch(session_id):
        raise CaptureError(f"invalid capture session id {session_id!r}")
    header: dict[str, Any] = {
        "type": _HEADER_TYPE,
        "magic": MAGIC,
        "format": FORMAT_VERSION,
        "pop3tap": "unknown",
        "session": session_id,
        "started": started,
        "started_unix": started_unix,
        "client": "",
        "listen": "",
        "upstream": "",
        "secrets": Secrets.MASKED.value,
        "options": {},
    }
    for key, value in header_fields.items():
        if key not in _OWN_HEADER_KEYS:
            header[key] = value
    return header


_CREATE_FLAGS: Final = (
    os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
)


def _create_exclusive(base: str | os.PathLike[str], name: str) -> tuple[Path, int]:
    """Create ``base/name`` (or ``name`` with ``-1``, ``-2``... before the suffix), 0600.

    ``O_EXCL`` never opens a file someone else planted under the name.
    """
    base = os.fspath(base)
    for attempt in range(100):
        path = os.path.join(
            base, name if attempt == 0 else name.replace(SUFFIX, f"-{attempt}{SUFFIX}")
        )
        try:
            return Path(path), os.open(path, _CREATE_FLAGS, 0o600)
        except FileExistsError:
            continue
        except OSError as exc:
            raise CaptureError(f"{path}: cannot create capture file: {os_reason(exc)}") from None
    taken = os.path.join(base, name)
    raise CaptureError(f"{taken}: cannot create capture file: name already taken")


def _max_data_chunk() -> int:
    """The package's ``MAX_DATA_CHUNK``, read when a writer is made (it may be lowered)."""
    import pop3tap.capture as package

    return int(package.MAX_DATA_CHUNK)


class CaptureWriter:
    """Appends records to one capture file; never raises once the file exists.

    Not thread-safe: call it from one thread (or one trio task) at a time.
    """

    def __init__(self, path: Path, fd: int) -> None:
        """Wrap an already open, append-mode file descriptor (use :meth:`create`)."""
        self.path = path
        self._fd: int | None = fd
        self._packer = msgpack.Packer(use_bin_type=True, default=_fallback)
        self._max_chunk = _max_data_chunk()
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
        if now is None:
            instant = utc_now()
            header = _header(session_id, header_fields, instant.iso, instant.unix)
            name = stamped_filename(session_id, instant.compact)
        else:
            header = new_header(session_id, header_fields, now)
            name = capture_filename(session_id, now)
        path, fd = _create_exclusive(directory, name)
        writer = cls(path, fd)
        try:
            os.fchmod(fd, 0o600)
        except OSError as exc:
            writer._discard()
            raise CaptureError(f"{path}: cannot set file mode: {os_reason(exc)}") from None
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
        from pop3tap.capture._capture import read_capture

        capture = read_capture(path)
        p = Path(path)
        if capture.complete:
            raise CaptureError(f"{p}: capture is already closed; cannot append")
        try:
            fd = os.open(p, os.O_WRONLY | os.O_APPEND | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise CaptureError(
                f"{p}: cannot open capture for appending: {os_reason(exc)}"
            ) from None
        try:
            os.ftruncate(fd, capture.valid_bytes)
        except OSError as exc:
            os.close(fd)
            raise CaptureError(f"{p}: cannot truncate torn tail: {os_reason(exc)}") from None
        return cls(p, fd)

    # -- records ------------------------------------------------------------------------

    def write_data(self, direction: str, t: float, data: bytes | bytearray | memoryview) -> None:
        """Record bytes seen on the wire (``direction`` is ``"c2s"`` or ``"s2c"``)."""
        if self._fd is None:
            return
        size = len(data)
        middle = _DATA_DIR.get(direction)
        if type(data) is bytes and 0 < size < 0x100 and size <= self._max_chunk and middle:
            # The usual case, a POP3 line or two, inline (every relayed chunk passes here).
            prefix = _DATA_HEAD + _PACK_DOUBLE(t) + middle + b"\xc4" + _ONE_BYTE[size]
            self._write((prefix, data), len(prefix) + size)
            return
        limit = self._max_chunk
        if isinstance(data, bytes) and 0 < size <= limit:
            # No views.
            prefix = data_record_prefix(direction, t, size)
            self._write((prefix, data), len(prefix) + size)
            return
        data_record_prefix(direction, t, 0)  # refuse a bad direction even without data
        view = memoryview(data).cast("B")
        for start in range(0, len(view), limit):
            piece = view[start : start + limit]
            prefix = data_record_prefix(direction, t, len(piece))
            self._write((prefix, piece), len(prefix) + len(piece))

    def write_event(self, name: str, t: float, /, **fields: Any) -> None:
        """Record a transport event (an :class:`EventName`) with plain-valued fields."""
        if self._fd is None:
            return
        record = {"type": RecordType.EVENT.value, "t": float(t), "name": name, "fields": fields}
        self._write_record(record)

    def close(self, t: float, reason: str, summary: Mapping[str, Any] | None = None) -> None:
        """Write the close record (a :class:`CloseReason` or free text) and close the file.

        Idempotent.
        """
        if self._fd is not None:
            record = {
                "type": RecordType.CLOSE.value,
                "t": float(t),
                "reason": reason,
                "summary": summary or {},
            }
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
        self._write((packed,), len(packed))

    def _write(self, parts: tuple[bytes | memoryview, ...], size: int) -> None:
        """Write ``parts`` (``size`` bytes in all) with one writev call; loop only on a
        partial write."""
        fd = self._fd
        if fd is None:
            return
        try:
            written = os.writev(fd, parts)
            if written != size:
                _write_rest(fd, parts, written)
        except OSError as exc:
            self._fail(os_reason(exc))

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


def _write_rest(fd: int, parts: tuple[bytes | memoryview, ...], written: int) -> None:
    """Finish a write of ``parts`` of which the kernel took only ``written`` bytes.

    Raises:
        OSError: a write failed, or took nothing.
    """
    pending: list[bytes | memoryview] = list(parts)
    while True:
        if written <= 0:
            raise OSError(errno.EIO, "write returned 0")
        while pending and written >= len(pending[0]):
            written -= len(pending[0])
            pending.pop(0)
        if not pending:
            return
        if written:
            pending[0] = memoryview(pending[0])[written:]
        written = os.writev(fd, pending)


def _fallback(value: object) -> object:
    """Packer fallback: sets become sorted lists, enums their value, the rest ``str``."""
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    enum_value = getattr(value, "value", None)
    if isinstance(enum_value, str | int):
        return enum_value
    return str(value)
