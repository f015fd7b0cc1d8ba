"""Replay configuration, and the TLS choices it leaves to the captures.

:class:`ReplayConfig` is everything a replay server needs. Where the caller made no TLS
choice, :func:`resolve_tls` takes it from the captures (POP3S captures are served over TLS,
with the CA they were recorded with), and :func:`server_tls_for` builds what TLS clients are
shown (see docs/replay.md, "TLS").
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pop3tap.certs import CA_CERT_FILE, CA_KEY_FILE, normalize_names
from pop3tap.faults import parse_fault
from pop3tap.log import get_logger
from pop3tap.replay._matching import MatchMode, SessionsMode
from pop3tap.replay._recorded import RecordedSession, ReplayError
from pop3tap.server import Endpoint, announce_server_tls
from pop3tap.tls import DEFAULT_HANDSHAKE_TIMEOUT, ServerTls, build_server_tls

logger = get_logger("pop3tap.replay")

ModelMissing = Literal["err", "synth"]


def parse_timing(value: str | float) -> float:
    """``fast`` → 0 (no delays), ``recorded`` → 1, or a positive speed factor."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        factor = float(value)
    elif isinstance(value, str) and value.strip().lower() == "fast":
        return 0.0
    elif isinstance(value, str) and value.strip().lower() == "recorded":
        return 1.0
    else:
        try:
            factor = float(str(value))
        except ValueError:
            raise ValueError(
                f"timing must be 'fast', 'recorded' or a positive speed factor, not {value!r}"
            ) from None
    if not factor > 0 or factor == float("inf"):
        raise ValueError(f"timing factor must be a positive number, not {value!r}")
    return factor


def _positive_number(value: object) -> bool:
    """A number of seconds above 0 (not a bool, not a string from a hand-written dict)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def _whole_number(value: object, least: int) -> bool:
    """An int of at least ``least`` (not a bool, a float or a string from a hand-written
    dict): a NaN or infinite bound would never be reached."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


@dataclass(frozen=True, slots=True)
class ReplayConfig:
    """Everything a replay server needs; defaults are what ``pop3tap replay`` uses."""

    #: Capture files and directories (each ``*.p3cap`` inside is one session).
    captures: tuple[str | Path, ...] = ()
    listen: Endpoint = field(default_factory=lambda: Endpoint("127.0.0.1", 1110))
    #: ``cycle``: each connection takes the next session, wrapping; ``once``: each at most once.
    sessions: SessionsMode = "cycle"
    #: Pick the session whose USER/APOP/AUTH user matches the client's.
    by_user: bool = False
    match: MatchMode = "default"
    #: ``fast`` (no delays), ``recorded``, or a speed factor (2 = twice as fast).
    timing: str | float = "fast"
    #: Close a connection that sends nothing (or reads nothing) for this long; None: never.
    idle_timeout: float | None = 600.0
    #: The longest client line accepted, line ending included.
    max_line: int = 8192
    #: Close after this many commands in a row without a recorded answer.
    max_errors: int = 20
    #: Implicit TLS from the first byte (RFC 8314 §3); None: as the captures were recorded.
    listen_tls: bool | None = None
    #: Present this certificate chain and key instead of a leaf from pop3tap's CA.
    cert: Path | None = None
    key: Path | None = None
    #: pop3tap's CA directory (created if missing); None: the one the captures were
    #: recorded with when it is still there, else as ``pop3tap ca`` (config home).
    ca_dir: Path | None = None
    #: Seconds allowed for each TLS handshake with a client.
    tls_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    #: Serve a mailbox model built from the captures (see docs/model.md), not byte replay.
    model: bool = False
    #: A message whose body was never recorded: ``err`` (one -ERR) or ``synth`` (made up).
    model_missing: ModelMissing = "err"
    #: Deletions made by one session's QUIT are seen by the next (until ``reset``).
    model_persist: bool = False
    #: Let several sessions hold one mailbox at once (else ``-ERR [IN-USE]``).
    model_shared: bool = False
    #: Serve these message files (a directory of .eml files, a Maildir or an mbox).
    messages: Path | None = None
    #: ``(user, password)`` pairs the model checks logins against.
    passwords: tuple[tuple[str, str], ...] = ()
    #: Fault specs (docs/faults.md) applied to the answers this server sends.
    faults: tuple[str, ...] = ()
    #: After :meth:`ReplayServer.shutdown`, open connections get this long to finish.
    grace: float = 10.0

    def __post_init__(self) -> None:
        if self.sessions not in ("cycle", "once"):
            raise ValueError(f"sessions must be 'cycle' or 'once', not {self.sessions!r}")
        if self.match not in ("default", "strict", "any"):
            raise ValueError(f"match must be 'default', 'strict' or 'any', not {self.match!r}")
        parse_timing(self.timing)
        if self.idle_timeout is not None and not _positive_number(self.idle_timeout):
            raise ValueError("idle_timeout must be a positive number of seconds")
        if not _whole_number(self.max_line, 64):
            raise ValueError("max_line must be a whole number of bytes, at least 64")
        if not _whole_number(self.max_errors, 1):
            raise ValueError("max_errors must be a whole number, at least 1")
        if (self.cert is None) != (self.key is None):
            raise ValueError("--cert and --key go together")
        if not _positive_number(self.tls_timeout):
            raise ValueError("tls_timeout must be a positive number of seconds")
        if self.model_missing not in ("err", "synth"):
            raise ValueError(f"model_missing must be 'err' or 'synth', not {self.model_missing!r}")
        for spec in self.faults:
            parse_fault(spec)  # FaultError is a ValueError: one line naming the bad part
        model_only = self.messages is not None or self.model_persist or self.model_shared
        if model_only and not self.model:
            raise ValueError("--messages, --model-persist and --model-shared need --model")
        if (
            isinstance(self.grace, bool)
            or not isinstance(self.grace, int | float)
            or not self.grace >= 0
        ):
            raise ValueError("grace must be a number of seconds, not negative")

    @property
    def speed(self) -> float:
        """0 for no delays, else the factor recorded delays are divided by."""
        return parse_timing(self.timing)


def tls_mismatch(session: RecordedSession, listen_tls: bool) -> str | None:
    """A one-line warning when the replay listener's TLS differs from the recorded one.

    The recorded bytes are plaintext POP3 either way, so the session is served anyway.
    """
    if session.listen_tls and not listen_tls:
        return (
            f"{session.path}: recorded with implicit TLS on the client leg (RFC 8314); "
            "serving it in plaintext because of --no-listen-tls"
        )
    if listen_tls and not session.listen_tls:
        more = " (its STLS is refused inside TLS)" if session.stls else ""
        return (
            f"{session.path}: recorded with a plaintext client leg; serving it over "
            f"implicit TLS anyway because of --listen-tls{more}"
        )
    return None


def resolve_tls(
    config: ReplayConfig, sessions: Sequence[RecordedSession]
) -> tuple[ReplayConfig, list[str]]:
    """``config`` with the TLS choices the captures make where the caller made none.

    ``listen_tls`` None becomes the recorded client leg (POP3S captures are served over
    TLS); ``ca_dir`` None becomes the CA directory the recording relay used, when its
    CA is still there. Returns the config and one note per choice made.

    Raises:
        ReplayError: the captures mix implicit-TLS and plaintext client legs.
    """
    notes: list[str] = []
    changes: dict[str, Any] = {}
    if config.listen_tls is None:
        modes = {s.listen_tls for s in sessions}
        if len(modes) > 1:
            implicit = next(s.path for s in sessions if s.listen_tls)
            plain = next(s.path for s in sessions if not s.listen_tls)
            raise ReplayError(
                f"{implicit} was recorded with implicit TLS (POP3S) and {plain} without: "
                "replay them separately, or pass --listen-tls or --no-listen-tls to serve "
                "all of them one way"
            )
        changes["listen_tls"] = modes == {True}
        if changes["listen_tls"]:
            notes.append(
                "the captures were recorded with implicit TLS (POP3S): serving them over "
                "TLS (--no-listen-tls serves them in plaintext)"
            )
    needs_ca = changes.get("listen_tls") or config.listen_tls or any(s.stls for s in sessions)
    if config.ca_dir is None and config.cert is None and needs_ca:
        recorded = {s.ca_dir for s in sessions if s.ca_dir}
        if len(recorded) == 1:
            directory = Path(recorded.pop())
            if (directory / CA_CERT_FILE).is_file() and _private_ca_dir(directory):
                changes["ca_dir"] = directory
                notes.append(f"using the CA the captures were recorded with: {directory}")
    if not changes:
        return config, notes
    return dataclasses.replace(config, **changes), notes


def _private_ca_dir(directory: Path) -> bool:
    """A CA directory named by a capture is used only when it is this user's own and no
    one else can write it or read its key: a capture is input, and may be hostile."""
    try:
        folder = os.stat(directory)
        key = os.stat(directory / CA_KEY_FILE)
    except OSError:
        return False
    uid = os.getuid()
    return (
        folder.st_uid == uid
        and key.st_uid == uid
        and not folder.st_mode & 0o022
        and not key.st_mode & 0o077
    )


def server_tls_for(config: ReplayConfig, sessions: Sequence[RecordedSession]) -> ServerTls | None:
    """What TLS clients are shown, or None when no session and no option needs TLS.

    ``--cert/--key`` when given; else a leaf from pop3tap's CA (created if missing, as
    the relay does) for the listen host, ``127.0.0.1``, ``localhost`` and every recorded
    upstream host; a client asking (SNI) for another name gets a leaf for it too.

    Raises:
        TlsSetupError: unreadable or mismatched certificate files, or a broken CA.
    """
    config, _notes = resolve_tls(config, sessions)
    needed = config.listen_tls or config.cert is not None or any(s.stls for s in sessions)
    # A model serves the recorded CAPA; when it offers STLS, the model must be able to do it.
    needed = needed or (config.model and any(_offers_stls(s) for s in sessions))
    if not needed:
        return None
    hosts = [config.listen.host, "127.0.0.1", "localhost"]
    hosts += [s.upstream_host for s in sessions]
    server_tls = build_server_tls(
        names=normalize_names(hosts)[:100], cert=config.cert, key=config.key, ca_dir=config.ca_dir
    )
    announce_server_tls(logger, server_tls)
    return server_tls


def _offers_stls(session: RecordedSession) -> bool:
    """Whether the recorded server listed STLS in a CAPA answer (RFC 2595 §4)."""
    return any(
        ex.verb == "CAPA" and re.search(rb"\nSTLS\r?\n", ex.response) is not None
        for ex in session.exchanges
    )
