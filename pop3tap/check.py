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
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import hmac
import os
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from netrc import NetrcParseError, netrc
from pathlib import Path
from typing import Any, Final

from pop3tap import __version__
from pop3tap.analysis import _BodyTap, body_digests
from pop3tap.capture import CaptureWriter, read_capture
from pop3tap.protocol import (
    SECRET_PLACEHOLDER,
    Event,
    Exchange,
    Flag,
    Greeting,
    SessionObserver,
    split_command,
)
from pop3tap.replay import RecordedExchange, RecordedSession, ReplayError, session_from_capture

__all__ = ["CheckConfig", "CheckError", "CheckOutcome", "find_credentials", "run_check"]

_MASK: Final = SECRET_PLACEHOLDER.encode()
_RECV: Final = 256 * 1024
#: A step may take at most this many idle timeouts in total (a trickling server).
_STEP_FACTOR: Final = 10


class CheckError(Exception):
    """The check cannot go on; the message is one line naming the step."""


@dataclass(frozen=True, slots=True)
class CheckConfig:
    """What ``pop3tap check`` was asked to do."""

    host: str
    port: int
    capture_dir: Path
    allow_dele: bool = False
    timeout: float = 30.0
    upstream_ca: Path | None = None
    insecure_upstream: bool = False
    passwords: Mapping[str, str] = field(default_factory=dict)
    netrc_file: Path | None = None
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))


@dataclass(slots=True)
class CheckOutcome:
    """The new capture and how the replay ended."""

    capture: Path
    sent: int
    #: Why the replay stopped before the end of the recorded session, or None.
    stopped: str | None = None


def env_name(user: str) -> str:
    """``POP3TAP_PASSWORD_<USER>`` with the user upper-cased, other characters as ``_``."""
    return "POP3TAP_PASSWORD_" + "".join(c if c.isalnum() else "_" for c in user.upper())


def find_credentials(user: str | None, config: CheckConfig) -> tuple[str | None, str | None]:
    """User and password: --password, then the netrc file, then the environment.

    ``user`` is the name the capture shows (None when masked, as with ``AUTH PLAIN``); a
    single --password entry or the netrc entry for the host then names the user.
    """
    if user is not None and user in config.passwords:
        return user, config.passwords[user]
    if user is None and len(config.passwords) == 1:
        return next(iter(config.passwords.items()))
    path = config.netrc_file
    if path is None:
        home = config.environ.get("HOME")
        path = Path(home) / ".netrc" if home else None
    if config.netrc_file is not None and not config.netrc_file.is_file():
        raise CheckError(f"netrc {config.netrc_file}: no such file")
    if path is not None and path.is_file():
        _check_private(path)
        try:
            entry = netrc(str(path)).authenticators(config.host)
        except NetrcParseError as exc:
            # The library's message quotes the token it could not place: often a password.
            raise CheckError(f"netrc {path}, line {exc.lineno}: cannot parse it") from None
        except OSError as exc:
            raise CheckError(f"netrc {path}: {exc.strerror or exc}") from None
        if entry is not None and entry[2] is not None and (user is None or entry[0] == user):
            return entry[0] or user, entry[2]
    if user is not None:
        return user, config.environ.get(env_name(user))
    return None, None


def _check_private(path: Path) -> None:
    """Refuse a netrc file others could read or plant passwords in (as ftp and Python do)."""
    info = path.stat()
    if info.st_uid != os.geteuid():
        raise CheckError(f"netrc {path}: owned by another user; not reading passwords from it")
    if info.st_mode & 0o077:
        raise CheckError(f"netrc {path}: readable or writable by others; chmod 600 it")


def _needs_secret(session: RecordedSession) -> list[str]:
    """Commands of the session whose secret part is masked in the capture."""
    needs = []
    for ex in session.exchanges:
        masked = ex.raw_args.endswith(_MASK) or any(line == _MASK for line in ex.sasl_lines)
        if ex.verb == "APOP" or (ex.verb in ("PASS", "AUTH") and masked):
            needs.append(ex.command)
    return needs


class _Connection:
    """A blocking socket with bounded waits, feeding a SessionObserver and a capture."""

    def __init__(self, config: CheckConfig, writer: CaptureWriter) -> None:
        self.config = config
        self.writer = writer
        self.tap = _BodyTap(stats=False)
        self.observer = SessionObserver(body_listener=self.tap)
        #: Body digests of the live multi-line responses, by command number.
        self.digests: dict[int, str] = {}
        self.sock: socket.socket | ssl.SSLSocket | None = None
        self.started = time.monotonic()
        self.exchanges: list[Exchange] = []
        self.greeting: Greeting | None = None
        #: Server bytes after the last complete line, for SASL challenges (bounded).
        self._partial = b""
        self._lines: list[bytes] = []
        #: Collect server lines (only while a SASL exchange waits for challenges).
        self.want_lines = False
        self.closed_by_server = False

    def now(self) -> float:
        return time.monotonic() - self.started

    def connect(self, tls: ssl.SSLContext | None) -> None:
        cfg = self.config
        try:
            raw = socket.create_connection((cfg.host, cfg.port), timeout=cfg.timeout)
        except OSError as exc:
            raise CheckError(
                f"connect to {cfg.host}:{cfg.port} failed: {exc.strerror or exc}"
            ) from None
        self.sock = raw
        self.writer.write_event("upstream_connected", self.now(), local=str(raw.getsockname()))
        if tls is not None:
            self.start_tls(tls, "POP3S handshake")

    def start_tls(self, context: ssl.SSLContext, step: str) -> None:
        assert self.sock is not None
        cfg = self.config
        try:
            self.sock = context.wrap_socket(self.sock, server_hostname=cfg.host)
        except TimeoutError:
            raise CheckError(f"{step} with {cfg.host}:{cfg.port}: timed out") from None
        except (OSError, ssl.SSLError) as exc:
            raise CheckError(f"{step} with {cfg.host}:{cfg.port} failed: {exc}") from None
        self.writer.write_event("tls", self.now(), leg="server")

    def send(self, data: bytes, step: str) -> None:
        assert self.sock is not None
        at = self.now()
        # As the relay records: masked bytes now, lines held after an AUTH once the
        # pairing says what they are (before the server bytes that told it).
        masked = self.observer.mask_client(data, at)
        if masked:
            self.writer.write_data("c2s", at, masked)
        events = self.observer.feed_client(data, at)
        self._write_released()
        self._handle(events)
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise CheckError(f"{step}: sending failed: {exc.strerror or exc}") from None

    def _write_released(self) -> None:
        for at, data in self.observer.take_masked_client():
            self.writer.write_data("c2s", at, data)

    def finish(self) -> None:
        """The session ends: client lines still held are masked and written."""
        self.observer.abandon_client_lines()
        self._write_released()

    def wait(self, done: Callable[[], bool], step: str) -> None:
        """Read until ``done()``; CheckError after the idle timeout or the step deadline."""
        assert self.sock is not None
        cfg = self.config
        deadline = time.monotonic() + cfg.timeout * _STEP_FACTOR
        while not done():
            if self.closed_by_server:
                raise CheckError(f"{step}: the server closed the connection")
            left = deadline - time.monotonic()
            if left <= 0:
                raise CheckError(f"{step}: not complete after {cfg.timeout * _STEP_FACTOR:g}s")
            self.sock.settimeout(min(cfg.timeout, left))
            try:
                data = self.sock.recv(_RECV)
            except TimeoutError:
                raise CheckError(
                    f"{step}: no answer from {cfg.host}:{cfg.port} within {cfg.timeout:g}s"
                ) from None
            except OSError as exc:
                raise CheckError(f"{step}: {exc.strerror or exc}") from None
            self.receive(data)

    def receive(self, data: bytes) -> None:
        at = self.now()
        if not data:
            self.closed_by_server = True
            events = self.observer.end_server(at)
            self._write_released()
            self.writer.write_event("eof", at, dir="s2c")
            self._handle(events)
            return
        events = self.observer.feed_server(data, at)
        self._write_released()
        self.writer.write_data("s2c", at, data)
        self._handle(events)
        if not self.want_lines:
            return
        buffered = self._partial + data
        *lines, self._partial = buffered.split(b"\n")
        self._partial = self._partial[-8192:]
        self._lines.extend(line[:8192] for line in lines[-64:])
        del self._lines[:-64]

    def take_line(self) -> bytes | None:
        return self._lines.pop(0) if self._lines else None

    def _handle(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, Greeting):
                self.greeting = event
            elif isinstance(event, Exchange):
                self.exchanges.append(event)
                body = self.tap.take(event) if event.multiline else None
                if body is not None:
                    self.digests[event.seq] = body.digest

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()


def _apop_digest(timestamp: str, password: str) -> str:
    """RFC 1939 §7: MD5 of the greeting's timestamp followed by the shared secret."""
    return hashlib.md5((timestamp + password).encode(), usedforsecurity=False).hexdigest()


class _Secrets:
    """Fills the masked parts of command lines and SASL answers."""

    def __init__(self, user: str | None, password: str | None) -> None:
        self.user = user
        self.password = password

    def _need(self, what: str) -> tuple[str, str]:
        if self.password is None or self.user is None:
            raise CheckError(f"{what}: the user name or password is unknown")
        return self.user, self.password

    def command(self, ex: RecordedExchange, conn: _Connection) -> bytes:
        line = ex.line
        if ex.verb == "PASS" and ex.raw_args == _MASK:
            return b"PASS " + self._need("PASS")[1].encode()
        if ex.verb == "APOP":
            user, password = self._need("APOP")
            stamp = conn.greeting.apop_timestamp if conn.greeting else None
            if not stamp:
                raise CheckError("APOP: the live server's greeting carries no timestamp")
            return f"APOP {user} {_apop_digest(stamp, password)}".encode()
        if ex.verb == "AUTH" and ex.raw_args.endswith(b" " + _MASK):
            mechanism = ex.raw_args.split(None, 1)[0].decode("ascii", "replace").upper()
            return b"AUTH " + mechanism.encode() + b" " + self.sasl(mechanism, 0, b"")
        return line

    def sasl(self, mechanism: str, step: int, challenge: bytes) -> bytes:
        user, password = self._need(f"AUTH {mechanism}")
        if mechanism == "PLAIN":
            return base64.b64encode(f"\0{user}\0{password}".encode())
        if mechanism == "LOGIN":
            return base64.b64encode((user if step == 0 else password).encode())
        if mechanism == "CRAM-MD5":
            try:
                decoded = base64.b64decode(challenge.strip(), validate=True)
            except ValueError:
                raise CheckError("AUTH CRAM-MD5: the server's challenge is not base64") from None
            mac = hmac.new(password.encode(), decoded, hashlib.md5).hexdigest()
            return base64.b64encode(f"{user} {mac}".encode())
        raise CheckError(f"AUTH {mechanism}: cannot fill in masked data for this mechanism")


def _sends(ex: RecordedExchange, verb: str) -> bool:
    """Whether the line check would send for ``ex`` is the command ``verb``.

    The recorded verb is not enough: where the pairing was lost the capture shows the
    command masked, while a capture with kept secrets still holds the line that is sent.
    """
    return ex.verb == verb or split_command(ex.line)[0] == verb


def _groups(exchanges: tuple[RecordedExchange, ...]) -> list[list[RecordedExchange]]:
    """Commands sent together: a pipelined command joins the group before it."""
    groups: list[list[RecordedExchange]] = []
    for ex in exchanges:
        simple = (
            not ex.sasl_lines and ex.verb not in ("STLS", "AUTH", "APOP") and not _sends(ex, "DELE")
        )
        # A QUIT never shares a write with a DELE: its answer is checked before the QUIT.
        if (
            groups
            and Flag.PIPELINED in ex.flags
            and simple
            and all(not g.sasl_lines and g.verb not in ("STLS", "AUTH") for g in groups[-1])
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
    needs = _needs_secret(session)
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
            "secrets": "masked",
            "options": header_options,
        },
    )
    conn = _Connection(config, writer)
    outcome = CheckOutcome(capture=writer.path, sent=0)
    reason = "quit"
    try:
        conn.connect(tls_context if upstream_tls else None)
        conn.wait(lambda: conn.greeting is not None or conn.closed_by_server, "greeting")
        if conn.greeting is None:
            raise CheckError("greeting: the server closed the connection without one")
        _replay(session, conn, _Secrets(*credentials), tls_context, outcome)
    except CheckError:
        reason = "error"
        raise
    finally:
        at = conn.now()
        conn.finish()
        conn.close()
        if not conn.closed_by_server:
            writer.write_event("eof", at, dir="c2s")
        summary = conn.observer.summary().as_dict()
        writer.close(at, reason, summary)
    return outcome


def _replay(
    session: RecordedSession,
    conn: _Connection,
    secrets: _Secrets,
    tls_context: ssl.SSLContext | None,
    outcome: CheckOutcome,
) -> None:
    recorded = {ex.seq: ex for ex in session.exchanges}
    for group in _groups(session.exchanges):
        first = group[0]
        if _sends(first, "DELE"):
            diverged = _first_divergence(conn, recorded)
            if diverged is not None:
                outcome.stopped = (
                    f"stopped before {first.command} (#{first.seq}): the live session "
                    f"answered {diverged} differently, so message numbers may differ"
                )
                return
        if any(_sends(ex, "QUIT") for ex in group):
            refused = _dele_divergence(conn, recorded)
            if refused is not None:
                outcome.stopped = (
                    f"stopped before QUIT (#{group[-1].seq}): the live server answered "
                    f"{refused} otherwise than recorded, so QUIT could commit a deletion "
                    "the recorded session did not make"
                )
                return
        if conn.closed_by_server:
            outcome.stopped = f"the server closed the connection before #{first.seq}"
            return
        expected = len(conn.exchanges) + len(group)
        step = f"{first.command} (#{first.seq})"
        data = b"".join(secrets.command(ex, conn) + b"\r\n" for ex in group)
        # Only lines after this command can be its SASL challenges.
        conn.want_lines = bool(first.sasl_lines)
        conn._lines.clear()
        conn._partial = b""
        conn.send(data, step)
        outcome.sent += len(group)
        for index, answer in enumerate(first.sasl_lines):
            line = _wait_challenge(conn, step, expected)
            if line is None:
                break
            if answer == _MASK:
                mechanism = first.raw_args.split(None, 1)[0].decode("ascii", "replace").upper()
                answer = secrets.sasl(mechanism, index, line[1:].strip())
            conn.send(answer + b"\r\n", step)
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


def _answered(conn: _Connection, expected: int) -> bool:
    return len(conn.exchanges) >= expected


def _wait_challenge(conn: _Connection, step: str, expected: int) -> bytes | None:
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


def _dele_divergence(conn: _Connection, recorded: Mapping[int, RecordedExchange]) -> str | None:
    """The first DELE the live server answered with another status than recorded, if any.

    RFC 1939 §6: QUIT removes the messages DELE marked, so one marked live but refused in
    the recording must not be committed.
    """
    for ex in conn.exchanges:
        old = recorded.get(ex.seq)
        if old is not None and _sends(old, "DELE") and old.status != ex.status:
            return f"{old.command} (#{ex.seq})"
    return None


def _first_divergence(conn: _Connection, recorded: Mapping[int, RecordedExchange]) -> str | None:
    """The first exchange the live server answered otherwise than the recording, if any.

    Compared: status, first line and, for multi-line answers, the body digest, so a DELE
    is only sent while message numbers still name the recorded messages.
    """
    for ex in conn.exchanges:
        old = recorded.get(ex.seq)
        if old is None or old.sasl_lines or old.verb in ("PASS", "APOP", "AUTH"):
            continue
        first = old.response.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", "backslashreplace")
        if old.status != ex.status or first != ex.first_line:
            return f"{old.command} (#{ex.seq})"
        live = conn.digests.get(ex.seq)
        if live is not None and live != _recorded_digest(old):
            return f"{old.command} (#{ex.seq})"
    return None
