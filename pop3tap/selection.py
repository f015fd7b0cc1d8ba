"""Which sessions and exchanges ``pop3tap show`` prints: its filters, apart from rendering.

Session filters (``--session``, ``--user``) keep or drop a whole capture. Exchange filters
(``--verb``, ``--status``, ``--grep``, ``--since``/``--until``) keep the exchanges that
match all of them; a session without any is dropped. No I/O here beyond what
:class:`~pop3tap.capture.Capture` already read.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pop3tap.capture import Capture, CaptureReader, derive_events
from pop3tap.protocol import Exchange, login_name, split_command

__all__ = ["Selection", "SelectionError", "parse_when"]

_STATUSES = {"+OK": "+OK", "OK": "+OK", "-ERR": "-ERR", "ERR": "-ERR", "+": "+"}
_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")


class SelectionError(ValueError):
    """A filter value that cannot be understood (one line)."""


def parse_when(text: str, *, now: datetime | None = None) -> datetime:
    """An instant for ``--since``/``--until``: ISO 8601 (``2026-11-27T06:20``, a ``Z`` or
    offset; no zone means UTC, as ``show`` prints), a time of day today in UTC
    (``06:20:19``), or an age (``90s``, ``10m``, ``2h``, ``1d`` ago)."""
    now = now if now is not None else datetime.now(UTC)
    raw = text.strip()
    relative = _RELATIVE.fullmatch(raw)
    if relative:
        amount = float(relative.group(1))
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[relative.group(2)]
        try:
            return now - timedelta(**{unit: amount})
        except OverflowError:  # older than datetime can say: since the beginning
            return datetime.min.replace(tzinfo=UTC)
    if re.fullmatch(r"\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?", raw):
        raw = f"{now.date().isoformat()}T{raw}"
    try:
        when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise SelectionError(
            f"not a time: {text!r} (use 2026-11-27T06:20:00Z, 06:20, or an age such as 10m)"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def session_user(exchanges: Sequence[Exchange]) -> str | None:
    """The user a session logged in as: USER, APOP, or the PLAIN/LOGIN answer when kept."""
    for ex in exchanges:
        if ex.verb == "USER" and ex.args:
            return ex.args
        if ex.verb == "APOP" and ex.args:
            return login_name(ex.verb, ex.args)
        if ex.verb == "AUTH" and ex.args:
            mechanism, initial = split_command(ex.args.encode("utf-8", "surrogateescape"))
            if initial and mechanism == "PLAIN":
                try:
                    decoded = base64.b64decode(initial, validate=True).split(b"\0")
                except (binascii.Error, ValueError):
                    return None
                if len(decoded) == 3:
                    return decoded[1].decode("utf-8", "replace")
            return None
    return None


@dataclass(frozen=True)
class Selection:
    """The filters of one ``show`` run; the default keeps everything."""

    sessions: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    verbs: frozenset[str] = frozenset()
    statuses: frozenset[str] = frozenset()
    grep: re.Pattern[str] | None = None
    since: datetime | None = None
    until: datetime | None = None

    @classmethod
    def build(
        cls,
        *,
        sessions: Iterable[str] = (),
        users: Iterable[str] = (),
        verbs: Iterable[str] = (),
        statuses: Iterable[str] = (),
        grep: str | None = None,
        since: str | None = None,
        until: str | None = None,
    ) -> Selection:
        """From command-line strings; raises :class:`SelectionError` on bad values."""
        wanted: set[str] = set()
        for status in statuses:
            normal = _STATUSES.get(status.strip().upper())
            if normal is None:
                raise SelectionError(f"--status {status!r}: use +OK, -ERR or + (SASL)")
            wanted.add(normal)
        pattern = None
        if grep is not None:
            try:
                pattern = re.compile(grep)
            except re.error as exc:
                raise SelectionError(f"--grep {grep!r}: not a regular expression ({exc})") from None
        now = datetime.now(UTC)
        return cls(
            sessions=tuple(s.lower() for s in sessions),
            users=tuple(users),
            verbs=frozenset(v.upper() for v in verbs),
            statuses=frozenset(wanted),
            grep=pattern,
            since=None if since is None else parse_when(since, now=now),
            until=None if until is None else parse_when(until, now=now),
        )

    @property
    def filters_exchanges(self) -> bool:
        """Whether some exchanges of a kept session may be left out."""
        return bool(self.verbs or self.statuses or self.grep or self.since or self.until)

    def keeps_session(self, capture: Capture | CaptureReader) -> bool:
        """The session filters (id prefix, user)."""
        header = capture.header
        if self.sessions and not any(header.session.lower().startswith(s) for s in self.sessions):
            return False
        return not self.users or session_user(exchanges_of(capture)) in self.users

    def exchange_time(
        self, capture: Capture | CaptureReader, exchange: Exchange
    ) -> datetime | None:
        try:
            return datetime.fromtimestamp(capture.header.started_unix + exchange.sent_at, UTC)
        except (OverflowError, ValueError, OSError):
            return None

    def keeps_exchange(self, capture: Capture | CaptureReader, exchange: Exchange) -> bool:
        """The exchange filters, all of them."""
        if self.verbs and exchange.verb not in self.verbs:
            return False
        status = None if exchange.status is None else exchange.status.value
        if self.statuses and status not in self.statuses:
            return False
        if self.grep is not None:
            text = f"{exchange.verb} {exchange.args}\n{exchange.first_line}"
            if not self.grep.search(text):
                return False
        if self.since is not None or self.until is not None:
            when = self.exchange_time(capture, exchange)
            if when is None:
                return False
            if self.since is not None and when < self.since:
                return False
            if self.until is not None and when > self.until:
                return False
        return True

    def select(self, capture: Capture | CaptureReader) -> set[int] | None:
        """The exchange numbers (``seq``) to show; None: the whole session; an empty set:
        drop the session. A reader is read in a pass of its own, only when a filter needs
        the exchanges."""
        if not self.keeps_session(capture):
            return set()
        if not self.filters_exchanges:
            return None
        return {ex.seq for ex in exchanges_of(capture) if self.keeps_exchange(capture, ex)}


def exchanges_of(capture: Capture | CaptureReader) -> list[Exchange]:
    """The exchanges of a capture; a streaming reader is read again from the start."""
    if isinstance(capture, Capture):
        return capture.exchanges()
    with capture.reopen() as again:
        return [
            event
            for _record, events in derive_events(again.iter_records())
            for event in events
            if isinstance(event, Exchange)
        ]
