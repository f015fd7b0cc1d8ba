"""One rule makes text safe for a terminal or a log line (pop3tap._text.printable).

Every place that shows peer text goes through it: the text views, the log's console view
(pop3tap._logfast), the ``-ERR`` lines and reports of replay (printable_command), and the
console's server lines (terminal_safe). Properties: nothing any of them shows is a
character ``str.isprintable()`` rejects (tabs only where the console keeps them), and the
escapes are well formed, so reading them back gives the text again wherever the text had
no backslash of its own (the log's quoted values escape backslashes too, and read back
whole).
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pop3tap._logfast import Pop3ConsoleRenderer, _console_value
from pop3tap._text import escape_char, printable
from pop3tap.console._render import terminal_safe
from pop3tap.protocol import printable_command
from pop3tap.protocol._server_role import printable_shown

#: Any code point, lone surrogates (undecodable bytes kept by ``surrogateescape``) too.
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=60)

_ESCAPE = re.compile(r"\\(?:x([0-9a-f]{2})|u([0-9a-f]{4})|U([0-9a-f]{8})|(.))", re.S)
_NAMED = {"t": "\t", "n": "\n", "r": "\r", "\\": "\\", '"': '"'}


def unescape(shown: str) -> str:
    """The escapes of :func:`escape_char` (and ``\\\\``, ``\\"``) read back."""

    def one(match: re.Match[str]) -> str:
        code = match.group(1) or match.group(2) or match.group(3)
        return chr(int(code, 16)) if code else _NAMED[match.group(4)]

    return _ESCAPE.sub(one, shown)


def shows_nothing_unprintable(shown: str, *, tabs: bool = False) -> bool:
    return all(c.isprintable() or (tabs and c == "\t") for c in shown)


@given(any_text)
def test_printable_leaves_no_control_character_and_reads_back(text: str) -> None:
    shown = printable(text)
    assert shows_nothing_unprintable(shown)
    if "\\" not in text:
        assert unescape(shown) == text


@given(any_text)
def test_the_console_keeps_tabs_and_nothing_else(text: str) -> None:
    shown = terminal_safe(text)
    assert shows_nothing_unprintable(shown, tabs=True)
    if "\\" not in text:
        assert unescape(shown) == text


@given(st.binary(max_size=60))
def test_the_console_shows_any_server_bytes_safely(data: bytes) -> None:
    assert shows_nothing_unprintable(terminal_safe(data), tabs=True)


@given(any_text)
def test_a_quoted_log_value_reads_back_whole(text: str) -> None:
    shown = _console_value(text)
    assert shows_nothing_unprintable(shown)
    if shown.startswith('"'):
        assert unescape(shown[1:-1]) == text
    else:
        assert shown == text


@given(any_text, any_text)
def test_the_console_log_view_shows_no_control_character(verb: str, args: str) -> None:
    renderer = Pop3ConsoleRenderer()
    for event in (
        {"event": "pop3.exchange", "verb": verb, "args": args, "first_line": args},
        {"event": "replay.no_match", "level": "warning", "command": args, "capture": verb},
        {"event": "session.close", "reason": args},
    ):
        assert shows_nothing_unprintable(renderer(None, "info", event))


@given(st.binary(max_size=300), st.booleans())
def test_a_client_line_in_an_err_line_is_printable(line: bytes, after_auth: bool) -> None:
    shown = printable_command(line, after_auth=after_auth)
    assert shows_nothing_unprintable(shown) and '"' not in shown


@given(any_text, any_text)
def test_a_shown_command_is_printable_and_bounded(verb: str, args: str) -> None:
    shown = printable_shown(verb, args)
    assert shows_nothing_unprintable(shown) and '"' not in shown
    assert len(shown) <= 40 + 1 + 120


@pytest.mark.parametrize(
    ("char", "escape"),
    [
        ("\x1b", "\\x1b"),
        ("\t", "\\t"),
        ("\x9b", "\\x9b"),  # 8-bit CSI
        ("\xa0", "\\xa0"),  # NBSP: not a space to every server
        ("\u200b", "\\u200b"),  # zero-width space
        ("\u202e", "\\u202e"),  # right-to-left override
        ("\u2028", "\\u2028"),
        ("\U000e0041", "\\U000e0041"),  # a tag character (format, invisible)
        ("\U0010ffff", "\\U0010ffff"),  # a non-character
    ],
)
def test_each_former_helper_now_writes_the_same_escape(char: str, escape: str) -> None:
    assert escape_char(char) == escape
    assert printable(f"a{char}b") == f"a{escape}b"
    assert printable_command(f"NOOP a{char}b".encode()) == f"NOOP a{escape}b"
    if char != "\t":
        assert terminal_safe(f"a{char}b") == f"a{escape}b"


def test_printable_text_is_left_alone() -> None:
    text = "+OK Grüße, 你好 — ready ½ \\x1b"
    assert printable(text) is text
    assert terminal_safe("a\tb") == "a\tb"
