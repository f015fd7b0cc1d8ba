"""The run of ``pop3tap check``: load and preflight the capture, replay its client side
group by group over a :class:`~pop3tap.check._connection.Connection`, stop a DELE once the
live answers diverge, and compare the new capture with the old (see the package)."""

from __future__ import annotations

import functools
import os
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pop3tap import __version__
from pop3tap.analysis import body_digests
from pop3tap.capture import CaptureWriter, CloseReason, Direction, EventName, read_capture
from pop3tap.capture import Secrets as CaptureSecrets
from pop3tap.check._config import MASK, CheckConfig, CheckError, CheckOutcome
from pop3tap.check._connection import Connection
from pop3tap.check._secrets import Secrets, env_name, find_credentials, needs_secret
from pop3tap.protocol import Barrier, Credential, Flag, spec_of, split_command
from pop3tap.replay import RecordedExchange, RecordedSession, ReplayError, session_from_capture

__all__ = ["load_session", "preflight", "run_check"]


def _sends(ex: RecordedExchange, verb: str) -> bool:
    """Whether the line check would send for ``ex`` is the command ``verb``.

    The recorded verb is not enough: where the pairing was lost the capture shows the
    command masked, while a capture with kept secrets still holds the line that is sent.
    """
    return ex.verb == verb or split_command(ex.line)[0] == verb


def _holds_back(verb: str) -> bool:
    """STLS and AUTH: nothing may follow them in the same write (RFC 2595 §4, RFC 5034
    §4), whatever the arguments (the command table's barrier)."""
    return spec_of(verb).barrier is not Barrier.NONE


def _sent_alone(verb: str) -> bool:
    """A command that never joins a pipelined group: one that holds back what follows,
    or APOP, whose digest is computed over the live greeting (RFC 1939 §7)."""
    return _holds_back(verb) or spec_of(verb).credential is Credential.GREETING_DIGEST


def _groups(exchanges: tuple[RecordedExchange, ...]) -> list[list[RecordedExchange]]:
    """Commands sent together: a pipelined command joins the group before it."""
    groups: list[list[RecordedExchange]] = []
    for ex in exchanges:
        simple = not ex.sasl_lines and not _sent_alone(ex.verb) and not _sends(ex, "DELE")
        # A QUIT never shares a write with a DELE: its answer is checked before the QUIT.
        if (
            groups
            and Flag.PIPELINED in ex.flags
            and simple
            and all(not g.sasl_lines and not _holds_back(g.verb) for g in groups[-1])
            and not (_sends(ex, "QUIT") and any(_sends(g, "DELE") for g in groups[-1]))
        ):
            groups[-1].append(ex)
        else:
            groups.append([ex])
    return groups


def load_session(path: Path) -> tuple[RecordedSession, bool]:
    """The recorded session to replay, and whether it was recorded over POP3S.

    Raises:
        CheckError: unreadable capture, or one that cannot be replayed.
    """
    from pop3tap.capture import CaptureError

    try:
        capture = read_capture(path)
        session = session_from_capture(capture)
    except (CaptureError, ReplayError) as exc:
        raise CheckError(str(exc)) from None
    return session, capture.header.options.get("upstream_tls") is True


def preflight(session: RecordedSession, config: CheckConfig) -> tuple[str | None, str | None]:
    """Refuse what must not be sent; return the user and password the session needs.

    Raises:
        CheckError: DELE without permission, or a masked secret nobody supplied.
    """
    deletes = [ex for ex in session.exchanges if _sends(ex, "DELE")]
    if deletes and not config.allow_dele:
        raise CheckError(
            f"{session.path}: the capture deletes messages ({deletes[0].command}, "
            f"#{deletes[0].seq}); refusing to send DELE to {config.host}:{config.port} "
            "without --allow-dele"
        )
    needs = needs_secret(session)
    if not needs:
        return session.user, None
    user, password = find_credentials(session.user, config)
    if password is None or user is None:
        who = session.user or "the user"
        hint = env_name(session.user) if session.user else "POP3TAP_PASSWORD_<USER>"
        raise CheckError(
            f"{session.path}: {needs[0]} is masked; give --password {who}=..., a netrc "
            f"entry for {config.host} or {hint} (nothing was sent)"
        )
    return user, password


def run_check(
    session: RecordedSession,
    config: CheckConfig,
    credentials: tuple[str | None, str | None],
    *,
    upstream_tls: bool,
) -> CheckOutcome:
    """Replay ``session`` against the live server and record the new session.

    Raises:
        CheckError: a step failed or timed out (the new capture is closed either way).
    """
    tls_context: ssl.SSLContext | None = None
    header_options: dict[str, Any] = {"check_of": str(session.path)}
    if upstream_tls or session.stls:
        from pop3tap.tls import TlsSetupError, upstream_context

        try:
            tls_context = upstream_context(
                ca_file=config.upstream_ca, insecure=config.insecure_upstream
            )
        except TlsSetupError as exc:
            raise CheckError(str(exc)) from None
    header_options["upstream_tls"] = upstream_tls
    writer = CaptureWriter.create(
        config.capture_dir,
        session_id=os.urandom(6).hex(),
        header_fields={
            "pop3tap": __version__,
            "client": "pop3tap-check",
            "listen": "",
            "upstream": f"{config.host}:{config.port}",
            "secrets": CaptureSecrets.MASKED,
            "options": header_options,
        },
    )
    conn = Connection(config, writer)
    outcome = CheckOutcome(capture=writer.path, sent=0)
    reason: str = CloseReason.QUIT
    try:
        conn.connect(tls_context if upstream_tls else None)
        conn.wait(lambda: conn.greeting is not None or conn.closed_by_server, "greeting")
        if conn.greeting is None:
            raise CheckError("greeting: the server closed the connection without one")
        _replay(session, conn, Secrets(*credentials), tls_context, outcome)
    except CheckError:
        reason = CloseReason.ERROR
        raise
    finally:
        at = conn.now()
        conn.finish()
        conn.close()
        if not conn.closed_by_server:
            writer.write_event(EventName.EOF, at, dir=Direction.CLIENT)
        summary = conn.observer.summary().as_dict()
        writer.close(at, reason, summary)
    return outcome


def _replay(
    session: RecordedSession,
    conn: Connection,
    secrets: Secrets,
    tls_context: ssl.SSLContext | None,
    outcome: CheckOutcome,
) -> None:
    recorded = {ex.seq: ex for ex in session.exchanges}
    for group in _groups(session.exchanges):
        first = group[0]
        stopped = _reason_to_stop(group, conn, recorded)
        if stopped is not None:
            outcome.stopped = stopped
            return
        expected = len(conn.exchanges) + len(group)
        step = f"{first.command} (#{first.seq})"
        _send_group(group, conn, secrets, expected, step)
        outcome.sent += len(group)
        answered = all(ex.status is not None for ex in group)
        try:
            conn.wait(functools.partial(_answered, conn, expected), f"response to {step}")
        except CheckError:
            if answered:
                raise
            return  # the recorded server never answered either
        if first.starts_tls:
            live = conn.exchanges[-1]
            if live.status is None or live.status.value != "+OK":
                raise CheckError(
                    f"STLS (#{first.seq}): the live server refused it; not sending the rest "
                    "of the session in plaintext"
                )
            assert tls_context is not None
            conn.start_tls(tls_context, "STLS handshake")
            conn.observer.resume_after_tls()
        if any(ex.closes for ex in group):
            return


def _reason_to_stop(
    group: list[RecordedExchange], conn: Connection, recorded: Mapping[int, RecordedExchange]
) -> str | None:
    """Why the group must not be sent: a DELE or QUIT after a divergence, or a closed
    connection; None to go on."""
    first = group[0]
    if _sends(first, "DELE"):
        diverged = _first_divergence(conn, recorded)
        if diverged is not None:
            return (
                f"stopped before {first.command} (#{first.seq}): the live session "
                f"answered {diverged} differently, so message numbers may differ"
            )
    if any(_sends(ex, "QUIT") for ex in group):
        refused = _dele_divergence(conn, recorded)
        if refused is not None:
            return (
                f"stopped before QUIT (#{group[-1].seq}): the live server answered "
                f"{refused} otherwise than recorded, so QUIT could commit a deletion "
                "the recorded session did not make"
            )
    if conn.closed_by_server:
        return f"the server closed the connection before #{first.seq}"
    return None


def _send_group(
    group: list[RecordedExchange], conn: Connection, secrets: Secrets, expected: int, step: str
) -> None:
    """Send the group's command lines at once (as pipelined), then answer the first
    command's SASL challenges, secrets filled in."""
    first = group[0]
    data = b"".join(secrets.command(ex, conn) + b"\r\n" for ex in group)
    # Only lines after this command can be its SASL challenges.
    conn.want_lines = bool(first.sasl_lines)
    conn._lines.clear()
    conn._partial = b""
    conn.send(data, step)
    for index, answer in enumerate(first.sasl_lines):
        line = _wait_challenge(conn, step, expected)
        if line is None:
            break
        if answer == MASK:
            mechanism = first.raw_args.split(None, 1)[0].decode("ascii", "replace").upper()
            answer = secrets.sasl(mechanism, index, line[1:].strip())
        conn.send(answer + b"\r\n", step)


def _answered(conn: Connection, expected: int) -> bool:
    return len(conn.exchanges) >= expected


def _wait_challenge(conn: Connection, step: str, expected: int) -> bytes | None:
    """The next ``+`` line of the server (None when the exchange completed instead)."""
    while True:
        line = conn.take_line()
        while line is not None:
            text = line.rstrip(b"\r")
            if text == b"+" or text.startswith(b"+ "):
                # A challenge the server already closed with its status line (same read):
                # an answer now would be taken as a command.
                return None if len(conn.exchanges) >= expected else text
            line = conn.take_line()
        if len(conn.exchanges) >= expected:
            return None
        conn.wait(
            lambda: bool(conn._lines) or len(conn.exchanges) >= expected,
            f"SASL challenge for {step}",
        )


def _recorded_digest(ex: RecordedExchange) -> str:
    """Digest of a recorded multi-line body, as the body tap computes it for the live one."""
    response = ex.response
    return body_digests(ex.verb, response[response.find(b"\n") + 1 :])[0]


def _dele_divergence(conn: Connection, recorded: Mapping[int, RecordedExchange]) -> str | None:
    """The first DELE the live server answered with another status than recorded, if any.

    RFC 1939 §6: QUIT removes the messages DELE marked, so one marked live but refused in
    the recording must not be committed.
    """
    for ex in conn.exchanges:
        old = recorded.get(ex.seq)
        if old is not None and _sends(old, "DELE") and old.status != ex.status:
            return f"{old.command} (#{ex.seq})"
    return None


def _first_divergence(conn: Connection, recorded: Mapping[int, RecordedExchange]) -> str | None:
    """The first exchange the live server answered otherwise than the recording, if any.

    Compared: status, first line and, for multi-line answers, the body digest, so a DELE
    is only sent while message numbers still name the recorded messages.
    """
    for ex in conn.exchanges:
        old = recorded.get(ex.seq)
        if old is None or old.sasl_lines or spec_of(old.verb).login:
            continue
        first = old.response.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", "backslashreplace")
        if old.status != ex.status or first != ex.first_line:
            return f"{old.command} (#{ex.seq})"
        live = conn.digests.get(ex.seq)
        if live is not None and live != _recorded_digest(old):
            return f"{old.command} (#{ex.seq})"
    return None
