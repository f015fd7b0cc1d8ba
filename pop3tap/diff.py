"""``pop3tap diff``: what changed between two recorded sessions, at the POP3 level.

Each capture is first reduced to one :class:`ExchangeDigest` per exchange (read through
:func:`pop3tap.analysis.analyse`, bodies hashed as they stream past, message headers and
short listings kept). The exchanges of the two sessions are aligned by a longest common
subsequence over their commands (verb and masked arguments); each aligned pair is compared
field by field (status, response code, first line, body, latency, flags) and the commands
only one side sent are listed. Parts that change from run to run (the greeting's APOP
timestamp and host names, session ids) are ignored unless ``strict``, and the ignored
differences are reported so nothing is hidden silently.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from pop3tap.analysis import BodyFacts, CaptureStream, analyse
from pop3tap.capture import CaptureError, iter_capture_paths
from pop3tap.protocol import Exchange, Greeting, login_name

__all__ = [
    "DiffOptions",
    "DiffResult",
    "ExchangeDigest",
    "SessionDigest",
    "diff_paths",
    "diff_sessions",
    "digest_capture",
]

#: Version of the JSON output schema (docs/diff.md).
JSON_VERSION: Final = 1
#: Header block kept per message for the unified diff; larger blocks are compared by hash.
MAX_KEPT_HEADERS: Final = 32 * 1024
#: Listing kept per exchange for the unified diff; larger listings are compared by hash.
MAX_KEPT_LISTING: Final = 256 * 1024
#: Above this many cells the alignment falls back to difflib's matcher (not a strict LCS).
MAX_LCS_CELLS: Final = 4_000_000
_APOP_STAMP: Final = re.compile(r"<[^<>]*@[^<>]*>")
_HOST: Final = re.compile(r"\b(?=[A-Za-z0-9-]*[A-Za-z])[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+\b")
_OCTETS: Final = re.compile(r"^(\+OK\s+)(\d+)(\s+octets.*)$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ExchangeDigest:
    """What diff compares of one exchange."""

    seq: int
    verb: str
    args: str
    status: str | None
    resp_code: str | None
    first_line: str
    multiline: bool
    body_lines: int
    body_bytes: int
    latency: float | None
    flags: frozenset[str]
    digest: str = ""
    rest_digest: str = ""
    headers: tuple[bytes, ...] | None = None
    listing: tuple[bytes, ...] | None = None

    @property
    def command(self) -> str:
        """The command as logs show it."""
        return f"{self.verb} {self.args}".rstrip()


@dataclass(slots=True)
class SessionDigest:
    """One capture reduced for diffing."""

    path: str
    session: str
    started: str
    greeting: str
    user: str | None
    exchanges: list[ExchangeDigest] = field(default_factory=list)
    complete: bool = True
    truncated: bool = False


def _exchange_digest(ex: Exchange, body: BodyFacts | None) -> ExchangeDigest:
    headers: tuple[bytes, ...] | None = None
    listing: tuple[bytes, ...] | None = None
    digest = rest = ""
    if body is not None:
        digest, rest = body.digest, body.rest_digest
        if body.headers and sum(len(h) for h in body.headers) <= MAX_KEPT_HEADERS:
            headers = body.headers
        elif body.headers:
            rest = digest  # headers too large to keep: the whole body is compared by hash
        if body.listing is not None and sum(len(x) for x in body.listing) <= MAX_KEPT_LISTING:
            listing = body.listing
    return ExchangeDigest(
        seq=ex.seq,
        verb=ex.verb,
        args=ex.args,
        status=None if ex.status is None else ex.status.value,
        resp_code=ex.resp_code,
        first_line=ex.first_line,
        multiline=ex.multiline,
        body_lines=ex.body_lines,
        body_bytes=ex.body_bytes,
        latency=ex.latency_complete,
        flags=frozenset(f.value for f in ex.flags),
        digest=digest,
        rest_digest=rest,
        headers=headers,
        listing=listing,
    )


def digest_capture(path: str | Path) -> SessionDigest:
    """Read a capture once and reduce it for diffing.

    Raises:
        CaptureError: the file is not a readable capture.
    """
    stream = CaptureStream(path)
    header = stream.header
    result = SessionDigest(
        path=str(path),
        session=header.session,
        started=header.started,
        greeting="",
        user=None,
    )
    for item in analyse(stream, stats=False):
        event = item.event
        if isinstance(event, Greeting):
            result.greeting = event.text
        elif isinstance(event, Exchange):
            result.exchanges.append(_exchange_digest(event, item.body))
            if result.user is None:
                result.user = login_name(event.verb, event.args)
    result.complete = stream.complete
    result.truncated = stream.truncated
    return result


@dataclass(frozen=True, slots=True)
class DiffOptions:
    """How strictly to compare."""

    strict: bool = False
    #: Header names (case-insensitive) left out of message comparisons.
    ignore_headers: frozenset[str] = frozenset()
    #: Latencies differ when one is this many times the other (0 disables)...
    latency_factor: float = 10.0
    #: ...and they are at least this many seconds apart.
    latency_floor: float = 1.0


@dataclass(slots=True)
class DiffResult:
    """The differences between two sessions, and what was ignored as volatile."""

    a: str
    b: str
    differences: list[dict[str, Any]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    pairs: int = 0

    @property
    def equal(self) -> bool:
        """True when nothing but volatile parts differ."""
        return not self.differences

    def as_json(self) -> dict[str, Any]:
        """The result as docs/diff.md describes it."""
        return {
            "a": self.a,
            "b": self.b,
            "equal": self.equal,
            "aligned": self.pairs,
            "differences": self.differences,
            "ignored": self.ignored,
        }

    def text_lines(self) -> list[str]:
        """The human form."""
        out = [f"--- {self.a}", f"+++ {self.b}"]
        for diff in self.differences:
            out.extend(_describe(diff))
        if self.ignored:
            out.append("ignored (volatile, --strict keeps them): " + "; ".join(self.ignored))
        out.append(
            "no differences"
            if self.equal
            else f"{len(self.differences)} difference(s) in {self.pairs} aligned exchange(s)"
        )
        return out


def _describe(diff: dict[str, Any]) -> list[str]:
    kind = diff["field"]
    where = diff.get("where", "")
    if kind == "only_in_a":
        return [f"- {where} {diff['command']}: only in A"]
    if kind == "only_in_b":
        return [f"+ {where} {diff['command']}: only in B"]
    if kind == "session":
        return [f"  session: {diff['what']}: {diff['a']!r} vs {diff['b']!r}"]
    head = f"  {where} {diff.get('command', '')}: {kind}"
    if kind == "body":
        parts = []
        if diff["lines"][0] != diff["lines"][1]:
            parts.append(f"{diff['lines'][0]} vs {diff['lines'][1]} lines")
        if diff["bytes"][0] != diff["bytes"][1]:
            parts.append(f"{diff['bytes'][0]} vs {diff['bytes'][1]} bytes")
        if diff.get("rest_hash"):
            parts.append(
                f"rest of body sha256 {diff['rest_hash'][0][:12]} vs {diff['rest_hash'][1][:12]}"
            )
        lines = [f"{head} differs: " + (", ".join(parts) or "content")]
        lines.extend(f"      {line}" for line in diff.get("unified", []))
        return lines
    return [f"{head}: {diff['a']!r} vs {diff['b']!r}"]


def _normalise_greeting(text: str) -> str:
    return _HOST.sub("<host>", _APOP_STAMP.sub("<timestamp>", text))


def _align(
    a: Sequence[ExchangeDigest], b: Sequence[ExchangeDigest]
) -> list[tuple[int | None, int | None]]:
    """Pairs of indexes: an LCS over (verb, args), unmatched ones with None on one side."""
    keys_a = [(x.verb, x.args) for x in a]
    keys_b = [(x.verb, x.args) for x in b]
    head = 0
    while head < len(a) and head < len(b) and keys_a[head] == keys_b[head]:
        head += 1
    tail = 0
    while tail < len(a) - head and tail < len(b) - head and keys_a[-1 - tail] == keys_b[-1 - tail]:
        tail += 1
    mid_a = keys_a[head : len(a) - tail]
    mid_b = keys_b[head : len(b) - tail]
    pairs: list[tuple[int | None, int | None]] = [(i, i) for i in range(head)]
    if len(mid_a) * len(mid_b) <= MAX_LCS_CELLS:
        matches = _lcs(mid_a, mid_b)
    else:
        matcher = difflib.SequenceMatcher(None, mid_a, mid_b, autojunk=False)
        matches = [
            (block.a + k, block.b + k)
            for block in matcher.get_matching_blocks()
            for k in range(block.size)
        ]
    i = j = 0
    for ma, mb in [*matches, (len(mid_a), len(mid_b))]:
        pairs.extend((head + x, None) for x in range(i, ma))
        pairs.extend((None, head + y) for y in range(j, mb))
        if ma < len(mid_a):
            pairs.append((head + ma, head + mb))
        i, j = ma + 1, mb + 1
    pairs.extend((len(a) - tail + k, len(b) - tail + k) for k in range(tail))
    return pairs


def _lcs(a: Sequence[object], b: Sequence[object]) -> list[tuple[int, int]]:
    """Index pairs of one longest common subsequence (dynamic programming)."""
    n, m = len(a), len(b)
    if not n or not m:
        return []
    table = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        row, below = table[i], table[i + 1]
        ai = a[i]
        for j in range(m - 1, -1, -1):
            row[j] = below[j + 1] + 1 if ai == b[j] else max(below[j], row[j + 1])
    out: list[tuple[int, int]] = []
    i = j = 0
    while i < n and j < m:
        if a[i] == b[j]:
            out.append((i, j))
            i += 1
            j += 1
        elif table[i + 1][j] >= table[i][j + 1]:
            i += 1
        else:
            j += 1
    return out


def _header_name(line: bytes) -> str:
    return line.split(b":", 1)[0].strip().decode("ascii", "replace").lower()


def _filter_headers(
    headers: tuple[bytes, ...], ignore: frozenset[str]
) -> tuple[list[bytes], int, int]:
    """Headers without the ignored fields (continuation lines included); bytes and lines cut."""
    kept: list[bytes] = []
    cut_bytes = cut_lines = 0
    dropping = False
    for line in headers:
        if line[:1] in (b" ", b"\t"):
            pass  # a continuation line belongs to the field before it (RFC 5322 §2.2.3)
        else:
            dropping = _header_name(line) in ignore
        if dropping:
            cut_bytes += len(line) + 2
            cut_lines += 1
        else:
            kept.append(line)
    return kept, cut_bytes, cut_lines


def _compare_pair(
    x: ExchangeDigest, y: ExchangeDigest, options: DiffOptions, where: str
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    base = {"where": where, "command": x.command, "seq_a": x.seq, "seq_b": y.seq}
    if x.status != y.status:
        out.append({**base, "field": "status", "a": x.status, "b": y.status})
    if x.resp_code != y.resp_code:
        out.append({**base, "field": "resp_code", "a": x.resp_code, "b": y.resp_code})
    cut_a = cut_b = (0, 0)
    kept_a: list[bytes] = list(x.headers or ())
    kept_b: list[bytes] = list(y.headers or ())
    if options.ignore_headers:
        kept_a, *cut_a_l = _filter_headers(x.headers or (), options.ignore_headers)
        kept_b, *cut_b_l = _filter_headers(y.headers or (), options.ignore_headers)
        cut_a, cut_b = (cut_a_l[0], cut_a_l[1]), (cut_b_l[0], cut_b_l[1])
    first_a, first_b = x.first_line, y.first_line
    if cut_a != cut_b:
        first_a = _OCTETS.sub(lambda m: f"{m[1]}{int(m[2]) - cut_a[0]}{m[3]}", first_a)
        first_b = _OCTETS.sub(lambda m: f"{m[1]}{int(m[2]) - cut_b[0]}{m[3]}", first_b)
    if first_a != first_b and x.status == y.status:
        out.append({**base, "field": "first_line", "a": x.first_line, "b": y.first_line})
    if x.multiline or y.multiline:
        body = _compare_bodies(x, y, kept_a, kept_b, cut_a, cut_b)
        if body is not None:
            out.append({**base, **body})
    if x.flags != y.flags:
        out.append({**base, "field": "flags", "a": sorted(x.flags), "b": sorted(y.flags)})
    if options.latency_factor > 0 and x.latency is not None and y.latency is not None:
        low, high = sorted((x.latency, y.latency))
        if high - low >= options.latency_floor and high > low * options.latency_factor:
            out.append(
                {**base, "field": "latency", "a": round(x.latency, 3), "b": round(y.latency, 3)}
            )
    return out


def _compare_bodies(
    x: ExchangeDigest,
    y: ExchangeDigest,
    kept_a: list[bytes],
    kept_b: list[bytes],
    cut_a: tuple[int, int],
    cut_b: tuple[int, int],
) -> dict[str, Any] | None:
    lines = (x.body_lines - cut_a[1], y.body_lines - cut_b[1])
    sizes = (x.body_bytes - cut_a[0], y.body_bytes - cut_b[0])
    message = x.headers is not None or y.headers is not None
    same = (
        (kept_a == kept_b and x.rest_digest == y.rest_digest) if message else x.digest == y.digest
    )
    if same and lines[0] == lines[1] and sizes[0] == sizes[1]:
        return None
    result: dict[str, Any] = {"field": "body", "lines": list(lines), "bytes": list(sizes)}
    if message:
        if x.rest_digest != y.rest_digest:
            result["rest_hash"] = [x.rest_digest, y.rest_digest]
        old, new = kept_a, kept_b
    elif x.listing is not None and y.listing is not None:
        old, new = list(x.listing), list(y.listing)
    else:
        result["hash"] = [x.digest, y.digest]
        old = new = []
    unified = list(
        difflib.unified_diff(
            [v.decode("utf-8", "backslashreplace") for v in old],
            [v.decode("utf-8", "backslashreplace") for v in new],
            "A",
            "B",
            lineterm="",
            n=1,
        )
    )
    if unified:
        result["unified"] = unified[2:][:200]
    return result


def diff_sessions(a: SessionDigest, b: SessionDigest, options: DiffOptions) -> DiffResult:
    """Compare two reduced sessions."""
    result = DiffResult(a=a.path, b=b.path)
    session_fields = [("greeting", a.greeting, b.greeting)]
    for what, va, vb in session_fields:
        if va == vb:
            continue
        if not options.strict and _normalise_greeting(va) == _normalise_greeting(vb):
            result.ignored.append(f"{what}: APOP timestamp / host name")
            continue
        result.differences.append({"field": "session", "what": what, "a": va, "b": vb})
    if a.session != b.session:
        if options.strict:
            result.differences.append(
                {"field": "session", "what": "session id", "a": a.session, "b": b.session}
            )
        else:
            result.ignored.append("session id")
    if (a.complete, a.truncated) != (b.complete, b.truncated):
        result.differences.append(
            {
                "field": "session",
                "what": "capture complete",
                "a": a.complete and not a.truncated,
                "b": b.complete and not b.truncated,
            }
        )
    for ia, ib in _align(a.exchanges, b.exchanges):
        if ia is not None and ib is not None:
            x, y = a.exchanges[ia], b.exchanges[ib]
            result.pairs += 1
            where = f"#{x.seq}" if x.seq == y.seq else f"#{x.seq}/#{y.seq}"
            result.differences.extend(_compare_pair(x, y, options, where))
        elif ia is not None:
            x = a.exchanges[ia]
            result.differences.append(
                {"field": "only_in_a", "where": f"#{x.seq}", "command": x.command, "seq_a": x.seq}
            )
        elif ib is not None:
            y = b.exchanges[ib]
            result.differences.append(
                {"field": "only_in_b", "where": f"#{y.seq}", "command": y.command, "seq_b": y.seq}
            )
    return result


def _pair_directories(
    a: list[SessionDigest], b: list[SessionDigest]
) -> list[tuple[SessionDigest | None, SessionDigest | None]]:
    """Pair sessions by user, then by order (start time) within each user."""
    by_user_b: dict[str | None, list[SessionDigest]] = {}
    for s in b:
        by_user_b.setdefault(s.user, []).append(s)
    pairs: list[tuple[SessionDigest | None, SessionDigest | None]] = []
    for s in a:
        queue = by_user_b.get(s.user)
        pairs.append((s, queue.pop(0) if queue else None))
    pairs.extend((None, s) for queue in by_user_b.values() for s in queue)
    return pairs


def diff_paths(a: str | Path, b: str | Path, options: DiffOptions) -> list[DiffResult]:
    """Diff two captures, or two directories of captures paired by user and order.

    Raises:
        CaptureError: a path is missing, unreadable or not a capture.
    """
    pa, pb = Path(a), Path(b)
    if pa.is_dir() != pb.is_dir():
        raise CaptureError(f"{pa} and {pb}: compare two files or two directories, not one of each")
    if not pa.is_dir():
        return [diff_sessions(digest_capture(pa), digest_capture(pb), options)]
    sessions_a = [digest_capture(p) for p in iter_capture_paths([pa])]
    sessions_b = [digest_capture(p) for p in iter_capture_paths([pb])]
    results: list[DiffResult] = []
    for x, y in _pair_directories(sessions_a, sessions_b):
        if x is not None and y is not None:
            results.append(diff_sessions(x, y, options))
        else:
            only = x or y
            assert only is not None
            missing = DiffResult(a=x.path if x else "(none)", b=y.path if y else "(none)")
            missing.differences.append(
                {
                    "field": "session",
                    "what": "no session to pair with",
                    "a": x.path if x else None,
                    "b": y.path if y else None,
                }
            )
            results.append(missing)
    return results
