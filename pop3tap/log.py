"""structlog configuration and the fields of the canonical ``pop3.exchange`` log line.

Configure once, from the command line entry point, with :func:`configure_logging`.
Library modules log through :func:`get_logger` and bind per-session context with
``structlog.contextvars.bind_contextvars(session=..., client=..., upstream=...)``; the
first processor merges that context into every event.

A library never configures logging for its host program. Until structlog is configured
(by pop3tap's command line, or by the program that imports pop3tap), pop3tap's events go
to the standard library logger of the same name (``pop3tap.relay``, ``pop3tap.replay``),
which has a ``NullHandler``: silent by default, seen by ``caplog`` and by any handler
the program installs. Each record's message is ``event key=value ...`` and its
``pop3tap`` attribute holds the event dict.

Wire bytes are never rendered as ``b'...'``: a processor turns ``bytes`` values (also
inside lists and dicts), sets and enums into plain text/JSON values before rendering.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Callable, MutableMapping
from enum import Enum
from pathlib import Path
from typing import Any, Final, TextIO

import structlog
from structlog.contextvars import STRUCTLOG_KEY_PREFIX as _CONTEXTVAR_PREFIX
from structlog.processors import format_exc_info
from structlog.typing import EventDict, Processor, WrappedLogger

from pop3tap._exchange_fields import exchange_fields
from pop3tap._logfast import (
    FdLogger,
    JsonLineRenderer,
    Pop3ConsoleRenderer,
    TeeLogger,
    _FdLoggerFactory,
    render_exchange_line,
    use_colors,
)
from pop3tap._private import UnsafePathError, open_private_append
from pop3tap._utctime import iso_now
from pop3tap.protocol._events import Exchange

# FdLogger, JsonLineRenderer, TeeLogger, render_exchange_line and use_colors live in
# pop3tap._logfast and stay importable from here.
__all__ = [
    "LOG_FORMATS",
    "FdLogger",
    "JsonLineRenderer",
    "LogSetupError",
    "Pop3ConsoleRenderer",
    "TeeLogger",
    "configure_logging",
    "exchange_fields",
    "get_logger",
    "log_exchange",
    "plain_values",
    "render_exchange_line",
    "set_process_fields",
    "use_colors",
]

#: Accepted values of ``log_format``.
LOG_FORMATS: Final = ("auto", "json", "console")
_LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

_log_file: TextIO | None = None
#: Fields every line of this process carries (``worker`` and ``pid`` with ``--workers``).
_process_fields: dict[str, Any] = {}


def set_process_fields(**fields: Any) -> None:
    """Put ``fields`` on every later log line of this process (a ``--workers`` worker)."""
    _process_fields.clear()
    _process_fields.update(fields)


def add_process_fields(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Processor: the fields of :func:`set_process_fields`."""
    if _process_fields:
        for key, value in _process_fields.items():
            event_dict.setdefault(key, value)
    return event_dict


class LogSetupError(Exception):
    """Logging cannot be configured as asked; the message is one line."""


################################################################
# Processors
################################################################


def _text(value: bytes | bytearray | memoryview) -> str:
    return bytes(value).decode("utf-8", "backslashreplace")


def _plain(value: Any) -> Any:
    """Return ``value`` with bytes decoded, sets sorted into lists and enums unwrapped."""
    if isinstance(value, bytes | bytearray | memoryview):
        return _text(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((_plain(v) for v in value), key=str)
    return value


def _plain_value(value: Any) -> Any:
    """One value as :func:`plain_values` leaves it."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    return _plain(value)


def plain_values(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Processor: make every value renderable as text (no ``b'...'`` reprs)."""
    for key, value in event_dict.items():
        if value is None or type(value) in (str, int, float, bool):
            continue
        event_dict[key] = _plain(value)
    return event_dict


def utc_timestamp(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Processor: ``timestamp`` exactly as ``TimeStamper(fmt="iso", utc=True)`` writes it.

    ``2026-11-27T06:16:23.123456Z``; like ``datetime.isoformat`` the fraction is left out
    when the microseconds are 0 (formatted once per second: :mod:`pop3tap._utctime`).
    """
    event_dict["timestamp"] = iso_now()
    return event_dict


################################################################
# Library loggers: structlog when configured, else stdlib logging
################################################################

logging.getLogger("pop3tap").addHandler(logging.NullHandler())


def _stdlib_message(
    _logger: WrappedLogger, _method: str, event_dict: EventDict
) -> tuple[tuple[str], dict[str, Any]]:
    """Final processor of the stdlib route: ``event key=value ...`` and the dict itself."""
    exc_info = event_dict.pop("exc_info", None)
    fields = " ".join(
        f"{key}={json.dumps(value, ensure_ascii=False, default=str)}"
        for key, value in event_dict.items()
        if key != "event"
    )
    message = f"{event_dict.get('event', '')} {fields}".rstrip()
    return (message,), {"exc_info": exc_info, "extra": {"pop3tap": dict(event_dict)}}


class LibraryLogger:
    """A logger for pop3tap's modules that follows the host program's choice.

    Each call goes to ``structlog.get_logger(name)`` once structlog is configured (the
    command line, ``structlog.testing.capture_logs``, or the host program), and otherwise
    to the standard library logger ``name`` through structlog's stdlib wrapper.
    """

    def __init__(self, name: str) -> None:
        """Loggers are built on first use."""
        self._name = name
        self._structlog: Any = structlog.get_logger(name)
        self._stdlib: Any = None

    def _target(self) -> Any:
        if structlog.is_configured():
            return self._structlog
        if self._stdlib is None:
            self._stdlib = structlog.wrap_logger(
                logging.getLogger(self._name),
                processors=[
                    structlog.stdlib.filter_by_level,
                    structlog.contextvars.merge_contextvars,
                    plain_values,
                    _stdlib_message,
                ],
                wrapper_class=structlog.stdlib.BoundLogger,
                cache_logger_on_first_use=False,
            )
        return self._stdlib

    def __getattr__(self, name: str) -> Any:
        """``bind``, ``info``, ``warning``... of the current target."""
        return getattr(self._target(), name)


def get_logger(name: str) -> Any:
    """The logger a pop3tap module logs through (see the module docstring)."""
    return LibraryLogger(name)


################################################################
# Exchange line
################################################################


class _DirectExchangeLine:
    """The ``pop3.exchange`` line written without structlog's call machinery, same bytes.

    Built by :func:`configure_logging` only for its JSON-lines-to-a-file-descriptor output
    at a level that keeps info. :meth:`write` runs the steps of that processor chain inline
    (the bound context, then the event's fields, ``event``, context variables, process
    fields, ``level``, ``timestamp``; the same JSON encoder; one ``os.write``) and declines
    (returns False) for any logger that would not run exactly that chain: a logger of
    another configuration, of the standard library route, or one whose processor list was
    changed in place (``structlog.testing.capture_logs``).
    """

    def __init__(
        self,
        wrapper: Any,
        processors: list[Processor],
        renderer: JsonLineRenderer,
        logger: FdLogger,
    ) -> None:
        """Remember what a bound logger of this configuration holds."""
        self._wrapper = wrapper
        self._processors = processors
        self._snapshot = list(processors)
        self._renderer = renderer
        self._logger = logger

    @classmethod
    def of(
        cls, wrapper: Any, processors: list[Processor], factory: object, min_level: int
    ) -> _DirectExchangeLine | None:
        """The writer for this configuration, or None when its output is not JSON lines to
        a file descriptor or its level drops info."""
        renderer = processors[-1]
        if (
            isinstance(renderer, JsonLineRenderer)
            and renderer.as_bytes
            and isinstance(factory, _FdLoggerFactory)
            and min_level <= logging.INFO
        ):
            return cls(wrapper, processors, renderer, factory())
        return None

    def write(self, log: Any, fields: dict[str, Any]) -> bool:
        """Write ``fields`` as the ``pop3.exchange`` line of ``log``; False if not ours."""
        if (
            type(log) is not self._wrapper
            or log._logger is not self._logger
            or log._processors is not self._processors
            or self._processors != self._snapshot
        ):
            return False
        # The fields are plain values already (exchange_fields); only the context's values
        # go through plain_values, which leaves plain values as they are.
        event_dict: EventDict = {key: _plain_value(value) for key, value in log._context.items()}
        event_dict.update(fields)
        event_dict["event"] = "pop3.exchange"
        context = contextvars.copy_context()
        for var in context:  # merge_contextvars: the context's own order, setdefault
            name = var.name
            if name.startswith(_CONTEXTVAR_PREFIX):
                value = context[var]
                key = name[_CONTEXTVAR_PREFIX_LEN:]
                if value is not Ellipsis and key not in event_dict:
                    event_dict[key] = _plain_value(value)
        if _process_fields:
            for key, value in _process_fields.items():
                if key not in event_dict:
                    event_dict[key] = _plain_value(value)
        event_dict["level"] = "info"
        utc_timestamp(None, "info", event_dict)
        if "exc_info" in event_dict:
            event_dict = format_exc_info(None, "info", event_dict)
        self._logger.msg(self._renderer.line(event_dict))
        return True


#: The direct writer of the current configuration, or None (structlog writes every line).
_direct_exchange: _DirectExchangeLine | None = None
_CONTEXTVAR_PREFIX_LEN: Final = len(_CONTEXTVAR_PREFIX)


def log_exchange(log: Any, ex: Exchange) -> None:
    """Log ``ex`` as ``pop3.exchange`` on ``log``: directly when the configuration is
    :func:`configure_logging`'s JSON lines to a file, through structlog otherwise."""
    fields = exchange_fields(ex)
    direct = _direct_exchange
    if direct is None or not direct.write(log, fields):
        log.info("pop3.exchange", **fields)


def _pass_dict(
    _logger: WrappedLogger, _method: str, event_dict: EventDict
) -> tuple[tuple[EventDict], dict[str, Any]]:
    """Final processor of the tee: hand the event dict itself to :class:`TeeLogger`."""
    return (event_dict,), {}


################################################################
# Configuration
################################################################


def _open_log_file(path: str) -> TextIO:
    """Open ``path`` for appending: created 0600, or an existing private file of ours.

    A link, another user's file or one others may write is refused (see
    :mod:`pop3tap._private`): the log names sessions, users and servers.
    """
    try:
        fd = open_private_append(Path(path), "log file")
    except UnsafePathError as exc:
        raise LogSetupError(str(exc)) from None
    except OSError as exc:
        raise LogSetupError(f"cannot open log file {path}: {exc.strerror or exc}") from None
    return open(fd, "a", encoding="utf-8", errors="backslashreplace", buffering=1)


def _output(
    file: TextIO | None, console: TextIO, *, console_view: bool, colors: bool
) -> tuple[Processor, Callable[..., Any]]:
    """The last processor and the logger factory: JSON lines to the file (and the console
    view to the terminal as well, through :class:`TeeLogger`), or one of them to ``console``."""
    if file is not None:
        file.flush()
        if console_view:
            tee = TeeLogger(file.fileno(), console, Pop3ConsoleRenderer(colors=colors))
            return _pass_dict, lambda *_args: tee
        return JsonLineRenderer(as_bytes=True), _FdLoggerFactory(file.fileno())
    final: Processor = (
        Pop3ConsoleRenderer(colors=colors) if console_view else JsonLineRenderer()
    )
    return final, structlog.WriteLoggerFactory(file=console)


def configure_logging(
    *,
    log_format: str = "auto",
    log_file: str | None = None,
    level: str = "info",
    cache: bool = True,
    stream: TextIO | None = None,
    environ: MutableMapping[str, str] | None = None,
) -> None:
    """Configure structlog for the whole process (the command line's job, never a library's).

    Args:
        log_format: ``"json"`` (JSON lines), ``"console"`` (the live console view) or
            ``"auto"`` (console when the stream is a terminal, JSON otherwise).
        log_file: also append JSON lines to this file (created 0600). The stream keeps
            the console view when it is a terminal (or ``log_format`` is ``console``);
            otherwise only the file is written.
        level: minimum level name (debug, info, warning, error, critical).
        cache: cache loggers on first use (leave False in tests).
        stream: the console stream instead of stderr.
        environ: where ``NO_COLOR``/``FORCE_COLOR`` are read (default ``os.environ``).

    Raises:
        LogSetupError: unknown format or level, or the log file cannot be opened.
    """
    global _log_file, _direct_exchange
    if log_format not in LOG_FORMATS:
        raise LogSetupError(f"unknown log format {log_format!r} (choose auto, json or console)")
    min_level = _LEVELS.get(level.lower())
    if min_level is None:
        raise LogSetupError(f"unknown log level {level!r} (choose {', '.join(_LEVELS)})")
    console = stream if stream is not None else sys.stderr
    try:
        tty = console.isatty()
    except (AttributeError, ValueError):
        tty = False
    colors = use_colors(tty, environ)
    file: TextIO | None = _open_log_file(log_file) if log_file is not None else None
    processors: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        add_process_fields,
        structlog.processors.add_log_level,
        utc_timestamp,
        plain_values,
        structlog.processors.format_exc_info,
    ]
    console_view = log_format == "console" or (log_format == "auto" and tty)
    final, factory = _output(file, console, console_view=console_view, colors=colors)
    processors.append(final)
    wrapper = structlog.make_filtering_bound_logger(min_level)
    structlog.configure(
        processors=processors,
        wrapper_class=wrapper,
        logger_factory=factory,
        cache_logger_on_first_use=cache,
    )
    _direct_exchange = _DirectExchangeLine.of(wrapper, processors, factory, min_level)
    previous, _log_file = _log_file, file
    if previous is not None and previous is not file:
        previous.close()
