"""The sans-IO session observer: both directions of one POP3 session in, events out.

The public object. Its parts: line framing (:mod:`._lines`), the pending FIFO and
barriers (:mod:`._pending`), SASL steps (:mod:`._sasl`), body scanning (:mod:`._body`),
the phase (:mod:`._state`), the summary (:mod:`._summary`), bounded reporting
(:mod:`._anomalies`), resynchronisation (:mod:`._resync`), and the two directions
(:mod:`._requests`, :mod:`._responses`); every verb rule comes from :mod:`._commands`.

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
* So the masker sees each client byte before the pairing parses it, and the same bytes
  (:mod:`._recording`): a caller that records client bytes hands them in once, to
  :meth:`SessionObserver.record_client`, which masks them, and parses them with
  :meth:`SessionObserver.parse_recorded_client`, which takes only what was recorded, in
  order (:meth:`SessionObserver.receive_client` does both). A reader that records
  nothing uses :meth:`SessionObserver.feed_client`; an observer takes one way or the
  other, and mixing them raises :class:`ObserverUsageError`.
* ``STLS`` answered by ``+OK`` switches both streams to TLS right after the ``+OK`` line
  (RFC 2595 §4). The observer then goes opaque until :meth:`resume_after_tls`; plaintext
  already received beyond the switch point is counted as injection.
* Memory and work are bounded per byte and per session, whatever a peer sends. A line
  keeps at most ``max_line`` bytes (the rest is only counted and the line is flagged
  overlong), bodies keep nothing, and unanswered commands plus held-back client lines are
  bounded both in number (``max_pending``) and in bytes (``max_pending_bytes``). Past
  either bound pairing is given up, said once (:class:`PairingLost`), and every later
  byte is only counted: no per-line work, no events, until a point where pairing can
  safely resume (:mod:`._resync`) or the end of the stream.
* Stray and unsolicited server lines are reported one by one up to a per-session budget
  (``max_anomaly_events``); past it they are counted (:class:`Suppressed`), and a run of
  them is skipped with one C-level search for the next line that could be a status line,
  where pairing picks up again.
* STLS waits for one server line: only ``+OK`` starts TLS; any other line (``-ERR``,
  ``+ok``, ``+ ``, free text) ends the wait (RFC 2595 §4), so client lines held behind the
  STLS are never held forever.
"""

from __future__ import annotations

from typing import NamedTuple

from pop3tap.protocol._anomalies import DEFAULT_MAX_ANOMALY_EVENTS
from pop3tap.protocol._body import BodyListener
from pop3tap.protocol._commands import Barrier
from pop3tap.protocol._events import Direction, EndOfStream, Event, Flag
from pop3tap.protocol._lines import DEFAULT_MAX_LINE
from pop3tap.protocol._masking import SecretMasker
from pop3tap.protocol._pending import DEFAULT_MAX_PENDING, DEFAULT_MAX_PENDING_BYTES
from pop3tap.protocol._recording import ObserverUsageError, TlsRecordFraming, UnparsedClient
from pop3tap.protocol._responses import ServerSide
from pop3tap.protocol._server_role import TLS_HANDSHAKE_RECORD
from pop3tap.protocol._state import SessionPhase, Trigger
from pop3tap.protocol._summary import SessionSummary

#: Enum members as module constants: a class attribute lookup per use costs on the hot path.
_GREETING = SessionPhase.GREETING
_LOST = SessionPhase.LOST
_OPAQUE = SessionPhase.OPAQUE
_STLS = Barrier.STLS

__all__ = [
    "DEFAULT_MAX_ANOMALY_EVENTS",
    "DEFAULT_MAX_LINE",
    "DEFAULT_MAX_PENDING",
    "DEFAULT_MAX_PENDING_BYTES",
    "BodyListener",
    "ClientFeed",
    "ObserverUsageError",
    "SessionObserver",
    "SessionSummary",
]


class ClientFeed(NamedTuple):
    """What one client chunk gives the caller of :meth:`SessionObserver.receive_client`."""

    #: Client bytes to record, in order, with their arrival times: this chunk with its
    #: secrets masked, then lines held after an AUTH that the pairing has now resolved.
    recorded: list[tuple[float, bytes]]
    #: The events the chunk completed.
    events: list[Event]


class SessionObserver(ServerSide):
    """Pair the commands and responses of one POP3 session (see the module docstring)."""

    def __init__(
        self,
        *,
        max_line: int = DEFAULT_MAX_LINE,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        max_anomaly_events: int = DEFAULT_MAX_ANOMALY_EVENTS,
        body_listener: BodyListener | None = None,
        keep_secrets: bool = False,
    ) -> None:
        super().__init__(
            max_line=max_line,
            max_pending=max_pending,
            max_pending_bytes=max_pending_bytes,
            max_anomaly_events=max_anomaly_events,
            body_listener=body_listener,
        )
        #: The client bytes to record keep their secrets (``--keep-secrets``); events and
        #: logs mask them either way.
        self._keep_secrets = keep_secrets
        self._unparsed = UnparsedClient()
        #: After STLS +OK: plaintext was recorded (it is masked from then on), or TLS was.
        self._injected = False
        #: The TLS record framing followed after the switch (None until TLS is seen).
        self._tls_after_switch: TlsRecordFraming | None = None

    # ------------------------------------------------------------------ state

    @property
    def phase(self) -> SessionPhase:
        """Where the session stands (:class:`~._state.SessionPhase`)."""
        return self._phase

    @property
    def opaque(self) -> bool:
        """True once STLS succeeded, until :meth:`resume_after_tls` (bytes are TLS)."""
        return self._phase is _OPAQUE

    @property
    def stls_pending(self) -> bool:
        """An STLS command waits for its answer: the relay must not forward past the switch."""
        return self._queue.barrier_open(_STLS)

    @property
    def awaiting_answers(self) -> bool:
        """Commands the client sent still wait for (the rest of) their answers."""
        return self._queue.busy

    @property
    def pairing_lost(self) -> bool:
        """Pairing is given up (a command flood beyond ``max_pending`` or
        ``max_pending_bytes``): bytes are only counted until it can safely resume."""
        return self._phase is _LOST

    @property
    def client_line_open(self) -> bool:
        """Part of a client line has been fed, its end not yet."""
        return self._client_line.length > 0

    @property
    def greeted(self) -> bool:
        """Whether the server's greeting has been seen."""
        return self._phase is not _GREETING

    @property
    def _pending_bytes(self) -> int:
        """Charged bytes of the pending FIFO (the bounds tests read it)."""
        return self._queue.used_bytes

    def summary(self) -> SessionSummary:
        """The counters so far."""
        return self._summary

    # ------------------------------------------------------------------ client bytes

    def receive_client(self, data: bytes, at: float) -> ClientFeed:
        """Bytes the client sent: recorded (secrets masked) and parsed, in the one safe order.

        Write :attr:`ClientFeed.recorded` as it comes, then after every :meth:`feed_server`
        the lines of :meth:`take_masked_client`.
        """
        masked = self.record_client(data, at)
        events = self.parse_recorded_client()
        recorded = [(at, masked)] if masked else []
        recorded += self._masker.take_released()
        return ClientFeed(recorded, events)

    def record_client(self, data: bytes, at: float) -> bytes:
        """The first half of :meth:`receive_client`, for a caller that records a chunk and
        forwards it before it parses it: the chunk as the capture is to hold it (PASS, APOP
        digests and SASL data replaced by ``********`` unless secrets are kept). Lines after
        an AUTH wait for the pairing and come out of :meth:`take_masked_client`.

        Once the session is opaque after STLS the bytes are TLS, recorded as they are, if
        the first of them opens a TLS handshake record (RFC 8446 §5.1) and as long as
        they keep the record framing (one placeholder stands for the rest once they break
        it); else they are plaintext, masked as :meth:`record_injected_client` masks it.
        """
        self._unparsed.append(data, at)
        if self._keep_secrets:
            return data
        if self._phase is not _OPAQUE:
            return self._masker.mask(data, at)
        if not self._injected:
            if not data:
                return data
            framing = self._tls_after_switch
            if framing is None and data[0] == TLS_HANDSHAKE_RECORD:
                framing = self._tls_after_switch = TlsRecordFraming()
            if framing is not None:
                return framing.record(data)
        return self._mask_injected(data, at)

    @property
    def plaintext_after_stls(self) -> bool:
        """Client bytes after a passed-through STLS ``+OK`` were recorded that are not
        TLS: they did not open a TLS record, or broke the record framing."""
        framing = self._tls_after_switch
        return self._injected or (framing is not None and framing.broken)

    def record_injected_client(self, data: bytes, at: float) -> bytes:
        """:meth:`record_client` for plaintext sent after a passed-through STLS ``+OK``
        (RFC 2595 §4): masked by the client masker, distrusting from here on, which goes on
        with the line begun before the switch. Raises :class:`ObserverUsageError` unless
        the session is opaque after STLS."""
        if self._phase is not _OPAQUE:
            raise ObserverUsageError("injected plaintext is recorded only after STLS +OK")
        self._unparsed.append(data, at)
        return data if self._keep_secrets else self._mask_injected(data, at)

    def _mask_injected(self, data: bytes, at: float) -> bytes:
        if not self._injected:
            self._injected = True
            self._masker.distrust()
        return self._masker.mask(data, at)

    def parse_recorded_client(self, size: int | None = None) -> list[Event]:
        """The second half of :meth:`receive_client`: parse the next ``size`` recorded
        client bytes (all for None), in order; returns the events they complete. Only
        recorded bytes can be parsed (:class:`ObserverUsageError` for more than wait), so
        the masker sees each byte before the pairing gives its verdict on the line."""
        for data, at in self._unparsed.take(size):
            self._parse_client(data, at)
        return self._take_events()

    @property
    def unparsed_client_bytes(self) -> int:
        """Client bytes recorded and not parsed yet."""
        return self._unparsed.size

    def feed_client(self, data: bytes, at: float) -> list[Event]:
        """Bytes the client sent (any chunking), for a reader that records none of them (a
        capture read back, a scan); returns the events they complete. Raises
        :class:`ObserverUsageError` on an observer that records client bytes."""
        if self._unparsed.recorded:
            raise ObserverUsageError(
                "this observer records client bytes: parse them with "
                "parse_recorded_client() after record_client(), or use receive_client()"
            )
        self._unparsed.fed_unrecorded = True
        self._parse_client(data, at)
        return self._take_events()

    def _parse_client(self, data: bytes, at: float) -> None:
        self._summary.client_bytes += len(data)
        if data and self._phase is _LOST:
            self._resume_if_safe(at)
        phase = self._phase
        if not data or phase is _OPAQUE or phase is _LOST:
            if phase is _LOST:
                self._count_unpaired(Direction.CLIENT, data, 0)
            self._client_offset += len(data)
            return
        self._split_client_lines(data, at)
        self._client_offset += len(data)
        self._drain_client_queue()

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
        """The session ends: client lines still without a verdict are masked (and so is a
        line of injected plaintext still open)."""
        if self._injected:
            self._masker.end_of_stream()
        self._masker.abandon()

    # ------------------------------------------------------------------ server bytes

    def feed_server(self, data: bytes, at: float) -> list[Event]:
        """Bytes the server sent (any chunking); returns the events they complete."""
        self._summary.server_bytes += len(data)
        size = len(data)
        pos = 0
        phase = self._phase
        if data and phase is not _OPAQUE and phase is not _LOST:
            self._server_chunk_end = self._server_offset + size
            pos = self._parse_server(data, at)
        if self._phase is _LOST and pos < size:
            self._count_unpaired(Direction.SERVER, data, pos)
        self._server_offset += size
        return self._take_events()

    # ------------------------------------------------------------------ ends

    def end_client(self, at: float) -> list[Event]:
        """The client stream ended (EOF or reset)."""
        if Direction.CLIENT in self._ended:
            return []
        self._ended.add(Direction.CLIENT)
        if self._phase is not _OPAQUE:
            self._masker.end_of_stream()
        if self._parsing and self._client_line.length:
            self._on_client_line(at, self._client_offset)
            self._drain_client_queue()
        self._anomalies.report_totals(Direction.CLIENT, at)
        self._events.append(
            EndOfStream(at=at, direction=Direction.CLIENT, truncated=False, unanswered=0)
        )
        return self._take_events()

    def end_server(self, at: float) -> list[Event]:
        """The server stream ended: open bodies are truncated, waiting commands unanswered."""
        if Direction.SERVER in self._ended:
            return []
        self._ended.add(Direction.SERVER)
        truncated = False
        self._server_chunk_end = self._server_offset
        if self._parsing:
            if self._body is not None:
                truncated = True
                body = self._body
                self._body = None
                body.pending.flags = body.pending.flags | {Flag.TRUNCATED}
                self._complete(body.pending, at, self._server_offset, body)
            elif self._server_line.length:
                self._finish_server_line(at, self._server_offset)
        unanswered = 0
        if self._parsing:
            self._drain_client_queue(force_commands=True)
            commands = self._queue.commands
            while commands:
                pending = commands.popleft()
                pending.flags = pending.flags | {Flag.NO_RESPONSE}
                unanswered += 1
                self._complete(pending, at, self._server_offset, None)
        self._anomalies.report_totals(Direction.SERVER, at)
        self._events.append(
            EndOfStream(
                at=at, direction=Direction.SERVER, truncated=truncated, unanswered=unanswered
            )
        )
        return self._take_events()

    # ------------------------------------------------------------------ caller's facts

    def greeting_missed(self) -> None:
        """The session is seen from its middle, after the greeting (a packet capture that
        started late): the first server line answers a command, it is no greeting."""
        self._advance(Trigger.GREETING)

    def resume_after_tls(self) -> None:
        """TLS is up on both legs (STLS interception): parse the decrypted streams."""
        self._advance(Trigger.TLS_RESUMED)
        # Plaintext injected before the switch must not shift the masker's idea of lines;
        # lines it still held are masked and written first.
        old = self._masker
        old.abandon()
        self._masker = SecretMasker(self._client_offset, distrusted=self._distrusted)
        self._masker.adopt_released(old.take_released())
        self._auth_seen = False
        self._injected = False
        self._tls_after_switch = None
        self._queue.drop_held()
        self._client_line.take()
        self._server_line.take()
        self._summary.tls = True
