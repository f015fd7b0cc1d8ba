"""``pop3tap lint``: judge a recorded session against the POP3 RFCs.

Each rule has an id, a severity, the side it blames and the RFC section it comes from
(:data:`RULES`, in ``_rules.py``; docs/lint.md lists them). :class:`SessionLinter`
(``_session.py``, with the mailbox rules in ``_mailbox.py``) walks the items of
:func:`pop3tap.analysis.analyse` once, in order, keeping only per-session state whose size
follows the mailbox (message numbers, sizes, unique ids), never the bodies.
:class:`MailboxMemory` (``_report.py``) carries what one capture taught about a mailbox
(unique id of each message content) to the next capture of the same user and server.
"""

from __future__ import annotations

from pop3tap.lint._report import (
    JSON_VERSION,
    MAX_FINDINGS_PER_RULE,
    CaptureReport,
    Finding,
    MailboxMemory,
    quote_rx,
    quote_tx,
)
from pop3tap.lint._rules import KNOWN_RESPONSE_CODES, RULES, SEVERITIES, Rule, Severity, Side
from pop3tap.lint._session import IDENTITY_PREFIX, SessionLinter, lint_capture

__all__ = [
    "IDENTITY_PREFIX",
    "JSON_VERSION",
    "KNOWN_RESPONSE_CODES",
    "MAX_FINDINGS_PER_RULE",
    "RULES",
    "SEVERITIES",
    "CaptureReport",
    "Finding",
    "MailboxMemory",
    "Rule",
    "SessionLinter",
    "Severity",
    "Side",
    "lint_capture",
    "quote_rx",
    "quote_tx",
]
