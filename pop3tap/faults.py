"""Protocol-level faults: where a server misbehaves and how (sans-IO: parsing and choice).

A fault spec names *where* (the greeting, a verb, a verb with its argument, the Nth
occurrence of a verb, any command) and *what* (a delay, a slow answer, a cut, a reset, a
stall, a close, an ``-ERR`` in place of the answer, garbled body bytes, an unsolicited line
and a close), with optional ``p=`` (probability, with ``seed=``) and ``times=`` (at most so
many injections). The grammar (docs/faults.md)::

    SPEC    := WHERE ":" ACTION { "," OPTION }
    WHERE   := "greeting" | "*" | VERB [ "#" N ] | VERB " " ARGUMENTS
    ACTION  := "delay=" DURATION | "slow=" RATE | "cut=" OCTETS | "reset" | "stall" | "close"
             | "err=" TEXT | "garble" | "unsolicited=" TEXT
    OPTION  := "p=" PROBABILITY | "seed=" INTEGER | "times=" INTEGER

TEXT may be double-quoted (to hold commas or colons). Durations take ``ms``, ``s`` or ``m``
(a bare number is seconds); rates take ``B/s``, ``KiB/s``, ``MiB/s``, ``KB/s`` or ``MB/s``.

The counters behind ``#N`` and ``p=`` are per connection (so the same seed hits the same
exchanges of the same session in every run); ``times=`` counts over the whole server.
Which responses a fault may touch follows RFC 1939 §3: a response is a status line and,
for multi-line answers, a body ended by ``.`` CRLF; ``garble`` changes body octets only,
keeping the framing and the size.
"""

from __future__ import annotations

import enum
import random
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "ConnectionFaults",
    "Fault",
    "FaultAction",
    "FaultError",
    "FaultPlan",
    "GarbleState",
    "check_relay_fault",
    "garble",
    "garble_piece",
    "parse_fault",
]


class FaultError(ValueError):
    """A fault spec that cannot be parsed; the message names the bad part."""


class FaultAction(enum.Enum):
    """What a fault does to the answer it hits."""

    #: Wait before the first byte of the answer.
    DELAY = "delay"
    #: Send the answer at a fixed rate.
    SLOW = "slow"
    #: Send the first N octets of the answer, then close (FIN).
    CUT = "cut"
    #: A TCP reset instead of the answer.
    RESET = "reset"
    #: Never answer; the connection stays open until the client leaves.
    STALL = "stall"
    #: Close (FIN) instead of the answer.
    CLOSE = "close"
    #: One ``-ERR`` line instead of the answer.
    ERR = "err"
    #: Flip octets of the answer's body (same size, same framing).
    GARBLE = "garble"
    #: One line instead of the answer, then close (as servers do on shutdown).
    UNSOLICITED = "unsolicited"


#: Actions that change the bytes of the answer (the relay needs ``--fault-rewrite``).
REWRITING = frozenset({FaultAction.ERR, FaultAction.GARBLE, FaultAction.UNSOLICITED})
#: Actions that end the connection once they are carried out.
ENDING = frozenset({FaultAction.CUT, FaultAction.RESET, FaultAction.CLOSE, FaultAction.UNSOLICITED})

_VERB = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,15}")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m)?", re.IGNORECASE)
_RATE = re.compile(r"(\d+(?:\.\d+)?)\s*(B|KiB|MiB|KB|MB)?/s", re.IGNORECASE)
_RATE_UNITS = {"b": 1, "kib": 1024, "mib": 1024 * 1024, "kb": 1000, "mb": 1000 * 1000}
_MAX_TEXT = 400


@dataclass(frozen=True, slots=True)
class Fault:
    """One parsed fault spec."""

    #: The spec as given (for logs and capture records).
    spec: str
    action: FaultAction
    #: ``greeting``, ``*`` or an upper-case verb.
    verb: str
    #: Arguments that must be equal (whitespace-normalised), or None for any.
    arguments: bytes | None = None
    #: Hit only the Nth occurrence of the verb in a connection (1-based), or None.
    occurrence: int | None = None
    #: Probability of hitting a matching command (1.0: always).
    probability: float = 1.0
    seed: int | None = None
    #: At most this many injections over the whole server, or None.
    times: int | None = None
    #: Seconds (delay), octets per second (slow), octets (cut).
    amount: float = 0.0
    #: The text of ``err`` and ``unsolicited``.
    text: str = ""

    @property
    def rewrites(self) -> bool:
        """Whether the fault changes the answer's bytes (not only its timing or transport)."""
        return self.action in REWRITING

    def matches(self, verb: str, arguments: bytes) -> bool:
        """Whether a command (upper-case verb, raw arguments) is the kind this fault hits."""
        if self.verb == "*":
            return verb != "greeting"
        if self.verb != verb:
            return False
        return self.arguments is None or b" ".join(arguments.split()) == self.arguments


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if quoted:
        raise FaultError(f"unclosed quote in {text!r}")
    parts.append("".join(current))
    return parts


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    if any(c in value for c in "\r\n\0"):
        raise FaultError("fault text must not hold CR, LF or NUL")
    if len(value) > _MAX_TEXT:
        raise FaultError(f"fault text longer than {_MAX_TEXT} characters")
    return value


def _duration(value: str) -> float:
    found = _DURATION.fullmatch(value.strip())
    if found is None:
        raise FaultError(f"bad duration {value!r} (use e.g. 500ms, 2s, 1m)")
    number = float(found.group(1))
    unit = (found.group(2) or "s").lower()
    return number / 1000 if unit == "ms" else number * 60 if unit == "m" else number


def _rate(value: str) -> float:
    found = _RATE.fullmatch(value.strip())
    if found is None:
        raise FaultError(f"bad rate {value!r} (use e.g. 1KiB/s, 200B/s)")
    rate = float(found.group(1)) * _RATE_UNITS[(found.group(2) or "B").lower()]
    if rate <= 0:
        raise FaultError(f"rate must be positive, not {value!r}")
    return rate


def _where(text: str) -> tuple[str, bytes | None, int | None]:
    where = text.strip()
    if not where:
        raise FaultError("missing where (greeting, *, a verb, VERB#N or 'VERB ARGS')")
    if where.lower() == "greeting" or where == "*":
        return where.lower(), None, None
    if "#" in where:
        verb, _hash, number = where.partition("#")
        if not _VERB.fullmatch(verb) or not number.isdigit() or int(number) < 1:
            raise FaultError(f"bad where {where!r} (VERB#N counts from 1, e.g. RETR#3)")
        return verb.upper(), None, int(number)
    verb, _space, arguments = where.partition(" ")
    if not _VERB.fullmatch(verb):
        raise FaultError(f"bad verb {verb!r} in where {where!r}")
    args = b" ".join(arguments.encode().split()) if arguments.strip() else None
    return verb.upper(), args, None


def _action(text: str) -> tuple[FaultAction, float, str]:
    name, equals, value = text.strip().partition("=")
    try:
        action = FaultAction(name.strip().lower())
    except ValueError:
        known = ", ".join(a.value for a in FaultAction)
        raise FaultError(f"unknown fault {name.strip()!r} (one of: {known})") from None
    takes_value = action in (
        FaultAction.DELAY,
        FaultAction.SLOW,
        FaultAction.CUT,
        FaultAction.ERR,
        FaultAction.UNSOLICITED,
    )
    if takes_value and not equals:
        raise FaultError(f"{action.value} needs a value, e.g. {_EXAMPLES[action]}")
    if not takes_value and equals:
        raise FaultError(f"{action.value} takes no value")
    if action is FaultAction.DELAY:
        return action, _duration(value), ""
    if action is FaultAction.SLOW:
        return action, _rate(value), ""
    if action is FaultAction.CUT:
        if not value.strip().isdigit():
            raise FaultError(f"cut takes a number of octets, not {value!r}")
        return action, float(int(value.strip())), ""
    if action in (FaultAction.ERR, FaultAction.UNSOLICITED):
        return action, 0.0, _unquote(value)
    return action, 0.0, ""


_EXAMPLES = {
    FaultAction.DELAY: "delay=2s",
    FaultAction.SLOW: "slow=1KiB/s",
    FaultAction.CUT: "cut=1000",
    FaultAction.ERR: 'err="[IN-USE] Mailbox locked"',
    FaultAction.UNSOLICITED: 'unsolicited="-ERR [SYS/TEMP] shutting down"',
}


def parse_fault(spec: str) -> Fault:
    """Parse one fault spec (see the module docstring).

    Raises:
        FaultError: one line naming the bad part.
    """
    parts = _split_outside_quotes(spec, ":")
    if len(parts) < 2:
        raise FaultError(f"fault {spec!r}: expected WHERE:WHAT, e.g. RETR#2:cut=500")
    where_text, what_text = parts[0], ":".join(parts[1:])
    try:
        verb, arguments, occurrence = _where(where_text)
        items = _split_outside_quotes(what_text, ",")
        action, amount, text = _action(items[0])
        options: dict[str, str] = {}
        for item in items[1:]:
            key, equals, value = item.strip().partition("=")
            if not equals or key.strip().lower() not in ("p", "seed", "times"):
                raise FaultError(f"unknown option {item.strip()!r} (p=, seed=, times=)")
            options[key.strip().lower()] = value.strip()
        probability = float(options.get("p", "1"))
        if not 0.0 < probability <= 1.0:
            raise FaultError(f"p must be in (0, 1], not {options['p']!r}")
        seed = int(options["seed"]) if "seed" in options else None
        times = int(options["times"]) if "times" in options else None
        if times is not None and times < 1:
            raise FaultError("times must be at least 1")
    except FaultError as exc:
        raise FaultError(f"fault {spec!r}: {exc}") from None
    except ValueError:
        raise FaultError(f"fault {spec!r}: p, seed and times take numbers") from None
    if verb == "greeting" and action is FaultAction.GARBLE:
        raise FaultError(f"fault {spec!r}: garble changes a body; the greeting has none")
    return Fault(
        spec=spec.strip(),
        action=action,
        verb=verb,
        arguments=arguments,
        occurrence=occurrence,
        probability=probability,
        seed=seed,
        times=times,
        amount=amount,
        text=text,
    )


class FaultPlan:
    """The faults of one server; thread-safe, so a test can change them while it runs."""

    def __init__(self, faults: Iterable[Fault | str] = ()) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = [parse_fault(f) if isinstance(f, str) else f for f in faults]
        self._used: dict[int, int] = {}

    @property
    def faults(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def add(self, fault: Fault | str) -> Fault:
        parsed = parse_fault(fault) if isinstance(fault, str) else fault
        with self._lock:
            self._faults.append(parsed)
        return parsed

    def clear(self) -> None:
        with self._lock:
            self._faults = []
            self._used = {}

    def take(self, fault: Fault) -> bool:
        """Count one injection of ``fault``; False when its ``times`` are used up."""
        with self._lock:
            used = self._used.get(id(fault), 0)
            if fault.times is not None and used >= fault.times:
                return False
            self._used[id(fault)] = used + 1
            return True

    def __bool__(self) -> bool:
        return bool(self._faults)


@dataclass(slots=True)
class ConnectionFaults:
    """Per-connection state: occurrence counters and seeded random choices."""

    plan: FaultPlan
    connection: int = 0
    _counts: dict[str, int] = field(default_factory=dict)
    _random: dict[int, random.Random] = field(default_factory=dict)

    def choose(self, verb: str, arguments: bytes = b"") -> Fault | None:
        """The fault that hits this command (or ``greeting``), if any; counts it.

        Costs nothing when the plan is empty (no allocation per exchange).
        """
        if not self.plan:
            return None
        count = self._counts.get(verb, 0) + 1
        self._counts[verb] = count
        for fault in self.plan.faults:
            if not fault.matches(verb, arguments):
                continue
            if fault.occurrence is not None and fault.occurrence != count:
                continue
            if fault.probability < 1.0 and self._roll(fault) >= fault.probability:
                continue
            if self.plan.take(fault):
                return fault
        return None

    def _roll(self, fault: Fault) -> float:
        rng = self._random.get(id(fault))
        if rng is None:
            # Seeded per connection: the same seed hits the same exchanges in every run.
            seed = f"{fault.seed}:{self.connection}" if fault.seed is not None else None
            rng = random.Random(seed)
            self._random[id(fault)] = rng
        return rng.random()


@dataclass(slots=True)
class GarbleState:
    """Where in an answer the next octet falls, for an answer garbled piece by piece."""

    #: Whether the status line's text (after the status word) may change: True for a
    #: single-line answer, whose text is all there is to garble.
    status_text: bool = False
    #: The next octet is in the status line.
    in_status: bool = True
    #: The status word (``+OK``, ``-ERR``) has ended.
    after_word: bool = False
    #: The next octet begins a line.
    line_start: bool = True


def garble(response: bytes, seed: int = 0) -> bytes:
    """``response`` with some body octets changed: same length, same lines, same framing.

    Only letters and digits inside body lines change (never CR, LF or a line's first
    octet, so dot-stuffing and the terminator stay intact); a single-line answer changes
    in its text after the status word. The status word itself never changes: it is what a
    client reads first (RFC 1939 §3).
    """
    single_line = response.find(b"\n") + 1 in (0, len(response))
    return garble_piece(response, seed, GarbleState(status_text=single_line))


def garble_piece(piece: bytes, seed: int, state: GarbleState) -> bytes:
    """One piece of an answer garbled as :func:`garble` does; ``state`` carries over."""
    data = bytearray(piece)
    candidates: list[int] = []
    for index, byte in enumerate(data):
        if byte == 0x0A:
            state.in_status = False
            state.line_start = True
            continue
        first = state.line_start
        state.line_start = False
        if not (0x30 <= byte <= 0x39 or 0x41 <= byte <= 0x5A or 0x61 <= byte <= 0x7A):
            if state.in_status and byte == 0x20:
                state.after_word = True
            continue
        if state.in_status:
            if state.status_text and state.after_word:
                candidates.append(index)
        elif not first:
            candidates.append(index)
    if not candidates:
        return bytes(data)
    rng = random.Random(seed)
    for index in rng.sample(candidates, k=max(1, min(len(candidates), len(candidates) // 50))):
        byte = data[index]
        data[index] = byte ^ 0x01 if chr(byte ^ 0x01).isalnum() else byte ^ 0x02
    return bytes(data)


def check_relay_fault(fault: Fault, *, rewrite: bool) -> None:
    """Refuse a fault the relay cannot carry out as asked.

    Raises:
        FaultError: an STLS fault (TLS starts on both legs right after its ``+OK``, RFC
            2595 §4, so no fault can act there), or a rewriting one without ``rewrite``.
    """
    if fault.verb == "STLS":
        raise FaultError(
            f"fault {fault.spec!r}: the relay cannot fault the STLS answer (TLS starts "
            "right after it, RFC 2595 §4); replay can"
        )
    if fault.rewrites and not rewrite:
        raise FaultError(
            f"fault {fault.spec!r}: {fault.action.value} rewrites what the server said; the "
            "relay does that only with --fault-rewrite (fault_rewrite in Python)"
        )


def fault_lines(faults: Sequence[Fault]) -> list[str]:
    """The specs, for a listening log line."""
    return [f.spec for f in faults]


#: ``--fault-preset flaky``: the menu it draws from (docs/faults.md lists it). Each entry is
#: a spec without its seed; the preset's seed picks the entries and seeds each one.
FLAKY_MENU: tuple[str, ...] = (
    "*:delay=300ms,p=0.1",
    "RETR:delay=2s,p=0.05",
    "RETR:slow=16KiB/s,p=0.05",
    "RETR:cut=300,p=0.03",
    "RETR:reset,p=0.02",
    'PASS:err="[IN-USE] Mailbox is locked by another session",p=0.2',
    'USER:err="[SYS/TEMP] Try again later",p=0.05',
    "QUIT:delay=3s,p=0.2",
    'STAT:unsolicited="-ERR [SYS/TEMP] Server shutting down",p=0.02',
    "LIST:close,p=0.02",
)
#: How many menu entries a preset picks.
_FLAKY_PICKS = 4
PRESETS = ("flaky",)


def preset_faults(name: str, seed: int) -> list[str]:
    """The fault specs a preset picks with ``seed`` (the same seed, the same faults).

    Raises:
        FaultError: an unknown preset.
    """
    if name != "flaky":
        raise FaultError(f"unknown fault preset {name!r} (one of: {', '.join(PRESETS)})")
    chooser = random.Random(seed)
    picked = chooser.sample(FLAKY_MENU, _FLAKY_PICKS)
    return [f"{spec},seed={seed + index}" for index, spec in enumerate(picked)]
