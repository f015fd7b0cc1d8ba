"""The server-role reader (protocol.ClientReader), driven with bytes and no sockets.

In the manner of h11's ``tr()``: every case is fed whole, one byte at a time and in random
splits, and must give the same events. A tiny server policy stands in for replay: it asks
for a SASL answer after ``AUTH mechanism`` without an initial response (RFC 5034 §4) and
switches to TLS after STLS (RFC 2595 §4).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pop3tap.protocol import (
    SECRET_PLACEHOLDER,
    ClientReader,
    Command,
    EndOfInput,
    LineTooLong,
    NeedData,
    PlaintextAfterStls,
    ReaderPhase,
    SaslLine,
    TlsData,
    login_identity,
    sasl_user,
)

CLIENT_HELLO = b"\x16\x03\x01\x00\x05hello"

# (client bytes, the events a server sees: ("cmd", line, after_auth), ("sasl", line),
#  ("injected", total bytes), ("tls", bytes), ("too_long",), ("end",))
CASES: list[tuple[bytes, list[tuple[object, ...]]]] = [
    (
        b"USER alice\r\nPASS secret\r\n",
        [("cmd", b"USER alice", False), ("cmd", b"PASS secret", False), ("end",)],
    ),
    (b"STAT\nLIST 1\r\n", [("cmd", b"STAT", False), ("cmd", b"LIST 1", False), ("end",)]),
    (b"NOOP\r\r\n", [("cmd", b"NOOP\r", False), ("end",)]),
    (b"NO\rOP\r\n", [("cmd", b"NO\rOP", False), ("end",)]),
    (b"US\x00ER x\r\n", [("cmd", b"US\x00ER x", False), ("end",)]),
    (b"\r\n\n", [("cmd", b"", False), ("cmd", b"", False), ("end",)]),
    (b"QUIT", [("cmd", b"QUIT", False), ("end",)]),
    (b"QUIT\r\r", [("cmd", b"QUIT", False), ("end",)]),
    (b"", [("end",)]),
    (
        b"AUTH PLAIN\r\nNOOP\r\nNOOP\r\n",
        [("cmd", b"AUTH PLAIN", False), ("sasl", b"NOOP"), ("cmd", b"NOOP", True), ("end",)],
    ),
    (
        b"AUTH PLAIN dGVzdA==\r\nQUIT\r\n",
        [("cmd", b"AUTH PLAIN dGVzdA==", False), ("cmd", b"QUIT", True), ("end",)],
    ),
    (
        b"STLS\r\nUSER injected\r\n" + CLIENT_HELLO,
        [("cmd", b"STLS", False), ("injected", 15), ("tls", CLIENT_HELLO), ("end",)],
    ),
    (b"STLS\r\n" + CLIENT_HELLO, [("cmd", b"STLS", False), ("tls", CLIENT_HELLO), ("end",)]),
    (b"STLS\r\nQUIT\r\n", [("cmd", b"STLS", False), ("injected", 6), ("end",)]),
    (b"x" * 100 + b"\r\n", [("too_long",)]),
    (b"NOOP\r\n" + b"y" * 200, [("cmd", b"NOOP", False), ("too_long",)]),
    (b"a" * 63 + b"\n", [("cmd", b"a" * 63, False), ("end",)]),
    (b"a" * 64 + b"\n", [("too_long",)]),
]
MAX_LINE = 64


def run_server(chunks: Iterable[bytes], max_line: int = MAX_LINE) -> list[tuple[object, ...]]:
    """Feed ``chunks`` to a reader as a server would, then the end of input; the events,
    with injected plaintext summed and TLS bytes joined (their split is the chunking's)."""
    reader = ClientReader(max_line=max_line, max_injected=1024)
    out: list[tuple[object, ...]] = []

    def pull() -> bool:
        while True:
            event = reader.next_event()
            if isinstance(event, NeedData):
                return True
            if isinstance(event, Command):
                out.append(("cmd", event.line, event.after_auth))
                if event.verb == "AUTH" and len(event.args.split()) == 1:
                    reader.expect_sasl()
                elif event.verb == "STLS":
                    reader.start_tls()
            elif isinstance(event, SaslLine):
                out.append(("sasl", event.line))
            elif isinstance(event, PlaintextAfterStls):
                if out and out[-1][0] == "injected":
                    out.pop()
                out.append(("injected", event.total))
            elif isinstance(event, TlsData):
                previous = out.pop()[1] if out and out[-1][0] == "tls" else b""
                assert isinstance(previous, bytes)
                out.append(("tls", previous + event.data))
            elif isinstance(event, LineTooLong):
                out.append(("too_long",))
            else:
                assert isinstance(event, EndOfInput)
                out.append(("end",))
                return False

    for chunk in chunks:
        reader.receive_data(chunk)
        pull()
        assert reader.buffered <= max_line + len(chunk)
    reader.receive_eof()
    pull()
    # After the end nothing more comes out, however often one asks.
    assert isinstance(reader.next_event(), EndOfInput)
    return out


def splits(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts}) if data else []
    pieces = []
    last = 0
    for point in points:
        pieces.append(data[last:point])
        last = point
    pieces.append(data[last:])
    return pieces


@pytest.mark.parametrize(("data", "expected"), CASES)
def test_cases_whole(data: bytes, expected: list[tuple[object, ...]]) -> None:
    assert _without_end_after_too_long(run_server([data])) == expected


@pytest.mark.parametrize(("data", "expected"), CASES)
def test_cases_byte_at_a_time(data: bytes, expected: list[tuple[object, ...]]) -> None:
    chunks = [data[i : i + 1] for i in range(len(data))]
    assert _without_end_after_too_long(run_server(chunks)) == expected


@settings(max_examples=200, deadline=None)
@given(case=st.sampled_from(CASES), cuts=st.lists(st.integers(min_value=0), max_size=8))
def test_cases_random_splits(case: tuple[bytes, list[tuple[object, ...]]], cuts: list[int]) -> None:
    data, expected = case
    assert _without_end_after_too_long(run_server(splits(data, cuts))) == expected


def _without_end_after_too_long(events: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
    if ("too_long",) in events:
        return events[: events.index(("too_long",)) + 1]
    return events


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=600)
    | st.lists(
        st.sampled_from(
            [b"AUTH PLAIN\r\n", b"STLS\r\n", b"USER a\r\n", b"\r", b"\n", b"\x00", b"\x16", b"+"]
        ),
        max_size=30,
    ).map(b"".join),
    cuts=st.lists(st.integers(min_value=0), max_size=10),
)
def test_any_bytes_any_split_same_events(data: bytes, cuts: list[int]) -> None:
    """Whatever the client sends and however it arrives, the reader says the same and
    its buffer stays bounded by one line plus one chunk (checked inside run_server)."""
    whole = _without_end_after_too_long(run_server([data]))
    assert _without_end_after_too_long(run_server(splits(data, cuts))) == whole
    bytewise = [data[i : i + 1] for i in range(len(data))]
    assert _without_end_after_too_long(run_server(bytewise)) == whole


def test_line_limit_counts_the_line_ending() -> None:
    """``max_line`` includes the ending: 63 bytes + LF fit 64, 63 + CRLF do not."""
    assert run_server([b"b" * 62 + b"\r\n"])[0] == ("cmd", b"b" * 62, False)
    assert _without_end_after_too_long(run_server([b"b" * 63 + b"\r\n"])) == [("too_long",)]


def test_a_flood_without_newline_is_refused_once_past_the_limit() -> None:
    """Memory is bounded: an endless line ends reading as soon as it passes the limit."""
    reader = ClientReader(max_line=8192)
    reader.receive_data(b"z" * 8192)
    assert isinstance(reader.next_event(), NeedData)
    reader.receive_data(b"z")
    assert reader.next_event() == LineTooLong(8192)
    assert reader.phase is ReaderPhase.ENDED
    assert reader.buffered == 0
    reader.receive_data(b"more\r\n")  # ignored: the client is being closed
    assert isinstance(reader.next_event(), EndOfInput)


def test_sasl_lines_that_look_like_commands_are_never_commands() -> None:
    """After a + the next line is the client's SASL answer, whatever it looks like
    (RFC 5034 §4): a base64 answer can spell NOOP, QUIT or USER."""
    for answer in (b"QUIT", b"NOOP", b"USER", b"STLS", b"PASS", b"AUTH"):
        reader = ClientReader()
        reader.receive_data(b"AUTH LOGIN\r\n" + answer + b"\r\n" + answer + b"\r\n")
        auth = reader.next_event()
        assert isinstance(auth, Command) and auth.verb == "AUTH"
        reader.expect_sasl()
        assert reader.next_event() == SaslLine(answer)
        # Unasked, it is a command, but one that came after AUTH: shown only when it is a
        # known command with valid arguments, never as free text.
        second = reader.next_event()
        assert isinstance(second, Command) and second.after_auth


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        (b"PASS hunter2", f"PASS {SECRET_PLACEHOLDER}"),
        (b"dXNlcgBwYXNz", SECRET_PLACEHOLDER),
        (b"QUIT now please", SECRET_PLACEHOLDER),
        (b"LIST 1", "LIST 1"),
    ],
)
def test_commands_after_auth_show_nothing_that_may_be_sasl(line: bytes, shown: str) -> None:
    reader = ClientReader()
    reader.receive_data(b"AUTH PLAIN\r\n" + line + b"\r\n")
    assert isinstance(reader.next_event(), Command)
    command = reader.next_event()
    assert isinstance(command, Command) and command.after_auth
    assert command.shown == shown
    assert b"hunter2" not in command.shown.encode()


@pytest.mark.parametrize(
    "line",
    [
        b"NOOP \x1b[2J\x1b]0;pwned\x07",  # terminal escapes
        b"CAPA \x00\x7f\x85 \xe2\x80\xa8 x",  # NUL, DEL, C1, U+2028 (a line separator)
        b'LIST "quoted"',
        b"UIDL " + b"9" * 8000,  # as long as a line may be
        b"USER x\rPASS hunter2",
    ],
)
def test_command_shown_is_one_printable_bounded_line(line: bytes) -> None:
    """Command.shown is what a fake server may put in its one -ERR line and its logs:
    printable, bounded and the same as replay's (pop3tap.replay.masked_command)."""
    from pop3tap.replay import masked_command

    reader = ClientReader()
    reader.receive_data(line + b"\r\n")
    command = reader.next_event()
    assert isinstance(command, Command)
    assert command.shown.isprintable() and '"' not in command.shown
    assert len(command.shown) <= 161
    assert "hunter2" not in command.shown
    assert command.shown == masked_command(line)


@settings(max_examples=300)
@given(line=st.binary(max_size=300).map(lambda b: b.replace(b"\n", b"")), auth=st.booleans())
def test_command_shown_is_printable_for_any_line(line: bytes, auth: bool) -> None:
    from pop3tap.replay import masked_command

    reader = ClientReader()
    reader.receive_data((b"AUTH PLAIN\r\n" if auth else b"") + line + b"\n")
    if auth:
        assert isinstance(reader.next_event(), Command)
    command = reader.next_event()
    assert isinstance(command, Command) and command.after_auth is auth
    assert command.shown.isprintable() and len(command.shown) <= 161
    assert command.shown == masked_command(command.line, after_auth=auth)


def test_stls_injection_is_dropped_and_counted_then_tls_resumes_lines() -> None:
    """Plaintext after STLS never becomes a command (CVE-2011-0411 class); after the
    handshake the decrypted stream is read as lines again, AUTH state kept."""
    reader = ClientReader()
    reader.receive_data(b"AUTH X\r\nSTLS\r\nDELE 1\r\n")
    assert isinstance(reader.next_event(), Command)
    stls = reader.next_event()
    assert isinstance(stls, Command) and stls.verb == "STLS"
    reader.start_tls()
    assert reader.phase is ReaderPhase.AWAIT_TLS
    reader.receive_data(b"RETR 1\r\n")
    reader.receive_data(b"junk" + CLIENT_HELLO)
    assert reader.next_event() == PlaintextAfterStls(size=20, total=20, overflow=False)
    assert reader.next_event() == TlsData(CLIENT_HELLO)
    assert isinstance(reader.next_event(), NeedData)
    reader.tls_established()
    reader.receive_data(b"STAT\r\n")
    stat = reader.next_event()
    assert stat == Command(b"STAT", "STAT", b"", True)
    assert reader.injected == 20


def test_bytes_buffered_at_stls_do_not_count_against_the_wait() -> None:
    """A long pipelined tail read with the STLS line is dropped, but only bytes that come
    while waiting for the ClientHello count against ``max_injected``."""
    reader = ClientReader(max_line=8192, max_injected=100)
    reader.receive_data(b"STLS\r\n" + b"x" * 500)
    assert isinstance(reader.next_event(), Command)
    reader.start_tls()
    assert reader.next_event() == PlaintextAfterStls(500, 500, False)
    reader.receive_data(b"y" * 100 + CLIENT_HELLO)
    assert reader.next_event() == PlaintextAfterStls(100, 600, False)
    assert reader.next_event() == TlsData(CLIENT_HELLO)


def test_plaintext_flood_after_stls_overflows() -> None:
    reader = ClientReader(max_injected=100)
    reader.start_tls()
    reader.receive_data(b"x" * 100)
    assert reader.next_event() == PlaintextAfterStls(100, 100, False)
    reader.receive_data(b"x")
    assert reader.next_event() == PlaintextAfterStls(1, 101, True)
    assert isinstance(reader.next_event(), EndOfInput)


@pytest.mark.parametrize(
    ("verb", "args", "sasl", "expected"),
    [
        ("USER", b"alice", None, ("alice", None)),
        ("USER", b"", None, (None, None)),
        ("APOP", b"bob c4c9334bac560ecc979e58001b3e22fb", None, ("bob", None)),
        ("APOP", b"", None, (None, None)),
        ("AUTH", b"plain AGNhcm9sAHNlY3JldA==", None, ("carol", "PLAIN")),
        ("AUTH", b"PLAIN", b"AGRhdmUAcHc=", ("dave", "PLAIN")),
        ("AUTH", b"LOGIN", b"ZXZl", ("eve", "LOGIN")),
        ("AUTH", b"PLAIN ********", None, (None, "PLAIN")),
        ("AUTH", b"CRAM-MD5", None, (None, "CRAM-MD5")),
        ("AUTH", b"", None, None),
        ("PASS", b"secret", None, None),
    ],
)
def test_login_identity(
    verb: str, args: bytes, sasl: bytes | None, expected: tuple[str | None, str | None] | None
) -> None:
    assert login_identity(verb, args, sasl) == expected


@given(mechanism=st.sampled_from(["PLAIN", "LOGIN", "X"]), answer=st.binary(max_size=60))
def test_sasl_user_never_raises(mechanism: str, answer: bytes) -> None:
    user = sasl_user(mechanism, answer)
    assert user is None or isinstance(user, str)


#: User names of printable ASCII (no backslash) and bytes 0x80-0xff, mostly not UTF-8.
_NAMES = st.lists(
    st.integers(0x80, 0xFF) | st.integers(0x21, 0x7E).filter(lambda c: c != 0x5C),
    min_size=1,
    max_size=6,
).map(bytes)


@given(first=_NAMES, second=_NAMES, verb=st.sampled_from(["USER", "APOP"]))
def test_login_identity_keeps_different_names_apart(first: bytes, second: bytes, verb: str) -> None:
    """by_user matches the names login_identity gives: equal bytes give equal names, and
    names that differ only in bytes that are not UTF-8 never become the same name."""
    tail = b" 0123456789abcdef0123456789abcdef" if verb == "APOP" else b""
    one = login_identity(verb, first + tail)
    two = login_identity(verb, second + tail)
    assert one is not None and two is not None and one[0] is not None
    assert (one == two) == (first == second)
