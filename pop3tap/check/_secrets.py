"""Credentials for ``pop3tap check``: masked secrets in a capture are filled in from the
environment, a private netrc file or the caller, and never from the capture itself
(APOP digests are computed anew, RFC 1939 §7)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from netrc import NetrcParseError, netrc
from pathlib import Path

from pop3tap.check._config import MASK, CheckConfig, CheckError
from pop3tap.check._connection import Connection
from pop3tap.protocol import Credential, spec_of, split_command
from pop3tap.replay import RecordedExchange, RecordedSession


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


def needs_secret(session: RecordedSession) -> list[str]:
    """Commands of the session whose secret part is masked in the capture."""
    needs = []
    for ex in session.exchanges:
        masked = ex.raw_args.endswith(MASK) or any(line == MASK for line in ex.sasl_lines)
        spec = spec_of(ex.verb)
        # An APOP digest is bound to the recorded greeting: it is always computed afresh.
        if spec.credential is Credential.GREETING_DIGEST or (
            spec.secret_after is not None and masked
        ):
            needs.append(ex.command)
    return needs


def _fill_mask(line: bytes, secret: bytes) -> bytes:
    """``line`` with the placeholder that ends it replaced by ``secret``."""
    if not line.endswith(MASK):
        raise CheckError("a masked command does not end with the placeholder")
    return line[: -len(MASK)] + secret


def _apop_digest(timestamp: str, password: str) -> str:
    """RFC 1939 §7: MD5 of the greeting's timestamp followed by the shared secret."""
    return hashlib.md5((timestamp + password).encode(), usedforsecurity=False).hexdigest()


class Secrets:
    """Fills the masked parts of command lines and SASL answers."""

    def __init__(self, user: str | None, password: str | None) -> None:
        self.user = user
        self.password = password

    def _need(self, what: str) -> tuple[str, str]:
        if self.password is None or self.user is None:
            raise CheckError(f"{what}: the user name or password is unknown")
        return self.user, self.password

    def command(self, ex: RecordedExchange, conn: Connection) -> bytes:
        """The line to send for a recorded command: as the client wrote it (case and
        separators kept), with a masked PASS or AUTH initial response filled in where the
        placeholder stands, and an APOP digest computed over the live greeting."""
        line = ex.line
        credential = spec_of(ex.verb).credential
        if credential is Credential.PASSWORD and ex.raw_args == MASK:
            return _fill_mask(line, self._need("PASS")[1].encode())
        if credential is Credential.GREETING_DIGEST:
            user, password = self._need("APOP")
            stamp = conn.greeting.apop_timestamp if conn.greeting else None
            if not stamp:
                raise CheckError("APOP: the live server's greeting carries no timestamp")
            return f"APOP {user} {_apop_digest(stamp, password)}".encode()
        if credential is Credential.SASL:
            # Any separator may stand between the mechanism and the masked initial
            # response (RFC 1734 allows a tab): the masker's word rule finds them.
            mechanism, initial = split_command(ex.raw_args)
            if mechanism and initial == MASK:
                return _fill_mask(line, self.sasl(mechanism, 0, b""))
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
