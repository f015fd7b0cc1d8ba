"""Mailbox-model replay: captures (or message files) served as a consistent POP3 server.

Byte replay (:mod:`pop3tap.replay`) answers only what was recorded. The model serves any
command order with RFC 1939's state machine over a mailbox built from what the captures
say (sizes, unique ids, bodies, headers, CAPA, wording), sending the recorded bytes where
the same command was answered in the same state and generated answers elsewhere.
"""

from pop3tap.model._files import mailbox_from_files
from pop3tap.model._gather import mailboxes_from_sessions
from pop3tap.model._mailbox import (
    Mailbox,
    ModelError,
    ModelMessage,
    Wording,
    dot_stuff,
    unstuff_body,
)
from pop3tap.model._session import ModelSession, Next, Phase, Reply, top_of
from pop3tap.model._store import MissingPolicy, ModelStore, synthesize

__all__ = [
    "Mailbox",
    "MissingPolicy",
    "ModelError",
    "ModelMessage",
    "ModelSession",
    "ModelStore",
    "Next",
    "Phase",
    "Reply",
    "Wording",
    "dot_stuff",
    "mailbox_from_files",
    "mailboxes_from_sessions",
    "synthesize",
    "top_of",
    "unstuff_body",
]
