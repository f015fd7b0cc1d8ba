"""The session rules of ``pop3tap lint``: judge a recorded session against the POP3 RFCs.

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
from typing import Final

from pop3tap.analysis import Analysed, BodyFacts, CaptureStream, analyse
from pop3tap.capture import CaptureHeader, Direction, EventName, EventRecord
from pop3tap.lint._mailbox import MailboxRules
from pop3tap.lint._report import (
    MAX_FINDINGS_PER_RULE,
    CaptureReport,
    MailboxMemory,
)
from pop3tap.lint._rules import KNOWN_RESPONSE_CODES
from pop3tap.protocol import (
    Credential,
    Exchange,
    Flag,
    Greeting,
    PairingLost,
    Pop3State,
    StartTls,
    Status,
    StrayLine,
    UnsolicitedLine,
    spec_of,
    split_command,
)

#: Bytes of a message after its headers that go into the digest lint recognises it by.
IDENTITY_PREFIX: Final = 1024 * 1024


_RESP_LEVEL: Final = re.compile(rb"[\x21-\x2e\x30-\x5c\x5e-\x7f]+")
_OCTETS: Final = re.compile(r"^\+OK\s+(\d+)\s+octets", re.IGNORECASE)
_PLAINTEXT_MECHS: Final = frozenset({"PLAIN", "LOGIN"})


def _mechanism(args: str) -> str:
    """The SASL mechanism an AUTH names, upper-cased: its first word by the masker's word
    rule (any blank or control byte separates; RFC 1734 allows a tab)."""
    return split_command(args.encode("utf-8", "surrogateescape"))[0]


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


class SessionLinter(MailboxRules):
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

    # ------------------------------------------------------------------ walking

    def feed(self, item: Analysed) -> None:
        """Apply the rules to one analysed item."""
        record = item.record
        if isinstance(record, EventRecord) and record.name == EventName.FAULT:
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
        elif isinstance(event, StrayLine) and event.direction is Direction.SERVER:
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
        number = _number(ex.args) if spec_of(verb).message_argument else None
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
        spec = spec_of(verb)
        if self._authenticated and spec.credential is not Credential.NONE:
            self.add("login-after-login", f"{verb} after a successful login", ex)
        if spec.reads_message and number is not None and number in self._deleted:
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
        plaintext = spec.credential in (Credential.USER_NAME, Credential.PASSWORD) or (
            spec.credential is Credential.SASL and _mechanism(ex.args) in _PLAINTEXT_MECHS
        )
        # USER only names the account; PASS and the SASL data reveal the secret.
        protected = self._tls or self._stls_seq is not None or self._loopback
        if plaintext and spec.credential is not Credential.USER_NAME and not protected:
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
        state = spec_of(verb).state
        if not self._authenticated and state is Pop3State.TRANSACTION:
            self.add("ok-in-wrong-state", f"+OK to {verb} before the login", ex)
        elif self._authenticated and state is Pop3State.AUTHORIZATION:
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

def lint_capture(stream: CaptureStream, memory: MailboxMemory | None = None) -> CaptureReport:
    """Lint one capture read through ``stream`` (consumed)."""
    linter = SessionLinter(stream.header, str(stream.path), memory or MailboxMemory())
    # A message is recognised (uidl-changed) by its headers, its first MiB and its size:
    # lint needs no hash of every byte, diff and check do.
    items: Iterator[Analysed] = analyse(stream, rest_limit=IDENTITY_PREFIX)
    for item in items:
        linter.feed(item)
    return linter.finish(stream)
