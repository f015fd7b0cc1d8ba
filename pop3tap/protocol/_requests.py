"""The client side of the observer: client bytes framed into lines, classified in order.

A client line is a command unless an earlier command holds it back: after ``AUTH
mechanism`` the next line may be SASL data (RFC 5034 §4), and after STLS nothing may
follow until TLS is up (RFC 2595 §4). Held lines wait in the pending FIFO and are
classified lazily, in the order the server consumes them. Whether a line is shown clear
never depends on the pairing alone: after a line holding AUTH, only a known command with
valid arguments is shown (:func:`~._commands.is_known_command`).
"""

from __future__ import annotations

from pop3tap.protocol._commands import (
    SECRET_PLACEHOLDER,
    Barrier,
    describe_command,
    is_known_command,
    known_verbs,
    opens_auth,
    rules_for,
    split_command,
)
from pop3tap.protocol._core import ObserverCore
from pop3tap.protocol._events import CommandSent, Direction, Flag
from pop3tap.protocol._lines import shared_flags, strip_terminator
from pop3tap.protocol._masking import Verdict
from pop3tap.protocol._pending import ENTRY_COST, ClientLine, Pending
from pop3tap.protocol._sasl import sasl_response
from pop3tap.protocol._state import SessionPhase, Trigger

#: Enum members as module constants: a class attribute lookup per use costs on the hot path.
_LOST = SessionPhase.LOST
_NO_BARRIER = Barrier.NONE
_STLS = Barrier.STLS

#: Verbs kept as one shared string each (a flood of commands does not copy them).
_SHARED_VERBS = {verb: verb for verb in ("", *known_verbs())}
_BARRIER_TRIGGERS = {Barrier.SASL: Trigger.AUTH_SENT, _STLS: Trigger.STLS_SENT}


class ClientSide(ObserverCore):
    """Framing and classifying client lines (see the module docstring)."""

    def _split_client_lines(self, data: bytes, at: float) -> None:
        assembler = self._client_line
        base = self._client_offset
        pos = 0
        size = len(data)
        while pos < size:
            if self._phase is _LOST:
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

    def _on_client_line(
        self, at: float, end: int, kept: bytes | None = None, length: int = 0, start: int = 0
    ) -> None:
        """A client line ended at ``end``: the assembled one, or ``kept`` (a whole line)."""
        lone_cr_dropped = False
        if kept is None:
            lone_cr_dropped = self._client_line.lone_cr_dropped
            kept, length, _started_at, start = self._client_line.take()
        text, flags = strip_terminator(kept, length, self._max_line)
        # Past the limit the line's end is not kept: with a lone CR in it, the part after
        # the CR (an AUTH for a server that ends lines there) cannot be classified.
        may_open_auth = Flag.OVERLONG in flags and (lone_cr_dropped or b"\r" in text)
        if flags:
            self._summary.anomalies += 1
        queue = self._queue
        queue.hold(
            ClientLine(
                text=text,
                at=at,
                start=start,
                end=end,
                flags=shared_flags(flags),
                pipelined=bool(queue.commands or queue.held),
                cost=len(text) + ENTRY_COST,
                may_open_auth=may_open_auth,
            )
        )
        self._drain_client_queue()
        # Bounded memory (the test is PendingQueue.held_overflow's, inline: the hot path).
        if len(queue.held) > queue.max_entries or queue.used_bytes > queue.max_bytes:
            self._lose_pairing(at, queue.held_overflow() or "")

    def _drain_client_queue(self, *, force_commands: bool = False) -> None:
        queue = self._queue
        while queue.held:
            head = queue.commands[0] if queue.commands else None
            if head is not None and head.awaiting_sasl:
                head.awaiting_sasl = False
                event = sasl_response(head, queue.take_held(), self._masker)
                if event is not None:
                    self._events.append(event)
                continue
            if not force_commands and queue.open_barriers:
                return
            self._on_command(queue.held.popleft())  # its charge passes to the command

    def _on_command(self, line: ClientLine) -> None:
        text = line.text
        lone_cr = text.find(b"\r")
        verb, args = split_command(text if lone_cr < 0 else text[:lone_cr])
        verb = _SHARED_VERBS.get(verb, verb)
        seq = self._next_seq
        self._next_seq += 1
        self._summary.commands += 1
        queue = self._queue
        if self._auth_seen and (
            self._distrusted
            or queue.open_sasl  # forced at the end, never answered
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
        rules = rules_for(verb, args)
        barrier = rules.barrier
        pending = Pending(
            seq=seq,
            verb=verb,
            shown_verb=shown_verb,
            masked_args=masked,
            sent_at=line.at,
            pipelined=line.pipelined,
            request_start=line.start,
            request_end=line.end,
            has_args=bool(args.strip()),
            multiline=rules.multiline,
            barrier=barrier,
            login=rules.login,
            counter=rules.counter,
            # The raw line is dropped now; the verb and the masked text are what stay.
            cost=len(verb) + len(masked) + ENTRY_COST,
            flags=shared_flags(line.flags | {Flag.PIPELINED}) if line.pipelined else line.flags,
        )
        queue.push(pending, line.cost)
        if barrier is not _NO_BARRIER:
            self._advance(_BARRIER_TRIGGERS[barrier])
        if len(queue.commands) > queue.max_entries:  # bounded memory
            self._lose_pairing(line.at, queue.commands_overflow() or "")
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
