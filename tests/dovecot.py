"""A private Dovecot 2.3 POP3 server for real-peer tests (127.0.0.1 only, started as root).

One instance serves a whole test session. Each test gets its own user (see ``unique_user``)
whose Maildir is written directly, together with a ``dovecot-uidlist`` that pins UIDVALIDITY
and UIDs, so the message order is 1..N and the UIDL strings are the same on every run.
"""

from __future__ import annotations

import contextlib
import grp
import itertools
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import trustme

#: UIDVALIDITY written into every Maildir; with the default ``pop3_uidl_format``
#: (``%08Xu%08Xv``) message N has UIDL ``f"{N:08x}{UIDVALIDITY:08x}"`` (Dovecot prints
#: lower-case hex).
UIDVALIDITY = 0x5F5E1000

_START_TIMEOUT = 30.0
_USER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}")
_STOP_TIMEOUT = 15.0


def free_port(host: str = "127.0.0.1") -> int:
    """Return a currently unused TCP port on ``host`` (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def uidl_for(uid: int) -> str:
    """The UIDL Dovecot reports for ``uid`` in a mailbox written by ``Dovecot.add_user``."""
    return f"{uid:08x}{UIDVALIDITY:08x}"


@dataclass(frozen=True)
class Mailbox:
    """A Dovecot user and the messages its INBOX held when it was created (in order 1..N)."""

    user: str
    password: str
    messages: tuple[bytes, ...]

    @property
    def uidls(self) -> tuple[str, ...]:
        """Expected UIDL strings of the messages, in order."""
        return tuple(uidl_for(i) for i in range(1, len(self.messages) + 1))


class DovecotError(RuntimeError):
    """Dovecot could not be started or stopped; the message includes the tail of its log."""


class Dovecot:
    """A private Dovecot POP3/POP3S server listening on 127.0.0.1 ephemeral ports.

    Use as a context manager, or call ``start()`` and ``stop()``.
    """

    host = "127.0.0.1"

    def __init__(self, ca: trustme.CA | None = None, binary: str = "dovecot") -> None:
        self.ca = ca if ca is not None else trustme.CA()
        self.binary = binary
        self.base_dir = Path(tempfile.mkdtemp(prefix="/tmp/dv"))
        os.chmod(self.base_dir, 0o755)
        self.run_dir = self.base_dir / "run"
        self.mail_dir = self.base_dir / "mail"
        self.conf_path = self.base_dir / "dovecot.conf"
        self.users_path = self.base_dir / "users"
        self.log_path = self.base_dir / "dovecot.log"
        self.stderr_path = self.base_dir / "dovecot.stderr"
        self.ca_pem_path = self.base_dir / "ca.pem"
        self.cert_path = self.base_dir / "cert.pem"
        self.key_path = self.base_dir / "key.pem"
        self.dh_path = self.base_dir / "dh.pem"
        self.pop3_port = 0
        self.pop3s_port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._user_ids = itertools.count(1)
        self._nobody_uid = pwd.getpwnam("nobody").pw_uid
        self._nogroup_gid = grp.getgrnam("nogroup").gr_gid
        self._dovecot_gid = grp.getgrnam("dovecot").gr_gid

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Write config, certificates and DH parameters, start Dovecot and wait for greetings."""
        if os.geteuid() != 0:
            raise DovecotError("the private Dovecot must be started as root")
        self.run_dir.mkdir(mode=0o755)
        self.mail_dir.mkdir(mode=0o755)
        self._write_tls_files()
        self.users_path.mkdir()
        os.chown(self.users_path, 0, self._dovecot_gid)
        os.chmod(self.users_path, 0o750)
        self.pop3_port = free_port(self.host)
        self.pop3s_port = free_port(self.host)
        while self.pop3s_port == self.pop3_port:
            self.pop3s_port = free_port(self.host)
        self.conf_path.write_text(self._config())
        with open(self.stderr_path, "ab") as err:
            # Foreground master (-F) so it is our child and can be waited for; its stdout and
            # stderr go to a file, never a pipe (the log process keeps them open).
            self._proc = subprocess.Popen(
                [self.binary, "-F", "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self, cleanup: bool = True) -> None:
        """SIGTERM the master (pid from master.pid), wait for it, then remove the base dir."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            pid = proc.pid
            with contextlib.suppress(OSError, ValueError):
                pid = int((self.run_dir / "master.pid").read_text().strip())
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            try:
                proc.wait(timeout=_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if cleanup:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> Dovecot:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ users and mail

    def unique_user(self, prefix: str = "u") -> str:
        """A user name not used before in this instance: u1, u2, ..."""
        return f"{prefix}{next(self._user_ids)}"

    def add_user(self, name: str, password: str, messages: list[bytes]) -> Mailbox:
        """Create ``name`` with a PLAIN password and an INBOX holding ``messages`` as 1..N.

        Each user gets its own passwd-file (``users/NAME``): Dovecot re-reads a changed
        passwd-file at most once per second, so appending to a shared one loses races.
        """
        if not _USER_RE.fullmatch(name):
            raise ValueError(f"invalid user name {name!r} (use letters, digits, '_', '-')")
        if ":" in password or "\n" in password:
            raise ValueError("passwords must not contain ':' or newlines")
        home = self.mail_dir / name
        if home.exists():
            raise ValueError(f"user {name!r} already exists")
        maildir = home / "Maildir"
        for sub in ("cur", "new", "tmp"):
            (maildir / sub).mkdir(parents=True, mode=0o700)
        lines = [f"3 V{UIDVALIDITY} N{len(messages) + 1}\n"]
        for uid, message in enumerate(messages, start=1):
            base = f"{UIDVALIDITY}.M{uid}P0.pop3tap,S={len(message)}"
            (maildir / "cur" / f"{base}:2,").write_bytes(message)
            lines.append(f"{uid} :{base}\n")
        (maildir / "dovecot-uidlist").write_text("".join(lines))
        for path in [home, *home.rglob("*")]:
            os.chown(path, self._nobody_uid, self._nogroup_gid)
        passwd = self.users_path / name
        tmp = self.users_path / f".{name}.tmp"
        tmp.write_text(f"{name}:{{PLAIN}}{password}\n", encoding="utf-8")
        os.chown(tmp, 0, self._dovecot_gid)
        os.chmod(tmp, 0o640)
        os.replace(tmp, passwd)
        return Mailbox(user=name, password=password, messages=tuple(messages))

    def new_mailbox(self, messages: list[bytes]) -> Mailbox:
        """``add_user`` with a fresh unique name and a password derived from it."""
        name = self.unique_user()
        return self.add_user(name, f"pw-{name}-secret", messages)

    def mailbox_messages(self, user: str) -> list[bytes]:
        """The messages in ``user``'s INBOX right now, in UID order (read from the Maildir)."""
        maildir = self.mail_dir / user / "Maildir"
        files: dict[str, Path] = {}
        for sub in ("cur", "new"):
            for path in (maildir / sub).iterdir():
                files[path.name.split(":", 1)[0]] = path
        order: list[str] = []
        uidlist = maildir / "dovecot-uidlist"
        if uidlist.exists():
            for line in uidlist.read_text().splitlines()[1:]:
                _, _, base = line.partition(":")
                if base in files and base not in order:
                    order.append(base)
        order.extend(sorted(b for b in files if b not in order))
        return [files[b].read_bytes() for b in order]

    def message_count(self, user: str) -> int:
        """Number of messages in ``user``'s INBOX right now."""
        return len(self.mailbox_messages(user))

    # ------------------------------------------------------------------ log

    def log_text(self) -> str:
        """Dovecot's log so far (base_dir/dovecot.log)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, needle: str, count: int = 1, timeout: float = 10.0) -> str:
        """Poll the log until ``needle`` occurs ``count`` times; return the last matching line.

        Used to wait for a session to be over on the server side (e.g. ``pop3(u3)`` +
        ``Disconnected``) before looking at the mailbox.
        """
        deadline = time.monotonic() + timeout
        while True:
            matches = [line for line in self.log_text().splitlines() if needle in line]
            if len(matches) >= count:
                return matches[count - 1]
            if time.monotonic() > deadline:
                raise DovecotError(f"log line containing {needle!r} not seen: {self._log_tail()}")
            time.sleep(0.02)

    def wait_disconnected(self, user: str, count: int = 1) -> str:
        """Wait for the ``count``-th ``Disconnected`` log line of ``user``'s mail process."""
        deadline = time.monotonic() + 10.0
        prefix = f"pop3({user})"
        while True:
            lines = [
                line
                for line in self.log_text().splitlines()
                if prefix in line and ": Disconnected" in line
            ]
            if len(lines) >= count:
                return lines[count - 1]
            if time.monotonic() > deadline:
                raise DovecotError(f"{user} never disconnected: {self._log_tail()}")
            time.sleep(0.02)

    # ------------------------------------------------------------------ internals

    def _write_tls_files(self) -> None:
        self.ca.cert_pem.write_to_path(str(self.ca_pem_path))
        leaf = self.ca.issue_cert("127.0.0.1", "localhost")
        with open(self.cert_path, "wb") as f:
            for pem in leaf.cert_chain_pems:
                f.write(pem.bytes())
        leaf.private_key_pem.write_to_path(str(self.key_path))
        os.chmod(self.key_path, 0o600)
        subprocess.run(
            [
                "openssl",
                "genpkey",
                "-genparam",
                "-algorithm",
                "DH",
                "-pkeyopt",
                "group:ffdhe2048",
                "-out",
                str(self.dh_path),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            check=True,
            timeout=60,
        )

    def _config(self) -> str:
        d = self.base_dir
        return f"""\
# private test instance written by tests/dovecot.py; nothing is read from /etc/dovecot
base_dir = {self.run_dir}
state_dir = {d}/state
log_path = {self.log_path}
protocols = pop3
listen = {self.host}
default_login_user = dovenull
default_internal_user = dovecot
ssl = yes
ssl_cert = <{self.cert_path}
ssl_key = <{self.key_path}
ssl_dh = <{self.dh_path}
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no
auth_mechanisms = plain login apop cram-md5
auth_failure_delay = 0
auth_verbose = yes
mail_uid = nobody
mail_gid = nogroup
mail_location = maildir:{self.mail_dir}/%u/Maildir
namespace inbox {{
  inbox = yes
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.users_path}/%u
}}
userdb {{
  driver = static
  args = home={self.mail_dir}/%u
}}
service pop3-login {{
  inet_listener pop3 {{
    address = {self.host}
    port = {self.pop3_port}
  }}
  inet_listener pop3s {{
    address = {self.host}
    port = {self.pop3s_port}
    ssl = yes
  }}
}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""

    def _greeting(self, use_tls: bool) -> bytes:
        port = self.pop3s_port if use_tls else self.pop3_port
        with socket.create_connection((self.host, port), timeout=5) as raw:
            if use_tls:
                ctx = ssl.create_default_context(cafile=str(self.ca_pem_path))
                with ctx.wrap_socket(raw, server_hostname=self.host) as tls:
                    return tls.recv(512)
            return raw.recv(512)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        pending = {False, True}
        while pending:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                raise DovecotError(f"dovecot exited during startup: {self._log_tail()}")
            for use_tls in sorted(pending):
                with contextlib.suppress(OSError):
                    if self._greeting(use_tls).startswith(b"+OK"):
                        pending.discard(use_tls)
            if pending:
                if time.monotonic() > deadline:
                    raise DovecotError(
                        f"dovecot not ready after {_START_TIMEOUT}s: {self._log_tail()}"
                    )
                time.sleep(0.05)

    def _log_tail(self) -> str:
        parts = []
        for path in (self.stderr_path, self.log_path):
            with contextlib.suppress(OSError):
                parts.append(path.read_text(errors="replace")[-2000:])
        return " | ".join(p.strip() for p in parts if p.strip()) or "(no output)"
