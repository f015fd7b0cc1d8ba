"""``pop3tap check``: replay the client side of a capture against a live server.

The server developer's regression test: the commands a real client sent are sent again,
in the same order and grouping (pipelined where they were pipelined), over plain TCP, STLS
or POP3S as recorded. The new session is written as a capture and compared with the old
one by :mod:`pop3tap.diff`.

Safety rules (docs/check.md):

* Only commands from the capture are sent; nothing is added. In particular no QUIT is sent
  unless the capture has one, so a session whose recorded client vanished after DELE ends
  without committing the deletions (RFC 1939 §6).
* DELE is refused unless the caller allows it, and even then a DELE is not sent once the
  live session answered an earlier command differently (message numbers may no longer
  name the same messages).
* Masked secrets are filled in from the caller; without them nothing is sent at all.
* Every wait is bounded: an idle timeout per read and a deadline per step; a server that
  does not answer gives a :class:`CheckError` naming the step.

Settings and outcome are in ``_config.py``, the connection in ``_connection.py``, the
credentials in ``_secrets.py``, the run itself in ``_run.py``.
"""

from __future__ import annotations

from pop3tap.check._config import CheckConfig, CheckError, CheckOutcome
from pop3tap.check._run import load_session, preflight, run_check
from pop3tap.check._secrets import env_name, find_credentials

__all__ = [
    "CheckConfig",
    "CheckError",
    "CheckOutcome",
    "env_name",
    "find_credentials",
    "load_session",
    "preflight",
    "run_check",
]
