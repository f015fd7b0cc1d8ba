"""Capture files: the raw bytes of one POP3 session, as a stream of msgpack records.

Theory of operation
-------------------
One file per session, named ``YYYYmmddTHHMMSS.ffffffZ-<session>.p3cap`` (UTC) so that a
plain sort orders captures by start time. The file is a concatenation of msgpack maps
with ``str`` keys (see docs/capture-format.md): one ``header``, then ``data`` and
``event`` records in the order they happened, then one ``close``.

The package, one concern a module:

- ``_vocabulary``: the words of the format as enums (record types and keys, directions,
  event names, close reasons) and its constants;
- ``_records``: the records as dataclasses, and :class:`CaptureError`;
- ``_writer``: :class:`CaptureWriter`, one system call per record, crash-safe;
- ``_validate``: the shape checks of decoded records (pure);
- ``_compat``: the chain that upgrades records of an older format version;
- ``_reader``: :class:`CaptureDecoder` (bytes in, records out, no I/O) and
  :class:`CaptureReader` (a file, streamed);
- ``_capture``: :class:`Capture` (a file read whole) and :func:`derive_events`, which
  re-derives the protocol events from the raw bytes;
- ``_paths``: command-line arguments to capture paths.

Everything public is importable from ``pop3tap.capture``.
"""

from __future__ import annotations

from pop3tap.capture._capture import Capture, derive_events, read_capture
from pop3tap.capture._paths import CapturePath, expand_capture_args, iter_capture_paths
from pop3tap.capture._reader import CaptureDecoder, CaptureReader
from pop3tap.capture._records import (
    CaptureError,
    CaptureHeader,
    CloseRecord,
    DataRecord,
    EventRecord,
    Record,
    capture_filename,
)
from pop3tap.capture._vocabulary import (
    DEFAULT_MAX_RECORD_BYTES,
    FORMAT_VERSION,
    MAGIC,
    MAX_DATA_CHUNK,
    RECORD_KEYS,
    SUFFIX,
    CloseReason,
    Direction,
    EventName,
    RecordType,
    Secrets,
)
from pop3tap.capture._writer import CaptureWriter

__all__ = [
    "DEFAULT_MAX_RECORD_BYTES",
    "FORMAT_VERSION",
    "MAGIC",
    "MAX_DATA_CHUNK",
    "RECORD_KEYS",
    "SUFFIX",
    "Capture",
    "CaptureDecoder",
    "CaptureError",
    "CaptureHeader",
    "CapturePath",
    "CaptureReader",
    "CaptureWriter",
    "CloseReason",
    "CloseRecord",
    "DataRecord",
    "Direction",
    "EventName",
    "EventRecord",
    "Record",
    "RecordType",
    "Secrets",
    "capture_filename",
    "derive_events",
    "expand_capture_args",
    "iter_capture_paths",
    "read_capture",
]
