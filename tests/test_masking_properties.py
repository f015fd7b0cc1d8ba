"""Sans-IO masking under any chunking and any server: the streaming masker agrees with the
one-line reference, commands pipelined behind AUTH are resolved the same way live and from
the capture, and no secret from a known set ever reaches the capture, the events (what the
log prints) or ``show``, whatever a desynchronising server sends (issue 10 items 2-3,
issue 11 item 1)."""

from __future__ import annotations

import base64
import importlib.util
import os
from pathlib import Path
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scripted import SPLITS, Relayed, relay_model, relay_turns

from pop3tap import _pure
from pop3tap.log import exchange_fields
from pop3tap.protocol import (
    SECRET_PLACEHOLDER,
    CommandSent,
    Event,
    Exchange,
    SecretMasker,
    Status,
    Verdict,
    _masking,
    _masklines,
    is_known_command,
    mask_line,
    opens_auth,
)
from pop3tap.render import render_json, render_lines

SECRET_PLACEHOLDER_BYTES = SECRET_PLACEHOLDER.encode()

GREETING = b"+OK ready <1.2@host>\r\n"


def lockstep(turns: list[tuple[str, bytes]], how: str, seed: int = 0) -> Relayed:
    """The turns after a greeting, each split ``how``, through the relay model."""
    return relay_turns([("s", GREETING), *turns], how, seed)


def shown_everywhere(session: Relayed) -> str:
    """The capture's client bytes, every event (what the log prints) and ``show``."""
    capture = session.capture()
    parts = [session.c2s().decode("latin-1"), repr(session.events)]
    parts += [repr(exchange_fields(e)) for e in session.events if isinstance(e, Exchange)]
    parts += list(render_lines(capture, bodies=True)) + list(render_json(capture))
    return "\n".join(parts)


# ---------------------------------------------------------------------------- fixed cases

BLOB = base64.b64encode(b"\x00bob\x00Zq8-sekrit-pw").decode()
SECRETS = [BLOB, "Zq8-sekrit-pw", "czNrcjF0", "s3kr1t", "b913a602c7eda7a495b4e6e7334d3890"]

DESYNC = {
    "extra +OK before +": [
        ("c", b"AUTH PLAIN\r\n"),
        ("s", b"+OK\r\n+ \r\n"),
        ("c", BLOB.encode() + b"\r\n"),
        ("s", b"+OK Logged in.\r\n"),
        ("c", b"STAT\r\n"),
        ("s", b"+OK 1 2\r\n"),
    ],
    "duplicated answer": [
        ("c", b"NOOP\r\nAUTH PLAIN\r\n"),
        ("s", b"+OK\r\n+OK\r\n+ \r\n"),
        ("c", b"czNrcjF0\r\n"),
        ("s", b"+OK\r\n"),
    ],
    "multi-line answer to unknown": [
        ("c", b"XLST\r\nAUTH PLAIN\r\n"),
        ("s", b"+OK\r\n+OK one\r\n.\r\n+ \r\n"),
        ("c", BLOB.encode() + b"\r\n"),
        ("s", b"+OK\r\n"),
    ],
    "SASL after -ERR": [
        ("c", b"AUTH CRAM-MD5\r\n"),
        ("s", b"-ERR no\r\n"),
        ("c", base64.b64encode(b"bob b913a602c7eda7a495b4e6e7334d3890") + b"\r\n"),
        ("s", b"-ERR unknown\r\n"),
    ],
    "separators": [
        ("c", b"PASS\x00 Zq8-sekrit-pw\r\nAPOP bob\x0bb913a602c7eda7a495b4e6e7334d3890\r\n"),
        ("s", b"+OK\r\n+OK\r\n"),
        ("c", b"AUTH PLAIN\x0b" + BLOB.encode() + b"\r\n"),
        ("s", b"+OK\r\n"),
    ],
    "lone CR after AUTH": [
        ("c", b"AUTH PLAIN\r" + BLOB.encode() + b"\r\n"),
        ("s", b"+OK\r\n"),
    ],
}


def test_desync_cases_never_show_a_secret_at_any_chunking() -> None:
    for name, turns in DESYNC.items():
        for how in SPLITS:
            text = shown_everywhere(lockstep(turns, how))
            for secret in SECRETS:
                for form in (secret, secret.upper()):
                    assert form not in text, (name, how, form)


PIPELINED = {
    "initial response": (
        [
            ("c", b"AUTH PLAIN " + BLOB.encode() + b"\r\nSTAT\r\nLIST\r\n"),
            ("s", b"+OK Logged in.\r\n+OK 2 30\r\n+OK 2 messages\r\n1 10\r\n2 20\r\n.\r\n"),
        ],
        [],
    ),
    "before the continuation": (
        [
            ("c", b"AUTH PLAIN\r\n" + BLOB.encode() + b"\r\nSTAT\r\nLIST\r\n"),
            ("s", b"+ \r\n+OK Logged in.\r\n+OK 2 30\r\n+OK 2 messages\r\n1 10\r\n2 20\r\n.\r\n"),
        ],
        [("+", "0"), ("c", "********")],
    ),
}


def test_commands_pipelined_behind_auth_are_clear_live_and_from_the_capture() -> None:
    for name, (turns, sasl) in PIPELINED.items():
        for how in SPLITS:
            session = lockstep(turns, how, seed=len(name))
            assert session.c2s().endswith(b"\r\nSTAT\r\nLIST\r\n"), (name, how)
            assert BLOB.encode() not in session.c2s()
            live = [e for e in session.events if isinstance(e, Exchange)]
            derived = session.capture().exchanges()
            for exchanges in (live, derived):
                got = [(e.verb, e.status, e.multiline, e.body_lines) for e in exchanges]
                assert got == [
                    ("AUTH", Status.OK, False, 0),
                    ("STAT", Status.OK, False, 0),
                    ("LIST", Status.OK, True, 2),
                ], (name, how)
                assert list(exchanges[0].sasl) == [tuple(s) for s in sasl]
            assert "(stray)" not in "\n".join(render_lines(session.capture()))


def test_unresolved_lines_are_masked_at_session_end_and_at_the_bound() -> None:
    # The server never answers the AUTH: the pipelined lines are never resolved.
    session = lockstep([("c", b"AUTH PLAIN\r\nSTAT\r\n" + BLOB.encode() + b"\r\n")], "whole")
    assert session.c2s() == b"AUTH PLAIN\r\n********\r\n********\r\n"
    masker = SecretMasker()
    masker.mask(b"AUTH X\r\n" + b"STAT\r\n" * 2000)
    released = b"".join(data for _at, data in masker.take_released())
    assert released == b"********\r\n" * (2000 - 1024)
    assert len(masker._lines.held) == 1024
    # Bytes are bounded too, and a line too long to be a command is never kept whole.
    masker = SecretMasker()
    masker.mask(b"AUTH X\r\n" + (b"LIST " + b"1" * 995 + b"\r\n") * 200 + b"x" * (1 << 20))
    assert masker._lines.held_bytes <= 64 * 1024
    assert len(masker._lines.open) <= 8193
    masker.abandon()
    released = b"".join(data for _at, data in masker.take_released())
    assert released == b"********\r\n" * 200 + b"********"


def test_auth_cancel_star_stays_visible() -> None:
    session = lockstep(
        [
            ("c", b"AUTH PLAIN\r\n"),
            ("s", b"+ \r\n"),
            ("c", b"*\r\n"),
            ("s", b"-ERR Authentication aborted by client.\r\n"),
            ("c", b"STAT\r\n"),
            ("s", b"-ERR Unknown command\r\n"),
        ],
        "bytes",
    )
    assert session.c2s() == b"AUTH PLAIN\r\n*\r\nSTAT\r\n"
    (auth, stat) = session.capture().exchanges()
    assert auth.sasl == (("+", "0"), ("c", "*")) and stat.verb == "STAT"


# ---------------------------------------------------------------------------- the reference


_LINE_TOKENS = [
    b"PASS", b"pass", b"APOP", b"apop", b"AUTH", b"auth", b"PASSWORD", b"AUTHX", b"USER",
    b"bob", b"x", b"secret", b" ", b"\t", b"\x00", b"\x0b", b"1", b"=", b"\xc3\xa9", b"\r",
    b"STAT", b"LIST 1",
]  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(
    lines=st.lists(
        st.tuples(
            st.lists(st.sampled_from(_LINE_TOKENS), max_size=8).map(b"".join),
            st.sampled_from([b"\r\n", b"\n"]),
        ),
        max_size=8,
    ),
    sizes=st.lists(st.integers(min_value=1, max_value=9), min_size=1, max_size=6),
)
def test_streaming_masker_agrees_with_the_line_reference(
    lines: list[tuple[bytes, bytes]], sizes: list[int]
) -> None:
    """Any chunking gives exactly mask_line() of each line up to the first line holding an
    AUTH (opens_auth()), and holds every line after that one: same words, same rule."""
    stream = b"".join(content + end for content, end in lines)
    expected = bytearray()
    holds = False
    for content, end in lines:
        crlf = end == b"\r\n" or content.endswith(b"\r")
        text = content[:-1] if end == b"\n" and content.endswith(b"\r") else content
        expected += mask_line(text) + (b"\r\n" if crlf else b"\n")
        if opens_auth(text):
            holds = True
            break
    masker = SecretMasker()
    got = bytearray()
    pos = 0
    index = 0
    while pos < len(stream):
        size = sizes[index % len(sizes)]
        got += masker.mask(stream[pos : pos + size])
        pos += size
        index += 1
    if not holds:
        masker.end_of_stream()
        got += b"".join(data for _at, data in masker.take_released())
    assert bytes(got) == bytes(expected)
    assert masker._holding == holds


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(
        st.sampled_from(
            [
                b"STAT",
                b"LIST 1",
                b"c2VjcmV0",
                b"*",
                b"PASS x y",
                b"",
                b"RETR x",
                b"AUTH PLAIN AGJvYg==",
                b"USER bob",
            ]
        ),
        max_size=10,
    ),
    verdicts=st.lists(st.sampled_from(list(Verdict)), min_size=10, max_size=10),
)
def test_held_lines_are_clear_only_for_a_valid_command_verdict(
    lines: list[bytes], verdicts: list[Verdict]
) -> None:
    masker = SecretMasker()
    head = b"AUTH PLAIN\r\n"
    assert masker.mask(head) == head
    offset = len(head)
    expected = bytearray()
    for line in lines:
        masker.mask(line + b"\r\n")
    for line, verdict in zip(lines, verdicts, strict=False):
        offset += len(line) + 2
        masker.resolve(offset, verdict)
        if verdict is Verdict.COMMAND and is_known_command(line):
            expected += mask_line(line)
        elif verdict is Verdict.CANCEL and line == b"*":
            expected += line
        elif line:
            expected += b"********"
        expected += b"\r\n"
    assert b"".join(data for _at, data in masker.take_released()) == bytes(expected)


# ---------------------------------------------------------------------------- hostile servers

_SECRET_SET = [b"Zq8sekritA", b"QUdKdllnQm9k", b"hUnTeR2zz"]
_BEFORE_AUTH = [b"USER bob\r\n", b"NOOP\r\n", b"CAPA\r\n", b"STAT\r\n", b"XLST\r\n", b"\r\n"]
_AUTH_LINES = [b"AUTH PLAIN\r\n", b"AUTH LOGIN\r\n", b"auth cram-md5\n", b"AUTH\r\n"]
_AFTER_AUTH = [
    b"STAT\r\n",
    b"LIST\r\n",
    b"*\r\n",
    b"\r\n",
    b"QUIT\r\n",
    b"RETR 1\r\n",
    b"AUTH PLAIN\r\n",
    b"\n",
]


def _secret_line(secret: bytes, form: int) -> bytes:
    return [
        secret + b"\r\n",
        b"PASS " + secret + b"\r\n",
        b"PASS\x00 " + secret + b"\r\n",
        b"pass1" + secret + b"\n",
        b"APOP bob " + secret + b"\r\n",
        b"APOP bob\x0b" + secret + b"\r\n",
        b"AUTH PLAIN " + secret + b"\r\n",
        b"AUTH PLAIN\x0b" + secret + b"\r\n",
        b"AUTH PLAIN\r" + secret + b"\r\n",
        secret + b"\r" + secret + b"\r\n",
        b"PASS\r" + secret + b"\r\n",
        b"apop bob\r" + secret + b"\r\n",
    ][form]


_SERVER_TOKENS = [
    b"+OK\r\n",
    b"-ERR no\r\n",
    b"+ \r\n",
    b"+ VXNlcm5hbWU6\r\n",
    b"+OK Logged in.\r\n",
    b"+OK\r\nline\r\n.\r\n",
    b".\r\n",
    b"junk\r\n",
    b"+OK 1 2\r\n",
    b"\n",
    b"+",
    b"OK\r\n",
    b"-ERR",
    b" bad\r\n",
]


@st.composite
def hostile_sessions(draw: st.DrawFn) -> list[tuple[str, bytes]]:
    before = draw(st.lists(st.sampled_from(_BEFORE_AUTH), max_size=3))
    auth = draw(st.sampled_from(_AUTH_LINES))
    after: list[bytes] = []
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        if draw(st.booleans()):
            after.append(draw(st.sampled_from(_AFTER_AUTH)))
        else:
            secret = draw(st.sampled_from(_SECRET_SET))
            after.append(_secret_line(secret, draw(st.integers(min_value=0, max_value=11))))
    client = b"".join([*before, auth, *after])
    server = GREETING + b"".join(draw(st.lists(st.sampled_from(_SERVER_TOKENS), max_size=12)))
    steps: list[tuple[str, bytes]] = []
    cpos = spos = 0
    for to_client, size in draw(
        st.lists(st.tuples(st.booleans(), st.integers(min_value=1, max_value=12)), max_size=40)
    ):
        if to_client and cpos < len(client):
            steps.append(("c", client[cpos : cpos + size]))
            cpos += size
        elif spos < len(server):
            steps.append(("s", server[spos : spos + size]))
            spos += size
    steps.append(("c", client[cpos:]))
    steps.append(("s", server[spos:]))
    return [(d, data) for d, data in steps if data]


@settings(max_examples=600, deadline=None)
@given(steps=hostile_sessions())
def test_no_secret_reaches_capture_log_or_show_whatever_the_server_sends(
    steps: list[tuple[str, bytes]],
) -> None:
    session = relay_model(steps)
    text = shown_everywhere(session)
    for secret in _SECRET_SET:
        for form in (secret, secret.upper(), secret.lower()):
            assert form.decode() not in text
    # Nothing is lost: every client line is in the capture (masked or clear).
    client = b"".join(data for d, data in steps if d == "c")
    assert session.c2s().count(b"\n") == client.count(b"\n")
    assert all(isinstance(e, Event) for e in session.events)
    assert not any(
        isinstance(e, CommandSent) and any(s.decode() in e.args for s in _SECRET_SET)
        for e in session.events
    )


# ---------------------------------------------------------------------------- a correct server

_MODEL_LINES = [
    b"STAT", b"LIST", b"LIST 1", b"UIDL", b"NOOP", b"RETR 1", b"TOP 1 0", b"CAPA", b"RSET",
    b"xJunk here", b"*", b"USER carol",
]  # fmt: skip
_MODEL_BLOB = base64.b64encode(b"\x00carol\x00model-pw-Q9")


@st.composite
def pipelined_logins(draw: st.DrawFn) -> list[bytes]:
    """Client lines, some behind an AUTH PLAIN with or without an initial response."""
    lines = draw(st.lists(st.sampled_from(_MODEL_LINES), max_size=3))
    if draw(st.booleans()):
        lines += [b"AUTH PLAIN " + _MODEL_BLOB]
    else:
        lines += [b"AUTH PLAIN", _MODEL_BLOB]
    lines += draw(st.lists(st.sampled_from(_MODEL_LINES), max_size=6))
    return lines


@settings(max_examples=150, deadline=None)
@given(lines=pipelined_logins(), sizes=st.lists(st.integers(1, 9), min_size=1, max_size=4))
def test_pipelined_behind_auth_live_and_capture_agree_with_a_correct_server(
    lines: list[bytes], sizes: list[int]
) -> None:
    """A client pipelines everything in one go; the modelled server (pop3tap.model) answers
    it the way a POP3 server does. The log's exchanges and the capture's re-derived ones are
    the same, every valid command is shown clear in both, and the password shows nowhere."""
    from pop3tap.model import ModelSession, ModelStore, mailboxes_from_sessions
    from pop3tap.replay import load_sessions

    shipped = Path(__file__).resolve().parents[1] / "captures" / "auth-plain.p3cap"
    sessions, _warnings = load_sessions([shipped])
    store = ModelStore(mailboxes_from_sessions(sessions), passwords={"carol": "model-pw-Q9"})
    server = ModelSession(store, stamp="<1.2@test>")
    answers = [server.greeting().data]
    for line in lines:
        answers.append(server.receive_line(line).data)
    client = b"".join(line + b"\r\n" for line in lines)
    steps = [("s", answers[0])]
    pos = index = 0
    while pos < len(client):
        size = sizes[index % len(sizes)]
        steps.append(("c", client[pos : pos + size]))
        pos += size
        index += 1
    steps += [("s", answer) for answer in answers[1:]]
    session = relay_model(steps)
    live = [
        (e.verb, e.args, e.status, e.body_lines) for e in session.events if isinstance(e, Exchange)
    ]
    derived = [(e.verb, e.args, e.status, e.body_lines) for e in session.capture().exchanges()]
    assert live == derived
    shown = [verb for verb, _args, _status, _lines in live]
    for line in lines:
        if is_known_command(line) and not line.startswith(b"AUTH"):
            assert line.split()[0].decode() in shown
    text = shown_everywhere(session)
    assert "model-pw-Q9" not in text and _MODEL_BLOB.decode() not in text


# ---------------------------------------------------------------------------- overlong lines


@settings(max_examples=150, deadline=None)
@given(
    before_cr=st.integers(min_value=8150, max_value=8250),
    after_cr=st.sampled_from([b"AUTH PLAIN", b"auth\tlogin", b"AUTH", b"xx\rAUTH PLAIN"]),
    terminator=st.sampled_from([b"\r\n", b"\n"]),
    sizes=st.lists(st.integers(min_value=1, max_value=9000), min_size=1, max_size=4),
    server=st.sampled_from([b"+OK\r\n+ \r\n", b"+ \r\n", b"-ERR\r\n+ \r\n", b"+OK\r\n"]),
)
def test_an_auth_after_a_lone_cr_past_the_line_limit_still_masks_what_follows(
    before_cr: int, after_cr: bytes, terminator: bytes, sizes: list[int], server: bytes
) -> None:
    """The log keeps a client line's first bytes only. When a lone CR lies past them or in
    them, what followed it may have been an AUTH (for a server that ends lines there), so a
    later line that is not a known command is never shown, at any chunking."""
    secret = b"czNrcjF0"
    client = b"NOOP " + b"x" * before_cr + b"\r" + after_cr + terminator + secret + b"\r\n"
    steps: list[tuple[str, bytes]] = [("s", GREETING)]
    pos = index = 0
    while pos < len(client):
        size = sizes[index % len(sizes)]
        steps.append(("c", client[pos : pos + size]))
        pos += size
        index += 1
    steps.append(("s", server + b"+OK Logged in.\r\n"))
    text = shown_everywhere(relay_model(steps))
    assert secret.decode() not in text and secret.upper().decode() not in text


_BLANKS = [b" ", b"\t", b"\x00", b"\x0b", b"\x7f", b"\r", b"\x1b", b"\x0c"]


@settings(max_examples=400, deadline=None)
@given(
    verb=st.sampled_from([b"PASS", b"pass", b"APOP", b"apop", b"AUTH", b"AuTh"]),
    lead=st.sampled_from([b"", b" ", b"\t"]),
    blanks=st.lists(st.sampled_from(_BLANKS), min_size=2, max_size=2),
    tail=st.sampled_from([b"", b" x", b"\rmore", b"\x00"]),
    sizes=st.lists(st.integers(min_value=1, max_value=9), min_size=1, max_size=4),
)
def test_a_secret_after_any_blank_or_lone_cr_is_masked(
    verb: bytes, lead: bytes, blanks: list[bytes], tail: bytes, sizes: list[int]
) -> None:
    """Whatever blank (a lone CR included: a server that splits words with isspace() takes
    it as one) separates the words of PASS, APOP or AUTH, the secret is masked by the line
    rule and by the streaming masker at any chunking."""
    secret = b"Zq8sekritA"
    middle = b"" if verb.upper() == b"PASS" else blanks[0] + b"bobPLAIN"
    line = lead + verb + middle + blanks[1] + secret + tail
    assert secret not in mask_line(line)
    stream = line + b"\r\n"
    masker = SecretMasker()
    got = bytearray()
    pos = index = 0
    while pos < len(stream):
        size = sizes[index % len(sizes)]
        got += masker.mask(stream[pos : pos + size])
        pos += size
        index += 1
    masker.end_of_stream()
    masker.abandon()
    got += b"".join(data for _at, data in masker.take_released())
    assert secret not in got


# ---------------------------------------------------------------------------- floods

try:  # directly, not through _masklines: POP3TAP_PURE_PYTHON=1 leaves it built but unused
    from pop3tap.protocol import _maskscan_c
except ImportError:
    _maskscan_c = None  # type: ignore[assignment]
_RUN_MASKERS: dict[str, _masklines.RunMasker] = {"python": _masklines.mask_run_python}
if _maskscan_c is not None:
    _RUN_MASKERS["c"] = _maskscan_c.mask_run
#: Every byte a server may take as a word separator (CR and LF end lines instead).
_EVERY_SEPARATOR = [bytes([b]) for b in range(0x21) if b not in (0x0A, 0x0D)] + [b"\x7f"]
_FLOOD_WORDS = [
    b"PASS", b"APOP", b"AUTH", b"PASSWORD", b"AUTHX", b"APOPS", b"NOOP", b"USER", b"PAS",
    b"pass1", b"apop=", b"auth\xc3", b"X",
]  # fmt: skip
_ARGUMENT_TOKENS = [b"bob", b"x", b"PLAIN", b"c2VjcmV0", b"\xc3\xa9", b"=", b"\r", b"PASS"]


@st.composite
def flood_streams(draw: st.DrawFn) -> bytes:
    """A line repeated (a flood), in random case, with any separator bytes, lone CRs and
    CR, LF or CRLF endings, around other such lines, and maybe an AUTH and SASL lines."""

    def line() -> bytes:
        word = draw(st.sampled_from(_FLOOD_WORDS))
        flips = draw(st.lists(st.booleans(), min_size=len(word), max_size=len(word)))
        word = bytes(
            b ^ 0x20 if flip and 0x61 <= b | 0x20 <= 0x7A else b
            for b, flip in zip(word, flips, strict=True)
        )
        lead = b"".join(draw(st.lists(st.sampled_from(_EVERY_SEPARATOR), max_size=2)))
        glue = draw(st.sampled_from([b"", b"\r", b"1", *_EVERY_SEPARATOR]))
        rest = b"".join(
            draw(
                st.lists(
                    st.one_of(st.sampled_from(_EVERY_SEPARATOR), st.sampled_from(_ARGUMENT_TOKENS)),
                    max_size=5,
                )
            )
        )
        rest = glue + rest
        return lead + word + rest + draw(st.sampled_from([b"\r\n", b"\n", b"\r"]))

    flood = line() * draw(st.integers(min_value=1, max_value=12))
    stream = b"".join(line() for _ in range(draw(st.integers(0, 2)))) + flood
    stream += b"".join(line() for _ in range(draw(st.integers(0, 2))))
    if draw(st.booleans()):
        stream += b"AUTH PLAIN\r\n" + b"c2VjcmV0\r\n" * draw(st.integers(1, 3)) + b"STAT\r\n"
    return stream if stream.endswith(b"\n") else stream + b"\n"


def _masked_whole(stream: bytes, cut: int | None) -> bytes:
    """The stream through mask() (in two chunks when ``cut`` is given) or mask_bytewise()."""
    masker = SecretMasker()
    out = bytearray()
    if cut is None:
        out += masker.mask_bytewise(stream)
    else:
        out += masker.mask(stream[:cut])
        out += masker.mask(stream[cut:])
    masker.end_of_stream()
    masker.abandon()
    out += b"".join(data for _at, data in masker.take_released())
    return bytes(out)


def _line_reference(stream: bytes) -> bytes:
    """mask_line() of each line up to the first that opens an AUTH; every later line is
    held for a verdict that never comes, so it is masked whole."""
    out = bytearray()
    holding = False
    for physical in stream.split(b"\n")[:-1]:
        content, crlf = (physical[:-1], True) if physical.endswith(b"\r") else (physical, False)
        if holding:
            out += SECRET_PLACEHOLDER_BYTES if content else b""
        else:
            out += mask_line(content)
            holding = opens_auth(content)
        out += b"\r\n" if crlf else b"\n"
    return bytes(out)


@settings(max_examples=200, deadline=None)
@given(stream=flood_streams())
def test_floods_split_at_every_position_agree_with_the_byte_steps_and_the_line_rule(
    stream: bytes,
) -> None:
    """Whatever the case, separators, lone CRs and endings of a flood, and wherever a chunk
    boundary cuts it, mask() gives exactly what the byte steps and mask_line() give, with
    the C and the Python run masker alike (issue 10 item 8)."""
    expected = _masked_whole(stream, None)
    assert expected == _line_reference(stream)
    for name, run_masker in _RUN_MASKERS.items():
        with patch.object(_masking, "mask_run", run_masker):
            for cut in range(len(stream) + 1):
                assert _masked_whole(stream, cut) == expected, (name, cut)


@settings(max_examples=1000, deadline=None)
@given(
    stream=st.one_of(
        flood_streams(),
        st.lists(
            st.one_of(
                st.sampled_from(_FLOOD_WORDS + _ARGUMENT_TOKENS + _EVERY_SEPARATOR + [b"\n"]),
                st.binary(max_size=6),
            ),
            max_size=40,
        ).map(b"".join),
    ),
    pos=st.integers(min_value=0, max_value=8),
)
def test_the_c_run_masker_agrees_with_the_python_one(stream: bytes, pos: int) -> None:
    if "c" not in _RUN_MASKERS:
        pytest.skip("the C masker is not built (scripts/test.sh requires it)")
    pos = min(pos, len(stream))
    assert _RUN_MASKERS["c"](stream, pos) == _masklines.mask_run_python(stream, pos)
    assert _maskscan_c.mask_lines(stream[pos:]) == _masklines.mask_lines_python(stream[pos:])


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(
        st.sampled_from([b"STAT", b"c2VjcmV0", b"*", b"", b"LIST 1", b"x\r", b"A" * 300]),
        min_size=1,
        max_size=12,
    ),
    repeat=st.sampled_from([1, 2, 100, 300]),
    endings=st.sampled_from([b"\r\n", b"\n"]),
    verdicts=st.lists(st.sampled_from(list(Verdict)), min_size=1, max_size=5),
)
def test_held_lines_are_the_same_whole_chunk_or_byte_by_byte(
    lines: list[bytes], repeat: int, endings: bytes, verdicts: list[Verdict]
) -> None:
    """After an AUTH, a chunk of whole lines is held in one pass and overflowing lines
    are masked in one substitution; byte by byte each line is held on its own. Both hold,
    release and mask the same lines, whatever verdicts come (issue 10 item 8)."""
    block = b"".join(line + endings for line in lines) * repeat
    results = []
    for chunks in ([block], [block[i : i + 1] for i in range(len(block))]):
        masker = SecretMasker()
        masker.mask(b"AUTH PLAIN\r\n")
        for chunk in chunks:
            masker.mask(chunk)
        ends = [len(b"AUTH PLAIN\r\n") + i + 1 for i, byte in enumerate(block) if byte == 0x0A]
        for index, end in enumerate(ends[-len(verdicts) * 3 :: 3]):
            masker.resolve(end, verdicts[index % len(verdicts)])
        masker.abandon()
        results.append(b"".join(data for _at, data in masker.take_released()))
    assert results[0] == results[1]
    assert results[0].count(b"\n") == block.count(b"\n")


def test_the_c_run_masker_is_built_when_required() -> None:
    """scripts/test.sh sets POP3TAP_REQUIRE_C_SCANNER=1, so CI fails if the build fell back."""
    if os.environ.get("POP3TAP_REQUIRE_C_SCANNER") != "1":
        pytest.skip("POP3TAP_REQUIRE_C_SCANNER is not set")
    assert importlib.util.find_spec("pop3tap.protocol._maskscan_c") is not None
    # POP3TAP_PURE_PYTHON=1 (CI's pure run) must still choose the Python masker.
    assert ("python" if _pure.requested() else "c") == _masklines.MASKER


def test_the_c_maskers_reject_bad_arguments_and_take_edge_inputs() -> None:
    if "c" not in _RUN_MASKERS:
        pytest.skip("the C masker is not built (scripts/test.sh requires it)")
    from pop3tap.protocol._maskscan_c import mask_lines, mask_run

    for data, pos in ((b"x", 2), (b"x", -1)):
        with pytest.raises(ValueError):
            mask_run(data, pos)
    with pytest.raises(TypeError):
        mask_run("text", 0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        mask_lines(1)  # type: ignore[arg-type]
    for data in (b"", b"\n", b"PASS", b"\r", b"x", b"PASS\r", b"\r\r\n"):
        for pos in range(len(data) + 1):
            assert mask_run(data, pos) == _masklines.mask_run_python(data, pos)
        assert mask_lines(data) == _masklines.mask_lines_python(data)
