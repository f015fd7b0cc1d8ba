"""The sans-IO session observer: both directions of one POP3 session in, events out.

Theory of operation
-------------------
A relay sees two byte streams. The observer frames each into lines (LF ends a line and
one CR before it is dropped, as poplib and MailKit accept; pop3-protocol §0 rule 6) and
pairs them by the rules of RFC 1939 and RFC 2449:

* The first server line is the greeting (RFC 1939 §4). Every later server line answers
  the oldest unanswered command: responses come back in command order, one per command,
  even when the client pipelines (RFC 2449 §6.6).
* Whether a ``+OK`` opens a multi-line body depends only on the command and whether it
  had an argument, never on the text (see :func:`expects_multiline`). Every ``-ERR`` is
  one line. A body ends at a line that is exactly ``.`` (RFC 1939 §3); sizes announced in
  the text are never used for framing.
* Bodies are scanned a chunk at a time by one call (:mod:`pop3tap.protocol._bodyscan`: a
  one-pass C scanner, or ``bytes.find``/``count`` without it), never by a Python loop per
  line, and are never buffered. An optional body listener sees each scanned slice as it
  passes (``pop3tap lint``/``diff`` hash and inspect bodies that way, keeping nothing).
* After ``AUTH mechanism`` the server may answer with ``+`` continuations; the client's
  next line then is SASL data, whatever it looks like (RFC 5034 §4). Client lines are
  classified lazily while an AUTH is open, in the order the server consumes them: lines
  pipelined behind it are commands once its final answer comes without a continuation.
* Secrets never depend on the pairing being right. After a line holding AUTH, a client
  line is shown only if the pairing says it is a command *and* it is a known command with
  valid arguments (:func:`is_known_command`); anything else is shown as ``********``.
  A server line that fits nowhere (stray, unsolicited, a ``+`` to anything but AUTH) or a
  lost pairing puts the pairing in doubt: from then on every client line after an AUTH is
  masked. The capture masker (:class:`SecretMasker`) holds client lines after an AUTH
  until these same verdicts arrive.
* ``STLS`` answered by ``+OK`` switches both streams to TLS right after the ``+OK`` line
  (RFC 2595 §4). The observer then goes opaque until :meth:`resume_after_tls`; plaintext
  already received beyond the switch point is counted as injection.
* Memory and work are bounded per byte and per session, whatever a peer sends. A line
  keeps at most ``max_line`` bytes (the rest is only counted and the line is flagged
  overlong), bodies keep nothing, and unanswered commands plus held-back client lines are
  bounded both in number (``max_pending``) and in bytes (``max_pending_bytes``). Past
  either bound pairing is given up, said once (:class:`PairingLost`), and every later
  byte is only counted: no per-line work, no events, until the end of the stream.
* Stray and unsolicited server lines are reported one by one up to a per-session budget
  (``max_anomaly_events``); past it they are counted (:class:`Suppressed`), and a run of
  them is skipped with one C-level search for the next line that could be a status line,
  where pairing picks up again.
* STLS waits for one server line: only ``+OK`` starts TLS; any other line (``-ERR``,
  ``+ok``, ``+ ``, free text) ends the wait (RFC 2595 §4), so client lines held behind the
  STLS are never held forever.
"""

from __future__ import annotations

import dataclasses
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from pop3tap.protocol._bodyscan import scan_chunk
from pop3tap.protocol._commands import (
    SECRET_PLACEHOLDER,
    decode_text,
    describe_command,
    expects_multiline,
    find_apop_timestamp,
    find_resp_code,
    is_known_command,
    opens_auth,
    parse_status,
    split_command,
)
from pop3tap.protocol._events import (
    CommandSent,
    Direction,
    EndOfStream,
    Event,
    Exchange,
    Flag,
    Greeting,
    PairingLost,
    SaslChallenge,
    SaslResponse,
    StartTls,
    Status,
    StrayLine,
    Suppressed,
    UnsolicitedLine,
)
from pop3tap.protocol._masking import SecretMasker, Verdict

DEFAULT_MAX_LINE = 8192

#: Called with every slice of a multi-line body as it is scanned, terminator included:
#: ``(seq, verb, chunk, start, stop, stream_offset_of_start)``. The chunk is not copied;
#: the listener must not keep it.
BodyListener = Callable[[int, str, bytes, int, int, int], None]
#: Unanswered commands (and held-back client lines) kept before pairing is given up.
DEFAULT_MAX_PENDING = 1024
#: Bytes those may hold (each is charged its kept line bytes plus :data:`_ENTRY_COST`).
DEFAULT_MAX_PENDING_BYTES = 256 << 10
#: Stray and unsolicited server lines reported one by one per session; the rest are counted.
DEFAULT_MAX_ANOMALY_EVENTS = 100
#: What one pending entry's Python objects cost, charged on top of its line bytes.
_ENTRY_COST = 200

#: A complete server line that can answer a command other than AUTH (RFC 1939 §3), at the
#: match position / right after a LF. Used to skip runs of stray lines in one search.
_STATUS_LINE = re.compile(rb"(?:\+OK|-ERR)(?: |\r?\n)")
_STATUS_AFTER_LF = re.compile(rb"\n(?=(?:\+OK|-ERR)(?: |\r?\n))")
#: The same while AUTH waits: a ``+`` continuation answers it too (RFC 5034 §4).
_AUTH_LINE = re.compile(rb"(?:\+OK|-ERR|\+)(?: |\r?\n)")
_AUTH_AFTER_LF = re.compile(rb"\n(?=(?:\+OK|-ERR|\+)(?: |\r?\n))")
#: A run of whole SASL challenge lines (``+`` or ``+ data``, RFC 5034 §4) of ordinary
#: length, counted in one match once an exchange has more steps than are kept.
_CHALLENGE_RUN = re.compile(rb"(?:\+(?: [^\n]{0,4000}|\r)?\n)+")

#: Verbs kept as one shared string each (a flood of commands does not copy them).
_KNOWN_VERBS = {
    verb: verb
    for verb in (
        "",
        "USER",
        "PASS",
        "APOP",
        "AUTH",
        "STAT",
        "LIST",
        "RETR",
        "DELE",
        "NOOP",
        "RSET",
        "QUIT",
        "TOP",
        "UIDL",
        "CAPA",
        "STLS",
        "UTF8",
        "LANG",
        "XTND",
    )
}
_FLAG_SETS: dict[frozenset[Flag], frozenset[Flag]] = {}
_NO_FLAGS: frozenset[Flag] = frozenset()


def _shared_flags(flags: set[Flag] | frozenset[Flag]) -> frozenset[Flag]:
    """One shared frozenset per combination of flags (there are few)."""
    frozen = frozenset(flags)
    return _FLAG_SETS.setdefault(frozen, frozen)


_STATUS_BY_TOKEN = {"+OK": Status.OK, "-ERR": Status.ERR, "+": Status.CONTINUE}
_TERMINATORS = (b"\n.\r\n", b"\n.\n")


def _terminator_at_edge(tail: bytes, data: bytes, pos: int) -> int:
    """End of a terminator line whose leading LF is in ``tail``, or -1.

    ``tail`` holds the last (up to 3) body bytes before ``pos``; it starts as the status
    line's LF, so an empty body is found here too. A leading LF at ``data[pos]`` or later
    is the body scanner's to find.
    """
    edge = tail + data[pos : pos + 3]
    carry = len(tail)
    best = -1
    for pattern in _TERMINATORS:
        found = edge.find(pattern)
        while 0 <= found < carry:
            candidate = pos + found + len(pattern) - carry
            if candidate > pos and (best < 0 or candidate < best):
                best = candidate
                break
            found = edge.find(pattern, found + 1)
    return best


@dataclass(slots=True)
class SessionSummary:
    """Counters for the close-of-session line, in the spirit of Dovecot's logout line."""

    commands: int = 0
    retr_count: int = 0
    retr_bytes: int = 0
    top_count: int = 0
    top_bytes: int = 0
    dele_count: int = 0
    #: ``+OK`` to QUIT from the TRANSACTION state: deletions were committed (RFC 1939 §6).
    reached_update: bool = False
    authenticated: bool = False
    client_bytes: int = 0
    server_bytes: int = 0
    anomalies: int = 0
    tls: bool = False

    def as_dict(self) -> dict[str, int | bool]:
        """Plain mapping for logs and capture records."""
        return {
            "commands": self.commands,
            "retr_count": self.retr_count,
            "retr_bytes": self.retr_bytes,
            "top_count": self.top_count,
            "top_bytes": self.top_bytes,
            "dele_count": self.dele_count,
            "reached_update": self.reached_update,
            "authenticated": self.authenticated,
            "client_bytes": self.client_bytes,
            "server_bytes": self.server_bytes,
            "anomalies": self.anomalies,
            "tls": self.tls,
        }


class _LineAssembler:
    """Collects one line across chunks, keeping at most ``limit`` bytes of it."""

    __slots__ = ("cr_at_edge", "kept", "length", "limit", "lone_cr_dropped", "start", "started_at")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.kept = bytearray()
        self.length = 0
        self.started_at: float | None = None
        self.start = 0
        #: A CR not followed by LF was past the kept bytes: a server that ends lines at a
        #: lone CR ran what followed it as a line of its own (perhaps an AUTH).
        self.lone_cr_dropped = False
        #: The bytes so far end with a CR (a LF may follow in the next chunk).
        self.cr_at_edge = False

    def add(self, data: bytes, begin: int, end: int, at: float, offset: int) -> None:
        if self.length == 0:
            self.started_at = at
            self.start = offset
        room = self.limit - len(self.kept)
        if room > 0:
            self.kept += data[begin : min(end, begin + room)]
        self.length += end - begin
        dropped = max(begin, begin + room)
        if dropped < end:
            # C-level counts: LF only ends a line, so a CR before it is the terminator.
            before = data[dropped - 1] == 0x0D if dropped > begin else self.cr_at_edge
            if before and data[dropped] != 0x0A:
                self.lone_cr_dropped = True
            if data.count(b"\r", dropped, end) > data.count(b"\r\n", dropped, end) + (
                data[end - 1] == 0x0D
            ):
                self.lone_cr_dropped = True
        if end > begin:
            self.cr_at_edge = data[end - 1] == 0x0D

    def take(self) -> tuple[bytes, int, float | None, int]:
        kept, length, started_at, start = bytes(self.kept), self.length, self.started_at, self.start
        self.kept.clear()
        self.length = 0
        self.started_at = None
        self.lone_cr_dropped = False
        self.cr_at_edge = False
        return kept, length, started_at, start


@dataclass(slots=True)
class _ClientLine:
    text: bytes
    at: float
    start: int
    end: int
    flags: frozenset[Flag]
    pipelined: bool
    #: What it is charged against ``max_pending_bytes``.
    cost: int = _ENTRY_COST
    #: The line was cut at the length limit with a lone CR in it: what followed the CR
    #: (not kept) may have been an AUTH.
    may_open_auth: bool = False


@dataclass(slots=True)
class _Pending:
    """A command waiting for (the rest of) its response."""

    seq: int
    verb: str
    shown_verb: str
    masked_args: str
    sent_at: float
    pipelined: bool
    request_start: int
    request_end: int
    #: The command had arguments (its raw bytes are not kept: only the masked text is).
    has_args: bool
    #: A ``+OK`` opens a multi-line body (decided from the command alone).
    multiline: bool
    #: STLS, or AUTH with a mechanism: later client lines are held behind it.
    barrier: bool
    #: What it is charged against ``max_pending_bytes``.
    cost: int
    flags: frozenset[Flag] = frozenset()
    first_byte_at: float | None = None
    response_start: int = -1
    status: Status | None = None
    first_line: str = ""
    resp_code: str | None = None
    sasl: list[tuple[str, str]] | None = None
    sasl_omitted: int = 0
    awaiting_sasl: bool = False


@dataclass(slots=True)
class _Body:
    """Scanning state of an open multi-line body."""

    pending: _Pending
    start: int
    consumed: int = 0
    newlines: int = 0
    #: A LF without a CR before it was seen in the body (terminator included).
    bare_lf: bool = False
    tail: bytes = b"\n"  # the status line's LF: the body starts at a line start


class SessionObserver:
    """Pair the commands and responses of one POP3 session (see the module docstring)."""

    def __init__(
        self,
        *,
        max_line: int = DEFAULT_MAX_LINE,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        max_anomaly_events: int = DEFAULT_MAX_ANOMALY_EVENTS,
        body_listener: BodyListener | None = None,
    ) -> None:
        self._max_line = max_line
        self._body_listener = body_listener
        self._max_pending = max_pending
        self._max_pending_bytes = max_pending_bytes
        #: Charged bytes of the client queue and the pending commands together.
        self._pending_bytes = 0
        #: Stray/unsolicited lines that may still be reported one by one.
        self._anomaly_budget = max_anomaly_events
        #: Per direction: [lines, bytes] counted instead of reported, per kind.
        self._suppressed: dict[tuple[Direction, str], list[int]] = {}
        #: Pending STLS and ``AUTH mechanism`` commands (they hold back client lines).
        self._barriers = 0
        self._open_auths = 0
        self._open_stls = 0
        #: Pairing was given up (a flood beyond the bounds): bytes are only counted.
        self._lost = False
        self._masker = SecretMasker()
        #: A line holding AUTH was classified: later lines may be SASL data.
        self._auth_seen = False
        #: A server line fit nowhere, or pairing was lost: mask every line after an AUTH.
        self._distrusted = False
        self._client_line = _LineAssembler(max_line)
        self._server_line = _LineAssembler(max_line)
        self._client_offset = 0
        self._server_offset = 0
        self._client_queue: deque[_ClientLine] = deque()
        self._pending: deque[_Pending] = deque()
        self._body: _Body | None = None
        self._greeted = False
        self._next_seq = 1
        self._in_transaction = False
        self._opaque = False
        self._server_ended = False
        self._client_ended = False
        self._summary = SessionSummary()
        self._events: list[Event] = []

    # ------------------------------------------------------------------ public API

    @property
    def opaque(self) -> bool:
        """True once STLS succeeded, until :meth:`resume_after_tls` (bytes are TLS)."""
        return self._opaque

    @property
    def stls_pending(self) -> bool:
        """An STLS command waits for its answer: the relay must not forward past the switch."""
        return self._open_stls > 0

    @property
    def awaiting_answers(self) -> bool:
        """Commands the client sent still wait for (the rest of) their answers."""
        return bool(self._pending or self._client_queue)

    @property
    def pairing_lost(self) -> bool:
        """Pairing was given up (a command flood beyond ``max_pending`` or
        ``max_pending_bytes``): bytes are only counted from then on."""
        return self._lost

    @property
    def client_line_open(self) -> bool:
        """Part of a client line has been fed, its end not yet."""
        return self._client_line.length > 0

    @property
    def greeted(self) -> bool:
        """Whether the server's greeting has been seen."""
        return self._greeted

    def summary(self) -> SessionSummary:
        """The counters so far."""
        return self._summary

    def mask_client(self, data: bytes, at: float = 0.0) -> bytes:
        """The client chunk with PASS, APOP digests and SASL data replaced by ``********``.

        Call it with every client chunk, before :meth:`feed_client` gets the same chunk.
        Returns what can be written now; lines after an AUTH wait for the pairing to say
        what they are and come out of :meth:`take_masked_client` (see :mod:`._masking`).
        """
        if self._opaque:
            return data
        return self._masker.mask(data, at)

    def take_masked_client(self) -> list[tuple[float, bytes]]:
        """Masked client bytes released since the last call, with their arrival times.

        Write them before the server bytes that were just fed: the client sent them first.
        """
        return self._masker.take_released()

    @property
    def client_held(self) -> bool:
        """Masked client lines wait for a verdict that server bytes may bring: parse server
        bytes before capturing them, so these lines are written first."""
        return self._masker.holding

    def abandon_client_lines(self) -> None:
        """The session ends: client lines still without a verdict are masked."""
        self._masker.abandon()

    def feed_client(self, data: bytes, at: float) -> list[Event]:
        """Bytes the client sent (any chunking); returns the events they complete."""
        self._summary.client_bytes += len(data)
        if self._opaque or self._lost or not data:
            if self._lost and not self._opaque:
                self._count_unpaired(Direction.CLIENT, data, 0)
            self._client_offset += len(data)
            return self._take_events()
        self._split_client_lines(data, at)
        self._client_offset += len(data)
        self._drain_client_queue()
        return self._take_events()

    def feed_server(self, data: bytes, at: float) -> list[Event]:
        """Bytes the server sent (any chunking); returns the events they complete."""
        self._summary.server_bytes += len(data)
        if self._opaque or self._lost or not data:
            if self._lost and not self._opaque:
                self._count_unpaired(Direction.SERVER, data, 0)
            self._server_offset += len(data)
            return self._take_events()
        pos = 0
        size = len(data)
        base = self._server_offset
        while pos < size and not (self._opaque or self._lost):
            if self._body is not None:
                pos = self._scan_body(data, pos, at)
                continue
            if self._anomaly_budget <= 0 and self._greeted and not self._server_line.length:
                pos = self._skip_noise(data, pos, at)
                if pos >= size:
                    break
            if self._pending and self._pending[0].sasl_omitted and not self._server_line.length:
                pos = self._count_challenges(data, pos)
                if pos >= size:
                    break
            newline = data.find(b"\n", pos)
            if newline < 0:
                self._server_line.add(data, pos, size, at, base + pos)
                pos = size
                break
            self._server_line.add(data, pos, newline + 1, at, base + pos)
            pos = newline + 1
            self._finish_server_line(at, base + pos)
            if self._opaque:
                self._note_trailing_after_stls(size - pos)
        if self._lost and pos < size:
            self._count_unpaired(Direction.SERVER, data, pos)
        self._server_offset += size
        return self._take_events()

    def end_client(self, at: float) -> list[Event]:
        """The client stream ended (EOF or reset)."""
        if self._client_ended:
            return []
        self._client_ended = True
        if not self._opaque:
            self._masker.end_of_stream()
        if not self._opaque and not self._lost and self._client_line.length:
            self._on_client_line(at, self._client_offset)
            self._drain_client_queue()
        self._report_suppressed(Direction.CLIENT, at)
        self._events.append(
            EndOfStream(at=at, direction=Direction.CLIENT, truncated=False, unanswered=0)
        )
        return self._take_events()

    def end_server(self, at: float) -> list[Event]:
        """The server stream ended: open bodies are truncated, waiting commands unanswered."""
        if self._server_ended:
            return []
        self._server_ended = True
        truncated = False
        if not self._opaque and not self._lost:
            if self._body is not None:
                truncated = True
                body = self._body
                self._body = None
                _add_flag(body.pending, Flag.TRUNCATED)
                self._complete(body.pending, at, self._server_offset, body)
            elif self._server_line.length:
                self._finish_server_line(at, self._server_offset)
        unanswered = 0
        if not self._opaque and not self._lost:
            self._drain_client_queue(force_commands=True)
            while self._pending:
                pending = self._pending.popleft()
                _add_flag(pending, Flag.NO_RESPONSE)
                unanswered += 1
                self._complete(pending, at, self._server_offset, None)
        self._report_suppressed(Direction.SERVER, at)
        self._events.append(
            EndOfStream(
                at=at, direction=Direction.SERVER, truncated=truncated, unanswered=unanswered
            )
        )
        return self._take_events()

    def greeting_missed(self) -> None:
        """The session is seen from its middle, after the greeting (a packet capture that
        started late): the first server line answers a command, it is no greeting."""
        self._greeted = True

    def resume_after_tls(self) -> None:
        """TLS is up on both legs (STLS interception): parse the decrypted streams."""
        self._opaque = False
        # Plaintext injected before the switch must not shift the masker's idea of lines;
        # lines it still held are masked and written first.
        old = self._masker
        old.abandon()
        self._masker = SecretMasker(self._client_offset, distrusted=self._distrusted)
        self._masker.adopt_released(old.take_released())
        self._auth_seen = False
        for line in self._client_queue:
            self._pending_bytes -= line.cost
        self._client_queue.clear()
        self._client_line.take()
        self._server_line.take()
        self._summary.tls = True

    # ------------------------------------------------------------------ framing

    def _split_client_lines(self, data: bytes, at: float) -> None:
        assembler = self._client_line
        base = self._client_offset
        pos = 0
        size = len(data)
        while pos < size:
            if self._lost:
                # Past the bounds: the rest is only counted, no per-line work.
                self._count_unpaired(Direction.CLIENT, data, pos)
                return
            newline = data.find(b"\n", pos)
            if newline < 0:
                assembler.add(data, pos, size, at, base + pos)
                return
            if assembler.length == 0 and newline - pos < self._max_line:
                # The whole line is in this chunk: no need to assemble it.
                line = data[pos : newline + 1]
                self._on_client_line(at, base + newline + 1, line, len(line), base + pos)
                pos = newline + 1
                continue
            assembler.add(data, pos, newline + 1, at, base + pos)
            pos = newline + 1
            self._on_client_line(at, base + pos)

    @staticmethod
    def _strip_terminator(
        kept: bytes, length: int, limit: int
    ) -> tuple[bytes, set[Flag] | frozenset[Flag]]:
        if length <= limit and kept.endswith(b"\r\n"):
            return kept[:-2], _NO_FLAGS
        flags: set[Flag] = set()
        if length > limit:
            flags.add(Flag.OVERLONG)
        if kept.endswith(b"\r\n"):
            return kept[:-2], flags
        if kept.endswith(b"\n"):
            flags.add(Flag.BARE_LF)
            return kept[:-1], flags
        if length > limit:
            # The end of an overlong line was not kept: trim a CR if one is there.
            return kept.rstrip(b"\r"), flags
        return kept, flags

    # ------------------------------------------------------------------ client side

    def _on_client_line(
        self, at: float, end: int, kept: bytes | None = None, length: int = 0, start: int = 0
    ) -> None:
        """A client line ended at ``end``: the assembled one, or ``kept`` (a whole line)."""
        lone_cr_dropped = False
        if kept is None:
            lone_cr_dropped = self._client_line.lone_cr_dropped
            kept, length, _started_at, start = self._client_line.take()
        text, flags = self._strip_terminator(kept, length, self._max_line)
        # Past the limit the line's end is not kept: with a lone CR in it, the part after
        # the CR (an AUTH for a server that ends lines there) cannot be classified.
        may_open_auth = Flag.OVERLONG in flags and (lone_cr_dropped or b"\r" in text)
        if flags:
            self._summary.anomalies += 1
        pipelined = bool(self._pending or self._client_queue)
        cost = len(text) + _ENTRY_COST
        self._pending_bytes += cost
        self._client_queue.append(
            _ClientLine(
                text=text,
                at=at,
                start=start,
                end=end,
                flags=_shared_flags(flags),
                pipelined=pipelined,
                cost=cost,
                may_open_auth=may_open_auth,
            )
        )
        self._drain_client_queue()
        if len(self._client_queue) > self._max_pending:  # bounded memory
            self._lose_pairing(at, "more client lines held back than the parser keeps")
        elif self._pending_bytes > self._max_pending_bytes:
            self._lose_pairing(
                at, "unanswered commands and held-back lines hold more bytes than the parser keeps"
            )

    def _barrier_pending(self) -> bool:
        """Client lines after this point cannot be classified yet.

        After ``AUTH mechanism`` the next line may be SASL data (RFC 5034 §4); after
        ``STLS`` nothing may follow until TLS is up (RFC 2595 §4), so lines queued behind
        it are held and become injected plaintext if the server says ``+OK``.
        """
        return self._barriers > 0

    def _drain_client_queue(self, *, force_commands: bool = False) -> None:
        queue = self._client_queue
        while queue:
            head_auth = self._pending[0] if self._pending else None
            if head_auth is not None and head_auth.awaiting_sasl:
                line = queue.popleft()
                self._pending_bytes -= line.cost
                head_auth.awaiting_sasl = False
                self._on_sasl_response(head_auth, line)
                continue
            if not force_commands and self._barrier_pending():
                return
            self._on_command(queue.popleft())

    def _on_command(self, line: _ClientLine) -> None:
        text = line.text
        lone_cr = text.find(b"\r")
        verb, args = split_command(text if lone_cr < 0 else text[:lone_cr])
        verb = _KNOWN_VERBS.get(verb, verb)
        seq = self._next_seq
        self._next_seq += 1
        self._summary.commands += 1
        if self._auth_seen and (
            self._distrusted
            or self._open_auths > 0  # forced at the end, the AUTH never answered
            or Flag.OVERLONG in line.flags
            or not is_known_command(text)
        ):
            # Perhaps SASL data the pairing got wrong: never show it (RFC 5034 §4).
            shown_verb, masked = SECRET_PLACEHOLDER, ""
            self._masker.resolve(line.end, Verdict.MASK)
        else:
            shown_verb, masked = describe_command(text)
            self._masker.resolve(line.end, Verdict.COMMAND)
        if line.may_open_auth or opens_auth(text):
            self._auth_seen = True
        barrier = _is_barrier(verb, args)
        pending = _Pending(
            seq=seq,
            verb=verb,
            shown_verb=shown_verb,
            masked_args=masked,
            sent_at=line.at,
            pipelined=line.pipelined,
            request_start=line.start,
            request_end=line.end,
            has_args=bool(args.strip()),
            multiline=expects_multiline(verb, args),
            barrier=barrier,
            # The raw line is dropped now; the verb and the masked text are what stay.
            cost=len(verb) + len(masked) + _ENTRY_COST,
            flags=_shared_flags(line.flags | {Flag.PIPELINED}) if line.pipelined else line.flags,
        )
        self._pending_bytes += pending.cost - line.cost
        self._pending.append(pending)
        if barrier:
            self._barriers += 1
            if verb == "AUTH":
                self._open_auths += 1
            else:
                self._open_stls += 1
        if len(self._pending) > self._max_pending:  # bounded memory
            self._lose_pairing(line.at, "more unanswered commands than the parser keeps")
        self._events.append(
            CommandSent(
                at=line.at,
                seq=seq,
                verb=shown_verb,
                args=masked,
                pipelined=line.pipelined,
                flags=line.flags,
                start=line.start,
                end=line.end,
            )
        )

    def _on_sasl_response(self, pending: _Pending, line: _ClientLine) -> None:
        cancelled = line.text.strip() == b"*"
        self._masker.resolve(line.end, Verdict.CANCEL if cancelled else Verdict.MASK)
        text = "*" if cancelled else (SECRET_PLACEHOLDER if line.text else "")
        if _add_sasl_step(pending, "c", text):
            self._events.append(
                SaslResponse(at=line.at, seq=pending.seq, text=text, cancelled=cancelled)
            )

    # ------------------------------------------------------------------ server side

    def _finish_server_line(self, at: float, end: int) -> None:
        kept, length, started_at, start = self._server_line.take()
        text, flags = self._strip_terminator(kept, length, self._max_line)
        if flags:
            self._summary.anomalies += 1
        first_byte_at = at if started_at is None else started_at
        if not self._greeted:
            self._greeted = True
            self._on_greeting(text, flags, at, start, end)
            return
        token, rest = parse_status(text)
        status = _STATUS_BY_TOKEN.get(token) if token is not None else None
        self._drain_client_queue()
        pending = self._pending[0] if self._pending else None
        if pending is None:
            self._on_line_without_command(text, status, at, start, end)
            return
        # RFC 2595 §4: only +OK starts TLS. Any other line ends the STLS wait, so the
        # client lines held behind it are released instead of held forever.
        stls_refused = pending.verb == "STLS" and status is not Status.OK
        if not stls_refused and (
            status is None or (status is Status.CONTINUE and pending.verb != "AUTH")
        ):
            self._summary.anomalies += 1
            self._distrust()
            self._report_anomaly(
                StrayLine(
                    at=at, direction=Direction.SERVER, text=decode_text(text), start=start, end=end
                ),
                at,
                end - start,
            )
            return
        if pending.first_byte_at is None:
            pending.first_byte_at = first_byte_at
            pending.response_start = start
        if flags:
            pending.flags = _shared_flags(pending.flags | flags)
        if stls_refused and status is not Status.ERR:
            self._summary.anomalies += 1
            _add_flag(pending, Flag.STRAY)
        elif status is Status.CONTINUE:
            if _add_sasl_step(pending, "+", str(len(rest))):
                self._events.append(SaslChallenge(at=at, seq=pending.seq, length=len(rest)))
            pending.awaiting_sasl = True
            self._drain_client_queue()
            return
        self._pending.popleft()
        pending.status = status
        pending.first_line = decode_text(text)
        pending.resp_code = None if rest is text else find_resp_code(rest)
        pending.awaiting_sasl = False
        if status is Status.OK and pending.multiline:
            self._pending.appendleft(pending)  # stays at the head until the body ends
            self._body = _Body(pending=pending, start=end)
            return
        self._complete(pending, at, end, None)
        if status is Status.OK and pending.verb == "STLS":
            self._start_tls(pending, at, end)
            return
        self._drain_client_queue()

    def _on_greeting(
        self, text: bytes, flags: set[Flag] | frozenset[Flag], at: float, start: int, end: int
    ) -> None:
        token, rest = parse_status(text)
        status = _STATUS_BY_TOKEN.get(token) if token is not None else None
        self._events.append(
            Greeting(
                at=at,
                status=status,
                text=decode_text(text),
                resp_code=None if status is None else find_resp_code(rest),
                apop_timestamp=find_apop_timestamp(text),
                flags=frozenset(flags),
                start=start,
                end=end,
            )
        )

    def _on_line_without_command(
        self, text: bytes, status: Status | None, at: float, start: int, end: int
    ) -> None:
        self._summary.anomalies += 1
        self._distrust()
        if self._anomaly_budget <= 0:
            self._report_anomaly(None, at, end - start)
        elif status is None:
            self._report_anomaly(
                StrayLine(
                    at=at, direction=Direction.SERVER, text=decode_text(text), start=start, end=end
                ),
                at,
                end - start,
            )
        else:
            self._report_anomaly(
                UnsolicitedLine(at=at, text=decode_text(text), status=status, start=start, end=end),
                at,
                end - start,
            )

    def _scan_body(self, data: bytes, pos: int, at: float) -> int:
        """Consume body bytes from ``pos``; return where scanning stopped.

        A terminator whose leading LF came before ``pos`` is found from the tail kept
        from earlier chunks; the rest of the chunk goes to the body
        scanner (:mod:`pop3tap.protocol._bodyscan`) in one call, never line by line.
        """
        body = self._body
        assert body is not None
        size = len(data)
        tail = body.tail
        edge = _terminator_at_edge(tail, data, pos)
        end, newlines, bare_lf = scan_chunk(
            data, pos, size if edge < 0 else edge, tail.endswith(b"\r")
        )
        if edge >= 0:
            end = edge
        stop = size if end < 0 else end
        body.consumed += stop - pos
        if self._body_listener is not None and stop > pos:
            self._body_listener(
                body.pending.seq, body.pending.verb, data, pos, stop, self._server_offset + pos
            )
        body.newlines += newlines
        if bare_lf:
            body.bare_lf = True
        body.tail = (tail + data[max(pos, stop - 3) : stop])[-3:]
        if end < 0:
            return size
        self._body = None
        self._complete(body.pending, at, self._server_offset + end, body)
        self._drain_client_queue()
        return end

    # ------------------------------------------------------------------ completion

    def _complete(
        self, pending: _Pending, at: float, response_end: int, body: _Body | None
    ) -> None:
        self._pending_bytes -= pending.cost
        if pending.barrier:
            self._barriers -= 1
            if pending.verb == "AUTH":
                self._open_auths -= 1
            else:
                self._open_stls -= 1
        body_lines = body_bytes = 0
        if body is not None:
            if self._pending and self._pending[0] is pending:
                self._pending.popleft()
            if Flag.TRUNCATED in pending.flags:
                body_lines, body_bytes = body.newlines, body.consumed
            else:
                terminator = 3 if body.tail.endswith(b".\r\n") else 2
                body_lines, body_bytes = body.newlines - 1, body.consumed - terminator
            if body.bare_lf:
                _add_flag(pending, Flag.BARE_LF)
        if pending.status is Status.OK:
            self._count(pending, body_bytes)
        self._events.append(
            Exchange(
                at=at,
                seq=pending.seq,
                verb=pending.shown_verb,
                args=pending.masked_args,
                status=pending.status,
                first_line=pending.first_line,
                resp_code=pending.resp_code,
                multiline=body is not None,
                body_lines=body_lines,
                body_bytes=body_bytes,
                sent_at=pending.sent_at,
                first_byte_at=pending.first_byte_at,
                pipelined=pending.pipelined,
                flags=pending.flags,
                request_start=pending.request_start,
                request_end=pending.request_end,
                response_start=pending.response_start
                if pending.response_start >= 0
                else response_end,
                response_end=response_end,
                sasl=_sasl_steps(pending),
            )
        )

    def _count(self, pending: _Pending, body_bytes: int) -> None:
        summary = self._summary
        verb = pending.verb
        if verb == "RETR":
            summary.retr_count += 1
            summary.retr_bytes += body_bytes
        elif verb == "TOP":
            summary.top_count += 1
            summary.top_bytes += body_bytes
        elif verb == "DELE":
            summary.dele_count += 1
        elif verb in ("PASS", "APOP", "AUTH") and (verb != "AUTH" or pending.has_args):
            self._in_transaction = True
            summary.authenticated = True
        elif verb == "QUIT" and self._in_transaction:
            summary.reached_update = True

    def _start_tls(self, pending: _Pending, at: float, server_switch: int) -> None:
        client_trailing = sum(line.end - line.start for line in self._client_queue)
        client_trailing += self._client_line.length
        # Client lines still held are injected plaintext (or never answered): masked now,
        # so they are written before the switch.
        self._masker.abandon()
        self._opaque = True
        self._events.append(
            StartTls(
                at=at,
                seq=pending.seq,
                client_trailing=client_trailing,
                server_trailing=0,
                client_switch=pending.request_end,
                server_switch=server_switch,
            )
        )

    def _note_trailing_after_stls(self, trailing: int) -> None:
        if trailing <= 0:
            return
        last = self._events[-1] if self._events else None
        if isinstance(last, StartTls):
            self._events[-1] = dataclasses.replace(last, server_trailing=trailing)

    def _lose_pairing(self, at: float, reason: str) -> None:
        """Give up pairing for the rest of the session, keeping memory bounded.

        Reached only by floods (thousands of commands the server does not answer); the
        relay goes on forwarding every byte, and the capture still holds them all.
        """
        if self._lost:
            return
        self._lost = True
        self._summary.anomalies += 1
        self._distrust()
        self._client_queue.clear()
        self._pending.clear()
        self._pending_bytes = 0
        self._body = None
        self._barriers = self._open_auths = self._open_stls = 0
        self._client_line.take()
        self._server_line.take()
        self._events.append(PairingLost(at=at, reason=reason))

    def _distrust(self) -> None:
        """A server line fit nowhere or pairing was lost: the pairing may be wrong from
        here on, so no client line after an AUTH can be shown."""
        if not self._distrusted:
            self._distrusted = True
            self._masker.distrust()

    # ------------------------------------------------------------------ bounded reporting

    def _count_suppressed(self, direction: Direction, kind: str, lines: int, size: int) -> None:
        counts = self._suppressed.setdefault((direction, kind), [0, 0])
        counts[0] += lines
        counts[1] += size

    def _count_unpaired(self, direction: Direction, data: bytes, pos: int) -> None:
        """Bytes after pairing was lost: counted (one C-level count), never parsed."""
        self._count_suppressed(direction, "unpaired", data.count(b"\n", pos), len(data) - pos)

    def _report_anomaly(self, event: Event | None, at: float, size: int) -> None:
        """Report a stray/unsolicited line while the budget lasts; count it after that."""
        if event is not None and self._anomaly_budget > 0:
            self._anomaly_budget -= 1
            self._events.append(event)
            return
        self._anomaly_budget = 0
        self._suppress_anomalies(1, size, at)

    def _suppress_anomalies(self, lines: int, size: int, at: float) -> None:
        """Count server lines past the budget; say so the first time."""
        first = (Direction.SERVER, "anomalies") not in self._suppressed
        self._count_suppressed(Direction.SERVER, "anomalies", lines, size)
        if first:
            self._events.append(
                Suppressed(
                    at=at,
                    direction=Direction.SERVER,
                    kind="anomalies",
                    lines=lines,
                    bytes=size,
                    final=False,
                )
            )

    def _report_suppressed(self, direction: Direction, at: float) -> None:
        """At the end of a direction's stream: the totals of what was only counted."""
        for (counted_direction, kind), (lines, size) in self._suppressed.items():
            if counted_direction is direction:
                self._events.append(
                    Suppressed(
                        at=at, direction=direction, kind=kind, lines=lines, bytes=size, final=True
                    )
                )

    def _count_challenges(self, data: bytes, pos: int) -> int:
        """An AUTH exchange past its kept steps, at a server line start: a run of
        challenge lines is counted in one match, each letting one held client line through
        as SASL data, as one line at a time would; returns where the run ends."""
        pending = self._pending[0]
        run = _CHALLENGE_RUN.match(data, pos) if pending.verb == "AUTH" else None
        if run is None:
            return pos
        end = run.end()
        challenges = data.count(b"\n", pos, end)
        if data.count(b"\r\n", pos, end) != challenges:
            pending.flags = _shared_flags(pending.flags | {Flag.BARE_LF})
        queue = self._client_queue
        answered = 0
        for _ in range(min(challenges, len(queue))):
            line = queue.popleft()
            self._pending_bytes -= line.cost
            cancelled = line.text.strip() == b"*"
            self._masker.resolve(line.end, Verdict.CANCEL if cancelled else Verdict.MASK)
            answered += 1
        pending.sasl_omitted += challenges + answered
        pending.awaiting_sasl = challenges > answered
        return end

    def _skip_noise(self, data: bytes, pos: int, at: float) -> int:
        """Past the anomaly budget, at a server line start: skip the complete lines that
        cannot pair with anything in one C-level search, counting them; return where
        normal parsing resumes (a possible status line, or the partial last line)."""
        self._drain_client_queue()
        last = data.rfind(b"\n", pos)
        if last < 0:
            return pos
        stop = last + 1
        if self._pending:
            head = self._pending[0]
            if head.verb == "STLS":
                return pos  # any line answers STLS
            auth = head.verb == "AUTH"
            at_line = _AUTH_LINE if auth else _STATUS_LINE
            after_lf = _AUTH_AFTER_LF if auth else _STATUS_AFTER_LF
            if at_line.match(data, pos):
                return pos
            found = after_lf.search(data, pos, stop)
            if found is not None:
                stop = found.start() + 1
        lines = data.count(b"\n", pos, stop)
        self._summary.anomalies += lines
        self._suppress_anomalies(lines, stop - pos, at)
        return stop

    def _take_events(self) -> list[Event]:
        events = self._events
        self._events = []
        return events


#: SASL steps kept per AUTH exchange; a longer exchange keeps a count of the rest.
_MAX_SASL_STEPS = 64


def _is_barrier(verb: str, args: bytes) -> bool:
    """STLS, and AUTH with a mechanism, hold back the client lines after them."""
    return verb == "STLS" or (verb == "AUTH" and bool(args.strip()))


def _add_flag(pending: _Pending, flag: Flag) -> None:
    pending.flags = _shared_flags(pending.flags | {flag})


def _add_sasl_step(pending: _Pending, kind: str, text: str) -> bool:
    """Keep a SASL step while there is room; False when it was only counted."""
    if pending.sasl is None:
        pending.sasl = []
    if len(pending.sasl) < _MAX_SASL_STEPS:
        pending.sasl.append((kind, text))
        return True
    pending.sasl_omitted += 1
    return False


def _sasl_steps(pending: _Pending) -> tuple[tuple[str, str], ...]:
    steps = tuple(pending.sasl or ())
    if pending.sasl_omitted:
        steps += (("...", str(pending.sasl_omitted)),)
    return steps
