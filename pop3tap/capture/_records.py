"""The records of a capture as Python values, and the one error a capture raises."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pop3tap.capture._vocabulary import SUFFIX

__all__ = [
    "CaptureError",
    "CaptureHeader",
    "CloseRecord",
    "DataRecord",
    "EventRecord",
    "Record",
    "capture_filename",
    "os_reason",
]


class CaptureError(Exception):
    """A capture file cannot be created or read; the message is one line naming the path."""


@dataclass(frozen=True, slots=True)
class CaptureHeader:
    """The first record of every capture.

    ``format`` is the version the file was written in; records of an older version are
    upgraded on reading (see :mod:`pop3tap.capture._compat`), so they always have the
    current shape.
    """

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
    """A transport event (``eof``, ``reset``, ``tls``...; see :class:`EventName`)."""

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
    return stamped_filename(session_id, when.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ"))


def stamped_filename(session_id: str, stamp: str) -> str:
    """The file name of a capture started at ``stamp`` (``20261127T061623.123456Z``)."""
    return f"{stamp}-{session_id}{SUFFIX}"


def os_reason(exc: OSError) -> str:
    """The short text of an OS error, for a one-line message."""
    return exc.strerror or str(exc) or type(exc).__name__
