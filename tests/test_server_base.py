"""The one ``-ERR`` line pop3tap writes in a peer's place, for the relay and for replay."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pop3tap.relay._session import ERR_PREFIX as RELAY_PREFIX
from pop3tap.replay._connection import ERR_PREFIX as REPLAY_PREFIX
from pop3tap.server import error_line

PREFIXES = [RELAY_PREFIX, REPLAY_PREFIX]


def test_the_prefixes_are_the_ones_clients_see() -> None:
    assert PREFIXES == ["[SYS/TEMP] pop3tap", "pop3tap replay"]


@pytest.mark.parametrize("prefix", PREFIXES)
def test_undecodable_bytes_become_question_marks_on_one_line(prefix: str) -> None:
    # A host name or path read with surrogateescape (PEP 383) holds lone surrogates.
    text = b"no route to h\xf6st\r\nUSER x".decode("utf-8", "surrogateescape")
    assert error_line(prefix, text) == f"-ERR {prefix}: no route to h?st  USER x\r\n".encode()


@pytest.mark.parametrize("prefix", PREFIXES)
def test_encodable_text_is_sent_as_utf8_unchanged(prefix: str) -> None:
    line = error_line(prefix, "Verbindung zu mäil.example abgelehnt")
    assert line == f"-ERR {prefix}: Verbindung zu mäil.example abgelehnt\r\n".encode()


@pytest.mark.parametrize("prefix", PREFIXES)
@given(text=st.text())
def test_any_text_gives_exactly_one_readable_line(prefix: str, text: str) -> None:
    line = error_line(prefix, text)
    assert line.startswith(f"-ERR {prefix}: ".encode())
    assert line.endswith(b"\r\n")
    assert b"\r" not in line[:-2] and b"\n" not in line[:-2]
    decoded = line.decode("utf-8")  # never an escape a client would show as \udcxx
    assert "\\udc" not in decoded or "\\udc" in text
