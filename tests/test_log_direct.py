"""The relay's direct ``pop3.exchange`` line: the bytes structlog would write, or structlog."""

from __future__ import annotations

import json
import logging
import poplib
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.contextvars import bind_contextvars, clear_contextvars
from structlog.testing import capture_logs

import pop3tap._utctime
import pop3tap.log
from pop3tap.log import configure_logging, exchange_fields, log_exchange, set_process_fields
from pop3tap.protocol._events import Exchange, Flag, Status
from tests.clients import relay_process
from tests.faults import Connection, scripted_server

#: Any code point, lone surrogates (undecodable bytes as ``surrogateescape`` keeps them) too.
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)


@pytest.fixture(autouse=True)
def reset_structlog() -> Iterator[None]:
    clear_contextvars()
    set_process_fields()
    yield
    clear_contextvars()
    set_process_fields()
    structlog.reset_defaults()
    pop3tap.log._direct_exchange = None


def frozen_clock(monkeypatch: pytest.MonkeyPatch, nanos: int) -> None:
    """Both paths read the clock through ``pop3tap._utctime.time``: give them one instant."""
    frozen = types.SimpleNamespace(
        time_ns=lambda: nanos, strftime=time.strftime, gmtime=time.gmtime
    )
    monkeypatch.setattr(pop3tap._utctime, "time", frozen)


exchanges = st.builds(
    Exchange,
    at=st.just(10.0),
    seq=st.integers(0, 2**40),
    verb=st.one_of(st.sampled_from(["RETR", "USER", "PASS", "AUTH", "TOP", "CAPA"]), any_text),
    args=st.one_of(
        st.sampled_from(["", "1", "***", "PLAIN ***", "1 0"]),
        any_text,
        st.text(min_size=5000, max_size=20000).map(lambda s: s * 3),
    ),
    status=st.one_of(st.none(), st.sampled_from(Status)),
    first_line=st.one_of(any_text, st.sampled_from(["+OK", "-ERR [AUTH] no", "+ "])),
    resp_code=st.one_of(st.none(), st.sampled_from(["AUTH", "IN-USE", "SYS/TEMP"]), any_text),
    multiline=st.booleans(),
    body_lines=st.integers(0, 10**9),
    body_bytes=st.integers(0, 2**50),
    sent_at=st.floats(0, 1e6),
    first_byte_at=st.one_of(st.none(), st.floats(0, 1e6)),
    pipelined=st.booleans(),
    flags=st.frozensets(st.sampled_from(Flag)),
    request_start=st.just(0),
    request_end=st.just(1),
    response_start=st.just(1),
    response_end=st.just(2),
    sasl=st.lists(st.tuples(st.sampled_from(["+", "c"]), any_text), max_size=3).map(tuple),
)
context_values = st.one_of(
    any_text,
    st.integers(),
    st.none(),
    st.binary(max_size=20),
    st.lists(any_text, max_size=3),
    st.frozensets(st.text(max_size=4), max_size=3),
)
context_keys = st.one_of(
    st.sampled_from(["session", "client", "upstream", "event", "level", "seq", "timestamp"]),
    st.text(min_size=1, max_size=8),
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ex=exchanges,
    context_vars=st.dictionaries(context_keys, context_values, max_size=4),
    bound=st.dictionaries(context_keys, context_values, max_size=3),
    process=st.dictionaries(context_keys, context_values, max_size=2),
    nanos=st.one_of(st.just(1_700_000_000_000_000_000), st.integers(0, 2**62)),
)
def test_direct_line_is_the_structlog_line_byte_for_byte(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    ex: Exchange,
    context_vars: dict[str, Any],
    bound: dict[str, Any],
    process: dict[str, Any],
    nanos: int,
) -> None:
    path = tmp_path_factory.mktemp("direct") / "relay.log"
    frozen_clock(monkeypatch, nanos)
    clear_contextvars()
    bind_contextvars(**context_vars)
    set_process_fields(**process)
    configure_logging(log_format="json", log_file=str(path), cache=False)
    log = structlog.get_logger("pop3tap.relay").bind(**bound)
    direct = pop3tap.log._direct_exchange
    assert direct is not None
    assert direct.write(log, exchange_fields(ex))  # the direct path took it
    log.info("pop3.exchange", **exchange_fields(ex))  # structlog's own path
    direct_line, structlog_line = path.read_bytes().splitlines(keepends=True)
    assert direct_line == structlog_line
    assert direct_line.isascii()
    assert json.loads(direct_line)["event"] == "pop3.exchange"


def test_relay_uses_the_direct_line_for_the_json_log_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """log_exchange writes directly (not through ``info``) and the line is complete."""
    path = tmp_path / "relay.log"
    configure_logging(log_format="json", log_file=str(path), cache=False)
    log = structlog.get_logger("pop3tap.relay").bind(session="abc")

    def refuse(*_args: object, **_kw: object) -> None:
        raise AssertionError("structlog path used")

    monkeypatch.setattr(log, "info", refuse)
    log_exchange(log, make_exchange())
    (line,) = path.read_text().splitlines()
    fields = json.loads(line)
    assert fields["session"] == "abc"
    assert fields["verb"] == "RETR" and fields["level"] == "info"


def make_exchange() -> Exchange:
    return Exchange(
        at=1.0, seq=1, verb="RETR", args="1", status=Status.OK, first_line="+OK 5 octets",
        resp_code=None, multiline=True, body_lines=1, body_bytes=5, sent_at=1.0,
        first_byte_at=1.001, pipelined=False, flags=frozenset(), request_start=0,
        request_end=8, response_start=0, response_end=30,
    )  # fmt: skip


def test_console_and_tee_and_stream_configurations_go_through_structlog(tmp_path: Path) -> None:
    import io

    stream = io.StringIO()
    configure_logging(log_format="console", stream=stream, cache=False)
    assert pop3tap.log._direct_exchange is None
    log_exchange(structlog.get_logger("pop3tap.relay").bind(), make_exchange())
    assert "RETR 1" in stream.getvalue() and "{" not in stream.getvalue()
    configure_logging(log_format="console", log_file=str(tmp_path / "t.log"), stream=stream)
    assert pop3tap.log._direct_exchange is None
    configure_logging(log_format="json", stream=stream, cache=False)
    assert pop3tap.log._direct_exchange is None


def test_a_level_that_drops_info_drops_the_exchange_line(tmp_path: Path) -> None:
    path = tmp_path / "relay.log"
    configure_logging(log_format="json", log_file=str(path), level="warning", cache=False)
    assert pop3tap.log._direct_exchange is None
    log_exchange(structlog.get_logger("pop3tap.relay").bind(), make_exchange())
    assert path.read_text() == ""


def test_capture_logs_and_a_users_own_configuration_are_honoured(tmp_path: Path) -> None:
    path = tmp_path / "relay.log"
    configure_logging(log_format="json", log_file=str(path), cache=False)
    with capture_logs() as captured:
        log_exchange(structlog.get_logger("pop3tap.relay").bind(), make_exchange())
    assert [entry["event"] for entry in captured] == ["pop3.exchange"]
    seen: list[dict[str, Any]] = []

    def keep(_logger: Any, _method: str, event_dict: Any) -> Any:
        seen.append(dict(event_dict))
        raise structlog.DropEvent

    structlog.configure(processors=[keep])
    log_exchange(structlog.get_logger("pop3tap.relay").bind(), make_exchange())
    assert [entry["verb"] for entry in seen] == ["RETR"]
    assert path.read_text() == ""  # the old file is not written behind the user's back


def test_without_configuration_the_line_goes_to_the_standard_logger(
    caplog: pytest.LogCaptureFixture,
) -> None:
    structlog.reset_defaults()
    with caplog.at_level(logging.INFO, logger="pop3tap.relay"):
        log_exchange(pop3tap.log.get_logger("pop3tap.relay").bind(), make_exchange())
    assert [r.getMessage().split()[0] for r in caplog.records] == ["pop3.exchange"]


VOLATILE = {"timestamp", "latency_ms", "latency_first_ms", "session", "client", "pid"}


def exchange_lines(log_text: str) -> list[list[tuple[str, Any]]]:
    """Each exchange line as its ordered (key, value) pairs, the volatile values blanked."""
    lines = []
    for line in log_text.splitlines():
        fields = json.loads(line)
        if fields.get("event") == "pop3.exchange":
            lines.append([(k, None if k in VOLATILE else v) for k, v in fields.items()])
    return lines


def one_session(host: str, port: int, user: str) -> None:
    client = poplib.POP3(host, port, timeout=30)
    client.capa()
    raw: Any = client  # the bytes below are not text poplib would send for us
    raw._putline(b"USER caf\xe9\x01\x1b[31m")  # non-UTF-8 and control characters
    raw._getresp()
    client.user(user)
    client.pass_("s3cret")
    client.stat()
    client.list()
    client.uidl()
    client.retr(1)
    client.top(1, 0)
    with pytest.raises(poplib.error_proto):
        client.retr(99)
    client.noop()
    client.quit()


@pytest.mark.realpeer
def test_real_relay_log_is_unchanged_from_the_structlog_path(
    dovecot: Any, tmp_path: Path
) -> None:
    """The JSON log file (direct path) holds the exchange lines the tee (structlog) writes."""
    user = dovecot.unique_user("direct")
    dovecot.add_user(user, "s3cret", [b"Subject: a\r\n\r\n" + b"body line\r\n" * 300])
    logs = {}
    for log_format in ("json", "console"):
        workdir = tmp_path / log_format
        with relay_process(
            dovecot.host, dovecot.pop3_port, workdir, log_format=log_format
        ) as relay:
            one_session(relay.host, relay.port, user)
            deadline = time.monotonic() + 30
            while "session.close" not in relay.log_text() and time.monotonic() < deadline:
                time.sleep(0.02)
            logs[log_format] = relay.log_text()
    direct, through_structlog = exchange_lines(logs["json"]), exchange_lines(logs["console"])
    assert len(direct) == 12
    assert direct == through_structlog
    assert "s3cret" not in logs["json"]
    assert "\\u001b[31m" in logs["json"] and "\x1b" not in logs["json"]


#: A peer's text that a terminal would act on if a log held it raw: RIGHT-TO-LEFT OVERRIDE,
#: the C1 control CSI (0x9B, a terminal's escape in UTF-8 mode), a line separator, NEL, DEL.
_HOSTILE_TEXT = "\u202ettxt.exe \u009b2J \u2028 \u0085 caf\u00e9 \x7f"


def test_a_peers_non_ascii_text_reaches_the_relays_json_log_escaped(tmp_path: Path) -> None:
    """Through ``pop3tap record``: the greeting and an answer carry text a terminal would
    act on; the log file is printable ASCII and reads back as exactly that text."""
    hostile = _HOSTILE_TEXT.encode()

    def server(conn: Connection) -> None:
        conn.send(b"+OK " + hostile + b"\r\n")
        while line := conn.readline():
            if line.upper().startswith(b"QUIT"):
                conn.send(b"+OK bye\r\n")
                return
            conn.send(b"+OK ready\x7f\r\n")  # all ASCII, DEL the only odd byte

    with scripted_server(server) as upstream, relay_process(
        upstream.host, upstream.port, tmp_path
    ) as relay:
        client = poplib.POP3(relay.host, relay.port, timeout=10)
        client.noop()
        client.quit()
        deadline = time.monotonic() + 10
        while '"session.close"' not in relay.log_text() and time.monotonic() < deadline:
            time.sleep(0.05)
    raw = relay.log_file.read_bytes()
    assert all(0x20 <= byte <= 0x7E for line in raw.splitlines() for byte in line)
    events = [json.loads(line) for line in raw.splitlines()]
    greeting = next(e for e in events if e["event"] == "pop3.greeting")
    noop = next(e for e in events if e["event"] == "pop3.exchange" and e["verb"] == "NOOP")
    assert greeting["first_line"] == "+OK " + _HOSTILE_TEXT
    assert noop["first_line"] == "+OK ready\x7f"
