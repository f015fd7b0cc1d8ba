"""structlog configuration and the pop3.exchange line."""

from __future__ import annotations

import ast
import collections
import dataclasses
import io
import json
import os
import re
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.contextvars import bind_contextvars, clear_contextvars

from pop3tap.log import LogSetupError, configure_logging, exchange_fields, plain_values
from pop3tap.protocol._events import Exchange, Flag, Status


@pytest.fixture(autouse=True)
def reset_structlog() -> Iterator[None]:
    clear_contextvars()
    yield
    clear_contextvars()
    structlog.reset_defaults()


def make_exchange(**overrides: Any) -> Exchange:
    values: dict[str, Any] = {
        "at": 10.0008,
        "seq": 4,
        "verb": "RETR",
        "args": "1",
        "status": Status.OK,
        "first_line": "+OK 1834 octets",
        "resp_code": None,
        "multiline": True,
        "body_lines": 27,
        "body_bytes": 1834,
        "sent_at": 10.0,
        "first_byte_at": 10.00012345,
        "pipelined": False,
        "flags": frozenset(),
        "request_start": 30,
        "request_end": 38,
        "response_start": 100,
        "response_end": 1990,
    }
    values.update(overrides)
    return Exchange(**values)


def json_lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_json_lines_never_contain_bytes_reprs() -> None:
    out = io.StringIO()
    configure_logging(log_format="json", stream=out, cache=False)
    log = structlog.get_logger()
    log.info(
        "pop3.raw",
        data=b"USER bob\r\n",
        junk=b"\xff\xfe",
        nested={"lines": [b"+OK", bytearray(b"x")]},
        flags=frozenset({Flag.TRUNCATED, Flag.BARE_LF}),
        status=Status.ERR,
    )
    text = out.getvalue()
    assert "b'" not in text and 'b"' not in text
    (line,) = json_lines(out)
    assert line["data"] == "USER bob\r\n"
    assert line["junk"] == "\\xff\\xfe"
    assert line["nested"] == {"lines": ["+OK", "x"]}
    assert line["flags"] == ["bare_lf", "truncated"]
    assert line["status"] == "-ERR"
    assert line["level"] == "info" and line["event"] == "pop3.raw"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", line["timestamp"])


def test_bound_context_appears_on_every_event() -> None:
    out = io.StringIO()
    configure_logging(log_format="json", stream=out, cache=False)
    log = structlog.get_logger()
    bind_contextvars(session="a1b2c3d4e5f6", client="127.0.0.1:5000")
    log.info("pop3.connect")
    log.warning("pop3.exchange", **exchange_fields(make_exchange()))
    clear_contextvars()
    log.info("pop3.listening")
    first, second, third = json_lines(out)
    for line in (first, second):
        assert line["session"] == "a1b2c3d4e5f6" and line["client"] == "127.0.0.1:5000"
    assert "session" not in third


def test_level_filtering() -> None:
    out = io.StringIO()
    configure_logging(log_format="json", stream=out, level="warning", cache=False)
    log = structlog.get_logger()
    log.debug("dropped")
    log.info("dropped too")
    log.error("kept")
    assert [line["event"] for line in json_lines(out)] == ["kept"]


def test_auto_is_json_when_not_a_terminal() -> None:
    out = io.StringIO()
    configure_logging(log_format="auto", stream=out, cache=False)
    structlog.get_logger().info("hello", n=1)
    assert json_lines(out)[0]["n"] == 1


def test_log_file_is_created_0600_and_appended(tmp_path: Path) -> None:
    path = tmp_path / "pop3tap.log"
    old = os.umask(0)
    try:
        configure_logging(log_format="json", log_file=str(path), cache=False)
    finally:
        os.umask(old)
    structlog.get_logger().info("first", data=b"\x00")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    configure_logging(log_format="auto", log_file=str(path), cache=False)
    structlog.get_logger().info("second")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["event"] for line in lines] == ["first", "second"]
    assert lines[0]["data"] == "\x00"


def test_setup_errors_are_one_line(tmp_path: Path) -> None:
    cases: list[dict[str, Any]] = [
        {"log_format": "xml"},
        {"level": "loud"},
        {"log_file": str(tmp_path / "missing" / "x.log")},
    ]
    for kwargs in cases:
        with pytest.raises(LogSetupError) as info:
            configure_logging(cache=False, **kwargs)
        assert "\n" not in str(info.value)
    with pytest.raises(LogSetupError, match="missing"):
        configure_logging(log_file=str(tmp_path / "missing" / "x.log"), cache=False)


def test_console_renders_exchanges_compactly() -> None:
    out = io.StringIO()
    configure_logging(log_format="console", stream=out, cache=False)
    log = structlog.get_logger()
    bind_contextvars(session="a1b2c3d4e5f6")
    log.info("pop3.exchange", **exchange_fields(make_exchange()))
    log.info(
        "pop3.exchange",
        **exchange_fields(
            make_exchange(
                status=None,
                multiline=False,
                flags=frozenset({Flag.NO_RESPONSE}),
                verb="QUIT",
                args="",
            )
        ),
    )
    log.info("pop3.connect", upstream="pop.example.com:110", raw=b"+OK\r\n")
    first, second, third = out.getvalue().splitlines()
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d a1b2c3d4e5f6 RETR 1 {17}\+OK 1834 octets "
        r"\(27 lines, 1834 bytes\) 0\.8ms",
        first,
    ), first
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d a1b2c3d4e5f6 QUIT {19}\(no response\) \[no_response\]",
        second,
    ), second
    # Every other event in the same shape: time, session, name, key=value.
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d a1b2c3d4e5f6 pop3\.connect "
        r'upstream=pop\.example\.com:110 raw="\+OK\\r\\n"',  # quoted, CR LF escaped: one line
        third,
    ), third
    assert "\x1b[" not in out.getvalue() and "b'" not in third  # no colours, no reprs


def test_colours_follow_no_color_and_force_color() -> None:
    from pop3tap.log import use_colors

    assert use_colors(True, {}) and not use_colors(False, {})
    assert not use_colors(True, {"NO_COLOR": "1"})
    assert use_colors(False, {"FORCE_COLOR": "1"}) and not use_colors(False, {"FORCE_COLOR": "0"})
    assert not use_colors(False, {"FORCE_COLOR": "1", "NO_COLOR": "1"})
    out = io.StringIO()
    configure_logging(
        log_format="console", stream=out, cache=False, environ={"FORCE_COLOR": "1"}
    )
    structlog.get_logger().info("pop3.exchange", **exchange_fields(make_exchange(
        status=Status.ERR, first_line="-ERR no such message", multiline=False)))
    assert "\x1b[1;31m-ERR no such message\x1b[0m" in out.getvalue()


def test_log_file_gets_json_while_a_terminal_keeps_the_console_view(tmp_path: Path) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    path = tmp_path / "pop3tap.log"
    configure_logging(log_file=str(path), stream=terminal, cache=False, environ={})
    bind_contextvars(session="a1b2c3d4e5f6")
    structlog.get_logger().info("pop3.exchange", **exchange_fields(make_exchange()))
    (record,) = [json.loads(line) for line in path.read_text().splitlines()]
    assert record["verb"] == "RETR" and record["session"] == "a1b2c3d4e5f6"
    (line,) = terminal.getvalue().splitlines()
    assert "a1b2c3d4e5f6 RETR 1" in line and "\x1b[32m+OK\x1b[0m 1834 octets" in line


def test_exchange_fields_keep_lines_short() -> None:
    fields = exchange_fields(make_exchange())
    assert fields == {
        "seq": 4,
        "verb": "RETR",
        "args": "1",
        "status": "+OK",
        "first_line": "+OK 1834 octets",
        "multiline": True,
        "body_lines": 27,
        "body_bytes": 1834,
        "latency_first_ms": 0.123,
        "latency_ms": 0.8,
    }
    unanswered = exchange_fields(
        make_exchange(
            verb="NOOP",
            args="",
            status=None,
            first_line="",
            multiline=False,
            first_byte_at=None,
            pipelined=True,
            resp_code="IN-USE",
            flags=frozenset({Flag.PIPELINED, Flag.NO_RESPONSE}),
        )
    )
    assert unanswered == {
        "seq": 4,
        "verb": "NOOP",
        "status": None,
        "first_line": "",
        "resp_code": "IN-USE",
        "pipelined": True,
        "flags": ["no_response", "pipelined"],
    }
    assert json.dumps(unanswered)


def test_plain_values_processor_with_capture_logs() -> None:
    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars, plain_values]
    ) as logs:
        bind_contextvars(session="s1")
        structlog.get_logger().info("pop3.stray", text=b"\x80abc")
    assert logs == [
        {"event": "pop3.stray", "log_level": "info", "session": "s1", "text": "\\x80abc"}
    ]


def test_timestamp_matches_structlog_iso_utc_stamper() -> None:
    from datetime import UTC, datetime

    from pop3tap.log import utc_timestamp

    stamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    for _ in range(200):
        ours = utc_timestamp(None, "info", {})["timestamp"]
        theirs = stamper(None, "info", {})["timestamp"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z", ours)
        parsed = datetime.fromisoformat(ours.replace("Z", "+00:00"))
        reference = datetime.fromisoformat(theirs.replace("Z", "+00:00"))
        assert abs((reference - parsed).total_seconds()) < 1
        assert abs((datetime.now(UTC) - parsed).total_seconds()) < 5


def test_json_renderer_writes_compact_ascii_json_with_structlogs_fallbacks() -> None:
    from pop3tap.log import JsonLineRenderer

    class Custom:
        def __repr__(self) -> str:
            return "<custom>"

    @dataclasses.dataclass
    class Login:
        user: str
        password: str = dataclasses.field(repr=False)

    class Traced:
        def __structlog__(self) -> str:
            return "traced"

    event = {
        "event": "x",
        "n": 1,
        "f": 0.5,
        "s": "é\n",
        "l": ["a"],
        "o": Custom(),
        "none": None,
        "when": datetime(2026, 12, 6, 9, 0, tzinfo=UTC),
        "login": Login("u", "secret"),
        "traced": Traced(),
    }
    ours = JsonLineRenderer()(None, "info", dict(event))
    theirs = structlog.processors.JSONRenderer()(None, "info", dict(event))
    assert json.loads(ours) == json.loads(theirs)
    assert "secret" not in ours  # a dataclass is its repr, as with the json module
    plain = {"event": "x", "n": 1, "f": 0.5, "s": "ab", "l": ["a"], "none": None, "t": True}
    assert JsonLineRenderer()(None, "info", plain) == (
        '{"event":"x","n":1,"f":0.5,"s":"ab","l":["a"],"none":null,"t":true}'
    )


def test_json_lines_escape_del_and_write_no_nan_whichever_encoder_renders_them() -> None:
    from pop3tap.log import JsonLineRenderer

    render = JsonLineRenderer()
    assert render(None, "info", {"v": "a\x7fb"}) == '{"v":"a\\u007fb"}'
    nan, inf = float("nan"), float("inf")
    # orjson's line, and the json module's (non-ASCII text sends it there): the same JSON.
    assert render(None, "info", {"f": nan, "l": [-inf]}) == '{"f":null,"l":[null]}'
    assert render(None, "info", {"f": nan, "l": [-inf, {"x": inf}], "s": "é"}) == (
        '{"f":null,"l":[null,{"x":null}],"s":"\\u00e9"}'
    )


def test_json_lines_see_subclasses_as_the_json_module_does() -> None:
    from pop3tap.log import JsonLineRenderer

    class Masked(dict[str, str]):
        def items(self) -> Any:
            return [(key, "***") for key in self]

    class Shown(str):
        def __str__(self) -> str:
            return "other"

    class Ratio(float):
        pass

    pair = collections.namedtuple("pair", "a b")
    event = {"m": Masked(p="pw"), "s": Shown("x"), "r": Ratio(1.5), "p": pair(1, 2)}
    ours = JsonLineRenderer()(None, "info", dict(event))
    theirs = structlog.processors.JSONRenderer()(None, "info", dict(event))
    assert json.loads(ours) == json.loads(theirs) == {
        "m": {"p": "***"}, "s": "x", "r": 1.5, "p": [1, 2]
    }
    assert "pw" not in ours


_ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=12)
_JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | _ANY_TEXT
)
_JSON_VALUES = st.recursive(
    _JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(_ANY_TEXT | st.integers(), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(_ANY_TEXT, _JSON_VALUES, max_size=8))
def test_a_json_line_is_one_ascii_line_that_reads_back_as_structlogs(
    fields: dict[str, Any],
) -> None:
    from pop3tap.log import JsonLineRenderer

    ours = JsonLineRenderer()(None, "info", dict(fields))
    theirs = structlog.processors.JSONRenderer()(None, "info", dict(fields))
    assert isinstance(ours, str)
    assert all(" " <= char <= "~" for char in ours), ours  # printable ASCII, one line
    assert json.loads(ours) == json.loads(theirs)
    assert JsonLineRenderer(as_bytes=True)(None, "info", dict(fields)) == ours.encode() + b"\n"


def test_log_file_gets_one_write_per_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "pop3tap.log"
    configure_logging(log_format="json", log_file=str(path), cache=False)
    writes: list[bytes] = []
    real_write = os.write

    def spy(fd: int, data: bytes) -> int:
        writes.append(bytes(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", spy)
    structlog.get_logger().info("one", text="ü")
    structlog.get_logger().info("two")
    assert [json.loads(w)["event"] for w in writes] == ["one", "two"]
    assert all(w.endswith(b"\n") and w.count(b"\n") == 1 for w in writes)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["event"] for line in lines] == ["one", "two"]
    assert lines[0]["text"] == "ü"


def test_json_renderer_recovers_after_a_circular_value() -> None:
    from pop3tap.log import JsonLineRenderer

    renderer = JsonLineRenderer()
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match=r"[Cc]ircular"):
        renderer(None, "info", {"event": "x", "loop": loop})
    assert json.loads(renderer(None, "info", {"event": "y", "l": [1]})) == {"event": "y", "l": [1]}


_TERMINAL_CONTROLS = st.lists(
    st.sampled_from(["a", " ", "\x1b", "\x07", "\x9b", "]0;", "[2J", "\r", "\n", "\x00", "é"]),
    max_size=12,
).map("".join)


@settings(max_examples=60, deadline=None)
@given(_TERMINAL_CONTROLS, _TERMINAL_CONTROLS)
def test_console_lines_carry_no_control_characters_from_peers(args: str, other: str) -> None:
    """A client's USER argument or a capture's wording can hold terminal escapes (OSC sets
    the window title, CSI clears the screen); a console line shows them escaped, on one line."""
    out = io.StringIO()
    configure_logging(log_format="console", stream=out, cache=False)
    log = structlog.get_logger()
    log.info("pop3.exchange", **exchange_fields(make_exchange(verb="USER", args=args)))
    log.info("replay.model.answer", command="USER " + args, status=other, lines=[other])
    text = out.getvalue()
    lines = text.splitlines()
    assert len(lines) == 2, text
    assert not any(c in line for line in lines for c in "\x1b\x07\x9b\r\x00")


ROOT = Path(__file__).resolve().parents[1]


def test_library_events_reach_caplog_when_structlog_is_not_configured(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import poplib

    import pop3tap

    structlog.reset_defaults()  # as in a program that never configured structlog
    caplog.set_level("DEBUG", logger="pop3tap")
    with pop3tap.replay_server(ROOT / "captures" / "user-pass.p3cap") as server:
        client = poplib.POP3(server.host, server.port, timeout=10)
        client.user("alice")
        client.pass_("secret-password")
        client.quit()
    events = [r.pop3tap["event"] for r in caplog.records if r.name == "pop3tap.replay"]
    assert "replay.session.open" in events and "replay.exchange" in events
    close = next(r for r in caplog.records if r.getMessage().startswith("replay.session.close"))
    assert close.levelname == "WARNING" and '"#4 STAT"' in close.getMessage()
    assert "secret-password" not in caplog.text


def test_library_is_silent_by_default(tmp_path: Path) -> None:
    import subprocess
    import sys

    program = f"""
import poplib
import pop3tap

with pop3tap.replay_server({str(ROOT / "captures" / "user-pass.p3cap")!r}) as server:
    client = poplib.POP3(server.host, server.port, timeout=10)
    client.user("alice")
    client.pass_("x")
    client.quit()
print("done")
"""
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    # An unplayed-exchanges warning is logged, but nothing configured logging: no output.
    assert (result.stdout, result.stderr) == ("done\n", "")


@given(line=st.text(max_size=60), args=st.text(max_size=30))
@settings(max_examples=300, deadline=None)
def test_console_view_is_one_line_without_control_characters(line: str, args: str) -> None:
    """Whatever a hostile server or client sends, the view stays one line with no escapes."""
    from pop3tap.log import Pop3ConsoleRenderer

    renderer = Pop3ConsoleRenderer(colors=False)
    for event in (
        {"event": "pop3.exchange", "verb": "RETR", "args": args, "status": "+OK",
         "first_line": line, "session": "abc"},
        {"event": "pop3.greeting", "first_line": line},
        {"event": "pop3.stray", "line": line, "direction": "s2c"},
        {"event": "session.close", "reason": line},
    ):
        rendered = renderer.render(event)
        assert rendered.isprintable(), rendered


def _console_line(event: dict[str, Any]) -> str:
    """The console view of one event, as the processor chain calls the renderer."""
    from pop3tap.log import Pop3ConsoleRenderer

    return str(Pop3ConsoleRenderer(colors=False)(None, "info", dict(event)))


def test_an_escaped_control_character_and_its_spelling_look_different() -> None:
    """A peer that sends the four characters ``\\x1b`` must not pass for one that sent ESC:
    in a quoted value a backslash of the peer's is written ``\\\\`` (the escape the
    renderer's quoting promises), whichever path renders the line."""
    sent_esc = {"event": "pop3.stray", "line": "+OK a \x1b[2J"}
    spelt_it = {"event": "pop3.stray", "line": "+OK a \\x1b[2J"}
    assert _console_line(sent_esc) != _console_line(spelt_it)
    assert r'line="+OK a \x1b[2J"' in _console_line(sent_esc)
    assert r'line="+OK a \\x1b[2J"' in _console_line(spelt_it)


@given(value=st.text(max_size=40))
@settings(max_examples=300, deadline=None)
def test_a_quoted_value_reads_back_as_what_the_peer_sent(value: str) -> None:
    """Every other field's value is either one plain word shown as it is, or a quoted
    string whose escapes are Python's: it reads back exactly, so no two values look alike.
    The processor chain (console view) and the log tee (console plus JSON file) agree."""
    from pop3tap.log import Pop3ConsoleRenderer

    event = {"event": "pop3.stray", "level": "info", "line": value}
    line = _console_line(event)
    assert line == Pop3ConsoleRenderer(colors=False).render(dict(event))
    shown = line.split(" line=", 1)[1]
    if shown.startswith('"'):
        assert ast.literal_eval(shown) == value
    else:
        assert shown == value and value.isprintable() and " " not in value
