"""The session phase as one enum and one transition table.

Rule 1: everything that moves the phase is in this file, as a row of :data:`TRANSITIONS`.
The observer reports what it saw (a :class:`Trigger`); the table says where that leads.
A pair that is not in the table leaves the phase as it is: a tap never refuses what the
peers did, it only records it (a server that accepts AUTH in the TRANSACTION state is
logged, not corrected).

Rule 2: the phase describes the session, not the pairing machinery. Which commands are
still waiting, and whether client lines are held back behind a STLS or an ``AUTH
mechanism``, is the pending queue's business (:mod:`._pending`); the phase says whether
the session is greeted, logged in, committed, encrypted, or beyond what the observer
follows.

RFC 1939 §3 names three states (AUTHORIZATION, TRANSACTION, UPDATE); RFC 5034 §4 adds
the SASL exchange inside AUTHORIZATION; RFC 2595 §4 the wait for the answer to STLS, after
which the session stays in AUTHORIZATION under TLS.
"""

from __future__ import annotations

from enum import Enum


class SessionPhase(Enum):
    """Where a POP3 session stands, as far as the observer can tell."""

    #: No server line yet: the first one is the greeting (RFC 1939 §4).
    GREETING = "greeting"
    #: Greeted, not logged in (RFC 1939 §4).
    AUTHORIZATION = "authorization"
    #: An ``AUTH mechanism`` waits for its final answer (RFC 5034 §4).
    SASL = "sasl"
    #: A STLS waits for its answer (RFC 2595 §4).
    STLS_PENDING = "stls_pending"
    #: STLS was accepted: the bytes are TLS until the caller resumes parsing.
    OPAQUE = "opaque"
    #: Logged in: commands work on the maildrop (RFC 1939 §5).
    TRANSACTION = "transaction"
    #: QUIT answered ``+OK`` from TRANSACTION: deletions were committed (RFC 1939 §6).
    UPDATE = "update"
    #: Pairing was given up to keep memory bounded; bytes are only counted until a safe
    #: point lets it resume (see :mod:`._resync`).
    LOST = "lost"


class Trigger(Enum):
    """What the observer saw that may move the phase."""

    #: The first server line (or the caller says the greeting was missed).
    GREETING = "greeting"
    #: An ``AUTH mechanism`` was sent.
    AUTH_SENT = "auth_sent"
    #: A STLS was sent.
    STLS_SENT = "stls_sent"
    #: A ``+OK`` to PASS, APOP or ``AUTH mechanism`` (:func:`counts_as_login`).
    LOGIN = "login"
    #: An AUTH or STLS was answered without a login or a switch to TLS.
    BARRIER_ENDED = "barrier_ended"
    #: ``+OK`` to STLS: TLS starts after that line.
    TLS_STARTED = "tls_started"
    #: TLS is up on both legs; parsing resumes on the decrypted streams.
    TLS_RESUMED = "tls_resumed"
    #: ``+OK`` to QUIT.
    QUIT_OK = "quit_ok"


P = SessionPhase
T = Trigger
#: ``(phase, trigger) -> next phase``; pairs not listed keep the phase.
TRANSITIONS: dict[tuple[SessionPhase, Trigger], SessionPhase] = {
    (P.GREETING, T.GREETING): P.AUTHORIZATION,
    (P.AUTHORIZATION, T.AUTH_SENT): P.SASL,
    (P.AUTHORIZATION, T.STLS_SENT): P.STLS_PENDING,
    (P.AUTHORIZATION, T.LOGIN): P.TRANSACTION,
    (P.SASL, T.LOGIN): P.TRANSACTION,
    (P.SASL, T.BARRIER_ENDED): P.AUTHORIZATION,
    (P.STLS_PENDING, T.LOGIN): P.TRANSACTION,
    (P.STLS_PENDING, T.BARRIER_ENDED): P.AUTHORIZATION,
    (P.STLS_PENDING, T.TLS_STARTED): P.OPAQUE,
    # A server that accepts STLS where RFC 2595 §4 forbids it still switches to TLS.
    (P.AUTHORIZATION, T.TLS_STARTED): P.OPAQUE,
    (P.SASL, T.TLS_STARTED): P.OPAQUE,
    (P.TRANSACTION, T.TLS_STARTED): P.OPAQUE,
    # RFC 2595 §4: after the TLS negotiation the session is in AUTHORIZATION.
    (P.OPAQUE, T.TLS_RESUMED): P.AUTHORIZATION,
    (P.TRANSACTION, T.QUIT_OK): P.UPDATE,
}
del P, T


def next_phase(phase: SessionPhase, trigger: Trigger) -> SessionPhase:
    """The phase after ``trigger`` (:data:`TRANSITIONS`; unlisted pairs keep the phase)."""
    return TRANSITIONS.get((phase, trigger), phase)
