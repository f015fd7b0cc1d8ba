"""The words of the capture format: record types, keys, directions, event names, reasons.

Every string the format gives a meaning to is defined here once; writers, readers and
views use these names instead of repeating the literals, and
``tests/test_capture_format_doc.py`` checks that docs/capture-format.md lists exactly
these words, so the document cannot drift from the code.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from pop3tap.protocol._events import Direction

__all__ = [
    "DEFAULT_MAX_RECORD_BYTES",
    "FORMAT_VERSION",
    "MAGIC",
    "MAX_DATA_CHUNK",
    "RECORD_KEYS",
    "SUFFIX",
    "CloseReason",
    "Direction",
    "EventName",
    "RecordType",
    "Secrets",
]

#: Version of the record layout; independent of the pop3tap release number.
FORMAT_VERSION: Final = 1
#: Value of the header's ``magic`` field.
MAGIC: Final = "pop3tap-capture"
#: File name suffix of capture files.
SUFFIX: Final = ".p3cap"
#: Largest payload the writer puts in one data record; larger chunks are split.
MAX_DATA_CHUNK: Final = 4 * 1024 * 1024
#: Default reader limit on one record (must stay above MAX_DATA_CHUNK plus framing).
DEFAULT_MAX_RECORD_BYTES: Final = 16 * 1024 * 1024


class RecordType(StrEnum):
    """The ``type`` key of a record."""

    #: The first record: who talked to whom, when, with which options.
    HEADER = "header"
    #: Bytes seen on the wire in one direction.
    DATA = "data"
    #: A transport event (see :class:`EventName`).
    EVENT = "event"
    #: The last record of a session that ended normally.
    CLOSE = "close"


#: The keys of each record type, in the order the writer emits them (``data`` last in a
#: data record, so its prefix can be written before the payload without a copy).
RECORD_KEYS: Final[dict[RecordType, tuple[str, ...]]] = {
    RecordType.HEADER: (
        "type",
        "magic",
        "format",
        "pop3tap",
        "session",
        "started",
        "started_unix",
        "client",
        "listen",
        "upstream",
        "secrets",
        "options",
    ),
    RecordType.DATA: ("type", "t", "dir", "data"),
    RecordType.EVENT: ("type", "t", "name", "fields"),
    RecordType.CLOSE: ("type", "t", "reason", "summary"),
}


class Secrets(StrEnum):
    """The header's ``secrets`` key: whether PASS/APOP/SASL data reached the file."""

    #: Replaced by ``********`` in the ``c2s`` stream (the default).
    MASKED = "masked"
    #: Written as sent (the user opted in).
    KEPT = "kept"


class EventName(StrEnum):
    """The ``name`` of an event record; readers accept names they do not know."""

    #: One direction was closed cleanly (``{dir}``); its stream ends here.
    EOF = "eof"
    #: Closed by a reset (``{dir}``; without ``dir`` both directions ended).
    RESET = "reset"
    #: TLS is up on both legs; the data records after it are the decrypted plaintext.
    TLS = "tls"
    #: The TCP connection to the real server is up (``{local}``).
    UPSTREAM_CONNECTED = "upstream_connected"
    #: The real server could not be reached (``{upstream, error}``).
    UPSTREAM_CONNECT_FAILED = "upstream_connect_failed"
    #: A TLS handshake finished on one leg (``{leg, ...}`` version, cipher, names).
    TLS_HANDSHAKE = "tls_handshake"
    #: A TLS handshake failed on one leg (``{leg, reason}``).
    TLS_FAILED = "tls_failed"
    #: The client sent STLS and the relay passed it through (``{intercepted}``).
    STLS = "stls"
    #: The server did not answer STLS in time (``{timeout, dropped_c2s}``).
    STLS_TIMEOUT = "stls_timeout"
    #: Bytes sent after STLS before the handshake were dropped (``{c2s, s2c}``).
    STLS_INJECTION = "stls_injection"
    #: Sending to one side failed (``{dir, error}``).
    SEND_FAILED = "send_failed"
    #: The server sent no greeting in time (``{timeout}``).
    GREETING_TIMEOUT = "greeting_timeout"
    #: A fault will hit the answer to exchange ``seq`` (0: the greeting) (``{seq, spec}``).
    FAULT = "fault"
    #: That fault was dropped when the pairing was lost; replay ignores it (``{seq, spec}``).
    FAULT_DROPPED = "fault_dropped"
    #: A fault ended the session (``{seq, reason}``).
    FAULT_END = "fault_end"
    #: The capture starts inside a session (imported from a packet capture).
    MID_SESSION = "mid_session"
    #: The packet capture lost bytes of one direction here (``{dir}``).
    GAP = "gap"


class CloseReason(StrEnum):
    """The ``reason`` of a close record with a fixed meaning.

    The reason is free text for a person to read; these are the values a program may
    act on. Others carry a detail: ``TLS failed (<leg>): <why>``, ``server did not
    answer STLS in <n>s`` and the reason a fault gave.
    """

    #: The client ended the session first (an orderly close).
    CLIENT_CLOSED = "client closed"
    #: The server ended the session first (an orderly close).
    SERVER_CLOSED = "server closed"
    #: The client reset the connection.
    CLIENT_RESET = "client reset"
    #: The server reset the connection.
    SERVER_RESET = "server reset"
    #: Sending to the client failed.
    CLIENT_GONE = "client gone"
    #: Sending to the server failed.
    SERVER_GONE = "server gone"
    #: The session ended after QUIT was answered.
    QUIT = "quit"
    #: The program recording the session failed.
    ERROR = "error"
    #: The relay was shut down (a signal) while the session was open.
    SHUTDOWN = "shutdown"
    #: A second signal closed the session at once instead of letting it finish.
    SHUTDOWN_AT_ONCE = "shutdown (closed at once by a second signal)"
    #: The user left the console with a signal.
    TERMINATED = "terminated"
    #: The user left the console with Ctrl-C.
    INTERRUPTED = "interrupted"
    #: The real server could not be reached.
    UPSTREAM_UNREACHABLE = "upstream unreachable"
    #: The real server sent no greeting.
    NO_GREETING = "upstream sent no greeting"
    #: An imported packet capture ends before the session did.
    PCAP_ENDED = "the packet capture ends before the session did"
    #: The console session ended without an answered QUIT.
    NO_QUIT = "closed without QUIT"
    #: The session ended without a more precise reason being known.
    CLOSED = "closed"
    #: An older spelling of ``server closed``; readers treat it the same.
    SERVER_EOF = "server_eof"
    #: An older spelling of ``client closed``; readers treat it the same.
    CLIENT_EOF = "client_eof"
