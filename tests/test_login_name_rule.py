"""The user a session names (USER's or APOP's first word) is read by one rule, the masker's
word rule: a client that separates ``APOP name digest`` with a tab (servers split on any C
blank) names the same user as one that uses a space, for ``show --user``, ``diff``, the
HTML view, ``export`` (which mailbox a UIDL belongs to) and lint."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
from handmade import MSG1, Step, retr_response, write_capture
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pop3tap.capture import read_capture
from pop3tap.cli import main
from pop3tap.export import find_messages
from pop3tap.protocol import WORD_SEPARATORS, login_name, mask_arguments

DIGEST = b"0123456789abcdef0123456789abcdef"


def _apop_session(blank: bytes, user: bytes = b"alice") -> list[Step]:
    return [
        ("s", b"+OK ready <1.2@x>\r\n"),
        ("c", b"APOP " + user + blank + DIGEST + b"\r\n"),
        ("s", b"+OK Logged in.\r\n"),
        ("c", b"UIDL 1\r\n"),
        ("s", b"+OK 1 uid-one\r\n"),
        ("c", b"RETR 1\r\n"),
        ("s", retr_response(MSG1)),
        ("c", b"QUIT\r\n"),
        ("s", b"+OK bye\r\n"),
    ]


@pytest.mark.parametrize("blank", [b" ", b"\t", b"\x0b"])
def test_show_user_finds_an_apop_session_whatever_separates_the_name(
    tmp_path: Path, blank: bytes
) -> None:
    path = write_capture(tmp_path, _apop_session(blank))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["show", "--user", "alice", str(path)]) == 0
    assert "APOP alice" in out.getvalue() and "RETR 1" in out.getvalue()
    (found,) = find_messages(read_capture(path))
    assert found.mailbox[1:] == ("user", "alice")


_BLANK = st.sampled_from(sorted(WORD_SEPARATORS)).map(lambda b: bytes([b]))
_NAME = st.text(alphabet="abcxyz019._-@", min_size=1, max_size=12)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=_NAME, blank=_BLANK, verb=st.sampled_from(["APOP", "USER"]))
def test_the_named_user_is_the_first_word_for_every_blank(
    name: str, blank: bytes, verb: str
) -> None:
    """What the views show of ``APOP name<blank>digest`` or ``USER name<blank>x`` names
    ``name`` (its first word by the masker's rule), never the mask or the rest."""
    args = mask_arguments(verb, name.encode() + blank + DIGEST)
    assert login_name(verb, args) == name
