"""``pop3tap view``: the HTML view served over HTTP, refreshed as captures arrive.

Read-only by construction: three GET resources (``/`` the page, ``/model.json`` the data,
``/state`` a token that changes when a capture file appears, grows or goes), every other
path is 404 and every other method is refused. A request whose ``Host`` header names
anything but the address the server listens on is refused too, so a web page elsewhere
cannot read the view through a DNS name that resolves to 127.0.0.1 (DNS rebinding).

Each capture is parsed again only when its size or modification time changes, so a page
polling every two seconds costs a directory listing, not a re-read of every session.
"""

from __future__ import annotations

import hashlib
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
        return host in self.server.allowed_hosts

    def do_GET(self) -> None:
        if not self._allowed_host():
            self._send(
                HTTPStatus.FORBIDDEN,
                b"pop3tap view: unexpected Host header\n",
                "text/plain; charset=utf-8",
            )
            return
        path = self.path.split("?", 1)[0]
        sessions = self.server.sessions
        if path == "/":
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
        shown = f"[{host}]" if ":" in host else host
        names = {shown, "localhost"} if host in ("127.0.0.1", "::1") else {shown}
        self.allowed_hosts = {f"{name}:{self.port}".lower() for name in names}

    @property
    def url(self) -> str:
        host = str(self.server_address[0])
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}/"
