"""Where the console's password comes from: a hidden prompt, an environment variable, or
a netrc file; and how it becomes APOP, AUTH PLAIN, LOGIN or CRAM-MD5 data.

The password is only ever put on the wire; the capture masks it (see
:class:`~pop3tap.protocol.SecretMasker`), it is never printed, and lines that would carry
it are kept out of the history (:func:`line_has_secret`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import netrc
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pop3tap.protocol import mask_line
from pop3tap.protocol._commands import secret_verb

#: Environment variable read for the password in scripted use.
PASSWORD_ENV: Final = "POP3TAP_PASSWORD"
#: SASL mechanisms the console can answer itself (RFC 4616, draft-murchison-sasl-login,
#: RFC 2195).
SASL_MECHANISMS: Final = ("PLAIN", "LOGIN", "CRAM-MD5")


class SecretError(Exception):
    """The password cannot be had (unsafe netrc, no source in a script); one line."""


def line_has_secret(line: str) -> bool:
    """Whether a typed line carries a secret: ``PASS x``, ``APOP name digest``,
    ``AUTH mechanism initial-response`` (RFC 1939 §7, RFC 5034 §4), also glued to its
    keyword (``PASS\u00a0x``, ``pass:x``), which a server may read as ``PASS x``.

    The rule is the capture masker's: a line carries a secret when it would be masked.
    """
    # A pasted block holds several lines; any of them may carry the secret.
    for part in line.replace("\r", "\n").split("\n"):
        data = part.strip().encode("utf-8", "surrogateescape")
        if mask_line(data) != data:
            return True
    return False


def secret_offset(line: str) -> int | None:
    """Where the secret a typed line carries begins (a character index), or None.

    As :func:`line_has_secret`, by the capture masker's rule: the first character the
    masker would replace.
    """
    data = line.encode("utf-8", "surrogateescape")
    masked = mask_line(data)
    if masked == data:
        return None
    same = 0
    for ours, theirs in zip(data, masked, strict=False):
        if ours != theirs:
            break
        same += 1
    return len(data[:same].decode("utf-8", "surrogateescape"))


def secret_keyword(line: str) -> str | None:
    """``PASS``, ``APOP`` or ``AUTH`` for a line that begins with one (glued or not)."""
    verb = secret_verb(line.strip().encode("utf-8", "surrogateescape"))
    return None if verb is None else verb.decode("ascii")


def check_private_file(path: Path) -> None:
    """Refuse a secrets file that others can read or that someone else owns."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise SecretError(f"netrc file {path}: no such file") from None
    except OSError as exc:
        raise SecretError(f"netrc file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise SecretError(f"netrc file {path}: not a regular file")
    if info.st_uid != os.getuid():
        raise SecretError(f"netrc file {path}: owned by another user; not trusted")
    if info.st_mode & 0o077:
        raise SecretError(f"netrc file {path}: readable by others; run chmod 600 {path}")


@dataclass
class SecretSource:
    """The password for one server: environment, then netrc, then the hidden prompt."""

    host: str
    environ: Mapping[str, str]
    netrc_path: Path | None = None
    #: Asks without echo; returns None when the user cancels. None: no terminal.
    ask: Callable[[str], str | None] | None = None

    def netrc_entry(self) -> tuple[str, str] | None:
        """``(login, password)`` for the host from the netrc file, if one was given."""
        if self.netrc_path is None:
            return None
        check_private_file(self.netrc_path)
        try:
            entry = netrc.netrc(str(self.netrc_path)).authenticators(self.host.strip("[]"))
        except netrc.NetrcParseError as exc:
            # Its message quotes the token it stopped at: often a piece of a password
            # with a space in it. Only the line number is shown.
            raise SecretError(
                f"netrc file {self.netrc_path}: cannot be parsed (line {exc.lineno}; "
                "a password with spaces needs double quotes)"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            message = getattr(exc, "strerror", None) or type(exc).__name__
            raise SecretError(f"netrc file {self.netrc_path}: {message}") from None
        if entry is None:
            return None
        login, _account, password = entry
        return login or "", password or ""

    def default_user(self) -> str | None:
        """The login the netrc file names for this host, if any."""
        entry = self.netrc_entry()
        return entry[0] if entry and entry[0] else None

    def password(self, user: str | None) -> str | None:
        """The password for ``user``; None when the user cancelled the prompt.

        Raises:
            SecretError: no source can give it (a script without the variable or netrc).
        """
        from_env = self.environ.get(PASSWORD_ENV)
        if from_env:
            return from_env
        entry = self.netrc_entry()
        if entry is not None and entry[1] and (user is None or not entry[0] or entry[0] == user):
            return entry[1]
        if self.ask is None:
            raise SecretError(
                f"no password: set {PASSWORD_ENV} or use --netrc FILE (no terminal to ask on)"
            )
        who = f" for {user}" if user else ""
        return self.ask(f"Password{who} (not shown): ")


def apop_digest(timestamp: str, password: str) -> str:
    """MD5 of the greeting's timestamp and the shared secret, in hex (RFC 1939 §7)."""
    return hashlib.md5((timestamp + password).encode("utf-8")).hexdigest()


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def plain_response(user: str, password: str) -> bytes:
    """The PLAIN message: authzid, authcid and password separated by NUL (RFC 4616 §2)."""
    return b64(b"\0" + user.encode("utf-8") + b"\0" + password.encode("utf-8"))


def cram_md5_response(user: str, password: str, challenge: bytes) -> bytes:
    """``user`` and the HMAC-MD5 of the challenge keyed with the password (RFC 2195 §2)."""
    digest = hmac.new(password.encode("utf-8"), challenge, hashlib.md5).hexdigest()
    return b64(f"{user} {digest}".encode())
