"""The sans-IO observer: pairing rules of RFC 1939 / 2449 / 5034 / 2595, any chunking."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from pop3tap.protocol import (
    CommandSent,
    EndOfStream,
    Event,
    Exchange,
    Flag,
    Greeting,
    PairingLost,
    SaslChallenge,
    SaslResponse,
    SecretMasker,
    SessionObserver,
    StartTls,
    Status,
    StrayLine,
    UnsolicitedLine,
)

GREETING = b"+OK Dovecot (Debian) ready. <1896.697170952@dbc.mtview.ca.us>\r\n"
SESSION_CLIENT = (
    b"CAPA\r\nUSER alice\r\nPASS s3cret pass\r\nSTAT\r\nLIST\r\nLIST 2\r\nUIDL\r\n"
    b"TOP 1 0\r\nRETR 1\r\nDELE 1\r\nRETR 9\r\nQUIT\r\n"
)
RETR_BODY = b"Subject: hi\r\n\r\n..dot line\r\n.\r\n"  # ".." is a stuffed "."
SESSION_SERVER = (
    GREETING
    + b"+OK\r\nTOP\r\nUIDL\r\nPIPELINING\r\n.\r\n"
    + b"+OK\r\n"
    + b"+OK Logged in.\r\n"
    + b"+OK 2 320\r\n"
    + b"+OK 2 messages:\r\n1 120\r\n2 200\r\n.\r\n"
    + b"+OK 2 200\r\n"
    + b"+OK\r\n1 uid1\r\n2 uid2\r\n.\r\n"
    + b"+OK\r\nSubject: hi\r\n\r\n.\r\n"
    + b"+OK 120 octets\r\n"
    + RETR_BODY
    + b"+OK Marked to be deleted.\r\n"
    + b"-ERR [SYS/PERM] There's no message 9.\r\n"
    + b"+OK Logging out, messages deleted.\r\n"
)


def chunks(data: bytes, sizes: list[int]) -> list[bytes]:
    out: list[bytes] = []
    pos = 0
    index = 0
    while pos < len(data):
        size = sizes[index % len(sizes)] if sizes else len(data)
        out.append(data[pos : pos + max(1, size)])
        pos += max(1, size)
        index += 1
    return out


def run(
    client: bytes, server: bytes, client_sizes: list[int], server_sizes: list[int]
) -> list[Event]:
    """Feed the client stream first (a pipelining client), then the server stream."""
    observer = SessionObserver()
    events: list[Event] = []
    for piece in chunks(client, client_sizes):
        events += observer.feed_client(piece, 1.0)
    for piece in chunks(server, server_sizes):
        events += observer.feed_server(piece, 2.0)
    events += observer.end_server(3.0)
    return events


def exchanges(events: list[Event]) -> list[Exchange]:
    return [e for e in events if isinstance(e, Exchange)]


def summary_of(ex: Exchange) -> tuple[object, ...]:
    return (
        ex.seq,
        ex.verb,
        ex.args,
        ex.status,
        ex.multiline,
        ex.body_lines,
        ex.body_bytes,
        tuple(sorted(ex.flags - {Flag.PIPELINED})),
        ex.response_start,
        ex.response_end,
    )


def test_full_session_pairs_every_command() -> None:
    events = run(SESSION_CLIENT, SESSION_SERVER, [], [])
    greeting = events[[isinstance(e, Greeting) for e in events].index(True)]
    assert isinstance(greeting, Greeting)
    assert greeting.apop_timestamp == "<1896.697170952@dbc.mtview.ca.us>"
    got = [(e.verb, e.args, e.status, e.multiline, e.body_lines) for e in exchanges(events)]
    assert got == [
        ("CAPA", "", Status.OK, True, 3),
        ("USER", "alice", Status.OK, False, 0),
        ("PASS", "********", Status.OK, False, 0),
        ("STAT", "", Status.OK, False, 0),
        ("LIST", "", Status.OK, True, 2),
        ("LIST", "2", Status.OK, False, 0),
        ("UIDL", "", Status.OK, True, 2),
        ("TOP", "1 0", Status.OK, True, 2),
        ("RETR", "1", Status.OK, True, 3),
        ("DELE", "1", Status.OK, False, 0),
        ("RETR", "9", Status.ERR, False, 0),
        ("QUIT", "", Status.OK, False, 0),
    ]
    retr = exchanges(events)[8]
    assert retr.body_bytes == len(RETR_BODY) - 3
    assert (
        SESSION_SERVER[retr.response_start : retr.response_end] == b"+OK 120 octets\r\n" + RETR_BODY
    )
    assert SESSION_CLIENT[retr.request_start : retr.request_end] == b"RETR 1\r\n"
    err = exchanges(events)[10]
    assert err.resp_code == "SYS/PERM"
    assert all(e.pipelined for e in exchanges(events)[1:])
    assert not any(isinstance(e, (StrayLine, UnsolicitedLine)) for e in events)


def test_summary_counts_like_dovecot_logout_line() -> None:
    observer = SessionObserver()
    observer.feed_client(SESSION_CLIENT, 1.0)
    observer.feed_server(SESSION_SERVER, 2.0)
    summary = observer.summary()
    assert (summary.commands, summary.retr_count, summary.top_count, summary.dele_count) == (
        12,
        1,
        1,
        1,
    )
    assert summary.retr_bytes == len(RETR_BODY) - 3
    assert summary.reached_update
    assert summary.client_bytes == len(SESSION_CLIENT)
    assert summary.server_bytes == len(SESSION_SERVER)


@settings(max_examples=200, deadline=None)
@given(
    client_sizes=st.lists(st.integers(min_value=1, max_value=40), max_size=8),
    server_sizes=st.lists(st.integers(min_value=1, max_value=40), max_size=8),
)
def test_same_exchanges_whatever_the_chunking(
    client_sizes: list[int], server_sizes: list[int]
) -> None:
    whole = [summary_of(e) for e in exchanges(run(SESSION_CLIENT, SESSION_SERVER, [], []))]
    split = [
        summary_of(e)
        for e in exchanges(run(SESSION_CLIENT, SESSION_SERVER, client_sizes, server_sizes))
    ]
    assert split == whole


def test_byte_by_byte_interleaved() -> None:
    """Lock-step: each command is sent, then its answer arrives, one byte at a time."""
    whole = [summary_of(e)[:8] for e in exchanges(run(SESSION_CLIENT, SESSION_SERVER, [], []))]
    observer = SessionObserver()
    events: list[Event] = []
    for byte in GREETING:
        events += observer.feed_server(bytes([byte]), 0.0)
    server_rest = SESSION_SERVER[len(GREETING) :]
    for byte in SESSION_CLIENT:
        events += observer.feed_client(bytes([byte]), 1.0)
    for byte in server_rest:
        events += observer.feed_server(bytes([byte]), 2.0)
    got = [summary_of(e)[:8] for e in exchanges(events)]
    assert got == whole


@settings(max_examples=300, deadline=None)
@given(client=st.binary(max_size=300), server=st.binary(max_size=300), seed=st.integers(0, 99))
def test_never_raises_on_arbitrary_bytes(client: bytes, server: bytes, seed: int) -> None:
    rng = random.Random(seed)
    observer = SessionObserver(max_line=16)
    streams = [(observer.feed_client, client), (observer.feed_server, server)]
    positions = [0, 0]
    while positions[0] < len(client) or positions[1] < len(server):
        side = rng.randrange(2)
        feed, data = streams[side]
        step = rng.randint(1, 20)
        feed(data[positions[side] : positions[side] + step], 1.0)
        positions[side] += step
    observer.end_client(2.0)
    events = observer.end_server(3.0)
    assert isinstance(events[-1], EndOfStream)


def test_bare_lf_and_dot_lf_terminator() -> None:
    events = run(b"RETR 1\n", b"+OK hi\n+OK\nline\n..x\n.\n", [], [])
    (retr,) = exchanges(events)
    assert retr.body_lines == 2
    assert Flag.BARE_LF in retr.flags
    assert retr.status is Status.OK


def test_empty_listing_terminator_right_after_status_line() -> None:
    events = run(b"LIST\r\nSTAT\r\n", b"+OK\r\n+OK 0 messages:\r\n.\r\n+OK 0 0\r\n", [], [3])
    listing, stat = exchanges(events)
    assert (listing.multiline, listing.body_lines, listing.body_bytes) == (True, 0, 0)
    assert stat.first_line == "+OK 0 0"


def test_body_line_looking_like_status_is_body() -> None:
    body = b"+OK\r\n-ERR\r\n.\r\n"
    events = run(b"RETR 1\r\nNOOP\r\n", b"+OK\r\n+OK\r\n" + body + b"+OK\r\n", [], [])
    retr, noop = exchanges(events)
    assert retr.body_lines == 2
    assert noop.status is Status.OK and not noop.multiline


def test_err_is_always_single_line() -> None:
    events = run(b"CAPA\r\nLIST\r\n", b"+OK\r\n-ERR nope\r\n+OK\r\n.\r\n", [], [])
    capa, listing = exchanges(events)
    assert capa.status is Status.ERR and not capa.multiline
    assert listing.multiline


def test_argument_decides_list_and_uidl_shape() -> None:
    events = run(b"UIDL 1\r\nUIDL\r\n", b"+OK\r\n+OK 1 abc\r\n+OK\r\n1 abc\r\n.\r\n", [], [])
    single, multi = exchanges(events)
    assert not single.multiline and multi.multiline and multi.body_lines == 1


def test_truncated_body_and_unanswered_commands_at_eof() -> None:
    events = run(b"RETR 1\r\nQUIT\r\n", b"+OK\r\n+OK\r\npartial line\r\nmore", [], [])
    retr, quit_ = exchanges(events)
    assert Flag.TRUNCATED in retr.flags and retr.status is Status.OK
    assert Flag.NO_RESPONSE in quit_.flags and quit_.status is None
    end = events[-1]
    assert isinstance(end, EndOfStream) and end.truncated and end.unanswered == 1


def test_unsolicited_line_before_close() -> None:
    events = run(b"", b"+OK hi\r\n-ERR Disconnected for inactivity.\r\n", [], [])
    (unsolicited,) = [e for e in events if isinstance(e, UnsolicitedLine)]
    assert unsolicited.status is Status.ERR


def lockstep(steps: list[tuple[str, bytes]], client_chunk: int = 5) -> list[Event]:
    """Feed ("c", bytes) and ("s", bytes) steps in order, client bytes in small pieces."""
    observer = SessionObserver()
    events: list[Event] = []
    for side, data in steps:
        if side == "c":
            for pos in range(0, len(data), client_chunk):
                events += observer.feed_client(data[pos : pos + client_chunk], 1.0)
        else:
            events += observer.feed_server(data, 2.0)
    return events + observer.end_server(3.0)


def test_sasl_exchange_with_challenges_star_and_empty_lines() -> None:
    events = lockstep(
        [
            ("s", b"+OK\r\n"),
            ("c", b"AUTH PLAIN\r\n"),
            ("s", b"+ \r\n"),
            ("c", b"AGFsaWNlAHB3\r\n"),
            ("s", b"+OK Logged in.\r\n"),
            ("c", b"AUTH XOAUTH2 dG9rZW4=\r\n"),
            ("s", b"+ eyJzdGF0dXMiOiI0MDAifQ==\r\n"),
            ("c", b"\r\n"),
            ("s", b"-ERR [AUTH] Authentication failed.\r\n"),
            ("c", b"AUTH LOGIN\r\n"),
            ("s", b"+ VXNlcm5hbWU6\r\n"),
            ("c", b"*\r\n"),
            ("s", b"-ERR Cancelled\r\n"),
            ("c", b"STAT\r\n"),
            ("s", b"+OK 0 0\r\n"),
        ]
    )
    got = [(e.verb, e.args, e.status, e.sasl) for e in exchanges(events)]
    assert got == [
        ("AUTH", "PLAIN", Status.OK, (("+", "0"), ("c", "********"))),
        ("AUTH", "XOAUTH2 ********", Status.ERR, (("+", "24"), ("c", ""))),
        ("AUTH", "LOGIN", Status.ERR, (("+", "12"), ("c", "*"))),
        ("STAT", "", Status.OK, ()),
    ]
    assert [e.cancelled for e in events if isinstance(e, SaslResponse)] == [False, False, True]
    assert len([e for e in events if isinstance(e, SaslChallenge)]) == 3
    # No SASL line was ever taken for a command.
    assert [e.verb for e in events if isinstance(e, CommandSent)] == [
        "AUTH",
        "AUTH",
        "AUTH",
        "STAT",
    ]


def test_sasl_data_sent_before_the_challenge_is_never_shown() -> None:
    """A client that pipelines its SASL answer; the server refuses the mechanism."""
    for server in (b"+OK hi\r\n-ERR unsupported\r\n-ERR unknown command\r\n", b"+OK hi\r\n"):
        events = run(b"AUTH PLAIN\r\nAGJvYgBodW50ZXIy\r\n", server, [3], [])
        shown = repr(events)
        assert "AGJvYgBodW50ZXIy" not in shown and "AGJVYGBODW50ZXIY" not in shown
        verbs = [e.verb for e in events if isinstance(e, CommandSent)]
        assert verbs == ["AUTH", "********"]


def test_sasl_steps_are_bounded() -> None:
    observer = SessionObserver()
    observer.feed_server(b"+OK hi\r\n", 0.0)
    observer.feed_client(b"AUTH X\r\n", 1.0)
    for _ in range(100):
        observer.feed_server(b"+ \r\n" * 1000, 1.0)
    (auth,) = exchanges(observer.feed_server(b"-ERR no\r\n", 2.0))
    assert len(auth.sasl) == 65 and auth.sasl[-1] == ("...", str(100_000 - 64))


def test_command_flood_beyond_the_limit_gives_up_pairing_but_stays_bounded() -> None:
    observer = SessionObserver(max_pending=1000)
    observer.feed_server(b"+OK hi\r\n", 0.0)
    events = observer.feed_client(b"NOOP\r\n" * 5000, 1.0)
    (lost,) = [e for e in events if isinstance(e, PairingLost)]
    assert "unanswered" in lost.reason
    assert observer.feed_server(b"+OK\r\n" * 5000, 2.0) == []
    assert observer.summary().server_bytes == len(b"+OK hi\r\n") + 5000 * 5


def test_pipelining_thousands_of_commands_in_one_chunk_pairs_them_all() -> None:
    # Up to the parser's bound (1024 unanswered commands) every one is paired.
    client = b"".join(b"DELE %d\r\n" % i for i in range(1, 1021)) + b"LIST\r\nQUIT\r\n"
    server = b"+OK hi\r\n" + b"+OK deleted\r\n" * 1020 + b"+OK\r\n1 2\r\n.\r\n+OK bye\r\n"
    got = exchanges(run(client, server, [], []))
    assert len(got) == 1022
    assert (got[-2].verb, got[-2].body_lines) == ("LIST", 1)
    assert got[-1].first_line == "+OK bye"


def test_lone_cr_never_shows_what_follows_it() -> None:
    observer = SessionObserver()
    raw = b"USER bob\rPASS hunter2\r\n"
    assert observer.record_client(raw, 1.0) == b"USER bob\rPASS ********\r\n"
    (command,) = [e for e in observer.parse_recorded_client() if isinstance(e, CommandSent)]
    assert "hunter2" not in command.args and command.verb == "USER"


def test_auth_without_argument_lists_mechanisms() -> None:
    events = run(b"AUTH\r\nSTAT\r\n", b"+OK\r\n+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n+OK 1 2\r\n", [], [])
    auth, stat = exchanges(events)
    assert auth.multiline and auth.body_lines == 2 and stat.status is Status.OK


def test_stls_goes_opaque_and_counts_injected_plaintext() -> None:
    observer = SessionObserver()
    observer.feed_server(b"+OK hi\r\n", 0.0)
    observer.feed_client(b"STLS\r\nUSER evil\r\n", 1.0)
    events = observer.feed_server(b"+OK Begin TLS\r\nXYZ", 2.0)
    (stls,) = [e for e in events if isinstance(e, StartTls)]
    assert (stls.client_trailing, stls.server_trailing) == (len(b"USER evil\r\n"), 3)
    assert (stls.client_switch, stls.server_switch) == (6, len(b"+OK hi\r\n+OK Begin TLS\r\n"))
    assert observer.opaque
    assert observer.feed_client(b"\x16\x03\x01 tls bytes\r\n", 3.0) == []
    observer.resume_after_tls()
    observer.feed_client(b"CAPA\r\n", 4.0)
    (capa,) = exchanges(observer.feed_server(b"+OK\r\nUSER\r\n.\r\n", 5.0))
    assert capa.verb == "CAPA" and capa.body_lines == 1


def test_stls_refused_changes_nothing() -> None:
    events = run(b"STLS\r\nCAPA\r\n", b"+OK hi\r\n-ERR no TLS\r\n+OK\r\nTOP\r\n.\r\n", [], [])
    assert not any(isinstance(e, StartTls) for e in events)
    assert [e.status for e in exchanges(events)] == [Status.ERR, Status.OK]


def test_overlong_line_is_flagged_and_bounded() -> None:
    observer = SessionObserver(max_line=64)
    observer.feed_server(b"+OK hi\r\n", 0.0)
    for _ in range(100):
        observer.feed_client(b"A" * 10_000, 1.0)
    observer.feed_client(b"\r\n", 1.0)
    events = observer.feed_server(b"-ERR too long\r\n", 2.0)
    (ex,) = exchanges(events)
    assert Flag.OVERLONG in ex.flags
    assert len(ex.verb) + len(ex.args) <= 64
    assert ex.request_end - ex.request_start == 1_000_002


def test_large_body_counts_without_line_loop() -> None:
    line = b"x" * 70 + b"\r\n"
    body = line * 50_000 + b"..stuffed\r\n"
    observer = SessionObserver()
    observer.feed_server(b"+OK\r\n", 0.0)
    observer.feed_client(b"RETR 1\r\n", 1.0)
    wire = b"+OK\r\n" + body + b".\r\n"
    events: list[Event] = []
    for pos in range(0, len(wire), 65536):
        events += observer.feed_server(wire[pos : pos + 65536], 2.0)
    (retr,) = exchanges(events)
    assert retr.body_lines == 50_001
    assert retr.body_bytes == len(body)
    assert Flag.BARE_LF not in retr.flags


def test_unstuffed_dot_line_split_across_chunks_is_not_terminator() -> None:
    wire = b"+OK\r\n" + b"a\r\n..\r\nb\r\n.\r\n"
    for cut in range(1, len(wire)):
        observer = SessionObserver()
        observer.feed_server(b"+OK\r\n", 0.0)
        observer.feed_client(b"RETR 1\r\n", 1.0)
        events = observer.feed_server(wire[:cut], 2.0) + observer.feed_server(wire[cut:], 2.0)
        (retr,) = exchanges(events)
        assert retr.body_lines == 3, cut


def test_greeting_first_even_if_client_spoke_first() -> None:
    events = run(b"CAPA\r\n", b"+OK ready\r\n+OK\r\n.\r\n", [], [])
    assert isinstance(next(e for e in events if not isinstance(e, CommandSent)), Greeting)
    (capa,) = exchanges(events)
    assert capa.multiline and capa.body_lines == 0


def test_secret_masking_in_bytes_and_events() -> None:
    observer = SessionObserver()
    raw = b"USER bob\r\nPASS hunter2 x\r\nAPOP bob c4c9334bac560ecc979e58001b3e22fb\r\n"
    masked = b"".join(observer.record_client(bytes([b]), 1.0) for b in raw)
    assert masked == b"USER bob\r\nPASS ********\r\nAPOP bob ********\r\n"
    observer.end_client(2.0)
    assert observer.take_masked_client() == []
    observer = SessionObserver()
    events = observer.feed_client(raw, 1.0)
    assert [e.args for e in events if isinstance(e, CommandSent)] == [
        "bob",
        "********",
        "bob ********",
    ]


def masked_step(observer: SessionObserver, data: bytes) -> bytes:
    """What the relay writes to the capture for one client chunk: the masked bytes now,
    then the held lines the pairing resolved once the observer has the chunk."""
    now = observer.record_client(data, 1.0)
    observer.parse_recorded_client()
    return now + b"".join(chunk for _at, chunk in observer.take_masked_client())


def test_masking_sasl_lines_until_auth_finishes() -> None:
    observer = SessionObserver()
    observer.feed_server(b"+OK hi\r\n", 0.0)
    first = masked_step(observer, b"AUTH LOGIN\r\n")
    observer.feed_server(b"+ VXNlcm5hbWU6\r\n", 1.0)
    user = masked_step(observer, b"YWxpY2U=\r\n")
    observer.feed_server(b"+ UGFzc3dvcmQ6\r\n", 1.0)
    password = masked_step(observer, b"cGFzc3dvcmQ=\r\n")
    observer.feed_server(b"+OK Logged in.\r\n", 2.0)
    after = masked_step(observer, b"STAT\r\n")
    assert (first, user, password, after) == (
        b"AUTH LOGIN\r\n",
        b"********\r\n",
        b"********\r\n",
        b"STAT\r\n",
    )


def _reference_body(stream: bytes) -> tuple[int, int, bool, int] | None:
    """Line by line, the slow obvious way: (lines, bytes, bare LF seen, end) of a body."""
    pos = 0
    lines = 0
    bare = False
    while True:
        newline = stream.find(b"\n", pos)
        if newline < 0:
            return None
        line = stream[pos : newline + 1]
        bare = bare or not line.endswith(b"\r\n")
        if line in (b".\r\n", b".\n"):
            return lines, pos, bare, newline + 1
        lines += 1
        pos = newline + 1


_BODY_TOKENS = [b"a", b"b c", b".", b"..", b"\r", b"\n", b"\r\n", b".\r\n", b".\n", b"\n.\r"]


@settings(max_examples=400, deadline=None)
@given(
    tokens=st.lists(st.sampled_from(_BODY_TOKENS), max_size=40),
    status_end=st.sampled_from([b"\r\n", b"\n"]),
    sizes=st.lists(st.integers(min_value=1, max_value=9), max_size=6),
)
def test_body_scan_matches_line_by_line_reference(
    tokens: list[bytes], status_end: bytes, sizes: list[int]
) -> None:
    """Terminator, line and byte counts and the bare-LF flag agree with a per-line scan."""
    body = b"".join(tokens) + b"\r\n.\r\n"
    expected = _reference_body(body)
    assert expected is not None
    lines, size, bare, end = expected
    status = b"+OK" + status_end
    server = GREETING + status + body[:end] + b"+OK after\r\n"
    for server_sizes in ([], sizes, [1]):
        (retr, noop) = exchanges(run(b"RETR 1\r\nNOOP\r\n", server, [], server_sizes))
        assert retr.body_lines == lines
        assert retr.body_bytes == size
        assert (Flag.BARE_LF in retr.flags) == (bare or status_end == b"\n")
        assert retr.response_end == len(server) - len(b"+OK after\r\n")
        assert noop.first_line == "+OK after"


def test_body_scan_large_chunks_with_bare_lf_behind_dot_lines() -> None:
    """A bare LF deep in a big chunk: the terminator after it is still the first one."""
    body = b"x\r\n" * 10_000 + b"y\n" + b".\r\n" + b"tail\r\n.\r\n"
    server = GREETING + b"+OK\r\n" + body
    (retr,) = exchanges(run(b"RETR 1\r\n", server, [], [262144]))
    assert retr.body_lines == 10_001
    assert retr.body_bytes == 3 * 10_000 + 2
    assert Flag.BARE_LF in retr.flags


def test_masking_does_not_depend_on_name_or_mechanism_length() -> None:
    name = b"u" * 5000
    observer = SessionObserver()
    masked = observer.record_client(b"APOP " + name + b" c4c9334bac560ecc979e58001b3e22fb\r\n", 0)
    assert masked == b"APOP " + name + b" ********\r\n"
    observer = SessionObserver()
    observer.feed_server(b"+OK hi\r\n", 0.0)
    mechanism = b"X" * 3000
    assert masked_step(observer, b"AUTH " + mechanism + b"\r\n") == b"AUTH " + mechanism + b"\r\n"
    observer.feed_server(b"+ \r\n", 1.0)
    assert masked_step(observer, b"c2VjcmV0\r\n") == b"********\r\n"


def test_masking_keywords_are_case_and_blank_insensitive() -> None:
    for line in (
        b"pass hunter2\r\n",
        b"  PaSs hunter2\r\n",
        b"PASS\thunter2\r\n",
        b"PASS  hunter2\r\n",
    ):
        assert b"hunter2" not in SessionObserver().record_client(line, 0)
    assert SessionObserver().record_client(b"PASSWORD hunter2\r\n", 0) == b"PASSWORD hunter2\r\n"
    assert (
        SessionObserver().record_client(b"auth\tplain\tAGJvYg==\r\n", 0)
        == b"auth\tplain\t********\r\n"
    )


def test_masker_starts_afresh_after_stls() -> None:
    observer = SessionObserver()
    observer.feed_server(b"+OK hi\r\n", 0.0)
    observer.receive_client(b"STLS\r\nX", 1.0)  # "X": plaintext injected after STLS
    observer.feed_server(b"+OK Begin TLS\r\n", 2.0)
    observer.resume_after_tls()
    masked = observer.record_client(b"AUTH PLAIN AGJvYgBodW50ZXIy\r\n", 3.0)
    assert masked == b"AUTH PLAIN ********\r\n"


_MASK_TOKENS = [
    b"NOOP", b"PASS", b"pass", b"APOP", b"AUTH", b"auth", b" ", b"\t", b"x", b"secret",
    b"PLAIN", b"*", b"\r", b"\n", b"\r\n", b"USER bob\r\n", b"STAT\r\n",
]


@settings(max_examples=500, deadline=None)
@given(
    chunks=st.lists(
        st.lists(st.sampled_from(_MASK_TOKENS), max_size=8).map(b"".join), max_size=12
    ),
    distrust_after=st.integers(min_value=0, max_value=12),
)
def test_masker_shortcut_matches_the_bytewise_path(
    chunks: list[bytes], distrust_after: int
) -> None:
    """Chunks of whole lines without secret keywords skip the byte loop: same output, same
    state afterwards, whatever came before."""
    fast, slow = SecretMasker(), SecretMasker()
    for index, chunk in enumerate(chunks):
        assert fast.mask(chunk) == slow.mask_bytewise(chunk)
        if index == distrust_after:
            fast.distrust()
            slow.distrust()
        assert fast.take_released() == slow.take_released()
    fast.end_of_stream()
    slow.end_of_stream()
    fast.abandon()
    slow.abandon()
    assert fast.take_released() == slow.take_released()
