"""``pop3tap view``: the HTML view served over HTTP, refreshed as captures arrive.

Read-only by construction: three GET resources under a random secret path prefix
(``/<key>/`` the page, ``/<key>/model.json`` the data, ``/<key>/state`` a token that
changes when a capture file appears, grows or goes), every other path is 404 and every
other method is refused. Loopback is shared by every user of the machine, so the key,
printed only to the user who started the view, is what keeps the mail in the captures
from the others. A request whose ``Host`` header names anything but the address the server
listens on (or, on a wildcard address, an IP literal) is refused too, so a web page
elsewhere cannot read the view through a DNS name that resolves to it (DNS rebinding).

Each capture is parsed again only when its size or modification time changes, so a page
polling every two seconds costs a directory listing, not a re-read of every session.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pop3tap.capture import CaptureError, iter_capture_paths, read_capture
from pop3tap.htmlview.model import FLAG_BITS, session_model
from pop3tap.htmlview.page import content_security_policy, model_json, render_page

__all__ = ["ViewServer"]


class _Sessions:
    """Session models of the capture files under the given paths, cached per file."""

    def __init__(self, inputs: list[str]) -> None:
        self.inputs = inputs
        self._lock = threading.Lock()
        self._cache: dict[Path, tuple[tuple[int, int], dict[str, Any] | str]] = {}

    def _listing(self) -> list[tuple[Path, tuple[int, int]]]:
        listing = []
        try:
            paths = iter_capture_paths(self.inputs)
        except CaptureError:
            paths = []
        for path in paths:
            try:
                stat = path.stat()
            except OSError:
                continue
            listing.append((path, (stat.st_size, stat.st_mtime_ns)))
        return listing

    def state(self) -> str:
        """A token that changes whenever a capture is added, grows or is removed."""
        return _token(self._listing())

    def model(self) -> dict[str, Any]:
        with self._lock:
            listing = self._listing()
            sessions: list[dict[str, Any]] = []
            errors: list[str] = []
            fresh: dict[Path, tuple[tuple[int, int], dict[str, Any] | str]] = {}
            for path, version in listing:
                cached = self._cache.get(path)
                if cached is None or cached[0] != version:
                    try:
                        entry: dict[str, Any] | str = session_model(read_capture(path))
                    except CaptureError as exc:
                        entry = str(exc)
                    cached = (version, entry)
                fresh[path] = cached
                if isinstance(cached[1], str):
                    errors.append(cached[1])
                else:
                    sessions.append(cached[1])
            self._cache = fresh
        state = _token(listing)
        return {
            "version": 1,
            "flags": list(FLAG_BITS),
            "sessions": sessions,
            "errors": errors,
            "state": state,
        }


def _token(listing: list[tuple[Path, tuple[int, int]]]) -> str:
    text = "|".join(f"{p}:{size}:{mtime}" for p, (size, mtime) in listing)
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]


class _Handler(BaseHTTPRequestHandler):
    server: ViewServer

    def version_string(self) -> str:
        """The ``Server`` header."""
        return "pop3tap-view"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the view does not log every poll."""

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", content_security_policy(live=True))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _allowed_host(self) -> bool:
        host = (self.headers.get("Host") or "").lower()
        if host in self.server.allowed_hosts:
            return True
        if not self.server.wildcard:
            return False
        # A wildcard listen answers on every address of the machine: any IP literal with
        # the port is one of them, and no DNS name is needed to reach it.
        name, sep, port = host.rpartition(":")
        if not sep or port != str(self.server.port):
            return False
        try:
            ipaddress.ip_address(name[1:-1] if name.startswith("[") else name)
        except ValueError:
            return False
        return True

    def _resource(self) -> str | None:
        """The path after the secret prefix, or None when the prefix is missing or wrong."""
        path = self.path.split("?", 1)[0]
        prefix = f"/{self.server.key}"
        head, rest = path[: len(prefix)], path[len(prefix) :]
        if not hmac.compare_digest(head.encode(), prefix.encode()):
            return None
        if rest == "":
            return ""
        return rest if rest.startswith("/") else None

    def do_GET(self) -> None:
        if not self._allowed_host():
            self._send(
                HTTPStatus.FORBIDDEN,
                b"pop3tap view: unexpected Host header\n",
                "text/plain; charset=utf-8",
            )
            return
        path = self._resource()
        sessions = self.server.sessions
        if path == "":  # relative links need the trailing slash
            self.send_response(HTTPStatus.MOVED_PERMANENTLY)
            self.send_header("Location", f"/{self.server.key}/")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/":
            page = render_page(sessions.model(), title=self.server.title, live=True)
            self._send(HTTPStatus.OK, page.encode("utf-8"), "text/html; charset=utf-8")
        elif path == "/model.json":
            body = model_json(sessions.model()).encode("utf-8")
            self._send(HTTPStatus.OK, body, "application/json")
        elif path == "/state":
            self._send(HTTPStatus.OK, sessions.state().encode("ascii"), "text/plain")
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

    do_HEAD = do_GET

    def _refuse(self) -> None:
        self._send(
            HTTPStatus.METHOD_NOT_ALLOWED,
            b"pop3tap view is read-only\n",
            "text/plain; charset=utf-8",
        )

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse


class ViewServer(ThreadingHTTPServer):
    """The view's HTTP server; ``serve_forever()`` runs it, ``shutdown()`` stops it."""

    daemon_threads = True
    #: Lets a restarted view take the same fixed port at once.
    allow_reuse_address = True

    def __init__(self, host: str, port: int, inputs: list[str]) -> None:
        self.sessions = _Sessions(inputs)
        self.title = f"pop3tap view: {' '.join(inputs)}"
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), _Handler)
        self.port = int(self.server_address[1])
        #: The secret first path segment of every resource.
        self.key = secrets.token_urlsafe(18)
        # The address actually bound (``localhost`` resolves to 127.0.0.1): the printed
        # URL names it, so its Host header must pass, as must the name the user gave.
        bound = ipaddress.ip_address(str(self.server_address[0]))
        self.wildcard = bound.is_unspecified
        names = {f"[{bound}]" if bound.version == 6 else str(bound)}
        names.add(f"[{host}]" if ":" in host else host)
        if bound.is_loopback or self.wildcard:
            names.add("localhost")
        self.allowed_hosts = {f"{name}:{self.port}".lower() for name in names}

    @property
    def url(self) -> str:
        host = str(self.server_address[0])
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}/{self.key}/"
