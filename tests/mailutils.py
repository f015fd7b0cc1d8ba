"""A private GNU Mailutils pop3d for tests: STLS and POP3S listeners on 127.0.0.1.

pop3d runs in inetd mode, one process per connection, behind ``socat`` (which hands it the
accepted socket as stdin/stdout). Its mandatory locking answers a second login to a mailbox
that is still open with ``-ERR [IN-USE]`` (RFC 2449 §8.1.2): the server that shows whether
a proxy closed its upstream promptly.
"""

from __future__ import annotations

import contextlib
import grp
import os
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import trustme
from dovecot import free_port

_POP3D = "/usr/sbin/pop3d"


class MailutilsError(RuntimeError):
    """pop3d could not be started; the message includes the tail of its log."""


class Mailutils:
    """pop3d with an STLS listener (``pop3_port``) and a POP3S one (``pop3s_port``).

    One user, ``alice`` with password ``secret``, whose mbox holds one message. Use as a
    context manager.
    """

    host = "127.0.0.1"
    user = "alice"
    password = "secret"

    def __init__(self, ca: trustme.CA) -> None:
        self.ca = ca
        self.base = Path(tempfile.mkdtemp(prefix="/tmp/mu"))
        self.log_path = self.base / "pop3d.log"
        self.pop3_port = 0
        self.pop3s_port = 0
        self._listeners: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Mailutils:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Write the configuration, mailbox and certificate; start both listeners."""
        base = self.base
        os.chmod(base, 0o755)
        for name in ("passwd", "lock", f"mail/{self.user}"):
            (base / name).mkdir(parents=True, mode=0o755)
        hashed = subprocess.run(
            ["openssl", "passwd", "-6", "-stdin"],
            input=self.password.encode(),
            capture_output=True,
            check=True,
        ).stdout.decode().strip()
        # Users without a system account (virtdomain): for a login without @domain the
        # domain is the address the connection came to.
        mail_gid = grp.getgrnam("mail").gr_gid
        (base / "passwd" / self.host).write_text(
            f"{self.user}:{hashed}:8:{mail_gid}::{base}/mail/{self.user}:/bin/false\n"
        )
        inbox = base / "mail" / self.user / "INBOX"
        inbox.write_bytes(b"From a@example.org Sat Dec  5 10:00:00 2026\nSubject: hi\n\nbody\n\n")
        for path in (inbox, inbox.parent):
            os.chown(path, 0, mail_gid)
        os.chmod(inbox, 0o660)
        os.chmod(inbox.parent, 0o775)
        os.chmod(base / "lock", 0o777)
        cert = self.ca.issue_cert("127.0.0.1", "localhost")
        cert.private_key_pem.write_to_path(str(base / "key.pem"))
        os.chmod(base / "key.pem", 0o600)  # GnuTLS refuses a key others can read
        cert.cert_chain_pems[0].write_to_path(str(base / "cert.pem"))
        conf = base / "pop3d.conf"
        conf.write_text(
            "logging { syslog no; };\n"
            "auth { authorization virtdomain; authentication generic; };\n"
            f'virtdomain {{ passwd-dir "{base}/passwd"; }};\n'
            f'mailbox {{ mailbox-pattern "{base}/mail/${{user}}/INBOX"; }};\n'
            f'mandatory-locking {{ enable yes; lock-directory "{base}/lock"; }};\n'
            f'tls {{ ssl-certificate-file "{base}/cert.pem"; '
            f'ssl-key-file "{base}/key.pem"; }};\n'
            "tls-mode stls;\n"
        )
        for name, extra in (("stls", ""), ("pop3s", " --set=.tls-mode=connection")):
            wrapper = base / f"{name}.sh"
            wrapper.write_text(
                "#!/bin/sh\n"
                f"exec {_POP3D} --inetd --config-file={conf}{extra} 2>>{self.log_path}\n"
            )
            os.chmod(wrapper, 0o755)
        try:
            self.pop3_port = self._listen(base / "stls.sh")
            self.pop3s_port = self._listen(base / "pop3s.sh")
            self._wait_ready(self.pop3_port, tls=False)
            self._wait_ready(self.pop3s_port, tls=True)
        except BaseException:
            self.stop()
            raise

    def _listen(self, wrapper: Path) -> int:
        port = free_port(self.host)
        self._listeners.append(
            subprocess.Popen(
                [
                    "socat",
                    f"TCP-LISTEN:{port},bind={self.host},fork,reuseaddr",
                    f"EXEC:{wrapper},nofork",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        return port

    def trust(self) -> ssl.SSLContext:
        """A client context trusting this server's certificate."""
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    def _wait_ready(self, port: int, *, tls: bool, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.host, port), timeout=5) as raw:
                    if tls:
                        with self.trust().wrap_socket(raw, server_hostname=self.host) as sock:
                            greeting = sock.recv(100)
                    else:
                        greeting = raw.recv(100)
                if greeting.startswith(b"+OK"):
                    return
            except (OSError, ssl.SSLError) as exc:
                last = exc
            time.sleep(0.05)
        raise MailutilsError(f"pop3d not ready on port {port}: {last}\n{self.log_tail()}")

    def log_tail(self) -> str:
        """The end of pop3d's diagnostics."""
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-2000:]
        return ""

    def stop(self) -> None:
        """Stop both listeners (and the pop3d processes they started) by process group."""
        for proc in self._listeners:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        self._listeners.clear()
