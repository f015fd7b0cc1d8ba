"""Matching client commands to recorded exchanges (pure: no trio, no I/O).

Each connection plays one recorded session (:class:`SessionPicker`: ``cycle``, ``once``,
or ``by_user``) and a :class:`Matcher` finds the recorded answer to each client command:

* ``default``: the first not yet played exchange with the same verb and arguments, so
  repeated identical commands are answered in recorded order;
* ``strict``: the client must send exactly the next recorded command;
* ``any``: like default, but once they are all played the last matching one is reused.

Secrets masked in the capture (PASS, the APOP digest, an AUTH initial response; RFC 1939
§7, RFC 5034 §4) match any value: the protocol core decides where they sit
(:func:`~pop3tap.protocol.mask_line`, the rule the capture masker follows). Secrets kept in
the capture must be equal. :class:`Accounting` keeps what was played and what had no answer.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pop3tap._text import printable
from pop3tap.protocol import (
    SECRET_PLACEHOLDER,
    WORD_SEPARATORS,
    Command,
    mask_line,
    printable_command,
    secret_verb,
    split_command,
)
from pop3tap.replay._recorded import RecordedExchange, RecordedSession

SessionsMode = Literal["cycle", "once"]
MatchMode = Literal["default", "strict", "any"]

#: At most this many unmatched commands are kept for the report (the rest are counted).
MAX_UNMATCHED_KEPT = 1000

@dataclass(frozen=True, slots=True)
class UnplayedExchange:
    """A recorded exchange no client asked for."""

    capture: str
    seq: int
    command: str

    def __str__(self) -> str:
        return printable(f"{self.capture} #{self.seq}: {self.command}")


@dataclass(frozen=True, slots=True)
class UnmatchedCommand:
    """A client command that had no recorded answer."""

    capture: str
    command: str
    #: The closest recorded commands and what differed, e.g. ``LIST 2 (arguments differ)``.
    candidates: tuple[str, ...]

    def __str__(self) -> str:
        near = f" (closest: {'; '.join(self.candidates)})" if self.candidates else ""
        return printable(f"{self.capture}: {self.command}{near}")


#: A client line as it may be shown in an ``-ERR`` line or a log: secrets and possible
#: SASL data masked (RFC 5034 §4), printable, bounded (the protocol core's rule).
masked_command = printable_command


def command_key(verb: str, args: bytes, line: bytes, masked: bool) -> bytes:
    """What else but the keyword must be equal for a command line to match a recorded one.

    ``verb`` and ``args`` are ``line`` split by :func:`~pop3tap.protocol.split_command`. In
    a capture that masks secrets, PASS, APOP and AUTH lines are compared as the core's
    :func:`~pop3tap.protocol.mask_line` (the rule the capture masker follows) leaves them:
    the secret is the placeholder wherever it sits, and the clear words before it are
    compared one separator apart, so a recorded masked line and the live line it was masked
    from always get the same key. The SASL mechanism name is case-insensitive (RFC 5034
    §4). Everything else, kept secrets included, must be equal byte for byte.
    """
    if masked and _holds_secret(verb):
        words = mask_line(line).translate(_SEPARATORS_TO_SPACE).split(b" ")
        words = [word for word in words if word][1:]
        if verb == "AUTH" and words:
            words[0] = words[0].upper()
        return b" ".join(words)
    if verb == "AUTH":
        parts = args.split(None, 1)
        if not parts:
            return b""
        mechanism = parts[0].upper()
        return mechanism if len(parts) == 1 else mechanism + b" " + parts[1]
    return args


@functools.lru_cache(maxsize=256)
def _holds_secret(verb: str) -> bool:
    """Whether ``verb`` (upper-cased, as split) is a keyword whose arguments hold a secret,
    as the core's :func:`~pop3tap.protocol.secret_verb` says."""
    keyword = verb.encode("ascii", "replace")
    return secret_verb(keyword) == keyword


def line_key(line: bytes, masked: bool) -> tuple[str, bytes]:
    """The keyword of a command line and its :func:`command_key`."""
    verb, args = split_command(line)
    return verb, command_key(verb, args, line, masked)


def args_key(verb: str, args: bytes, masked: bool) -> bytes:
    """:func:`command_key` of ``VERB args`` (a line already split by
    :func:`~pop3tap.protocol.split_command`)."""
    return line_key(verb.encode("ascii", "replace") + b" " + args, masked)[1]


def exchange_key(ex: RecordedExchange, masked: bool) -> tuple[str, bytes]:
    """What a client command must equal to match ``ex`` (see :func:`line_key`)."""
    if ex.match_verb == SECRET_PLACEHOLDER:  # a line the capture masked whole
        return ex.match_verb, ex.raw_args
    return line_key(ex.line, masked)


_SEPARATORS_TO_SPACE = bytes.maketrans(
    bytes(sorted(WORD_SEPARATORS)), b" " * len(WORD_SEPARATORS)
)

#: The name the matcher had before it was a module of its own (kept for callers).
_args_key = args_key


class Accounting:
    """Which recorded exchanges were played, and which commands had no answer."""

    def __init__(self, sessions: Sequence[RecordedSession]) -> None:
        self.sessions = sessions
        self.counts = [[0] * len(s.exchanges) for s in sessions]
        self.unmatched: list[UnmatchedCommand] = []
        self.unmatched_total = 0
        self._keys: dict[int, list[tuple[str, bytes]]] = {}
        self._playable: dict[int, dict[tuple[str, bytes], tuple[RecordedExchange, ...]]] = {}
        self._stls: dict[int, bool] = {}

    def keys(self, index: int) -> list[tuple[str, bytes]]:
        """The match keys of session ``index``'s exchanges, worked out once for every
        connection that plays it (see :func:`exchange_key`)."""
        keys = self._keys.get(index)
        if keys is None:
            session = self.sessions[index]
            masked = session.secrets == "masked"
            keys = self._keys[index] = [exchange_key(ex, masked) for ex in session.exchanges]
        return keys

    def playable(self, index: int) -> dict[tuple[str, bytes], tuple[RecordedExchange, ...]]:
        """Session ``index``'s exchanges a command can be answered with, by match key, in
        recorded order (worked out once): those the recorded server answered or closed
        at; the recorded client may have left before the server answered its last one."""
        by_key = self._playable.get(index)
        if by_key is None:
            grouped: dict[tuple[str, bytes], list[RecordedExchange]] = {}
            for ex, key in zip(self.sessions[index].exchanges, self.keys(index), strict=True):
                if ex.answered or ex.closes:
                    grouped.setdefault(key, []).append(ex)
            by_key = self._playable[index] = {k: tuple(v) for k, v in grouped.items()}
        return by_key

    def stls(self, index: int) -> bool:
        """Session ``index``'s :attr:`~RecordedSession.stls`, worked out once."""
        found = self._stls.get(index)
        if found is None:
            found = self._stls[index] = self.sessions[index].stls
        return found

    def note_unmatched(self, capture: str, command: str, candidates: tuple[str, ...]) -> None:
        """A command without a recorded answer (the first :data:`MAX_UNMATCHED_KEPT` kept)."""
        self.unmatched_total += 1
        if len(self.unmatched) < MAX_UNMATCHED_KEPT:
            self.unmatched.append(UnmatchedCommand(capture, command, candidates))

    def unplayed(self) -> list[UnplayedExchange]:
        """Answered recorded exchanges that no connection played."""
        out: list[UnplayedExchange] = []
        for session, counts in zip(self.sessions, self.counts, strict=True):
            for ex, count in zip(session.exchanges, counts, strict=True):
                if count == 0 and ex.answered:
                    out.append(UnplayedExchange(session.name, ex.seq, ex.command))
        return out


class Matcher:
    """Matching state of one connection against one recorded session."""

    def __init__(
        self, accounting: Accounting, index: int, *, mode: MatchMode, listen_tls: bool
    ) -> None:
        self.accounting = accounting
        self.index = index
        self.session = accounting.sessions[index]
        self.mode: MatchMode = mode
        self.listen_tls = listen_tls
        self.played = [False] * len(self.session.exchanges)
        #: Whether the STLS phase matters (see :meth:`in_phase`), worked out once.
        self.phased = not listen_tls and accounting.stls(index)
        #: ``strict``: the next exchange expected.
        self.cursor = 0
        #: The connection is past its STLS upgrade (RFC 2595 §4).
        self.after_tls = False
        self._masked = self.session.secrets == "masked"
        self._keys = accounting.keys(index)
        self._playable = accounting.playable(index)

    def switched(self, index: int, answered: Sequence[Command]) -> Matcher:
        """A matcher for another session (``by_user``) that has played ``answered``."""
        other = Matcher(self.accounting, index, mode=self.mode, listen_tls=self.listen_tls)
        for command in answered:
            found = other.find(command)
            if found is not None:
                other.mark(found)
                other.after_tls = other.after_tls or found.starts_tls
        other.after_tls = self.after_tls
        return other

    def in_phase(self, ex: RecordedExchange) -> bool:
        """Whether ``ex`` belongs to the current side of the recorded STLS switch.

        Exchanges recorded before STLS answer only before the upgrade, later ones only
        after it. Off for sessions without STLS and on implicit-TLS listeners.
        """
        return not self.phased or ex.after_tls == self.after_tls

    def find(self, command: Command) -> RecordedExchange | None:
        """The exchange that answers this command under the match mode."""
        line, verb, args, _after_auth = command
        wanted = (verb, command_key(verb, args, line, self._masked))
        exchanges = self.session.exchanges
        if self.mode == "strict":
            while self.cursor < len(exchanges) and self.played[self.cursor]:
                self.cursor += 1
            if self.cursor < len(exchanges):
                ex = exchanges[self.cursor]
                # The recorded client may have left before its last command was answered.
                playable = (ex.answered or ex.closes) and self.in_phase(ex)
                if playable and self._keys[ex.index] == wanted:
                    return ex
            return None
        last: RecordedExchange | None = None
        played = self.played
        for ex in self._playable.get(wanted, ()):
            if not self.phased or ex.after_tls == self.after_tls:  # in_phase, inlined
                if not played[ex.index]:
                    return ex
                last = ex
        return last if self.mode == "any" else None

    def mark(self, ex: RecordedExchange) -> None:
        """``ex`` was played on this connection."""
        self.played[ex.index] = True
        self.accounting.counts[self.index][ex.index] += 1

    def candidates(self, command: Command, shown: str, limit: int = 3) -> list[str]:
        """The closest recorded commands and what differed (vcrpy best matches)."""
        line, verb, args, _after_auth = command
        key = command_key(verb, args, line, self._masked)
        scored: list[tuple[float, int, str]] = []
        for ex in self.session.exchanges:
            ex_verb, ex_key = self._keys[ex.index]
            if ex_verb == verb and ex_key == key and not self.in_phase(ex):
                why = "recorded after STLS" if ex.after_tls else "recorded before STLS"
                score = 3.5
            elif ex_verb == verb and ex_key == key:
                why = "already played"
                score = 3.0
            elif ex_verb == verb:
                why = "arguments differ"
                score = 2.0 + difflib.SequenceMatcher(None, ex_key, key).ratio()
            else:
                why = "verb differs"
                score = difflib.SequenceMatcher(None, ex.command, shown).ratio()
            if self.mode == "strict" and ex.index == self.cursor:
                why += ", expected next"
                score += 10
            scored.append((score, -ex.index, f"#{ex.seq} {ex.command} ({why})"))
        scored.sort(reverse=True)
        return [text for _score, _index, text in scored[:limit]]

    def sasl_line_matches(self, sasl: bytes, recorded: bytes) -> bool:
        """Masked SASL lines match anything; kept ones must be equal (``*`` always counts,
        it cancels the exchange, RFC 5034 §4)."""
        if sasl.strip() == b"*" or recorded.strip() == b"*":
            return sasl.strip() == recorded.strip()
        return self._masked or sasl == recorded

    def unplayed(self) -> list[str]:
        """``#seq command`` of each answered exchange this connection did not play."""
        return [
            f"#{ex.seq} {ex.command}"
            for ex in self.session.exchanges
            if ex.answered and not self.played[ex.index]
        ]


class SessionPicker:
    """Which recorded session a new connection plays (``cycle``, ``once``, ``by_user``)."""

    def __init__(self, sessions: Sequence[RecordedSession], mode: SessionsMode) -> None:
        self.sessions = sessions
        self.once = mode == "once"
        self._next = 0
        self._used: set[int] = set()

    def assign(self) -> int | None:
        """The session for a new connection; None when ``once`` has none left."""
        if self.once:
            free = [i for i in range(len(self.sessions)) if i not in self._used]
            if not free:
                return None
            # With by_user this is provisional: the user's first command may move the
            # connection to another session, which then takes this one's place.
            self._used.add(free[0])
            return free[0]
        index = self._next % len(self.sessions)
        self._next += 1
        return index

    def for_user(self, user: str | None, mechanism: str | None, current: int) -> int | None:
        """``by_user``: the session recorded for ``user`` (AUTH: see docs/replay.md)."""
        order = [current]
        order += [
            i
            for i in range(len(self.sessions))
            if i != current and not (self.once and i in self._used)
        ]
        chosen: int | None = None
        if user is not None:
            chosen = next((i for i in order if self.sessions[i].user == user), None)
        if chosen is None and mechanism is not None:
            chosen = next(
                (
                    i
                    for i in order
                    if self.sessions[i].user is None
                    and self.sessions[i].auth_mechanism == mechanism
                ),
                None,
            )
        if chosen is not None and chosen != current and self.once:
            self._used.discard(current)
            self._used.add(chosen)
        return chosen
