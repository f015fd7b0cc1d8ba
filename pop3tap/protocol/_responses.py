"""The server side of the observer: server lines paired with the oldest waiting command.

The first server line is the greeting (RFC 1939 §4). Every later line answers the oldest
unanswered command (RFC 2449 §6.6); whether a ``+OK`` opens a body is the command table's
rule (:func:`~._commands.expects_multiline`). STLS waits for one line: only ``+OK``
starts TLS, any other line ends the wait (RFC 2595 §4). A line that fits nowhere puts the
pairing in doubt (every client line after an AUTH is masked from then on).
"""

from __future__ import annotations

from pop3tap.protocol._anomalies import AUTH_AFTER_LF, AUTH_LINE, STATUS_AFTER_LF, STATUS_LINE
from pop3tap.protocol._body import Body
from pop3tap.protocol._commands import (
    Barrier,
    Counter,
    decode_text,
    find_apop_timestamp,
    find_resp_code,
    opens_sasl,
    parse_status,
)
from pop3tap.protocol._events import (
    Direction,
    Exchange,
    Flag,
    Greeting,
    SaslChallenge,
    StartTls,
    Status,
    StrayLine,
    UnsolicitedLine,
)
from pop3tap.protocol._lines import shared_flags, strip_terminator
from pop3tap.protocol._pending import Pending
from pop3tap.protocol._requests import ClientSide
from pop3tap.protocol._sasl import add_sasl_step, count_challenges, sasl_steps
from pop3tap.protocol._state import SessionPhase, Trigger

#: Enum members as module constants: a class attribute lookup per use costs on the hot path.
_CONTINUE = Status.CONTINUE
_ERR = Status.ERR
_GREETING = SessionPhase.GREETING
_LOST = SessionPhase.LOST
_OPAQUE = SessionPhase.OPAQUE
_NO_BARRIER = Barrier.NONE
_NO_COUNTER = Counter.NONE
_OK = Status.OK
_QUIT = Counter.QUIT
_STLS = Barrier.STLS
_TRANSACTION = SessionPhase.TRANSACTION

_STATUS_BY_TOKEN = {"+OK": Status.OK, "-ERR": Status.ERR, "+": Status.CONTINUE}


def _add_flag(pending: Pending, flag: Flag) -> None:
    pending.flags = shared_flags(pending.flags | {flag})


class ServerSide(ClientSide):
    """Framing server lines, pairing them, completing exchanges (see the module docstring)."""

    def _parse_server(self, data: bytes, at: float) -> int:
        """Parse a server chunk while pairing goes on; return where parsing stopped."""
        pos = 0
        size = len(data)
        base = self._server_offset
        while pos < size and self._phase is not _OPAQUE and self._phase is not _LOST:
            body = self._body
            if body is not None:
                end = body.scan(data, pos, base, self._body_listener)
                if end < 0:
                    return size
                self._body = None
                self._complete(body.pending, at, base + end, body)
                self._drain_client_queue()
                pos = end
                continue
            line_open = self._server_line.length > 0
            if self._anomalies.budget <= 0 and self._phase is not _GREETING and not line_open:
                pos = self._skip_noise(data, pos, at)
                if pos >= size:
                    break
            head = self._queue.commands[0] if self._queue.commands else None
            if head is not None and head.sasl_omitted and not line_open:
                sasl = opens_sasl(head.verb)
                pos = count_challenges(self._queue, data, pos, self._masker, sasl=sasl)
                if pos >= size:
                    break
            newline = data.find(b"\n", pos)
            if newline < 0:
                self._server_line.add(data, pos, size, at, base + pos)
                return size
            self._server_line.add(data, pos, newline + 1, at, base + pos)
            pos = newline + 1
            self._finish_server_line(at, base + pos)
        return pos

    def _finish_server_line(self, at: float, end: int) -> None:
        kept, length, started_at, start = self._server_line.take()
        text, flags = strip_terminator(kept, length, self._max_line)
        if flags:
            self._summary.anomalies += 1
        if self._phase is _GREETING:
            self._advance(Trigger.GREETING)
            self._on_greeting(text, flags, at, start, end)
            return
        token, rest = parse_status(text)
        status = _STATUS_BY_TOKEN.get(token) if token is not None else None
        self._drain_client_queue()
        queue = self._queue
        pending = queue.commands[0] if queue.commands else None
        if pending is None:
            self._on_line_without_command(text, status, at, start, end)
            return
        # RFC 2595 §4: only +OK starts TLS. Any other line ends the STLS wait, so the
        # client lines held behind it are released instead of held forever.
        stls = pending.barrier is _STLS
        stls_refused = stls and status is not _OK
        if not stls_refused and (
            status is None or (status is _CONTINUE and not opens_sasl(pending.verb))
        ):
            self._stray(text, at, start, end)
            return
        if pending.first_byte_at is None:
            pending.first_byte_at = at if started_at is None else started_at
            pending.response_start = start
        if flags:
            pending.flags = shared_flags(pending.flags | flags)
        if stls_refused and status is not _ERR:
            self._summary.anomalies += 1
            _add_flag(pending, Flag.STRAY)
        elif status is _CONTINUE:
            if add_sasl_step(pending, "+", str(len(rest))):
                self._events.append(SaslChallenge(at=at, seq=pending.seq, length=len(rest)))
            pending.awaiting_sasl = True
            self._drain_client_queue()
            return
        queue.commands.popleft()
        pending.status = status
        pending.first_line = decode_text(text)
        pending.resp_code = None if rest is text else find_resp_code(rest)
        pending.awaiting_sasl = False
        if status is _OK and pending.multiline:
            queue.commands.appendleft(pending)  # stays at the head until the body ends
            self._body = Body(pending=pending, start=end)
            return
        self._complete(pending, at, end, None)
        if status is _OK and stls:
            self._start_tls(pending, at, end)
            return
        self._drain_client_queue()

    def _stray(self, text: bytes, at: float, start: int, end: int) -> None:
        self._summary.anomalies += 1
        self._distrust()
        self._anomalies.report(
            StrayLine(
                at=at, direction=Direction.SERVER, text=decode_text(text), start=start, end=end
            ),
            at,
            end - start,
        )

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
        if status is None or self._anomalies.budget <= 0:
            self._stray(text, at, start, end)
            return
        self._summary.anomalies += 1
        self._distrust()
        self._anomalies.report(
            UnsolicitedLine(at=at, text=decode_text(text), status=status, start=start, end=end),
            at,
            end - start,
        )

    def _complete(self, pending: Pending, at: float, response_end: int, body: Body | None) -> None:
        self._queue.release(pending)
        if pending.barrier is not _NO_BARRIER and pending.status is not _OK:
            # A +OK moves the phase on as a login (SASL) or a switch to TLS (STLS).
            self._advance(Trigger.BARRIER_ENDED)
        body_lines = body_bytes = 0
        if body is not None:
            commands = self._queue.commands
            if commands and commands[0] is pending:
                commands.popleft()
            body_lines, body_bytes = body.measure()
            if body.bare_lf:
                _add_flag(pending, Flag.BARE_LF)
        if pending.status is _OK and (pending.login or pending.counter is not _NO_COUNTER):
            self._count_ok(pending, body_bytes)
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
                sasl=sasl_steps(pending),
            )
        )

    def _count_ok(self, pending: Pending, body_bytes: int) -> None:
        counter = pending.counter
        in_transaction = self._phase is _TRANSACTION
        self._summary.count_ok(counter, pending.login, body_bytes, in_transaction=in_transaction)
        if pending.login:
            self._advance(Trigger.LOGIN)
        elif counter is _QUIT:
            self._advance(Trigger.QUIT_OK)

    def _start_tls(self, pending: Pending, at: float, server_switch: int) -> None:
        client_trailing = sum(line.end - line.start for line in self._queue.held)
        client_trailing += self._client_line.length
        # Client lines still held are injected plaintext (or never answered): masked now,
        # so they are written before the switch.
        self._masker.abandon()
        self._advance(Trigger.TLS_STARTED)
        self._events.append(
            StartTls(
                at=at,
                seq=pending.seq,
                client_trailing=client_trailing,
                # Plaintext already received beyond the switch in this chunk: known now,
                # so the event is complete when it is emitted.
                server_trailing=max(0, self._server_chunk_end - server_switch),
                client_switch=pending.request_end,
                server_switch=server_switch,
            )
        )

    def _skip_noise(self, data: bytes, pos: int, at: float) -> int:
        """Past the anomaly budget, at a server line start: skip the complete lines that
        cannot pair with anything in one C-level search, counting them; return where
        normal parsing resumes (a possible status line, or the partial last line)."""
        self._drain_client_queue()
        last = data.rfind(b"\n", pos)
        if last < 0:
            return pos
        stop = last + 1
        commands = self._queue.commands
        if commands:
            head = commands[0]
            if head.barrier is _STLS:
                return pos  # any line answers STLS
            auth = opens_sasl(head.verb)
            at_line = AUTH_LINE if auth else STATUS_LINE
            after_lf = AUTH_AFTER_LF if auth else STATUS_AFTER_LF
            if at_line.match(data, pos):
                return pos
            found = after_lf.search(data, pos, stop)
            if found is not None:
                stop = found.start() + 1
        lines = data.count(b"\n", pos, stop)
        self._summary.anomalies += lines
        self._anomalies.suppress(lines, stop - pos, at)
        return stop
