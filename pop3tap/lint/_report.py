"""What ``pop3tap lint`` reports: findings, one capture's report and its JSON form, and
the memory of mailboxes that carries unique ids from one capture to the next."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from pop3tap.lint._rules import RULES, SEVERITIES, Severity, Side
from pop3tap.protocol import CommandSent, Exchange

#: Findings of one rule kept per capture; the rest are only counted.
MAX_FINDINGS_PER_RULE: Final = 20


#: Version of the JSON output schema (docs/lint.md).
JSON_VERSION: Final = 1


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
