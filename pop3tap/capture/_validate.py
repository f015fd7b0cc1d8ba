"""Checking decoded msgpack objects against the format; nothing here does I/O.

A reader trusts nothing: every record is checked for its shape, and the first one that
does not fit stops the reading (:class:`CorruptRecord`), keeping the good ones before it.
"""

from __future__ import annotations

import math
from typing import Any, Final

from pop3tap.capture._records import (
    CaptureHeader,
    CloseRecord,
    DataRecord,
    EventRecord,
    Record,
)
from pop3tap.capture._vocabulary import MAGIC, Direction, RecordType, Secrets

__all__ = [
    "CorruptRecord",
    "HeaderProblem",
    "check_header_identity",
    "parse_header",
    "parse_record",
]

#: Times beyond this (seconds; about 30 years) can only come from a damaged file.
_MAX_TIME: Final = 1e9
#: Deepest nesting of plain values accepted in ``options``, ``fields`` and ``summary``.
_MAX_DEPTH: Final = 32
#: Direction values, as the shared enum members (a record keeps the member, which is a str).
_DIRECTIONS: Final[dict[str, Direction]] = {d.value: d for d in Direction}
_SECRETS: Final = frozenset(s.value for s in Secrets)
# Record types as plain strings: compared once per record, the cheapest comparison.
_DATA: Final = RecordType.DATA.value
_EVENT: Final = RecordType.EVENT.value
_CLOSE: Final = RecordType.CLOSE.value


class CorruptRecord(Exception):
    """A record that does not have the expected shape."""


class HeaderProblem(Exception):
    """The first record is not a usable capture header; the message ends a one-line error."""


def _num(value: object, what: str, limit: float = _MAX_TIME) -> float:
    """A finite, non-negative time of sane size; anything else marks the record corrupt."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CorruptRecord(f"{what} is not a number")
    number = float(value)
    if not math.isfinite(number) or not 0 <= number < limit:
        raise CorruptRecord(f"{what} is out of range")
    return number


def _str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise CorruptRecord(f"{what} is not a string")
    return value


def _plain_map(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not _is_plain(value, 0):
        raise CorruptRecord(f"{what} is not a map of plain values")
    return value


def _is_plain(value: object, depth: int) -> bool:
    """True for nested None/bool/int/float/str/bytes/list/str-keyed dict values."""
    if value is None or isinstance(value, bool | int | float | str | bytes):
        return True
    if depth > _MAX_DEPTH:
        return False
    if isinstance(value, list):
        return all(_is_plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v, depth + 1) for k, v in value.items())
    return False


def check_header_identity(obj: object) -> tuple[dict[str, Any], int]:
    """The header map and its format version, if ``obj`` claims to be a capture header.

    Raises:
        HeaderProblem: no capture magic, or a format version that is not a positive int.
    """
    if (
        not isinstance(obj, dict)
        or obj.get("type") != RecordType.HEADER
        or obj.get("magic") != MAGIC
    ):
        raise HeaderProblem("not a pop3tap capture (no capture header)")
    version = obj.get("format")
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise HeaderProblem("invalid capture header (bad format version)")
    return obj, version


def parse_header(obj: dict[str, Any], version: int) -> CaptureHeader:
    """A header map of the current shape as a :class:`CaptureHeader` (``format=version``).

    Raises:
        HeaderProblem: a key is missing or has the wrong type.
    """
    try:
        secrets = _str(obj.get("secrets"), "secrets")
        if secrets not in _SECRETS:
            raise CorruptRecord("secrets must be 'masked' or 'kept'")
        return CaptureHeader(
            format=version,
            pop3tap=_str(obj.get("pop3tap"), "pop3tap"),
            session=_str(obj.get("session"), "session"),
            started=_str(obj.get("started"), "started"),
            started_unix=_num(obj.get("started_unix"), "started_unix", 4 * _MAX_TIME),
            client=_str(obj.get("client"), "client"),
            listen=_str(obj.get("listen"), "listen"),
            upstream=_str(obj.get("upstream"), "upstream"),
            secrets=secrets,
            options=_plain_map(obj.get("options"), "options"),
        )
    except CorruptRecord as exc:
        raise HeaderProblem(f"invalid capture header ({exc})") from None


def parse_record(obj: object) -> Record:
    """Check one record after the header and turn it into a dataclass.

    Raises:
        CorruptRecord: the record does not have the shape of its type, or no known type.
    """
    if not isinstance(obj, dict):
        raise CorruptRecord("record is not a map")
    kind = obj.get("type")
    t = obj.get("t")
    if type(t) is not float or not 0.0 <= t < _MAX_TIME:  # the writer's floats pass at once
        t = _num(t, "t")
    if kind == _DATA:
        raw_dir = obj.get("dir")
        direction = _DIRECTIONS.get(raw_dir) if type(raw_dir) is str else None
        data = obj.get("data")
        if direction is None or type(data) is not bytes:
            raise CorruptRecord("data record without a valid dir/data")
        return DataRecord(t, direction, data)
    if kind == _EVENT:
        return EventRecord(
            t=t, name=_str(obj.get("name"), "name"), fields=_plain_map(obj.get("fields"), "fields")
        )
    if kind == _CLOSE:
        return CloseRecord(
            t=t,
            reason=_str(obj.get("reason"), "reason"),
            summary=_plain_map(obj.get("summary"), "summary"),
        )
    raise CorruptRecord(f"unknown record type {kind!r}")
