"""Run a trio server in a background thread, for synchronous code (poplib, plain pytest).

Most POP3 client libraries are synchronous, so tests and scripts need a server they can
start with a ``with`` statement: the thread runs its own ``trio.run``, reports back once
the server accepts connections, and is cancelled cleanly on exit.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Generic, TypeVar

import trio

T = TypeVar("T")

#: A server entry point in the ``nursery.start`` style: it calls ``task_status.started(value)``.
StartableServer = Callable[..., Awaitable[None]]


class BackgroundServer(Generic[T]):
    """Start ``serve`` in a thread; ``value`` is what it passed to ``task_status.started``."""

    def __init__(self, serve: StartableServer, *, name: str = "pop3tap-server") -> None:
        self._serve = serve
        self._name = name
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._value: T | None = None
        self._error: BaseException | None = None

    @property
    def value(self) -> T:
        """The started server (whatever ``serve`` reported)."""
        if self._value is None:
            raise RuntimeError("the background server is not running")
        return self._value

    def start(self, timeout: float = 30.0) -> T:
        """Start the thread and wait until the server accepts connections."""
        self._thread = threading.Thread(target=self._main, name=self._name, daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"{self._name} did not start within {timeout:g}s")
        if self._error is not None:
            raise self._error
        return self.value

    def stop(self, timeout: float = 30.0) -> None:
        """Cancel the server and wait for its thread to end."""
        if self._token is not None and self._scope is not None:
            scope = self._scope
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(scope.cancel, trio_token=self._token)
        if self._thread is not None:
            self._thread.join(timeout)
        if self._error is not None and self._ready.is_set() and self._value is not None:
            error, self._error = self._error, None
            raise error

    def call(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run a synchronous function in the server's trio thread (e.g. a shutdown method)."""
        if self._token is None:
            raise RuntimeError("the background server is not running")
        return trio.from_thread.run_sync(function, *args, trio_token=self._token)

    def __enter__(self) -> T:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _main(self) -> None:
        try:
            trio.run(self._run)
        except BaseException as exc:  # reported to the caller's thread
            self._error = exc
        finally:
            self._ready.set()

    async def _run(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as scope:
            self._scope = scope
            async with trio.open_nursery() as nursery:
                self._value = await nursery.start(self._serve)
                self._ready.set()
