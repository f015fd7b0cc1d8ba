"""Helpers for driving a real ``poplib`` client through a recorded session.

:func:`run_poplib` replays the commands of a capture with :mod:`poplib` (the way a mail
client would, one command at a time) and returns every byte the client received, so a test
can compare it with the recorded server stream. ``pop3tap demo`` uses it as well.
"""

from __future__ import annotations

import io
import poplib
import socket
from typing import TYPE_CHECKING, Any

from pop3tap.protocol import (
    SECRET_PLACEHOLDER,
    Credential,
    expects_multiline,
    spec_of,
    split_command,
)

if TYPE_CHECKING:
    # The value type only (a pure module): driving a client needs no replay server.
    from pop3tap.replay._recorded import RecordedSession


class _TeeReader(io.RawIOBase):
    """A file wrapper that keeps a copy of every byte read through ``readline``."""

    def __init__(self, inner: Any, sink: bytearray) -> None:
        super().__init__()
        self.inner = inner
        self.sink = sink

    def readline(self, size: int | None = -1) -> bytes:
        line: bytes = self.inner.readline(-1 if size is None else size)
        self.sink += line
        return line

    def close(self) -> None:
        self.inner.close()
        super().close()


class _TeeSocket:
    """A socket whose ``makefile`` result records what poplib reads."""

    def __init__(self, sock: socket.socket, sink: bytearray) -> None:
        self._sock = sock
        self._sink = sink

    def makefile(self, *args: Any, **kwargs: Any) -> _TeeReader:
        return _TeeReader(self._sock.makefile(*args, **kwargs), self._sink)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class RecordingPOP3(poplib.POP3):
    """``poplib.POP3`` that keeps every byte it received in :attr:`received`."""

    def __init__(self, host: str, port: int, timeout: float = 30.0) -> None:
        self.received = bytearray()
        super().__init__(host, port, timeout=timeout)

    def _create_socket(self, timeout: float) -> Any:
        sock = super()._create_socket(timeout)  # type: ignore[misc]
        return _TeeSocket(sock, self.received)


def run_poplib(
    host: str,
    port: int,
    session: RecordedSession,
    *,
    password: str = "anything",
    timeout: float = 30.0,
) -> tuple[bytes, list[object]]:
    """Send the recorded commands of ``session`` with poplib, one at a time.

    Masked secrets are replaced by ``password`` (PASS) or a fresh APOP digest; what a
    command carries and whether it ends the session come from the command table. Returns the
    bytes received and each command's result (poplib's return value, or the ``-ERR`` line
    poplib raised as ``error_proto``).
    """
    client = RecordingPOP3(host, port, timeout=timeout)
    results: list[object] = [client.getwelcome()]
    try:
        for ex in session.exchanges:
            results.append(_one_command(client, ex.line, ex.sasl_lines, password))
            if spec_of(ex.verb).ends_session or ex.closes:
                break
    finally:
        client.close()
    return bytes(client.received), results


def _one_command(
    client: RecordingPOP3, line: bytes, sasl_lines: tuple[bytes, ...], password: str
) -> object:
    verb, args = split_command(line)
    credential = spec_of(verb).credential
    text = line.decode("utf-8", "surrogateescape")
    try:
        if credential is Credential.USER_NAME:
            return client.user(args.decode("utf-8", "surrogateescape"))
        if credential is Credential.PASSWORD:
            secret = password if args == SECRET_PLACEHOLDER.encode() else args.decode()
            return client.pass_(secret)
        if credential is Credential.GREETING_DIGEST and args.endswith(SECRET_PLACEHOLDER.encode()):
            return client.apop(args.split()[0].decode(), password)
        if expects_multiline(verb, args):
            return client._longcmd(text)  # type: ignore[attr-defined]
        response: bytes = client._shortcmd(text)  # type: ignore[attr-defined]
        for sasl in sasl_lines:
            if not response.startswith(b"+ ") and response != b"+":
                break
            response = client._shortcmd(  # type: ignore[attr-defined]
                sasl.decode("utf-8", "surrogateescape")
            )
        return response
    except poplib.error_proto as exc:
        return exc.args[0] if exc.args else b"-ERR"
