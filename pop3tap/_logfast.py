"""The renderers and loggers behind ``--log-format``: a JSON line renderer on orjson, a
logger that writes each line with one ``os.write``, the Pop3.log-style console view, and
the tee that writes a file and a terminal at once.

:mod:`pop3tap.log` wires them into structlog; they sit here because they are tuned for
speed (one system call per line, orjson for the JSON) and change for that reason alone.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import MutableMapping
from typing import Any, Final, TextIO

import orjson
from structlog.typing import EventDict, WrappedLogger

from pop3tap._text import printable

__all__ = [
    "FdLogger",
    "JsonLineRenderer",
    "Pop3ConsoleRenderer",
    "TeeLogger",
    "render_exchange_line",
    "use_colors",
]

#: Context keys tried, in order, for the session tag of the compact exchange line.
_SESSION_KEYS: Final = ("session", "session_id", "conn_id")


def _json_fallback(value: Any) -> Any:
    """What ``structlog.processors.JSONRenderer`` does with values JSON cannot encode."""
    try:
        return value.__structlog__()
    except AttributeError:
        return repr(value)


def _orjson_fallback(value: Any) -> Any:
    """What the json module makes of the values orjson passes on: subclasses of the JSON
    types as what they hold (a dict subclass through its ``items()``, so one that hides
    values there hides them here too), the rest as :func:`_json_fallback` says."""
    if isinstance(value, dict):
        return dict(value.items())
    if isinstance(value, list | tuple):
        return list(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):  # bool cannot be subclassed
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    return _json_fallback(value)


def _finite(value: Any, seen: set[int]) -> Any:
    """``value`` with NaN and the infinities as None (JSON has neither, RFC 8259 §6), as
    orjson writes them; a container met twice is left for the encoder to report."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict | list | tuple) and id(value) not in seen:
        seen.add(id(value))
        if isinstance(value, dict):
            return {key: _finite(item, seen) for key, item in value.items()}
        return [_finite(item, seen) for item in value]
    return value


#: orjson's options for a log line: the newline appended; subclasses of the JSON types,
#: dataclasses and datetimes handed to :func:`_orjson_fallback`, as the json module would
#: see them (a dataclass is its repr, so no field its repr hides comes out).
_ORJSON_LINE: Final = (
    orjson.OPT_APPEND_NEWLINE
    | orjson.OPT_PASSTHROUGH_SUBCLASS
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
)


class JsonLineRenderer:
    """Render the event dict as one line of compact JSON in printable ASCII.

    orjson renders it (about a tenth of the json module's time per line). A line it
    refuses (an integer beyond 64 bits, a key that is not a string, a lone surrogate, a
    circular value) or one with a character outside printable ASCII in a string (non-ASCII
    text, DEL) is rendered by the json module instead, with the same separators. Either
    way every character beyond printable ASCII is a ``\\uXXXX`` escape (RFC 8259 §7), so a
    terminal showing the log never gets a peer's control or bidirectional characters.

    A line reads back as what ``structlog.processors.JSONRenderer`` writes, except: NaN
    and the infinities are ``null`` (JSON has neither); an Enum is its value and a UUID
    its text (orjson's types; pop3tap's ``plain_values`` turns enums into values before
    any renderer); an ``orjson.Fragment`` is raw JSON, written as given.

    ``as_bytes``: called as a processor, return the encoded line with its newline (for
    :class:`FdLogger`) instead of the text without it.
    """

    def __init__(self, *, as_bytes: bool = False) -> None:
        """Build the fallback encoder once."""
        self._encoder = json.JSONEncoder(
            default=_json_fallback, separators=(",", ":"), allow_nan=False
        )
        self.as_bytes = as_bytes

    def line(self, event_dict: Any) -> bytes:
        """The event dict's line, newline included."""
        try:
            out = orjson.dumps(event_dict, default=_orjson_fallback, option=_ORJSON_LINE)
        except orjson.JSONEncodeError:
            pass  # the json module encodes it, or raises what JSONRenderer would
        else:
            if out.isascii() and b"\x7f" not in out:
                return out
        try:
            text = self._encoder.encode(event_dict)
        except ValueError:  # NaN or an infinity, or a circular value (raised again)
            text = self._encoder.encode(_finite(event_dict, set()))
        return text.encode("ascii") + b"\n"

    def __call__(self, _logger: WrappedLogger, _method: str, event_dict: EventDict) -> str | bytes:
        """Render one event dict: the line without its newline, or :meth:`line`."""
        if self.as_bytes:
            return self.line(event_dict)
        return self.line(event_dict)[:-1].decode("ascii")


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

    def msg(self, message: str | bytes) -> None:
        """Write ``message`` as one line (a newline is added unless it ends with one)."""
        if isinstance(message, str):
            data = (message + "\n").encode("utf-8", "backslashreplace")
        elif message.endswith(b"\n"):
            data = message
        else:
            data = message + b"\n"
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
        """Render one event dict to a line (:meth:`render`)."""
        return self.render(event_dict)

    def render(self, ev: MutableMapping[str, Any]) -> str:
        """One console line for an event dict, every value escaped here and only here: a
        value escaped twice could not tell a peer's ESC from a peer's ``\\x1b``."""
        stamp = ev.get("timestamp")
        clock = stamp[11:19] if isinstance(stamp, str) and len(stamp) >= 19 else "--:--:--"
        session = next((printable(str(ev[k])) for k in _SESSION_KEYS if ev.get(k)), "")
        head = f"{self._paint('dim', clock)} {session or '-':<12}"
        name = str(ev.get("event", ""))
        if name == "pop3.exchange":
            return f"{head} {self._exchange(ev)}"
        if name == "session.open":
            where = " -> ".join(
                printable(str(ev.get(k, "?"))) for k in ("client", "listen", "upstream")
            )
            return f"{head} {self._paint('bold', '>> open')} {where}"
        if name == "session.close":
            details = " ".join(
                f"{key}={printable(str(ev[key]))}"
                for key in ("retr", "top", "dele", "update", "bytes_in", "bytes_out", "duration_s")
                if key in ev
            )
            reason = printable(str(ev.get("reason", "")))
            return f"{head} {self._paint('bold', '<< close')} {reason}; {details}"
        if name == "pop3.greeting":
            greeting = self._status_text(printable(str(ev.get("first_line", ""))))
            return f"{head} {'':<{_COMMAND_WIDTH}} {greeting}"
        level = printable(str(ev.get("level", "info")))
        label = printable(name)
        if level in ("warning", "error", "critical", "exception"):
            label = self._paint("error" if level != "warning" else "warning", f"{level}: {name}")
        extra = " ".join(
            f"{key}={_console_value(value)}" for key, value in ev.items() if key not in _SHOWN
        )
        line = f"{head} {label} {extra}".rstrip()
        exc = ev.get("exception")
        if not exc:
            return line
        # A traceback keeps its lines; what an exception says may quote a peer.
        return "\n".join([line, *(printable(part) for part in str(exc).splitlines())])

    def _status_text(self, first_line: str) -> str:
        if first_line.startswith("-ERR"):
            return self._paint("err", first_line)
        if first_line.startswith("+OK"):
            return self._paint("ok", "+OK") + first_line[3:]
        if first_line.startswith("+"):
            return self._paint("sasl", first_line)
        return first_line

    def _exchange(self, ev: MutableMapping[str, Any]) -> str:
        command = printable(str(ev.get("verb", "?")))
        if ev.get("args"):
            command += f" {printable(str(ev['args']))}"
        parts = [f"{command:<{_COMMAND_WIDTH}}"]
        status = ev.get("status")
        first_line = printable(str(ev.get("first_line") or ""))
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


def _console_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    # Quoted (control characters escaped) unless it is one plain word: one event, one line.
    plain = text and text.isprintable() and " " not in text and '"' not in text
    if plain:
        return text
    return '"' + printable(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'


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
        self._file.msg(self._json.line(event_dict))
        with self._lock:
            self._console.write(console_line + "\n")
            self._console.flush()

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg
