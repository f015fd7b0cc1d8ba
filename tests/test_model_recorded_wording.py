"""The model server reuses a recorded server's wording as a template (``-ERR There's no
message {n}.``); that wording comes from a capture, which is hostile input. Braces in it
are text, never a format field: an answer must not raise, and must say what the recorded
server said, with only the message number (or size, or count) put in."""

from __future__ import annotations

import poplib
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_model import LOGIN, Client, _capture, store_from

from pop3tap.replay import replay_server

STAT = (b"STAT\r\n", b"+OK 2 90\r\n")
LISTING = (b"LIST\r\n", b"+OK 2 messages:\r\n1 40\r\n2 50\r\n.\r\n")


def _hostile_capture(directory: Path, no_message: bytes, dele: bytes) -> Path:
    """Message 9 does not exist and DELE 1 is answered: both with the given wording."""
    return _capture(
        directory,
        "eve",
        [
            LOGIN,
            STAT,
            LISTING,
            (b"RETR 9\r\n", b"-ERR " + no_message + b"\r\n"),
            (b"DELE 1\r\n", b"+OK " + dele + b"\r\n"),
        ],
    )


@pytest.mark.realpeer
def test_braces_in_recorded_wording_reach_poplib_as_text(tmp_path: Path) -> None:
    """Through the real replay server: a recorded ``{x}`` or a lone ``{`` used to raise
    inside the session (KeyError, ValueError) and drop the client's connection."""
    path = _hostile_capture(tmp_path, b"no message 9 {x} here {", b"message 1 {0} marked }")
    with replay_server(path, model=True) as server:
        client = poplib.POP3(server.host, server.port, timeout=30)
        client.user("eve")
        client.pass_("anything")
        with pytest.raises(poplib.error_proto) as refused:
            client.retr(7)
        assert refused.value.args[0] == b"-ERR no message 7 {x} here {"
        assert client.dele(2) == b"+OK message 2 {0} marked }"
        assert client.stat() == (1, 40)  # the session goes on
        client.quit()


#: Recorded wording: any text a status line may carry, braces and digits included.
_WORDING = st.text(alphabet=st.sampled_from("{}09 aZ!:[]%.x"), min_size=1, max_size=30).filter(
    lambda t: t == t.strip() and "  " not in t
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(no_message=_WORDING, dele=_WORDING)
def test_any_recorded_wording_is_reused_as_text(
    tmp_path_factory: pytest.TempPathFactory, no_message: str, dele: str
) -> None:
    """For every wording, the generated answer is the recorded one with the recorded
    message number (9, 1) replaced by the asked one; nothing else changes."""
    path = _hostile_capture(tmp_path_factory.mktemp("w"), no_message.encode(), dele.encode())
    client = Client(store_from([path]))
    client.login(b"eve")
    _ok, line, _body, _recorded = client.send(b"RETR 7")
    assert line == b"-ERR " + _renumber(no_message, "9", "7").encode()
    ok, line, _body, _recorded = client.send(b"DELE 2")
    assert ok and line == b"+OK " + _renumber(dele, "1", "2").encode()


def _renumber(text: str, old: str, new: str) -> str:
    """``text`` with its first whole-word ``old`` number replaced, as the model does."""
    return re.sub(rf"(?<![0-9]){old}(?![0-9])", new, text, count=1)
