"""The Python API: a replay server for tests and scripts, sync or async.

:func:`replay_server` runs one in a background thread, :func:`open_replay_server` in the
current trio run; both yield a :class:`ReplayServerHandle`. :class:`Pop3TestServer` is the
surface that handle shares with the pytest plugin's recording relay, so a test written
against the ``pop3_replay`` fixture works whichever one it gets.
"""

from __future__ import annotations

import contextlib
import functools
import ssl
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import trio

from pop3tap.faults import Fault
from pop3tap.replay._config import ReplayConfig, server_tls_for
from pop3tap.replay._matching import UnmatchedCommand, UnplayedExchange
from pop3tap.replay._recorded import RecordedSession, ReplayError, load_sessions
from pop3tap.replay._server import ReplayServer, serve_replay
from pop3tap.server import Endpoint

if TYPE_CHECKING:
    from pop3tap.model import ModelStore


class Pop3TestServer(Protocol):
    """A POP3 server a test talks to: a replay, or the pytest plugin's recording relay."""

    @property
    def host(self) -> str:
        """Where clients connect."""
        ...

    @property
    def port(self) -> int:
        """The port clients connect to."""
        ...

    @property
    def capture_path(self) -> Path | None:
        """The capture replayed or recorded (set by the pytest plugin)."""
        ...

    @property
    def recording(self) -> bool:
        """True for a recording relay, False for a replay."""
        ...

    @property
    def ca_file(self) -> Path | None:
        """The CA certificate (PEM) TLS clients must trust, if any."""
        ...

    def ssl_context(self) -> ssl.SSLContext:
        """A client context trusting :attr:`ca_file`."""
        ...

    @property
    def unplayed(self) -> Sequence[object]:
        """Recorded exchanges no client asked for (none while recording)."""
        ...

    @property
    def unmatched(self) -> Sequence[object]:
        """Client commands without a recorded answer (none while recording)."""
        ...

    @property
    def all_played(self) -> bool:
        """Every recorded exchange was played (always while recording)."""
        ...


class ReplayServerHandle:
    """What :func:`replay_server` and :func:`open_replay_server` yield."""

    def __init__(self, server: ReplayServer) -> None:
        self.server = server
        self.address = server.address
        #: The capture file (set by the pytest plugin).
        self.capture_path: Path | None = None
        #: False: this is a replay (the pytest plugin yields a recording relay otherwise).
        self.recording = False
        #: The CA certificate (PEM) TLS clients must trust; None without TLS or with --cert.
        self.ca_file: Path | None = server.ca_file

    def ssl_context(self) -> ssl.SSLContext:
        """A client context trusting :attr:`ca_file` (the system store with --cert/--key)."""
        return ssl.create_default_context(
            cafile=None if self.ca_file is None else str(self.ca_file)
        )

    @property
    def host(self) -> str:
        return self.address.host

    @property
    def port(self) -> int:
        return self.address.port

    @property
    def unplayed(self) -> list[UnplayedExchange]:
        """Recorded exchanges no client asked for."""
        return self.server.unplayed

    @property
    def unmatched(self) -> list[UnmatchedCommand]:
        """Client commands without a recorded answer."""
        return self.server.unmatched

    @property
    def all_played(self) -> bool:
        """Every recorded exchange was played."""
        return self.server.all_played

    def add_fault(self, spec: str) -> Fault:
        """Add a fault while the server runs (docs/faults.md); new answers are subject to it.

        Raises:
            FaultError: the spec cannot be parsed (a ValueError).
        """
        return self.server.faults.add(spec)

    def clear_faults(self) -> None:
        """Remove every fault; answers are as recorded again."""
        self.server.faults.clear()

    def reset_model(self) -> None:
        """Restore the modelled mailboxes as recorded (undo deletions that persisted)."""
        if self.server.model is None:
            raise ReplayError("reset_model() needs a model server (model=True)")
        self.server.model.reset()

    def message_count(self, user: str | None = None) -> int:
        """How many messages the model's mailbox (of ``user``) holds now."""
        if self.server.model is None:
            raise ReplayError("message_count() needs a model server (model=True)")
        return self.server.model.message_count(user)

    def report(self) -> str:
        """A few lines naming unplayed exchanges and unmatched commands ('' when clean)."""
        lines: list[str] = []
        if self.unmatched:
            lines.append(f"{len(self.unmatched)} command(s) had no recorded response:")
            lines += [f"  {u}" for u in self.unmatched[:20]]
        if self.unplayed:
            lines.append(f"{len(self.unplayed)} recorded exchange(s) were never played:")
            lines += [f"  {u}" for u in self.unplayed[:20]]
        return "\n".join(lines)


def _make_config(captures: Any, options: dict[str, Any]) -> ReplayConfig:
    if isinstance(captures, str | Path):
        captures = (captures,)
    listen = options.pop("listen", Endpoint("127.0.0.1", 0))
    if isinstance(listen, tuple):
        listen = Endpoint(*listen)
    if isinstance(options.get("faults"), str):
        options["faults"] = (options["faults"],)
    elif options.get("faults") is not None:
        options["faults"] = tuple(options["faults"])
    if isinstance(options.get("passwords"), dict):
        options["passwords"] = tuple(options["passwords"].items())
    for name in ("cert", "key", "ca_dir", "messages"):
        if isinstance(options.get(name), str):
            options[name] = Path(options[name])
    return ReplayConfig(captures=tuple(captures), listen=listen, **options)


@contextlib.contextmanager
def replay_server(
    captures: str | Path | Iterable[str | Path], **options: Any
) -> Iterator[ReplayServerHandle]:
    """A replay server on a free loopback port, run in a background thread.

    Example: ``with replay_server("captures/user-pass.p3cap") as s: poplib.POP3(s.host, s.port)``.
    ``options`` are :class:`ReplayConfig` fields (``match``, ``timing``, ``sessions``,
    ``listen_tls``, ``cert``, ``key``, ``ca_dir``, ``tls_timeout``...); ``s.ca_file`` and
    ``s.ssl_context()`` are what TLS clients trust.
    """
    from pop3tap.background import BackgroundServer

    config = _make_config(captures, dict(options))
    sessions: list[RecordedSession] = []
    if config.captures or config.messages is None:
        sessions, _warnings = load_sessions(config.captures)  # errors surface in this thread
    tls = server_tls_for(config, sessions)  # so do TLS setup errors
    model: ModelStore | None = None
    if config.model:  # and model errors; built once (message files are measured at start)
        from pop3tap.replay._model import build_store

        model = build_store(config, sessions, tls_available=tls is not None)
    background: BackgroundServer[ReplayServer] = BackgroundServer(
        functools.partial(serve_replay, config, sessions=sessions, tls=tls, model=model),
        name="pop3tap-replay",
    )
    with background as server:
        yield ReplayServerHandle(server)


@contextlib.asynccontextmanager
async def open_replay_server(
    captures: str | Path | Iterable[str | Path], **options: Any
) -> AsyncIterator[ReplayServerHandle]:
    """Async version of :func:`replay_server` for trio code (runs in the current trio run)."""
    config = _make_config(captures, dict(options))
    async with trio.open_nursery() as nursery:
        server: ReplayServer = await nursery.start(serve_replay, config)
        try:
            yield ReplayServerHandle(server)
        finally:
            nursery.cancel_scope.cancel()
