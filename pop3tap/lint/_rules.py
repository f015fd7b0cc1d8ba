"""The rules of ``pop3tap lint``: each with an id, a severity, the side it blames and the
RFC section it comes from (docs/lint.md lists them). A table, read by the linter and the
reports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

Severity = Literal["error", "warning", "info"]


Side = Literal["client", "server", "capture"]


#: Severities from the most to the least serious.
SEVERITIES: Final[tuple[Severity, ...]] = ("error", "warning", "info")


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
