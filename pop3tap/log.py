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

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, MutableMapping
from enum import Enum
from pathlib import Path
from typing import Any, Final, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from pop3tap._private import UnsafePathError, open_private_append
from pop3tap._text import printable
from pop3tap.protocol._events import Exchange

__all__ = [
    "LOG_FORMATS",
    "LogSetupError",
    "Pop3ConsoleRenderer",
    "configure_logging",
    "exchange_fields",
    "get_logger",
    "plain_values",
    "set_process_fields",
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
#: Context keys tried, in order, for the session tag of the compact exchange line.
_SESSION_KEYS: Final = ("session", "session_id", "conn_id")

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


def plain_values(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Processor: make every value renderable as text (no ``b'...'`` reprs)."""
    for key, value in event_dict.items():
        if value is None or type(value) in (str, int, float, bool):
            continue
        event_dict[key] = _plain(value)
    return event_dict


# The timestamp of ``TimeStamper(fmt="iso", utc=True)``, built from a per-second cache:
# ``datetime.now(UTC).isoformat()`` costs a datetime object and a format per line.
_stamp_second = -1
_stamp_prefix = ""


def utc_timestamp(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Processor: ``timestamp`` exactly as ``TimeStamper(fmt="iso", utc=True)`` writes it.

    ``2026-11-27T06:16:23.123456Z``; like ``datetime.isoformat`` the fraction is left out
    when the microseconds are 0.
    """
    global _stamp_second, _stamp_prefix
    second, nanos = divmod(time.time_ns(), 1_000_000_000)
    if second != _stamp_second:
        _stamp_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _stamp_second = second
    micros = nanos // 1000
    event_dict["timestamp"] = f"{_stamp_prefix}.{micros:06d}Z" if micros else f"{_stamp_prefix}Z"
    return event_dict


def _json_fallback(value: Any) -> Any:
    """What ``structlog.processors.JSONRenderer`` does with values JSON cannot encode."""
    try:
        return value.__structlog__()
    except AttributeError:
        return repr(value)


class JsonLineRenderer:
    """Render the event dict as one JSON object, exactly like ``JSONRenderer()``, cheaper.

    ``JSONRenderer`` calls ``json.dumps(..., default=...)``, which builds a new encoder
    (and, inside it, a new C encoder) for every line. Here the C encoder is built once and
    rebuilt only after a failed call, whose circular-reference markers may be left over.
    """

    def __init__(self) -> None:
        """Build the encoders once."""
        self._encoder = json.JSONEncoder(default=_json_fallback)
        self._fast = self._make_fast()

    def _make_fast(self) -> Callable[[Any, int], list[str]] | None:
        make = getattr(json.encoder, "c_make_encoder", None)
        if make is None:  # no C accelerator: the documented slow path
            return None
        fast: Callable[[Any, int], list[str]] = make(
            {},  # markers: circular references raise ValueError, as with json.dumps
            self._encoder.default,
            json.encoder.encode_basestring_ascii,
            None,  # indent
            ": ",
            ", ",
            False,  # sort_keys
            False,  # skipkeys
            True,  # allow_nan
        )
        return fast

    def __call__(self, _logger: WrappedLogger, _method: str, event_dict: EventDict) -> str:
        """Render one event dict to a line (without the newline)."""
        fast = self._fast
        if fast is None:
            return self._encoder.encode(event_dict)
        try:
            return "".join(fast(event_dict, 0))
        except BaseException:
            self._fast = self._make_fast()
            raise


class FdLogger:
    """Write each line to a file descriptor with one ``os.write`` (no Python buffering).

    ``structlog.WriteLogger`` on a line-buffered text file writes, then flushes, through
    two layers of buffers; this is one system call per line and each line still reaches
    the file as it is logged. With ``O_APPEND`` a line is never interleaved with another.
    """

    def __init__(self, fd: int) -> None:
        """Write to ``fd``, which stays owned by the caller."""
        self._fd = fd
        self._lock = threading.Lock()

    def msg(self, message: str) -> None:
        """Write ``message`` and a newline."""
        data = (message + "\n").encode("utf-8", "backslashreplace")
        with self._lock:
            while data:
                written = os.write(self._fd, data)
                data = data[written:]

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


class _FdLoggerFactory:
    def __init__(self, fd: int) -> None:
        self._logger = FdLogger(fd)

    def __call__(self, *args: Any) -> FdLogger:
        return self._logger


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


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def exchange_fields(ex: Exchange) -> dict[str, object]:
    """Flat fields of one ``pop3.exchange`` line.

    Always present: ``seq``, ``verb``, ``status`` (``"+OK"``/``"-ERR"``/``"+"`` or None
    when no response came) and ``first_line``. Only when meaningful: ``args`` (already
    masked by the core), ``resp_code``, ``multiline``/``body_lines``/``body_bytes``,
    ``latency_first_ms``/``latency_ms`` (3 decimals), ``pipelined``, ``flags`` (sorted).
    """
    fields: dict[str, object] = {
        "seq": ex.seq,
        "verb": ex.verb,
        "status": None if ex.status is None else ex.status.value,
        "first_line": ex.first_line,
    }
    if ex.args:
        fields["args"] = ex.args
    if ex.resp_code:
        fields["resp_code"] = ex.resp_code
    if ex.multiline:
        fields["multiline"] = True
        fields["body_lines"] = ex.body_lines
        fields["body_bytes"] = ex.body_bytes
    first = _ms(ex.latency_first_byte)
    if first is not None:
        fields["latency_first_ms"] = first
    complete = _ms(ex.latency_complete)
    if complete is not None:
        fields["latency_ms"] = complete
    if ex.pipelined:
        fields["pipelined"] = True
    if ex.flags:
        fields["flags"] = sorted(f.value for f in ex.flags)
    return fields


#: ANSI styles of the console view.
_STYLES: Final = {
    "dim": "\x1b[2m",
    "bold": "\x1b[1m",
    "ok": "\x1b[32m",
    "err": "\x1b[1;31m",
    "sasl": "\x1b[36m",
    "warning": "\x1b[33m",
    "error": "\x1b[1;31m",
    "reset": "\x1b[0m",
}
#: Width the command column is padded to, so responses line up.
_COMMAND_WIDTH: Final = 22
#: Fields already shown by the fixed columns of the console view.
_SHOWN: Final = frozenset({"event", "timestamp", "level", "session", "session_id", "conn_id"})


def use_colors(tty: bool, environ: MutableMapping[str, str] | None = None) -> bool:
    """Colours on a terminal; ``NO_COLOR`` (any value) turns them off, ``FORCE_COLOR``
    (any value but ``0``) on even for a pipe. ``NO_COLOR`` wins when both are set."""
    env = os.environ if environ is None else environ
    if env.get("NO_COLOR"):
        return False
    force = env.get("FORCE_COLOR")
    if force is not None and force != "0" and force != "":
        return True
    return tty


class Pop3ConsoleRenderer:
    """The live console view: one aligned line per event, in the shape of ``show``.

    ``12:03:04 a1b2c3d4e5f6 RETR 1                 +OK 1834 octets (27 lines, 1834 bytes) 0.8ms``;
    session open and close lines start with ``>>`` and ``<<``, other events show their
    level when it is not info, their name and their fields as ``key=value``.
    """

    def __init__(self, colors: bool = False) -> None:
        """``colors``: ANSI colours (``-ERR`` in red, ``+OK`` in green, warnings in yellow)."""
        self._colors = colors

    def _paint(self, style: str, text: str) -> str:
        if not self._colors or not text:
            return text
        return f"{_STYLES[style]}{text}{_STYLES['reset']}"

    def __call__(
        self, logger: WrappedLogger, method: str, event_dict: MutableMapping[str, Any]
    ) -> str:
        """Render one event dict to a line; control characters in values are escaped."""
        for key, value in event_dict.items():
            if key not in ("exc_info", "exception", "stack") and isinstance(
                value, str | dict | list
            ):
                event_dict[key] = _printable_value(value)
        return self.render(event_dict)

    def render(self, ev: MutableMapping[str, Any]) -> str:
        """One console line for an event dict."""
        stamp = ev.get("timestamp")
        clock = stamp[11:19] if isinstance(stamp, str) and len(stamp) >= 19 else "--:--:--"
        session = next((_printable(str(ev[k])) for k in _SESSION_KEYS if ev.get(k)), "")
        head = f"{self._paint('dim', clock)} {session or '-':<12}"
        name = str(ev.get("event", ""))
        if name == "pop3.exchange":
            return f"{head} {self._exchange(ev)}"
        if name == "session.open":
            where = " -> ".join(
                _printable(str(ev.get(k, "?"))) for k in ("client", "listen", "upstream")
            )
            return f"{head} {self._paint('bold', '>> open')} {where}"
        if name == "session.close":
            details = " ".join(
                f"{key}={ev[key]}"
                for key in ("retr", "top", "dele", "update", "bytes_in", "bytes_out", "duration_s")
                if key in ev
            )
            reason = _printable(str(ev.get("reason", "")))
            return f"{head} {self._paint('bold', '<< close')} {reason}; {details}"
        if name == "pop3.greeting":
            greeting = self._status_text(_printable(str(ev.get("first_line", ""))))
            return f"{head} {'':<{_COMMAND_WIDTH}} {greeting}"
        level = str(ev.get("level", "info"))
        label = name
        if level in ("warning", "error", "critical", "exception"):
            label = self._paint("error" if level != "warning" else "warning", f"{level}: {name}")
        extra = " ".join(
            f"{key}={_console_value(value)}" for key, value in ev.items() if key not in _SHOWN
        )
        line = f"{head} {label} {extra}".rstrip()
        exc = ev.get("exception")
        return line if not exc else f"{line}\n{exc}"

    def _status_text(self, first_line: str) -> str:
        if first_line.startswith("-ERR"):
            return self._paint("err", first_line)
        if first_line.startswith("+OK"):
            return self._paint("ok", "+OK") + first_line[3:]
        if first_line.startswith("+"):
            return self._paint("sasl", first_line)
        return first_line

    def _exchange(self, ev: MutableMapping[str, Any]) -> str:
        command = _printable(str(ev.get("verb", "?")))
        if ev.get("args"):
            command += f" {_printable(str(ev['args']))}"
        parts = [f"{command:<{_COMMAND_WIDTH}}"]
        status = ev.get("status")
        first_line = _printable(str(ev.get("first_line") or ""))
        if status is None:
            parts.append(self._paint("warning", "(no response)"))
        elif first_line.startswith(str(status)):
            parts.append(self._status_text(first_line))
        else:
            parts.append(self._status_text(f"{status} {first_line}".rstrip()))
        if ev.get("multiline"):
            parts.append(f"({ev.get('body_lines', 0)} lines, {ev.get('body_bytes', 0)} bytes)")
        latency = ev.get("latency_ms")
        if isinstance(latency, int | float):
            parts.append(self._paint("dim", f"{latency:.1f}ms"))
        flags = ev.get("flags")
        if flags:
            parts.append(self._paint("warning", "[" + ",".join(str(f) for f in flags) + "]"))
        return " ".join(parts)


def _printable(text: str) -> str:
    """``text`` with control characters escaped: a server's bytes never drive the terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in printable(text))


def _console_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    # Quoted (control characters escaped) unless it is one plain word: one event, one line.
    plain = text and text.isprintable() and " " not in text and '"' not in text
    if plain:
        return text
    return '"' + _printable(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'


def _printable_value(value: Any) -> Any:
    """``value`` with control characters escaped in every string inside it."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {printable(str(k)): _printable_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_printable_value(v) for v in value]
    return value


def render_exchange_line(ev: MutableMapping[str, Any]) -> str:
    """Compact uncoloured form of a ``pop3.exchange`` event dict (the console view's line)."""
    return Pop3ConsoleRenderer(colors=False).render(ev)


class TeeLogger:
    """Write each event as JSON to a log file and as the console view to a terminal."""

    def __init__(self, file_fd: int, console: TextIO, renderer: Pop3ConsoleRenderer) -> None:
        """``file_fd`` gets JSON lines, ``console`` the console view."""
        self._file = FdLogger(file_fd)
        self._json = JsonLineRenderer()
        self._console = console
        self._renderer = renderer
        self._lock = threading.Lock()

    def msg(self, event_dict: dict[str, Any]) -> None:
        """Write one event both ways."""
        console_line = self._renderer.render(event_dict)
        self._file.msg(self._json(None, "", event_dict))
        with self._lock:
            self._console.write(console_line + "\n")
            self._console.flush()

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


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
    global _log_file
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
    ]
    factory: Callable[..., Any]
    if file is not None:
        file.flush()
        processors.append(structlog.processors.format_exc_info)
        if log_format == "console" or (log_format == "auto" and tty):
            tee = TeeLogger(file.fileno(), console, Pop3ConsoleRenderer(colors=colors))
            processors.append(_pass_dict)
            factory = lambda *_args: tee  # noqa: E731
        else:
            processors.append(JsonLineRenderer())
            factory = _FdLoggerFactory(file.fileno())
    else:
        if log_format == "json" or (log_format == "auto" and not tty):
            processors.append(structlog.processors.format_exc_info)
            processors.append(JsonLineRenderer())
        else:
            processors.append(structlog.processors.format_exc_info)
            processors.append(Pop3ConsoleRenderer(colors=colors))
        factory = structlog.WriteLoggerFactory(file=console)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(min_level),
        logger_factory=factory,
        cache_logger_on_first_use=cache,
    )
    previous, _log_file = _log_file, file
    if previous is not None and previous is not file:
        previous.close()
