"""Faults in the relay (sans-IO): which server bytes a fault hits, and what to do with them.

The relay knows where each answer begins only after parsing, and it normally forwards
server bytes before it parses them. While a fault waits for its answer, the relay parses
first and asks :class:`FaultGate` what to do with each chunk: a list of :class:`Step`
values (send these bytes, sleep, pace, send a line of our own, drop, end the session).

An answer's start is the server offset when its command was parsed, if every earlier
command was answered by then; otherwise it is where the previous answer ends (RFC 1939
§3: answers come in command order, so the pairing gives that offset). Its end is known
once the answer is complete.

The relay never sends the server anything for a fault: a fault that ends the session
closes both legs, and the server never sees a QUIT (RFC 1939 §6: nothing is deleted).
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

from pop3tap.faults import ConnectionFaults, Fault, FaultAction, GarbleState, garble_piece

__all__ = ["Armed", "FaultGate", "Step", "StepKind"]


class StepKind(enum.Enum):
    SEND = "send"
    SLEEP = "sleep"
    PACE = "pace"
    #: End the session: close both legs (``reset``: with a TCP reset to the client).
    END = "end"


@dataclass(frozen=True, slots=True)
class Step:
    kind: StepKind
    data: bytes = b""
    #: Seconds (sleep) or octets per second (pace).
    amount: float = 0.0
    #: Why the session ends (END), for the close reason.
    reason: str = ""
    reset: bool = False
    #: The fault this step carries out (logged once, at its first step).
    fault: Fault | None = None
    seq: int = 0


@dataclass(slots=True)
class Armed:
    """A fault waiting for (or acting on) the answer to command ``seq`` (0: the greeting)."""

    seq: int
    fault: Fault
    start: int | None
    end: int | None = None
    #: Octets of the answer handled so far (cut counts them).
    done: int = 0
    #: The fault's first step was taken (logged).
    begun: bool = False
    #: Where a garbled answer is, between pieces (status line, line starts).
    garbling: GarbleState | None = None


class FaultGate:
    """The faults of one relay session."""

    def __init__(self, faults: ConnectionFaults) -> None:
        self.faults = faults
        self.armed: deque[Armed] = deque()
        #: The highest command seq whose answer is complete (0: the greeting).
        self.completed = -1
        #: A ``stall`` began: no more server bytes reach the client.
        self.stalled = False

    @property
    def active(self) -> bool:
        """Whether server bytes must be parsed before they are forwarded."""
        return bool(self.armed) or self.stalled

    def on_greeting_expected(self) -> Armed | None:
        fault = self.faults.choose("greeting")
        if fault is None:
            return None
        armed = Armed(0, fault, start=0)
        self.armed.append(armed)
        return armed

    def on_greeting(self, end: int) -> None:
        self.completed = max(self.completed, 0)
        self._ended(0, end)

    def on_command(self, seq: int, verb: str, args: bytes, server_offset: int) -> Armed | None:
        if verb == "STLS":
            # Its +OK is where the relay switches to TLS on both legs (RFC 2595 §4): no
            # fault can act there, so none is chosen (nor recorded as if it were).
            return None
        fault = self.faults.choose(verb, args)
        if fault is None:
            return None
        start = server_offset if self.completed >= seq - 1 else None
        armed = Armed(seq, fault, start=start)
        self.armed.append(armed)
        return armed

    def on_exchange(self, seq: int, response_start: int, response_end: int) -> None:
        self.completed = max(self.completed, seq)
        if not self.armed:
            return
        for armed in self.armed:
            if armed.seq == seq and armed.start is None:
                armed.start = response_start
            if armed.seq == seq + 1 and armed.start is None:
                armed.start = response_end
        self._ended(seq, response_end)

    def _ended(self, seq: int, end: int) -> None:
        for armed in self.armed:
            if armed.seq == seq:
                armed.end = end

    def disarm(self) -> list[Armed]:
        """Pairing was lost: no answer can be found any more; the faults are dropped."""
        dropped = list(self.armed)
        self.armed.clear()
        return dropped

    def plan(self, start: int, data: bytes) -> list[Step]:
        """What to do with server bytes ``data`` that begin at stream offset ``start``."""
        steps: list[Step] = []
        position = 0
        while position < len(data):
            if self.stalled:
                return steps  # dropped: the client never sees them
            armed = self.armed[0] if self.armed else None
            if armed is None or armed.start is None:
                steps.append(Step(StepKind.SEND, data[position:]))
                return steps
            here = start + position
            if armed.end is not None and armed.end <= here and armed.start <= here:
                # The answer passed by while something else decided (an STLS switch).
                self.armed.popleft()
                continue
            if armed.start > here:
                upto = min(len(data), armed.start - start)
                steps.append(Step(StepKind.SEND, data[position:upto]))
                position = upto
                continue
            stop = (
                len(data) if armed.end is None else min(len(data), max(position, armed.end - start))
            )
            reaches_end = armed.end is not None and start + stop >= armed.end
            ending = self._apply(armed, data[position:stop], steps, reaches_end)
            if ending:
                return steps
            position = stop
            if armed.end is not None and start + position >= armed.end:
                self.armed.popleft()
        return steps

    def _apply(self, armed: Armed, piece: bytes, steps: list[Step], reaches_end: bool) -> bool:
        """Steps for one piece of the faulted answer; True when the session ends."""
        fault = armed.fault
        action = fault.action
        first = not armed.begun
        armed.begun = True
        note = fault if first else None
        if action is FaultAction.DELAY:
            if first:
                steps.append(Step(StepKind.SLEEP, amount=fault.amount, fault=note, seq=armed.seq))
            steps.append(Step(StepKind.SEND, piece))
        elif action is FaultAction.SLOW:
            steps.append(Step(StepKind.PACE, piece, amount=fault.amount, fault=note, seq=armed.seq))
        elif action is FaultAction.CUT:
            room = max(0, int(fault.amount) - armed.done)
            steps.append(Step(StepKind.SEND, piece[:room], fault=note, seq=armed.seq))
            armed.done += len(piece[:room])
            if armed.done >= int(fault.amount) or reaches_end:  # a short answer: cut at its end
                steps.append(
                    Step(
                        StepKind.END, reason=f"fault: cut after {armed.done} octets", seq=armed.seq
                    )
                )
                return True
        elif action in (FaultAction.RESET, FaultAction.CLOSE):
            reset = action is FaultAction.RESET
            steps.append(
                Step(
                    StepKind.END,
                    reason=f"fault: {action.value}",
                    reset=reset,
                    fault=note,
                    seq=armed.seq,
                )
            )
            return True
        elif action is FaultAction.STALL:
            self.stalled = True
            steps.append(Step(StepKind.SEND, b"", fault=note, seq=armed.seq))
        elif action is FaultAction.ERR:
            if first:
                line = b"-ERR " + fault.text.encode() + b"\r\n"
                steps.append(Step(StepKind.SEND, line, fault=note, seq=armed.seq))
            # the server's own answer is dropped up to its end
        elif action is FaultAction.GARBLE:
            if armed.garbling is None:
                # Only a whole single-line answer in hand may have its text changed; an
                # answer whose status line is all that has come may still have a body.
                newline = piece.find(b"\n")
                single = reaches_end and newline + 1 == len(piece)
                armed.garbling = GarbleState(status_text=single)
            changed = garble_piece(piece, fault.seed or 0, armed.garbling)
            steps.append(Step(StepKind.SEND, changed, fault=note, seq=armed.seq))
        else:  # UNSOLICITED
            line = fault.text.encode() + b"\r\n"
            steps.append(Step(StepKind.SEND, line, fault=note, seq=armed.seq))
            steps.append(Step(StepKind.END, reason="fault: unsolicited line, then closed"))
            return True
        return False
