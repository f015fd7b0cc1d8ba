"""``pop3tap lint``: judge a recorded session against the POP3 RFCs.

Each rule has an id, a severity, the side it blames and the RFC section it comes from
(:data:`RULES`; docs/lint.md lists them). :class:`SessionLinter` walks the items of
:func:`pop3tap.analysis.analyse` once, in order, keeping only per-session state whose size
follows the mailbox (message numbers, sizes, unique ids), never the bodies.
:class:`MailboxMemory` carries what one capture taught about a mailbox (unique id of each
message content) to the next capture of the same user and server.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final, Literal

from pop3tap.analysis import Analysed, BodyFacts, CaptureStream, analyse
from pop3tap.capture import CaptureHeader, EventRecord
from pop3tap.protocol import (
    CommandSent,
    Exchange,
    Flag,
    Greeting,
    PairingLost,
    StartTls,
    Status,
    StrayLine,
    UnsolicitedLine,
)

Severity = Literal["error", "warning", "info"]
Side = Literal["client", "server", "capture"]

#: Severities from the most to the least serious.
SEVERITIES: Final[tuple[Severity, ...]] = ("error", "warning", "info")
#: Findings of one rule kept per capture; the rest are only counted.
MAX_FINDINGS_PER_RULE: Final = 20
#: Bytes of a message after its headers that go into the digest lint recognises it by.
IDENTITY_PREFIX: Final = 1024 * 1024
#: Version of the JSON output schema (docs/lint.md).
JSON_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class Rule:
    """One conformance rule."""

    id: str
    severity: Severity
    side: Side
    rfc: str
    summary: str


_RULE_LIST: Final = (
    # ---------------------------------------------------------------- server
    Rule(
        "stat-list-mismatch",
        "error",
        "server",
        "RFC 1939 §5",
        "STAT count or size differs from the LIST scan listing",
    ),
    Rule(
        "msg-number-out-of-range",
        "error",
        "server",
        "RFC 1939 §5",
        "a LIST/UIDL line or a +OK for a message number outside the maildrop",
    ),
    Rule("uidl-not-unique", "error", "server", "RFC 1939 §7", "two messages share a unique id"),
    Rule(
        "uidl-bad-character",
        "error",
        "server",
        "RFC 1939 §7",
        "a unique id holds an octet outside 0x21-0x7E",
    ),
    Rule("uidl-too-long", "error", "server", "RFC 1939 §7", "a unique id is longer than 70 octets"),
    Rule(
        "uidl-changed",
        "error",
        "server",
        "RFC 1939 §7",
        "the same message has another unique id than in an earlier capture of the mailbox",
    ),
    Rule(
        "not-dot-stuffed",
        "error",
        "server",
        "RFC 1939 §3",
        "a body line starts with '.' but was not dot-stuffed",
    ),
    Rule(
        "bare-lf",
        "error",
        "server",
        "RFC 1939 §3",
        "a response line ends with LF alone instead of CRLF",
    ),
    Rule("bare-cr", "error", "server", "RFC 1939 §3", "a response holds a CR not followed by LF"),
    Rule(
        "response-line-too-long",
        "error",
        "server",
        "RFC 2449 §4",
        "a greeting or first response line is longer than 512 octets",
    ),
    Rule(
        "malformed-response-code",
        "error",
        "server",
        "RFC 2449 §8",
        "a response code that does not follow the resp-code grammar",
    ),
    Rule(
        "unknown-response-code",
        "warning",
        "server",
        "RFC 2449 §8, RFC 3206",
        "a response code that is not registered",
    ),
    Rule(
        "ok-in-wrong-state",
        "error",
        "server",
        "RFC 1939 §3",
        "+OK to a command that is not valid in the session's state",
    ),
    Rule(
        "octets-mismatch",
        "error",
        "server",
        "RFC 1939 §5",
        "'+OK N octets' or the LIST size differs from the message actually sent",
    ),
    Rule(
        "deleted-message-served",
        "error",
        "server",
        "RFC 1939 §5",
        "a message marked as deleted is still served or listed",
    ),
    Rule(
        "auth-mechanism-refused",
        "error",
        "server",
        "RFC 5034 §4, RFC 2449 §6.3",
        "AUTH refuses a SASL mechanism CAPA advertised",
    ),
    Rule(
        "stls-plaintext-after-ok",
        "error",
        "server",
        "RFC 2595 §4",
        "plaintext follows the +OK to STLS before TLS is up (injection)",
    ),
    Rule(
        "apop-without-timestamp",
        "error",
        "server",
        "RFC 1939 §7",
        "APOP accepted although the greeting carries no timestamp",
    ),
    Rule(
        "stray-line",
        "error",
        "server",
        "RFC 1939 §3",
        "a line that is not a status line where a response was due",
    ),
    Rule(
        "body-truncated",
        "warning",
        "server",
        "RFC 1939 §3",
        "the server closed the connection inside a multi-line response",
    ),
    Rule(
        "unsolicited-response",
        "info",
        "server",
        "RFC 1939 §3",
        "a status line no command asked for (often an idle timeout)",
    ),
    # ---------------------------------------------------------------- client
    Rule("command-too-long", "error", "client", "RFC 2449 §4", "a command longer than 255 octets"),
    Rule(
        "login-after-login",
        "error",
        "client",
        "RFC 1939 §4",
        "USER, PASS, APOP or AUTH after a successful login",
    ),
    Rule(
        "retr-deleted",
        "error",
        "client",
        "RFC 1939 §5",
        "RETR or TOP of a message the client marked as deleted",
    ),
    Rule(
        "pipelining-without-capability",
        "error",
        "client",
        "RFC 2449 §6.6",
        "commands pipelined although CAPA did not advertise PIPELINING",
    ),
    Rule(
        "stls-pipelined",
        "error",
        "client",
        "RFC 2595 §4",
        "commands sent after STLS before TLS was up",
    ),
    Rule(
        "no-quit-after-dele",
        "warning",
        "client",
        "RFC 1939 §6",
        "DELE without QUIT: the deletions were lost",
    ),
    Rule(
        "plaintext-credentials",
        "warning",
        "client",
        "RFC 1939 §13, RFC 2595 §2",
        "credentials sent without TLS to a server beyond loopback",
    ),
    # ---------------------------------------------------------------- capture
    Rule(
        "capture-truncated",
        "warning",
        "capture",
        "",
        "the capture ends early (torn or corrupt tail, or no close record)",
    ),
    Rule(
        "faults-injected",
        "info",
        "capture",
        "",
        "pop3tap injected faults into this session: findings near them are its doing",
    ),
    Rule(
        "pairing-lost",
        "info",
        "capture",
        "",
        "the parser stopped pairing commands and responses (a flood)",
    ),
)
#: Every rule by id.
RULES: Final[dict[str, Rule]] = {rule.id: rule for rule in _RULE_LIST}

#: RFC 2449 §8.1, RFC 3206 §4/§5, RFC 6856 §5 (top-level codes of the IANA registry).
KNOWN_RESPONSE_CODES: Final = {
    "LOGIN-DELAY": None,
    "IN-USE": None,
    "SYS": frozenset({"TEMP", "PERM"}),
    "AUTH": None,
    "UTF8": None,
}
_RESP_LEVEL: Final = re.compile(rb"[\x21-\x2e\x30-\x5c\x5e-\x7f]+")
_OCTETS: Final = re.compile(r"^\+OK\s+(\d+)\s+octets", re.IGNORECASE)
_AUTHORIZATION_ONLY: Final = frozenset({"USER", "PASS", "APOP", "AUTH", "STLS", "UTF8"})
_TRANSACTION_ONLY: Final = frozenset(
    {"STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP", "UIDL"}
)
_MESSAGE_ARG: Final = frozenset({"LIST", "RETR", "DELE", "TOP", "UIDL"})
_PLAINTEXT_MECHS: Final = frozenset({"PLAIN", "LOGIN"})


@dataclass(frozen=True, slots=True)
class Finding:
    """One conformance finding, tied to an exchange where there is one."""

    rule: str
    message: str
    seq: int | None = None
    tx: str | None = None
    rx: str | None = None
    side: Side | None = None

    @property
    def severity(self) -> Severity:
        """The rule's severity."""
        return RULES[self.rule].severity

    @property
    def blamed(self) -> Side:
        """Who is at fault: the rule's side unless the finding names another."""
        return self.side or RULES[self.rule].side

    def as_json(self) -> dict[str, object]:
        """The finding as the JSON schema of docs/lint.md describes it."""
        rule = RULES[self.rule]
        exchange = None
        if self.seq is not None or self.tx is not None or self.rx is not None:
            exchange = {"seq": self.seq, "tx": self.tx, "rx": self.rx}
        return {
            "rule": self.rule,
            "severity": rule.severity,
            "side": self.blamed,
            "rfc": rule.rfc,
            "message": self.message,
            "exchange": exchange,
        }


@dataclass(slots=True)
class CaptureReport:
    """The findings of one capture."""

    path: str
    session: str
    client: str
    upstream: str
    findings: list[Finding] = field(default_factory=list)
    #: Findings beyond MAX_FINDINGS_PER_RULE, by rule.
    suppressed: dict[str, int] = field(default_factory=dict)
    complete: bool = True
    truncated: bool = False
    #: Set when the file could not be read at all.
    error: str | None = None

    def counts(self) -> dict[str, int]:
        """Findings per severity (suppressed ones included)."""
        out: dict[str, int] = dict.fromkeys(SEVERITIES, 0)
        for finding in self.findings:
            out[finding.severity] += 1
        for rule, extra in self.suppressed.items():
            out[RULES[rule].severity] += extra
        return out

    def as_json(self) -> dict[str, object]:
        """The capture's entry in the JSON output."""
        entry: dict[str, object] = {
            "path": self.path,
            "session": self.session,
            "client": self.client,
            "upstream": self.upstream,
            "complete": self.complete,
            "truncated": self.truncated,
            "findings": [f.as_json() for f in self.findings],
            "suppressed": dict(sorted(self.suppressed.items())),
        }
        if self.error is not None:
            entry["error"] = self.error
        return entry


@dataclass(slots=True)
class MailboxMemory:
    """Unique ids seen per mailbox (user at server) and message content, across captures."""

    seen: dict[tuple[str, str], dict[str, tuple[str, str]]] = field(default_factory=dict)

    def remember(
        self, mailbox: tuple[str, str], digest: str, uid: str, where: str
    ) -> tuple[str, str] | None:
        """Record ``uid`` for a content digest; return the earlier (uid, where) if it differs."""
        known = self.seen.setdefault(mailbox, {})
        earlier = known.get(digest)
        if earlier is None:
            if len(known) < 1_000_000:
                known[digest] = (uid, where)
            return None
        return earlier if earlier[0] != uid else None


def quote_tx(ex: Exchange | CommandSent) -> str:
    """The client line as the Pop3.log view shows it (secrets masked)."""
    return f"[tx] {ex.verb} {ex.args}".rstrip()


def quote_rx(ex: Exchange) -> str:
    """The response as the Pop3.log view shows it."""
    if ex.status is None:
        return "[rx] (no response)"
    text = f"[rx] {ex.first_line}"
    if ex.multiline:
        text += f"  ({ex.body_lines} lines, {ex.body_bytes} bytes)"
    return text


def _number(text: str) -> int | None:
    head = text.split(None, 1)[0] if text.strip() else ""
    return int(head) if head.isdigit() and len(head) < 12 else None


def _is_loopback_upstream(upstream: str) -> bool:
    host = upstream.rpartition(":")[0].strip("[]") if ":" in upstream else upstream
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SessionLinter:
    """Applies the per-session rules to the analysed items of one capture."""

    def __init__(self, header: CaptureHeader, path: str, memory: MailboxMemory) -> None:
        self.report = CaptureReport(
            path=path, session=header.session, client=header.client, upstream=header.upstream
        )
        self._memory = memory
        self._upstream = header.upstream
        self._tls = header.options.get("upstream_tls") is True
        self._loopback = _is_loopback_upstream(header.upstream)
        self._greeting: Greeting | None = None
        self._authenticated = False
        self._after_user = False
        self._caps: dict[str, str] | None = None
        self._deleted: set[int] = set()
        self._epoch = 0
        self._stat: tuple[int, int, int, Exchange] | None = None
        self._list: tuple[dict[int, int], int, Exchange] | None = None
        self._sizes: dict[int, int] = {}
        self._total: int | None = None
        self._uids: dict[int, str] = {}
        self._uid_seq: dict[int, int] = {}
        self._digests: dict[int, str] = {}
        self._user: str | None = None
        self._dele_ok: Exchange | None = None
        self._quit = False
        self._pipelining_reported = False
        self._stls_seq: int | None = None
        self._cut_body: Exchange | None = None
        self._strays: list[str] = []

    # ------------------------------------------------------------------ reporting

    def add(
        self,
        rule: str,
        message: str,
        ex: Exchange | None = None,
        *,
        seq: int | None = None,
        side: Side | None = None,
    ) -> None:
        """Add a finding (or count it once the rule has MAX_FINDINGS_PER_RULE)."""
        report = self.report
        if sum(1 for f in report.findings if f.rule == rule) >= MAX_FINDINGS_PER_RULE:
            report.suppressed[rule] = report.suppressed.get(rule, 0) + 1
            return
        report.findings.append(
            Finding(
                rule=rule,
                message=message,
                seq=seq if ex is None else ex.seq,
                tx=None if ex is None else quote_tx(ex),
                rx=None if ex is None else quote_rx(ex),
                side=side,
            )
        )

    # ------------------------------------------------------------------ walking

    def feed(self, item: Analysed) -> None:
        """Apply the rules to one analysed item."""
        record = item.record
        if isinstance(record, EventRecord) and record.name == "fault":
            seq = record.fields.get("seq")
            where = "the greeting" if seq == 0 else f"#{seq}"
            self.add(
                "faults-injected",
                f"fault {record.fields.get('spec', '?')!r} injected into {where}",
                seq=seq if isinstance(seq, int) and seq > 0 else None,
            )
        event = item.event
        if isinstance(event, Exchange):
            self._exchange(event, item.body, item.status_line_bytes)
        elif isinstance(event, Greeting):
            self._greeting = event
            self._line_length(None, item.status_line_bytes, "greeting")
            if Flag.BARE_LF in event.flags:
                self.add("bare-lf", "the greeting ends with LF alone")
        elif isinstance(event, StartTls):
            self._stls_seq = event.seq
            self._caps = None  # RFC 2595 §4: forget what was learnt before TLS
            if event.server_trailing:
                self.add(
                    "stls-plaintext-after-ok",
                    f"{event.server_trailing} bytes of plaintext follow the +OK to STLS "
                    f"(#{event.seq}) in the same segment",
                    seq=event.seq,
                )
            if event.client_trailing:
                self.add(
                    "stls-pipelined",
                    f"{event.client_trailing} bytes sent after STLS (#{event.seq}) "
                    "before the server answered",
                    seq=event.seq,
                )
        elif isinstance(event, StrayLine) and event.direction.value == "s2c":
            # Blamed on the exchange whose response it interrupted (reported with it).
            if len(self._strays) < MAX_FINDINGS_PER_RULE:
                self._strays.append(event.text[:200])
        elif isinstance(event, UnsolicitedLine):
            self.add("unsolicited-response", f"unsolicited: {event.text!r}")
        elif isinstance(event, PairingLost):
            self.add("pairing-lost", event.reason)

    def finish(self, stream: CaptureStream) -> CaptureReport:
        """Apply the end-of-session rules and return the report."""
        report = self.report
        report.complete = stream.complete
        report.truncated = stream.truncated
        self._flush_strays(None)
        if self._dele_ok is not None and not self._quit:
            self.add(
                "no-quit-after-dele",
                "messages were marked as deleted but the session ended without QUIT",
                self._dele_ok,
            )
        if self._cut_body is not None and stream.complete and not stream.truncated:
            self.add(
                "body-truncated", "the connection closed inside the response body", self._cut_body
            )
        if stream.truncated or not stream.complete:
            why = stream.problem or (
                f"{stream.trailing_bytes} bytes of a torn record"
                if stream.trailing_bytes
                else "no close record"
            )
            self.add(
                "capture-truncated",
                f"linted up to the last complete record (offset {stream.valid_bytes}): {why}",
            )
        self._cross_capture()
        return report

    # ------------------------------------------------------------------ exchanges

    def _flush_strays(self, ex: Exchange | None) -> None:
        for text in self._strays:
            self.add("stray-line", f"server line where a status line was due: {text!r}", ex)
        self._strays.clear()

    def _exchange(self, ex: Exchange, body: BodyFacts | None, line_bytes: int | None) -> None:
        self._flush_strays(ex)
        verb = ex.verb
        ok = ex.status is Status.OK
        number = _number(ex.args) if verb in _MESSAGE_ARG else None
        self._client_rules(ex, number)
        if ex.status is None:
            if verb == "QUIT":
                self._quit = True
            return
        self._line_length(ex, line_bytes, "first response line")
        self._response_code(ex)
        if Flag.BARE_LF in ex.flags:
            self.add("bare-lf", "the response has a line ending with LF alone", ex)
        if body is not None:
            self._body_rules(ex, body)
        if Flag.TRUNCATED in ex.flags and self._cut_body is None:
            self._cut_body = ex  # judged in finish(): a torn capture is not the server's fault
        if ok:
            self._state_rules(ex, number)
        self._track(ex, body, number)

    def _client_rules(self, ex: Exchange, number: int | None) -> None:
        verb = ex.verb
        length = ex.request_end - ex.request_start
        if length > 255:
            self.add("command-too-long", f"the command line is {length} octets (limit 255)", ex)
        if self._authenticated and verb in ("USER", "PASS", "APOP", "AUTH"):
            self.add("login-after-login", f"{verb} after a successful login", ex)
        if verb in ("RETR", "TOP") and number is not None and number in self._deleted:
            self.add("retr-deleted", f"{verb} of message {number}, marked as deleted", ex)
        if (
            ex.pipelined
            and not self._pipelining_reported
            and (self._caps is None or "PIPELINING" not in self._caps)
        ):
            self._pipelining_reported = True
            self.add(
                "pipelining-without-capability",
                "the command was sent before the previous answer, but CAPA "
                + ("was never asked" if self._caps is None else "does not list PIPELINING"),
                ex,
            )
        plaintext = verb in ("USER", "PASS") or (
            verb == "AUTH" and ex.args.split(" ", 1)[0].upper() in _PLAINTEXT_MECHS
        )
        # USER only names the account; PASS and the SASL data reveal the secret.
        protected = self._tls or self._stls_seq is not None or self._loopback
        if plaintext and verb != "USER" and not protected:
            self.add(
                "plaintext-credentials",
                f"{verb} sent in plaintext to {self._upstream} (no TLS)",
                ex,
            )
        if verb == "QUIT":
            self._quit = True

    def _line_length(self, ex: Exchange | None, line_bytes: int | None, what: str) -> None:
        if line_bytes is not None and line_bytes > 512:
            self.add("response-line-too-long", f"the {what} is {line_bytes} octets (limit 512)", ex)

    def _response_code(self, ex: Exchange) -> None:
        text = ex.first_line.split(" ", 1)[1] if " " in ex.first_line else ""
        if not text.startswith("["):
            return
        caps = self._caps
        if caps is not None and "RESP-CODES" not in caps and "AUTH-RESP-CODE" not in caps:
            return  # RFC 2449 §6.4: without RESP-CODES a bracket is just text
        end = text.find("]")
        raw = text[1:end].encode("utf-8", "surrogateescape") if end > 0 else b""
        levels = raw.split(b"/")
        if end <= 1 or not all(_RESP_LEVEL.fullmatch(level) for level in levels):
            self.add("malformed-response-code", f"malformed response code in {text[:80]!r}", ex)
            return
        top = levels[0].decode("ascii").upper()
        if top not in KNOWN_RESPONSE_CODES:
            self.add("unknown-response-code", f"unregistered response code [{top}]", ex)
            return
        subs = KNOWN_RESPONSE_CODES[top]
        if subs is not None and (len(levels) < 2 or levels[1].decode().upper() not in subs):
            self.add(
                "unknown-response-code",
                f"[{raw.decode('ascii', 'replace')}] is not a registered {top} code",
                ex,
            )

    def _body_rules(self, ex: Exchange, body: BodyFacts) -> None:
        if body.unstuffed:
            self.add(
                "not-dot-stuffed",
                f"{body.unstuffed} body line(s) start with a single '.' "
                f"(first at server offset {body.first_unstuffed})",
                ex,
            )
        if body.bare_cr:
            self.add("bare-cr", f"{body.bare_cr} CR byte(s) not followed by LF in the body", ex)
        if ex.verb == "RETR" and ex.status is Status.OK and Flag.TRUNCATED not in ex.flags:
            sent = ex.body_bytes - body.stuffed
            match = _OCTETS.match(ex.first_line)
            if match is not None and int(match.group(1)) != sent:
                self.add(
                    "octets-mismatch",
                    f"'+OK {match.group(1)} octets' but the message sent is {sent} octets",
                    ex,
                )
            number = _number(ex.args)
            listed = None if number is None else self._sizes.get(number)
            if listed is not None and listed != sent:
                self.add(
                    "octets-mismatch",
                    f"LIST gave message {number} {listed} octets but {sent} were sent",
                    ex,
                )

    def _state_rules(self, ex: Exchange, number: int | None) -> None:
        verb = ex.verb
        if not self._authenticated and verb in _TRANSACTION_ONLY:
            self.add("ok-in-wrong-state", f"+OK to {verb} before the login", ex)
        elif self._authenticated and verb in _AUTHORIZATION_ONLY:
            self.add("ok-in-wrong-state", f"+OK to {verb} after the login", ex)
        elif verb == "PASS" and not self._after_user:
            self.add("ok-in-wrong-state", "+OK to PASS without a successful USER before it", ex)
        elif verb == "STLS" and self._stls_seq is not None and self._stls_seq != ex.seq:
            self.add("ok-in-wrong-state", "+OK to a second STLS", ex)
        elif verb == "APOP" and (self._greeting is None or not self._greeting.apop_timestamp):
            self.add(
                "apop-without-timestamp", "APOP accepted but the greeting has no timestamp", ex
            )
        if number is None or not self._authenticated:
            return
        if number < 1 or (self._total is not None and number > self._total):
            self.add(
                "msg-number-out-of-range",
                f"+OK to {verb} of message {number}; the maildrop has {self._total}",
                ex,
            )
        elif number in self._deleted:
            self.add("deleted-message-served", f"+OK to {verb} of deleted message {number}", ex)

    # ------------------------------------------------------------------ state

    def _track(self, ex: Exchange, body: BodyFacts | None, number: int | None) -> None:
        verb = ex.verb
        ok = ex.status is Status.OK
        if verb == "USER":
            self._after_user = ok
            if ok or self._user is None:
                self._user = ex.args.strip() or None
            return
        self._after_user = False
        if verb == "APOP":
            self._user = ex.args.split(" ", 1)[0] or None
        if verb == "AUTH" and ex.status is Status.ERR and not ex.sasl:
            self._auth_refused(ex)
        if ok and (verb in ("PASS", "APOP") or (verb == "AUTH" and ex.args.strip())):
            self._authenticated = True
            return
        if not ok:
            return
        if verb == "CAPA" and body is not None and body.listing is not None:
            self._caps = {}
            for line in body.listing:
                name, _, rest = line.decode("utf-8", "replace").partition(" ")
                self._caps[name.upper()] = rest
        elif verb == "STAT":
            parts = ex.first_line.split()
            if len(parts) >= 3 and parts[1].isdigit() and parts[2].isdigit():
                count, size = int(parts[1]), int(parts[2])
                if self._total is None:
                    self._total = count + len(self._deleted)
                self._stat = (count, size, self._epoch, ex)
                self._compare_stat_list(ex)
        elif verb == "LIST" and body is not None and body.listing is not None:
            self._scan_listing(ex, body.listing)
        elif verb == "UIDL" and body is not None and body.listing is not None:
            self._uid_listing(ex, body.listing)
        elif verb == "UIDL" and number is not None:
            parts = ex.first_line.split()
            if len(parts) >= 3:
                self._check_uids(ex, {number: parts[2]})
        elif verb == "LIST" and number is not None:
            parts = ex.first_line.split()
            if len(parts) >= 3 and parts[2].isdigit():
                self._sizes[number] = int(parts[2])
        elif verb == "DELE" and number is not None:
            self._deleted.add(number)
            self._epoch += 1
            self._dele_ok = self._dele_ok or ex
        elif verb == "RSET":
            self._deleted.clear()
            self._epoch += 1
            self._dele_ok = None
        elif verb == "RETR" and number is not None and body is not None:
            self._digests[number] = body.digest if Flag.TRUNCATED not in ex.flags else ""

    def _auth_refused(self, ex: Exchange) -> None:
        parts = ex.args.split(" ", 1)
        mechanism = parts[0].upper()
        if not mechanism or self._caps is None:
            return
        advertised = self._caps.get("SASL", "").upper().split()
        code = (ex.resp_code or "").split("/", 1)[0]
        # With an initial response a -ERR may judge the credentials; only an uncoded
        # refusal, or one before any data was sent, refuses the mechanism itself.
        if mechanism in advertised and (len(parts) == 1 or code == ""):
            self.add(
                "auth-mechanism-refused",
                f"CAPA advertised SASL {mechanism} but AUTH {mechanism} was refused "
                "without a challenge",
                ex,
            )

    def _scan_listing(self, ex: Exchange, lines: tuple[bytes, ...]) -> None:
        sizes: dict[int, int] = {}
        for line in lines:
            parts = line.split()
            if len(parts) < 2 or not parts[0].isdigit() or not parts[1].isdigit():
                continue
            number = int(parts[0])
            self._listed_number(ex, number, "LIST")
            sizes[number] = int(parts[1])
        self._sizes.update(sizes)
        self._list = (sizes, self._epoch, ex)
        self._compare_stat_list(ex)

    def _listed_number(self, ex: Exchange, number: int, what: str) -> None:
        if number < 1 or (self._total is not None and number > self._total):
            self.add(
                "msg-number-out-of-range",
                f"{what} lists message {number}; the maildrop has {self._total}",
                ex,
            )
        elif number in self._deleted:
            self.add("deleted-message-served", f"{what} lists deleted message {number}", ex)

    def _compare_stat_list(self, ex: Exchange) -> None:
        if self._stat is None or self._list is None:
            return
        count, size, stat_epoch, _ = self._stat
        sizes, list_epoch, _ = self._list
        if stat_epoch != list_epoch or stat_epoch != self._epoch:
            return
        listed_count, listed_size = len(sizes), sum(sizes.values())
        if (count, size) != (listed_count, listed_size):
            self.add(
                "stat-list-mismatch",
                f"STAT says {count} messages, {size} octets; LIST lists {listed_count}, "
                f"{listed_size} octets",
                ex,
            )
        self._stat = None  # one comparison per pair

    def _uid_listing(self, ex: Exchange, lines: tuple[bytes, ...]) -> None:
        uids: dict[int, str] = {}
        for line in lines:
            parts = line.split(b" ", 1)
            if len(parts) < 2 or not parts[0].isdigit():
                continue
            number = int(parts[0])
            self._listed_number(ex, number, "UIDL")
            uid_bytes = parts[1]
            bad = [b for b in uid_bytes if not 0x21 <= b <= 0x7E]
            if bad:
                self.add(
                    "uidl-bad-character",
                    f"the unique id of message {number} holds octet 0x{bad[0]:02x}",
                    ex,
                )
            if len(uid_bytes) > 70:
                self.add(
                    "uidl-too-long",
                    f"the unique id of message {number} is {len(uid_bytes)} octets (limit 70)",
                    ex,
                )
            uids[number] = uid_bytes.decode("utf-8", "backslashreplace")
        self._check_uids(ex, uids)

    def _check_uids(self, ex: Exchange, uids: dict[int, str]) -> None:
        owners: dict[str, int] = {v: k for k, v in self._uids.items()}
        for number, uid in sorted(uids.items()):
            other = owners.get(uid)
            if other is not None and other != number:
                self.add(
                    "uidl-not-unique", f"messages {other} and {number} share unique id {uid}", ex
                )
            owners[uid] = number
            self._uids[number] = uid
            self._uid_seq[number] = ex.seq
        del owners

    def _cross_capture(self) -> None:
        if self._user is None:
            return
        mailbox = (self._user, self._upstream)
        for number, digest in sorted(self._digests.items()):
            uid = self._uids.get(number)
            if uid is None or not digest:
                continue
            earlier = self._memory.remember(mailbox, digest, uid, self.report.path)
            if earlier is not None:
                self.report.findings.append(
                    Finding(
                        rule="uidl-changed",
                        message=f"message {number} has unique id {uid}; the same message had "
                        f"{earlier[0]} in {earlier[1]}",
                        seq=self._uid_seq.get(number),
                    )
                )


def lint_capture(stream: CaptureStream, memory: MailboxMemory | None = None) -> CaptureReport:
    """Lint one capture read through ``stream`` (consumed)."""
    linter = SessionLinter(stream.header, str(stream.path), memory or MailboxMemory())
    # A message is recognised (uidl-changed) by its headers, its first MiB and its size:
    # lint needs no hash of every byte, diff and check do.
    items: Iterator[Analysed] = analyse(stream, rest_limit=IDENTITY_PREFIX)
    for item in items:
        linter.feed(item)
    return linter.finish(stream)
