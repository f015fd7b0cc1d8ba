"""The pending FIFO: client lines held back, commands waiting for answers, and barriers.

Responses come back in command order, one per command, even when the client pipelines
(RFC 2449 §6.6), so unanswered commands form one FIFO. Client lines sent behind a barrier
(STLS, ``AUTH mechanism``; :func:`~._commands.barrier_of`) cannot be classified until it is
answered and wait in a second queue. Both are bounded in number and in bytes: each entry is
charged its kept bytes plus :data:`ENTRY_COST`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from pop3tap.protocol._commands import Barrier, Counter
from pop3tap.protocol._events import Flag, Status

#: Enum members as module constants: a class attribute lookup per use costs on the hot path.
_NO_BARRIER = Barrier.NONE
_STLS = Barrier.STLS

#: Unanswered commands (and held-back client lines) kept before pairing is given up.
DEFAULT_MAX_PENDING = 1024
#: Bytes those may hold (each is charged its kept line bytes plus :data:`ENTRY_COST`).
DEFAULT_MAX_PENDING_BYTES = 256 << 10
#: What one pending entry's Python objects cost, charged on top of its line bytes.
ENTRY_COST = 200


@dataclass(slots=True, init=False)
class ClientLine:
    """A client line not yet classified (held behind a barrier, or about to be)."""

    text: bytes
    at: float
    start: int
    end: int
    flags: frozenset[Flag]
    pipelined: bool
    #: What it is charged against ``max_pending_bytes``.
    cost: int = ENTRY_COST
    #: The line was cut at the length limit with a lone CR in it: what followed the CR
    #: (not kept) may have been an AUTH.
    may_open_auth: bool = False

    def __init__(
        self,
        text: bytes,
        at: float,
        start: int,
        end: int,
        flags: frozenset[Flag],
        pipelined: bool,
        cost: int = ENTRY_COST,
        may_open_auth: bool = False,
    ) -> None:
        self.text = text
        self.at = at
        self.start = start
        self.end = end
        self.flags = flags
        self.pipelined = pipelined
        self.cost = cost
        self.may_open_auth = may_open_auth


@dataclass(slots=True, init=False)
class Pending:
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
    barrier: Barrier
    #: A ``+OK`` logs the user in (the command table's rule).
    login: bool
    #: The summary counter a ``+OK`` moves.
    counter: Counter
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

    def __init__(
        self,
        seq: int,
        verb: str,
        shown_verb: str,
        masked_args: str,
        sent_at: float,
        pipelined: bool,
        request_start: int,
        request_end: int,
        has_args: bool,
        multiline: bool,
        barrier: Barrier,
        login: bool,
        counter: Counter,
        cost: int,
        flags: frozenset[Flag] = frozenset(),
        first_byte_at: float | None = None,
        response_start: int = -1,
        status: Status | None = None,
        first_line: str = "",
        resp_code: str | None = None,
        sasl: list[tuple[str, str]] | None = None,
        sasl_omitted: int = 0,
        awaiting_sasl: bool = False,
    ) -> None:
        self.seq = seq
        self.verb = verb
        self.shown_verb = shown_verb
        self.masked_args = masked_args
        self.sent_at = sent_at
        self.pipelined = pipelined
        self.request_start = request_start
        self.request_end = request_end
        self.has_args = has_args
        self.multiline = multiline
        self.barrier = barrier
        self.login = login
        self.counter = counter
        self.cost = cost
        self.flags = flags
        self.first_byte_at = first_byte_at
        self.response_start = response_start
        self.status = status
        self.first_line = first_line
        self.resp_code = resp_code
        self.sasl = sasl
        self.sasl_omitted = sasl_omitted
        self.awaiting_sasl = awaiting_sasl


class PendingQueue:
    """Held client lines, unanswered commands, open barriers, and what they cost."""

    __slots__ = (
        "commands",
        "held",
        "max_bytes",
        "max_entries",
        "open_barriers",
        "open_sasl",
        "open_stls",
        "used_bytes",
    )

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        #: Client lines not classified yet, oldest first.
        self.held: deque[ClientLine] = deque()
        #: Commands waiting for (the rest of) their answers, oldest first.
        self.commands: deque[Pending] = deque()
        #: Open barriers among ``commands``: all, STLS, ``AUTH mechanism``.
        self.open_barriers = 0
        self.open_stls = 0
        self.open_sasl = 0
        #: Charged bytes of both queues together.
        self.used_bytes = 0

    @property
    def busy(self) -> bool:
        """Lines or commands still wait."""
        return bool(self.commands or self.held)

    def barrier_open(self, kind: Barrier | None = None) -> bool:
        """A barrier (of ``kind``, or any) waits for its answer."""
        if kind is None:
            return self.open_barriers > 0
        return (self.open_stls if kind is _STLS else self.open_sasl) > 0

    def hold(self, line: ClientLine) -> None:
        """Queue a client line until it can be classified."""
        self.used_bytes += line.cost
        self.held.append(line)

    def take_held(self) -> ClientLine:
        """The oldest held client line, no longer charged."""
        line = self.held.popleft()
        self.used_bytes -= line.cost
        return line

    def push(self, pending: Pending, line_cost: int) -> None:
        """A classified command replaces its client line's charge."""
        self.used_bytes += pending.cost - line_cost
        self.commands.append(pending)
        if pending.barrier is not _NO_BARRIER:
            self._count_barrier(pending.barrier, 1)

    def release(self, pending: Pending) -> None:
        """A command is complete: its charge and its barrier go."""
        self.used_bytes -= pending.cost
        if pending.barrier is not _NO_BARRIER:
            self._count_barrier(pending.barrier, -1)

    def _count_barrier(self, kind: Barrier, step: int) -> None:
        self.open_barriers += step
        if kind is _STLS:
            self.open_stls += step
        else:
            self.open_sasl += step

    def held_overflow(self) -> str | None:
        """Why pairing must be given up after a client line was held, or None."""
        if len(self.held) > self.max_entries:
            return "more client lines held back than the parser keeps"
        if self.used_bytes > self.max_bytes:
            return "unanswered commands and held-back lines hold more bytes than the parser keeps"
        return None

    def commands_overflow(self) -> str | None:
        """Why pairing must be given up after a command was queued, or None."""
        if len(self.commands) > self.max_entries:
            return "more unanswered commands than the parser keeps"
        return None

    def drop_held(self) -> None:
        """Forget the held client lines (plaintext before a TLS switch)."""
        for line in self.held:
            self.used_bytes -= line.cost
        self.held.clear()

    def clear(self) -> None:
        """Forget everything (pairing given up)."""
        self.held.clear()
        self.commands.clear()
        self.used_bytes = 0
        self.open_barriers = self.open_stls = self.open_sasl = 0
