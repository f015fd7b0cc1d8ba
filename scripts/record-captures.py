#!/usr/bin/env python3
"""Re-record the captures shipped in captures/ from a private Dovecot (run as root).

    .venv/bin/python scripts/record-captures.py [--out captures]

Starts tests/dovecot.py's Dovecot on loopback, puts pop3tap's recording relay in front of
it (secrets masked), drives each session with poplib or a raw socket, and renames each
capture to a stable name. The mailbox holds the small deterministic messages of
tests/mail_corpus.py.
"""

from __future__ import annotations

import argparse
import base64
import poplib
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from dovecot import Dovecot, Mailbox  # noqa: E402
from mail_corpus import DOTSTUFFED, SMALL, UTF8  # noqa: E402

from pop3tap.background import BackgroundServer  # noqa: E402
from pop3tap.capture import iter_capture_paths, read_capture  # noqa: E402
from pop3tap.relay import Endpoint, RelayConfig, RelayServer, serve_relay  # noqa: E402

MESSAGES = [SMALL, DOTSTUFFED, UTF8]


def user_pass(host: str, port: int, box: Mailbox) -> None:
    """USER/PASS with CAPA, STAT, LIST, UIDL, TOP, RETR, DELE and QUIT."""
    client = poplib.POP3(host, port, timeout=30)
    client.capa()
    client.user(box.user)
    client.pass_(box.password)
    client.stat()
    client.list()
    client.uidl()
    client.top(1, 0)
    client.retr(1)
    client.retr(2)
    client.dele(1)
    client.quit()


def apop(host: str, port: int, box: Mailbox) -> None:
    """APOP login (RFC 1939 §7), then STAT, RETR, QUIT."""
    client = poplib.POP3(host, port, timeout=30)
    client.capa()
    client.apop(box.user, box.password)
    client.stat()
    client.retr(1)
    client.quit()


def _auth_plain(client: poplib.POP3, user: str, password: str) -> bytes:
    client._shortcmd("AUTH PLAIN")
    answer = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    return client._shortcmd(answer)


def auth_plain(host: str, port: int, box: Mailbox) -> None:
    """AUTH PLAIN with a challenge (RFC 5034 §4, no initial response), then STAT, RETR."""
    client = poplib.POP3(host, port, timeout=30)
    client.capa()
    _auth_plain(client, box.user, box.password)
    client.stat()
    client.retr(1)
    client.quit()


def pipelined(host: str, port: int, box: Mailbox) -> None:
    """Every command in one write (RFC 2449 §6.6), read until the server closes."""
    commands = [b"CAPA", b"USER " + box.user.encode(), b"PASS " + box.password.encode()]
    commands += [b"STAT", b"LIST", b"UIDL", b"TOP 2 0", b"RETR 1", b"RETR 2", b"RETR 3"]
    commands += [b"RETR 9", b"NOOP", b"QUIT"]
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(b"".join(c + b"\r\n" for c in commands))
        while sock.recv(65536):
            pass


def failed_login(host: str, port: int, box: Mailbox) -> None:
    """A wrong password with USER/PASS, then with AUTH PLAIN, then QUIT."""
    client = poplib.POP3(host, port, timeout=30)
    client.capa()
    client.user(box.user)
    try:
        client.pass_("wrong-password")
    except poplib.error_proto:
        pass
    try:
        _auth_plain(client, box.user, "wrong-password")
    except poplib.error_proto:
        pass
    client.quit()


SESSIONS: dict[str, tuple[str, Callable[[str, int, Mailbox], None]]] = {
    "user-pass": ("alice", user_pass),
    "apop": ("bob", apop),
    "auth-plain": ("carol", auth_plain),
    "pipelined": ("dave", pipelined),
    "failed-login": ("erin", failed_login),
}


def wait_complete(directory: Path, timeout: float = 10.0) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        paths = iter_capture_paths([directory])
        if len(paths) == 1 and read_capture(paths[0]).complete:
            return paths[0]
        time.sleep(0.02)
    raise SystemExit(f"no complete capture in {directory}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "captures"), help="default: captures/")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with Dovecot(binary=shutil.which("dovecot") or "/usr/sbin/dovecot") as dovecot:
        for name, (user, drive) in SESSIONS.items():
            box = dovecot.add_user(user, f"{user}-secret", MESSAGES)
            with tempfile.TemporaryDirectory() as tmp:
                config = RelayConfig(
                    upstream=Endpoint(dovecot.host, dovecot.pop3_port),
                    listen=Endpoint("127.0.0.1", 0),
                    captures=Path(tmp),
                )
                background: BackgroundServer[RelayServer] = BackgroundServer(
                    lambda task_status, c=config: serve_relay(c, task_status=task_status)
                )
                with background as relay:
                    drive(relay.address.host, relay.address.port, box)
                    path = wait_complete(Path(tmp))
                target = out / f"{name}.p3cap"
                shutil.copyfile(path, target)
            print(f"{target}: {len(read_capture(target).exchanges())} exchanges")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
