"""A capture is hostile input: the commands it recorded reach a client's ``-ERR`` line and
the terminal only as printable text (pop3tap._text.printable, through printable_shown).

A recorded AUTH whose mechanism carries an 8-bit CSI and a right-to-left override is
played to a real client socket on 127.0.0.1; its SASL answer differs, so replay answers
the one ``-ERR`` line that names the recorded command. A recorded NOOP with an escape
sequence is never played, so it is named in the unplayed report.
"""

from __future__ import annotations

import socket
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from pop3tap.capture import CaptureWriter
from pop3tap.replay import replay_server, session_from_capture
from pop3tap.replay._matching import Accounting, Matcher, UnmatchedCommand, UnplayedExchange
from pop3tap.server import error_line
from tests.test_replay_pure import capture_of

#: A mechanism word with no ASCII separator in it: CSI (U+009B), then RLO (U+202E).
HOSTILE_AUTH = b"AUTH X\xc2\x9b2J\xe2\x80\xaeevil"
#: An OSC title change and a bell inside a command's arguments.
HOSTILE_NOOP = b"NOOP x\x1b]0;owned\x07y"


def hostile_capture(directory: Path) -> Path:
    writer = CaptureWriter.create(
        directory,
        session_id="hostile",
        header_fields={
            "client": "127.0.0.1:40000",
            "upstream": "127.0.0.1:110",
            "listen": "",
            "secrets": "kept",
        },
    )
    t = 0.001
    turns = [
        (b"", b"+OK hostile capture\r\n"),
        (HOSTILE_NOOP + b"\r\n", b"+OK\r\n"),  # before the AUTH, so shown unmasked
        (HOSTILE_AUTH + b"\r\n", b"+ \r\n"),
        (b"dGVzdA==\r\n", b"+OK logged in\r\n"),
        (b"QUIT\r\n", b"+OK bye\r\n"),
    ]
    for client, server in turns:
        if client:
            t += 0.001
            writer.write_data("c2s", t, client)
        t += 0.001
        writer.write_data("s2c", t, server)
    writer.close(t, "server closed")
    return writer.path


def readline(sock: socket.socket) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        chunk = sock.recv(1)
        assert chunk, f"connection closed after {line!r}"
        line += chunk
    return line


def printable_line(line: bytes) -> bool:
    return line.endswith(b"\r\n") and line[:-2].decode("utf-8").isprintable()


def test_a_recorded_auth_reaches_the_err_line_only_printable(tmp_path: Path) -> None:
    path = hostile_capture(tmp_path)
    with replay_server(path) as server, socket.create_connection(
        (server.host, server.port), timeout=10
    ) as sock:
        assert readline(sock) == b"+OK hostile capture\r\n"
        sock.sendall(HOSTILE_AUTH + b"\r\n")
        assert readline(sock) == b"+ \r\n"
        sock.sendall(b"d3Jvbmc=\r\n")  # not the recorded answer
        err = readline(sock)
    assert err.startswith(b"-ERR ") and b"SASL answer" in err
    assert printable_line(err), err
    assert "AUTH X\\x9b2J\\u202eevil" in err.decode()
    report = server.report()
    assert "NOOP x\\x1b]0;owned\\x07y" in report
    assert report.replace("\n", "").isprintable(), report
    assert all(str(u).isprintable() for u in [*server.unplayed, *server.unmatched])


hostile_bytes = st.binary(min_size=1, max_size=80).map(
    lambda b: b.replace(b"\r", b"").replace(b"\n", b"")
)


@settings(max_examples=200, deadline=None)
@given(hostile_bytes, st.text(max_size=20), st.booleans())
def test_any_recorded_command_is_shown_printable(args: bytes, name: str, auth: bool) -> None:
    line = (b"AUTH X" if auth else b"NOOP ") + args
    turns = [
        ("s2c", b"+OK hi\r\n"),
        ("c2s", line + b"\r\n"),
        ("s2c", b"+ \r\n+OK\r\n" if auth else b"+OK\r\n"),
    ]
    session = session_from_capture(capture_of(turns, secrets="kept"))
    accounting = Accounting([session])
    matcher = Matcher(accounting, 0, mode="default", listen_tls=False)
    shown = [ex.command for ex in session.exchanges]
    shown += [str(u) for u in accounting.unplayed()] + matcher.unplayed()
    shown.append(str(UnplayedExchange(name, 1, session.exchanges[0].command)))
    shown.append(str(UnmatchedCommand(name, "NOOP", (session.exchanges[0].command,))))
    assert all(text.isprintable() for text in shown), shown
    for ex in session.exchanges:
        err = error_line("pop3tap", f'no recorded response for "{ex.command}" (SASL answer)')
        assert printable_line(err) and err.count(b'"') == 2, err
