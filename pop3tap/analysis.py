"""Streaming analysis of a capture: exchanges with facts about their bodies, in constant memory.

``lint`` and ``diff`` need more than :meth:`Capture.exchanges` gives (what a LIST said, the
headers of a message, whether a body was dot-stuffed), but must not hold a session's bodies:
a capture can carry gigabytes of mail. :func:`analyse` therefore reads the file record by
record (nothing is kept), runs the records through a fresh ``SessionObserver`` whose body
listener sees every body chunk once, and yields each protocol event with the facts gathered
for it: a hash of the body, its header block (RETR/TOP, bounded), its lines (listings such as
LIST/UIDL/CAPA, bounded), dot-stuffing and bare-CR counts. Work per body byte is a handful of
C-level calls (``hashlib``, ``bytes.count``/``find``), never a Python loop per line.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from pop3tap.capture import (
    CaptureError,
    CaptureReader,
    CloseRecord,
    EventRecord,
    Record,
    derive_events,
)
from pop3tap.protocol import COMMANDS, Counter, Event, Exchange, Flag, Multiline, SessionObserver
from pop3tap.protocol._bodyscan import body_stats

__all__ = [
    "LISTING_VERBS",
    "MESSAGE_VERBS",
    "Analysed",
    "BodyFacts",
    "CaptureStream",
    "analyse",
]

#: Commands whose body is (part of) a message: headers are kept, the rest hashed (the
#: command table's RETR and TOP counters, RFC 1939 §7).
MESSAGE_VERBS: Final = frozenset(
    verb for verb, spec in COMMANDS.items() if spec.counter in (Counter.RETR, Counter.TOP)
)
#: Commands whose body is a listing worth keeping line by line: every other command whose
#: ``+OK`` may open a body in the command table (RFC 1939 §5, §7; RFC 2449 §5).
LISTING_VERBS: Final = frozenset(
    verb
    for verb, spec in COMMANDS.items()
    if spec.multiline is not Multiline.NEVER and verb not in MESSAGE_VERBS
)
#: Most bytes of a listing kept; a longer listing is hashed only (``listing`` is None).
MAX_LISTING_BYTES: Final = 8 * 1024 * 1024
#: Most bytes of a message header block kept; beyond it the headers count as body.
MAX_HEADER_BYTES: Final = 64 * 1024
#: SHA-256 (CPUs hash it in hardware, faster than BLAKE2 here), shown as 128 bits.
_new_hash: Final = hashlib.sha256


def _hex(hasher: Any) -> str:
    return str(hasher.hexdigest()[:32])


class CaptureStream(CaptureReader):
    """A capture read one record at a time (the capture module's streaming reader).

    Iterate :meth:`records` once; afterwards ``complete``, ``truncated``,
    ``trailing_bytes`` and ``problem`` describe how the file ended (as :class:`Capture`).
    A read error part-way is reported there too, so a capture is analysed up to it.
    """

    def records(self) -> Iterator[Record]:
        """Yield every good record after the header, then close the file."""
        try:
            yield from self.iter_records()
        except CaptureError as exc:
            self.problem = str(exc).removeprefix(f"{self.path}: ")
            self.truncated = True
            self.close()


@dataclass(slots=True)
class BodyFacts:
    """What was learnt from one multi-line body while it streamed past."""

    #: SHA-256 (128 bits shown) of the body as sent (dot-stuffed, terminator included);
    #: for RETR/TOP, of the digests of the header block and of the rest (each byte is
    #: hashed once).
    digest: str = ""
    #: SHA-256 (128 bits shown) of the bytes after the header block (RETR/TOP), terminator included.
    rest_digest: str = ""
    #: Header lines (RETR/TOP) without line ends; empty when not a message body.
    headers: tuple[bytes, ...] = ()
    #: False when the header block was larger than the kept bound or never ended.
    headers_complete: bool = True
    #: Bytes of the header block, blank line included (0 when not a message body).
    header_bytes: int = 0
    #: Dot-unstuffed lines of a listing body (LIST, UIDL, CAPA...); None when too large.
    listing: tuple[bytes, ...] | None = None
    #: Lines that began with ``..`` (a stuffed dot each, RFC 1939 §3).
    stuffed: int = 0
    #: Lines that began with a single ``.`` and were not the terminator.
    unstuffed: int = 0
    #: Stream offset of the first such line.
    first_unstuffed: int | None = None
    #: CR bytes not followed by LF (None when bare LFs make the count unknown).
    bare_cr: int | None = 0
    #: CR bytes in the body and terminator.
    crs: int = 0
    #: Stream offset where the body began (just after the status line).
    start: int = 0
    #: Bytes the listener saw (body plus terminator).
    seen: int = 0


class _BodyTap:
    """The body listener: accumulates :class:`BodyFacts` for the body being scanned."""

    def __init__(self, *, stats: bool = True, rest_limit: int | None = None) -> None:
        """``stats=False`` skips the CR and dot-line counts (diff needs only digests).

        ``rest_limit`` hashes only that many bytes of a message after its header block;
        the digest then stands for the headers, that prefix and the body size: enough to
        recognise a message (lint), not to compare two (diff, check).
        """
        self.stats = stats
        self.rest_limit = rest_limit
        self._rest_budget = -1
        self.seq = -1
        self.verb = ""
        self.facts = BodyFacts()
        self.done: dict[int, BodyFacts] = {}
        self._hash: Any = None
        self._head_digest = ""
        self._rest: Any = None
        self._tail = b"\n"
        self._last_dot = -1
        self._headers: bytearray | None = None
        self._listing: bytearray | None = None

    def __call__(self, seq: int, verb: str, data: bytes, start: int, stop: int, at: int) -> None:
        if seq != self.seq:
            self._finish()
            self.seq, self.verb = seq, verb
            self.facts = BodyFacts(start=at)
            # A message is hashed once, in two parts (header block, rest); see _finish.
            self._hash = None if verb in MESSAGE_VERBS else _new_hash()
            self._head_digest = ""
            self._rest_budget = -1
            self._rest = None
            self._tail = b"\n"
            self._last_dot = -1
            self._headers = bytearray() if verb in MESSAGE_VERBS else None
            self._listing = bytearray() if verb in LISTING_VERBS else None
        facts = self.facts
        view = memoryview(data)[start:stop]
        if self._hash is not None:
            self._hash.update(view)
        facts.seen += stop - start
        # Bare CR: every CR not starting a CRLF (a CR at the chunk end waits for the next).
        # CRs are counted here (with the dot lines, in one pass); LFs by the observer:
        # without bare LFs every LF ends a CRLF, so the CRs beyond the LF count are bare.
        if self.stats:
            self._scan(data, start, stop, at)
        if self._headers is not None:
            self._collect_headers(data, start, stop)
        elif self._rest is not None:
            self._feed_rest(view)
        if self._listing is not None:
            if len(self._listing) + stop - start <= MAX_LISTING_BYTES:
                self._listing += view
            else:
                self._listing = None
                facts.listing = None
        self._tail = (self._tail + data[max(start, stop - 2) : stop])[-2:]

    def _scan(self, data: bytes, start: int, stop: int, at: int) -> None:
        """Count CRs and lines starting with a dot (RFC 1939 §3), across chunk edges.

        Inside the chunk this is one call of :func:`body_stats` (one C pass, or a few
        ``bytes.count`` passes); the dot lines whose LF ends the previous chunk are
        classified here from the kept tail.
        """
        edge = self._tail + data[start : min(stop, start + 2)]
        carry = len(self._tail)
        found = edge.find(b"\n.")
        while 0 <= found < carry:
            if found + 2 < len(edge):
                self._classify_dot(edge[found + 2], at - carry + found + 1)
            found = edge.find(b"\n.", found + 1)
        # "\n." starting at start..stop-3 (its third byte is in the chunk); edges above.
        crs, _dots, stuffed, odd, first_odd = body_stats(data, start, stop)
        facts = self.facts
        facts.crs += crs
        facts.stuffed += stuffed
        if odd:
            facts.unstuffed += odd
            if facts.first_unstuffed is None:
                facts.first_unstuffed = at + first_odd + 1 - start

    def _classify_dot(self, after: int, offset: int) -> None:
        if offset <= self._last_dot:
            return  # already seen through an earlier chunk edge
        self._last_dot = offset
        if after == 0x2E:
            self.facts.stuffed += 1
        elif after not in (0x0D, 0x0A):
            self.facts.unstuffed += 1
            if self.facts.first_unstuffed is None:
                self.facts.first_unstuffed = offset

    def _collect_headers(self, data: bytes, start: int, stop: int) -> None:
        """Keep the header block of a message body (up to its blank line, RFC 5322 §2.1)."""
        headers = self._headers
        assert headers is not None
        before = len(headers)
        taken = min(stop, start + MAX_HEADER_BYTES - before)
        headers += memoryview(data)[start:taken]
        end = -1
        if headers[:2] == b"\r\n":
            end = 2
        elif headers[:1] == b"\n":
            end = 1
        else:
            for blank in (b"\n\r\n", b"\n\n"):
                found = headers.find(blank, max(0, before - 2))
                if found >= 0 and (end < 0 or found + len(blank) < end):
                    end = found + len(blank)
        if end < 0 and len(headers) < MAX_HEADER_BYTES:
            return
        self._rest = _new_hash()
        self._headers = None
        if end < 0:
            # No end of the header block within the bound: all of it counts as body.
            self.facts.headers_complete = False
            self._feed_rest(memoryview(headers))
            self._feed_rest(memoryview(data)[taken:stop])
            return
        self.facts.header_bytes = end
        block = bytes(headers[:end])
        self._head_digest = _hex(_new_hash(block))
        self.facts.headers = tuple(_unfold_lines(block))
        self._feed_rest(memoryview(data)[start + end - before : stop])

    def _feed_rest(self, view: memoryview) -> None:
        if self.rest_limit is None:
            self._rest.update(view)
            return
        if self._rest_budget < 0:
            self._rest_budget = self.rest_limit
        if self._rest_budget > 0:
            self._rest.update(view[: self._rest_budget])
            self._rest_budget = max(0, self._rest_budget - len(view))

    def _finish(self) -> None:
        if self.seq < 0:
            return
        facts = self.facts
        if self._headers is not None:
            # The body ended inside the header block (e.g. TOP n 0 of a message
            # without a blank line, or a truncated body).
            block = bytes(self._headers)
            facts.header_bytes = len(block)
            facts.headers = tuple(_unfold_lines(block))
            facts.headers_complete = False
            self._head_digest = _hex(_new_hash(block))
            self._rest = _new_hash()
            self._headers = None
        if self._hash is not None:
            facts.digest = _hex(self._hash)
        else:
            facts.rest_digest = _hex(self._rest)
            both = f"{self._head_digest}:{facts.rest_digest}".encode()
            if self.rest_limit is not None:
                both += f":{facts.seen}".encode()
            facts.digest = _hex(_new_hash(both))
        if self._listing is not None:
            facts.listing = tuple(_listing_lines(bytes(self._listing)))
        self.done[self.seq] = facts
        self.seq = -1

    def take(self, exchange: Exchange) -> BodyFacts | None:
        """The facts of the body of a completed exchange (None when it had none)."""
        if exchange.seq == self.seq:
            self._finish()
        facts = self.done.pop(exchange.seq, None)
        if facts is not None:
            if Flag.BARE_LF in exchange.flags:
                facts.bare_cr = None
            else:
                # The observer counted the body's lines; the terminator adds one LF.
                lfs = exchange.body_lines + (0 if Flag.TRUNCATED in exchange.flags else 1)
                facts.bare_cr = max(0, facts.crs - lfs)
        return facts


def body_digests(verb: str, body: bytes) -> tuple[str, str]:
    """``(digest, rest_digest)`` of a whole body (terminator included), as streamed."""
    tap = _BodyTap(stats=False)
    tap(0, verb, body, 0, len(body), 0)
    tap._finish()
    facts = tap.done[0]
    return facts.digest, facts.rest_digest


def _unfold_lines(block: bytes) -> Iterator[bytes]:
    """Lines of a header block without line ends or the blank line; dot-unstuffed."""
    for line in block.split(b"\n"):
        text = line[:-1] if line.endswith(b"\r") else line
        if not text:
            continue
        yield text[1:] if text.startswith(b"..") else text


def _listing_lines(raw: bytes) -> Iterator[bytes]:
    """Lines of a listing body, dot-unstuffed, up to the terminator (RFC 1939 §3)."""
    for line in raw.split(b"\n"):
        text = line[:-1] if line.endswith(b"\r") else line
        if text == b".":
            return
        yield text[1:] if text.startswith(b".") else text


@dataclass(frozen=True, slots=True)
class Analysed:
    """One item of :func:`analyse`: a protocol event, a transport event or the close record.

    ``body`` is set for multi-line exchanges; ``status_line_bytes`` is the length of the
    first response line (or of the greeting), CRLF included, when known.
    """

    record: Record | None
    event: Event | None
    body: BodyFacts | None = None
    status_line_bytes: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def analyse(
    stream: CaptureStream, *, stats: bool = True, rest_limit: int | None = None
) -> Iterator[Analysed]:
    """Yield the events of a capture in order, each multi-line exchange with its body facts.

    Transport event records and the close record come as items with ``event=None``.
    With ``stats=False`` the bodies' CR and dot-line counts stay zero (digests, headers
    and listings are still gathered); ``rest_limit`` bounds the bytes of a message hashed
    after its headers (see :class:`_BodyTap`).
    """
    tap = _BodyTap(stats=stats, rest_limit=rest_limit)
    observer = SessionObserver(body_listener=tap)
    for record, events in derive_events(stream.records(), observer):
        if isinstance(record, EventRecord | CloseRecord):
            yield Analysed(record=record, event=None)
        for event in events:
            if isinstance(event, Exchange):
                body = tap.take(event) if event.multiline else None
                if body is not None:
                    line_bytes = body.start - event.response_start
                elif event.multiline:
                    body = BodyFacts(start=event.response_end)
                    line_bytes = None
                else:
                    line_bytes = event.response_end - event.response_start
                if event.sasl or event.status is None:
                    line_bytes = None
                yield Analysed(record=None, event=event, body=body, status_line_bytes=line_bytes)
            else:
                end = getattr(event, "end", None)
                begin = getattr(event, "start", None)
                size = end - begin if isinstance(end, int) and isinstance(begin, int) else None
                yield Analysed(record=None, event=event, status_line_bytes=size)
