"""The session summary: counters for the close-of-session line.

Which counter an answered command moves is the :data:`~._commands.COMMANDS` table's
``counter`` and ``login`` rule; this module only adds them up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pop3tap.protocol._commands import Counter
from pop3tap.protocol._values import rebuild_by_fields


@dataclass(slots=True)
class SessionSummary:
    """Counters for the close-of-session line, in the spirit of Dovecot's logout line."""

    commands: int = 0
    retr_count: int = 0
    retr_bytes: int = 0
    top_count: int = 0
    top_bytes: int = 0
    dele_count: int = 0
    #: ``+OK`` to QUIT from the TRANSACTION state: deletions were committed (RFC 1939 §6).
    reached_update: bool = False
    authenticated: bool = False
    client_bytes: int = 0
    server_bytes: int = 0
    anomalies: int = 0
    tls: bool = False

    def as_dict(self) -> dict[str, int | bool]:
        """Plain mapping for logs and capture records."""
        return {
            "commands": self.commands,
            "retr_count": self.retr_count,
            "retr_bytes": self.retr_bytes,
            "top_count": self.top_count,
            "top_bytes": self.top_bytes,
            "dele_count": self.dele_count,
            "reached_update": self.reached_update,
            "authenticated": self.authenticated,
            "client_bytes": self.client_bytes,
            "server_bytes": self.server_bytes,
            "anomalies": self.anomalies,
            "tls": self.tls,
        }

    def count_ok(
        self, counter: Counter, login: bool, body_bytes: int, *, in_transaction: bool
    ) -> None:
        """Count a ``+OK`` to a command with the table's ``counter`` and ``login`` rules.

        ``in_transaction``: the session was in TRANSACTION when the answer came, so a
        ``+OK`` to QUIT committed the deletions (RFC 1939 §6).
        """
        if counter is Counter.RETR:
            self.retr_count += 1
            self.retr_bytes += body_bytes
        elif counter is Counter.TOP:
            self.top_count += 1
            self.top_bytes += body_bytes
        elif counter is Counter.DELE:
            self.dele_count += 1
        elif login:
            self.authenticated = True
        elif counter is Counter.QUIT and in_transaction:
            self.reached_update = True

    def __reduce__(self) -> tuple[type[Any], tuple[object, ...]]:
        """Rebuilt through the constructor, in both builds (see :mod:`._values`)."""
        return rebuild_by_fields(self)
