"""Reading a capture: a decoder with no I/O (bytes in, header and records out) and the
file reader around it.

The decoder trusts nothing: it feeds the bytes to a bounded ``msgpack.Unpacker``, checks
the shape of every record, and stops at the first thing that does not fit, keeping the
good records before it. Records of an older format version are upgraded step by step
(:mod:`pop3tap.capture._compat`) before they are checked.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import msgpack

from pop3tap.capture._compat import UpgradeError, upgrader_for
from pop3tap.capture._records import (
    CaptureError,
    CaptureHeader,
    CloseRecord,
    Record,
    os_reason,
)
from pop3tap.capture._validate import (
    CorruptRecord,
    HeaderProblem,
    check_header_identity,
    parse_header,
    parse_record,
)
from pop3tap.capture._vocabulary import DEFAULT_MAX_RECORD_BYTES, FORMAT_VERSION

__all__ = ["CaptureDecoder", "CaptureReader", "open_capture_file"]

_READ_CHUNK: Final = 256 * 1024
#: Most bytes one ``str`` value may have (file names, event fields: never near this).
_MAX_STR: Final = 1024 * 1024
_NEED_MORE: Final = object()


class CaptureDecoder:
    """The bytes of one capture file in, its header and records out; no I/O.

    Call :meth:`feed` with the bytes as they come, :meth:`read_header` until it returns
    the header, then :meth:`next_record` until it returns None (more bytes needed, or
    decoding stopped: see ``stopped``), and :meth:`end_of_input` at the end of the file.
    ``valid_bytes`` is always the offset just after the last good record.

    Args:
        max_record_bytes: largest record accepted; a larger one stops decoding.
        name: what error messages call the input (the file's path).
    """

    def __init__(
        self, *, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES, name: str = "capture"
    ) -> None:
        self.max_record_bytes = max_record_bytes
        self.name = name
        self.header: CaptureHeader | None = None
        #: Bytes of input seen (fed or skipped).
        self.received = 0
        #: Offset just after the last good record (or the header).
        self.valid_bytes = 0
        #: True when the last good record is a close record.
        self.complete = False
        #: Time of the last good record.
        self.last_t = 0.0
        #: What stopped decoding (corruption, an oversized record), or None.
        self.problem: str | None = None
        self._upgrade: Callable[[object], object] | None = None
        #: Fed bytes the unpacker has not been given yet: it gets one read chunk at a
        #: time, when it has used up what it holds, so its buffer overflows only for a
        #: record over the limit, however the input was split.
        self._pending = bytearray()
        #: The unpacker holds at most the start of one record (it ran out of input).
        self._drained = True
        self._unpacker = msgpack.Unpacker(
            raw=False,
            strict_map_key=True,
            max_buffer_size=max_record_bytes + _READ_CHUNK,
            max_bin_len=max_record_bytes,
            max_str_len=min(max_record_bytes, _MAX_STR),
            max_array_len=100_000,
            max_map_len=10_000,
            max_ext_len=0,
        )

    @property
    def stopped(self) -> bool:
        """True once something that does not fit was met; later bytes are only counted."""
        return self.problem is not None

    @property
    def trailing_bytes(self) -> int:
        """Bytes of input after the last good record."""
        return self.received - self.valid_bytes

    def feed(self, data: bytes) -> None:
        """Add the next bytes of the file."""
        self.received += len(data)
        if self.stopped:
            return
        if self._drained and not self._pending and len(data) <= _READ_CHUNK:
            # The common case (a file read chunk by chunk): straight to the unpacker.
            self._feed_unpacker(data)
        else:
            self._pending += data

    def _give_unpacker_more(self) -> bool:
        """Hand the unpacker the next read chunk of pending input; False when none is left
        (or it would overflow: a record over the limit, which stops decoding)."""
        if not self._pending or self.stopped:
            return False
        chunk = bytes(self._pending[:_READ_CHUNK])
        del self._pending[:_READ_CHUNK]
        return self._feed_unpacker(chunk)

    def _feed_unpacker(self, chunk: bytes) -> bool:
        self._drained = False
        try:
            self._unpacker.feed(chunk)
        except msgpack.BufferFull:
            self.problem = (
                f"record at offset {self.valid_bytes} is larger than {self.max_record_bytes} bytes"
            )
            self._pending.clear()
            return False
        return True

    def skip(self, size: int) -> None:
        """Count ``size`` more bytes of input that will not be decoded (after a stop)."""
        self.received += size

    def read_header(self) -> CaptureHeader | None:
        """The header, once its bytes are in; None while more are needed.

        Raises:
            CaptureError: the input does not start with a capture header this pop3tap reads.
        """
        if self.header is not None:
            return self.header
        obj = self._next_object()
        if obj is _NEED_MORE:
            if self.stopped:
                raise CaptureError(f"{self.name}: not a pop3tap capture ({self.problem})")
            return None
        try:
            self.header = self._parse_header(obj)
        except HeaderProblem as exc:
            raise CaptureError(f"{self.name}: {exc}") from None
        self.valid_bytes = self._unpacker.tell()
        return self.header

    def next_record(self) -> Record | None:
        """The next good record, or None (more bytes needed, or ``stopped``)."""
        if self.header is None:
            raise RuntimeError("read_header() must return the header first")
        obj = self._next_object()
        if obj is _NEED_MORE:
            return None
        try:
            if self._upgrade is not None:
                obj = self._upgrade(obj)
            record = parse_record(obj)
        except CorruptRecord as exc:
            self.problem = f"invalid record at offset {self.valid_bytes}: {exc}"
            self._pending.clear()
            return None
        except Exception as exc:  # an upgrade step met a record it cannot convert
            name = type(exc).__name__
            self.problem = f"invalid record at offset {self.valid_bytes}: cannot upgrade ({name})"
            self._pending.clear()
            return None
        self.valid_bytes = self._unpacker.tell()
        self.complete = isinstance(record, CloseRecord)
        if record.t > self.last_t:
            self.last_t = record.t
        return record

    def end_of_input(self) -> None:
        """Say the input is over.

        Raises:
            CaptureError: the header never came (an empty file, or one cut inside it).
        """
        if self.header is not None:
            return
        if self.received == 0:
            raise CaptureError(f"{self.name}: empty file, not a pop3tap capture")
        if self.stopped:
            raise CaptureError(f"{self.name}: not a pop3tap capture ({self.problem})")
        raise CaptureError(f"{self.name}: not a pop3tap capture (file ends inside the header)")

    def _next_object(self) -> object:
        while not self.stopped:
            try:
                return next(self._unpacker)
            except StopIteration:
                if not self._give_unpacker_more():
                    self._drained = not self.stopped
                    return _NEED_MORE
            except Exception as exc:  # FormatError, StackError, ValueError (limits, UTF-8)
                self._undecodable(exc)
        return _NEED_MORE

    def _undecodable(self, exc: Exception) -> None:
        self.problem = f"corrupt data at offset {self.valid_bytes}: {type(exc).__name__}"
        self._pending.clear()

    def _parse_header(self, obj: object) -> CaptureHeader:
        raw, version = check_header_identity(obj)
        if version > FORMAT_VERSION:
            raise HeaderProblem(
                f"capture format {version} is newer than this pop3tap supports "
                f"({FORMAT_VERSION}); upgrade pop3tap"
            )
        try:
            raw, self._upgrade = upgrader_for(version, raw)
        except UpgradeError as exc:
            raise HeaderProblem(f"invalid capture header ({exc})") from None
        except Exception as exc:  # an upgrade step met a header it cannot convert
            raise HeaderProblem(
                f"invalid capture header (cannot upgrade format {version}: {type(exc).__name__})"
            ) from None
        return parse_header(raw, version)


def open_capture_file(path: Path) -> Any:
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
        raise CaptureError(f"{path}: cannot open: {os_reason(exc)}") from None
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


def _remaining(f: Any) -> int:
    """Bytes left in ``f`` after its current position."""
    here = f.tell()
    end = f.seek(0, os.SEEK_END)
    return int(end - here)


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
        self._decoder = CaptureDecoder(max_record_bytes=max_record_bytes, name=str(self.path))
        self._file = open_capture_file(self.path)
        try:
            self.header = self._read_header()
        except BaseException:
            self.close()
            raise
        self.valid_bytes = self._decoder.valid_bytes

    def reopen(self) -> CaptureReader:
        """A second, independent reader of the same file (for a second pass)."""
        return CaptureReader(self.path, max_record_bytes=self.max_record_bytes)

    def iter_records(self) -> Iterator[Record]:
        """The records after the header, in file order (one pass only).

        Raises:
            CaptureError: the file cannot be read any more (an I/O error).
        """
        if self.finished:
            return
        decoder = self._decoder
        while True:
            record = decoder.next_record()
            if record is None:
                if decoder.stopped or not self._fill():
                    break
                continue
            self.valid_bytes = decoder.valid_bytes
            self.complete = decoder.complete
            self.last_t = decoder.last_t
            yield record
        if decoder.stopped:
            decoder.skip(self._remaining())
        self.problem = decoder.problem
        self.trailing_bytes = decoder.trailing_bytes
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

    def _read_header(self) -> CaptureHeader:
        while True:
            header = self._decoder.read_header()
            if header is not None:
                return header
            if not self._fill():
                self._decoder.end_of_input()

    def _fill(self) -> bool:
        """Feed the decoder the next chunk of the file; False at the end of the file."""
        try:
            chunk = self._file.read(_READ_CHUNK)
        except OSError as exc:
            raise CaptureError(f"{self.path}: read error: {os_reason(exc)}") from None
        if not chunk:
            return False
        self._decoder.feed(chunk)
        return True

    def _remaining(self) -> int:
        try:
            return _remaining(self._file)
        except OSError as exc:
            raise CaptureError(f"{self.path}: read error: {os_reason(exc)}") from None
