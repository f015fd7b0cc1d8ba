"""The server role: what a POP3 server reads from its client, without I/O.

Theory of operation
-------------------
:class:`SessionObserver` watches both streams of a session it takes no part in. A fake
server (``pop3tap replay``, and every later one) *is* one side, so it knows what it answered
and needs the other half: a reader of the client's bytes, as h11's ``Connection`` is for one
role. Feed it what the client sent with :meth:`ClientReader.receive_data` and
:meth:`~ClientReader.receive_eof`, then pull events with :meth:`~ClientReader.next_event`
until it returns :data:`NEED_DATA`:

* Lines end at LF and one CR before it is dropped (RFC 1939 §3 asks for CRLF; a bare LF is
  accepted, as by the observer and most servers). A lone CR stays inside the line, where
  :func:`~pop3tap.protocol.describe_command` masks what follows it.
* A line holds at most ``max_line`` bytes, its ending included (RFC 2449 §4 allows 255 for a
  command; SASL lines are longer, RFC 5034 §4). A longer one ends the reading with
  :class:`LineTooLong`, so the buffer never holds more than ``max_line`` bytes plus one
  received chunk, whatever the client sends.
* A client line is a :class:`Command` unless the server just sent a ``+`` continuation and
  said so with :meth:`~ClientReader.expect_sasl`: then it is the client's :class:`SaslLine`
  (RFC 5034 §4), which is never a command and never shown, whatever it looks like.
* After a line holding AUTH (as the capture masker classifies it,
  :func:`~pop3tap.protocol.opens_auth`) every later command carries ``after_auth``: it may
  be SASL data the server did not ask for, so it is shown only through
  :func:`~pop3tap.protocol.printable_command` (see :attr:`Command.shown`).
* Once the server has answered STLS with ``+OK`` it calls :meth:`~ClientReader.start_tls`.
  Bytes already received past the STLS line, and every byte before the first TLS record
  (content type 22, RFC 8446 §5.1), are plaintext injected after STLS (RFC 2595 §4; the
  CVE-2011-0411 class): they are counted in :class:`PlaintextAfterStls` and dropped, never
  answered. From the first TLS byte on, :class:`TlsData` hands the raw bytes to the TLS
  layer; :meth:`~ClientReader.tls_established` resumes line reading on the decrypted stream.
* At the end of input a last line without LF still counts (its trailing CRs dropped), then
  :class:`EndOfInput` comes, and again on every later call.
"""

from __future__ import annotations

import base64
import binascii
import enum
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from pop3tap._text import printable
from pop3tap.protocol._commands import (
    SECRET_PLACEHOLDER,
    Credential,
    decode_text,
    describe_command,
    is_known_command,
    opens_auth,
    spec_of,
    split_command,
)
from pop3tap.protocol._values import rebuild_by_fields

#: The longest client line read by default, line ending included.
DEFAULT_MAX_LINE: Final = 8192
#: Plaintext dropped while waiting for the ClientHello after STLS before giving up.
DEFAULT_MAX_INJECTED: Final = 64 * 1024
#: The first byte of a TLS handshake record (RFC 8446 §5.1, content type 22).
TLS_HANDSHAKE_RECORD: Final = 0x16


def _bounded(text: str, limit: int) -> str:
    """Printable (:func:`pop3tap._text.printable`), quote-free, bounded text."""
    shown = printable(text).replace('"', "'")
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def printable_shown(verb: str, args: str) -> str:
    """A command as :func:`describe_command` shows it, made printable and bounded for the
    one ``-ERR`` line a fake server answers (RFC 1939 §3), its logs and its reports:
    unprintable characters are escaped (pop3tap's one rule, :func:`pop3tap._text.
    printable`), double quotes become single ones, the keyword is cut at 40 characters
    and the arguments at 120."""
    return f"{_bounded(verb, 40)} {_bounded(args, 120)}".rstrip()


def printable_command(line: bytes, *, after_auth: bool = False) -> str:
    """:func:`shown_command` made printable and bounded (:func:`printable_shown`); after
    an AUTH, a line that is not a known command is the placeholder (RFC 5034 §4)."""
    if after_auth and not is_known_command(line):
        return SECRET_PLACEHOLDER
    return printable_shown(*describe_command(line))


class Command(NamedTuple):
    """A client line read as a command (RFC 1939 §3).

    A named tuple, as :class:`SaslLine`: one is made for every client line, so it is cheap.
    """

    #: The line without its ending.
    line: bytes
    #: The keyword, upper-cased (:func:`~pop3tap.protocol.split_command`).
    verb: str
    #: The argument bytes as sent.
    args: bytes
    #: A line holding AUTH came earlier: this one may be SASL data (RFC 5034 §4).
    after_auth: bool

    @property
    def shown(self) -> str:
        """The line as logs and ``-ERR`` lines may show it: secrets and possible SASL
        data masked, printable and bounded (:func:`~pop3tap.protocol.printable_command`)."""
        return printable_command(self.line, after_auth=self.after_auth)


class SaslLine(NamedTuple):
    """The client's answer to a ``+`` continuation (RFC 5034 §4): secret, never shown."""

    #: The line without its ending.
    line: bytes


@dataclass(frozen=True, slots=True)
class LineTooLong:
    """A line went past the limit; nothing more is read."""

    #: The limit, line ending included.
    limit: int

    def __reduce__(self) -> tuple[type[Any], tuple[object, ...]]:
        """Rebuilt through the constructor, in both builds (see :mod:`._values`)."""
        return rebuild_by_fields(self)


@dataclass(frozen=True, slots=True)
class PlaintextAfterStls:
    """Client bytes sent after STLS and before TLS started (RFC 2595 §4): dropped."""

    #: Bytes dropped since the last such event.
    size: int
    #: Bytes dropped since :meth:`ClientReader.start_tls`.
    total: int
    #: More than ``max_injected`` bytes came without a TLS record: give up on the client.
    overflow: bool

    def __reduce__(self) -> tuple[type[Any], tuple[object, ...]]:
        """Rebuilt through the constructor, in both builds (see :mod:`._values`)."""
        return rebuild_by_fields(self)


@dataclass(frozen=True, slots=True)
class TlsData:
    """Raw client bytes that belong to the TLS layer (from the first handshake record)."""

    data: bytes

    def __reduce__(self) -> tuple[type[Any], tuple[object, ...]]:
        """Rebuilt through the constructor, in both builds (see :mod:`._values`)."""
        return rebuild_by_fields(self)


@dataclass(frozen=True, slots=True)
class EndOfInput:
    """The client ended its stream and every line it sent was read."""

    def __reduce__(self) -> tuple[type[Any], tuple[object, ...]]:
        """Rebuilt through the constructor, in both builds (see :mod:`._values`)."""
        return rebuild_by_fields(self)


@dataclass(frozen=True, slots=True)
class NeedData:
    """Nothing to read until more bytes (or the end of input) arrive."""

    def __reduce__(self) -> str:
        """Pickled and copied as the one :data:`NEED_DATA` (callers compare with ``is``)."""
        return "NEED_DATA"


#: What :meth:`ClientReader.next_event` returns when it needs more bytes.
NEED_DATA: Final = NeedData()

ClientEvent = Command | SaslLine | LineTooLong | PlaintextAfterStls | TlsData | EndOfInput


class ReaderPhase(enum.Enum):
    """What the client's next bytes are."""

    #: Command lines (RFC 1939 §3).
    COMMANDS = "commands"
    #: One SASL answer line, then commands again (RFC 5034 §4).
    SASL = "sasl"
    #: STLS was accepted: plaintext until the first TLS record is dropped (RFC 2595 §4).
    AWAIT_TLS = "await_tls"
    #: TLS records, for the TLS layer, until :meth:`ClientReader.tls_established`.
    TLS = "tls"
    #: The input ended, or a line was too long: nothing more comes out.
    ENDED = "ended"


_COMMANDS = ReaderPhase.COMMANDS
_SASL = ReaderPhase.SASL
_AWAIT_TLS = ReaderPhase.AWAIT_TLS
_TLS = ReaderPhase.TLS
_ENDED = ReaderPhase.ENDED


class ClientReader:
    """Client bytes in, :data:`ClientEvent` values out (see the module docstring)."""

    def __init__(
        self, *, max_line: int = DEFAULT_MAX_LINE, max_injected: int = DEFAULT_MAX_INJECTED
    ) -> None:
        self.max_line = max_line
        self.max_injected = max_injected
        self._phase = ReaderPhase.COMMANDS
        self._buffer = bytearray()
        #: Bytes of the buffer already searched for a LF.
        self._scanned = 0
        self._eof = False
        self._auth_seen = False
        #: Injected plaintext: dropped since start_tls, not yet reported, dropped while waiting.
        self._injected = 0
        self._unreported = 0
        self._waited = 0
        self._overflow = False
        self._tls_bytes = bytearray()

    @property
    def phase(self) -> ReaderPhase:
        """What the next bytes are read as."""
        return self._phase

    @property
    def after_auth(self) -> bool:
        """A command line holding AUTH was read: later lines may be SASL data."""
        return self._auth_seen

    @property
    def injected(self) -> int:
        """Plaintext bytes dropped since the last :meth:`start_tls`."""
        return self._injected

    @property
    def buffered(self) -> int:
        """Client bytes received and not yet read as a line."""
        return len(self._buffer)

    def receive_data(self, data: bytes) -> None:
        """Bytes the client sent, in any chunking."""
        phase = self._phase
        if phase is _COMMANDS or phase is _SASL:
            self._buffer += data
        elif phase is _AWAIT_TLS:
            self._drop_until_tls(data)
        elif phase is _TLS:
            self._tls_bytes += data

    def receive_eof(self) -> None:
        """The client ended its stream."""
        self._eof = True

    def expect_sasl(self) -> None:
        """The server sent a ``+`` continuation: the next line is a SASL answer."""
        if self._phase is ReaderPhase.COMMANDS:
            self._phase = ReaderPhase.SASL

    def start_tls(self) -> None:
        """The server answered STLS with ``+OK`` (RFC 2595 §4): what follows is TLS.

        Bytes already received past the STLS line are read as if they came now, so the
        events do not depend on how the client's bytes were split: plaintext before a TLS
        record is injected, a ClientHello sent right behind the STLS line goes to TLS.
        """
        if self._phase is ReaderPhase.ENDED:
            return
        self._phase = ReaderPhase.AWAIT_TLS
        self._injected = self._unreported = self._waited = 0
        self._overflow = False
        buffered = bytes(self._buffer)
        self._buffer.clear()
        self._scanned = 0
        self._drop_until_tls(buffered)
        # What was already received counts as injected, not against the wait's bound.
        self._waited = 0
        self._overflow = False

    def tls_established(self) -> None:
        """TLS is up: the bytes fed from now on are the decrypted client stream."""
        if self._phase is ReaderPhase.ENDED:
            return
        self._phase = ReaderPhase.COMMANDS
        self._tls_bytes.clear()
        self._buffer.clear()
        self._scanned = 0
        self._eof = False

    def next_event(self) -> ClientEvent | NeedData:
        """The next thing the client sent, or :data:`NEED_DATA`."""
        phase = self._phase
        if phase is _COMMANDS or phase is _SASL:
            line = self._next_line()
            return self._classify(line) if isinstance(line, bytes) else line
        if phase is _ENDED:
            return EndOfInput()
        return self._next_tls_event()

    def _next_line(self) -> bytes | LineTooLong | EndOfInput | NeedData:
        buffer = self._buffer
        newline = buffer.find(b"\n", self._scanned)
        if newline >= 0:
            if newline + 1 > self.max_line:
                return self._too_long()
            line = bytes(buffer[:newline])
            del buffer[: newline + 1]
            self._scanned = 0
            return line[:-1] if line.endswith(b"\r") else line
        self._scanned = len(buffer)
        if self._scanned > self.max_line:
            return self._too_long()
        if not self._eof:
            return NEED_DATA
        if buffer:
            line = bytes(buffer).rstrip(b"\r")
            buffer.clear()
            self._scanned = 0
            return line
        self._phase = ReaderPhase.ENDED
        return EndOfInput()

    def _too_long(self) -> LineTooLong:
        self._phase = ReaderPhase.ENDED
        self._buffer.clear()
        self._scanned = 0
        return LineTooLong(self.max_line)

    def _classify(self, line: bytes) -> Command | SaslLine:
        if self._phase is _SASL:
            self._phase = _COMMANDS
            return SaslLine(line)
        verb, args = split_command(line)
        after_auth = self._auth_seen
        if not after_auth:
            self._auth_seen = opens_auth(line)
        return Command(line, verb, args, after_auth)

    def _drop_until_tls(self, data: bytes) -> None:
        start = data.find(TLS_HANDSHAKE_RECORD)
        dropped = len(data) if start < 0 else start
        self._injected += dropped
        self._unreported += dropped
        self._waited += dropped
        if start < 0:
            self._overflow = self._overflow or self._waited > self.max_injected
            return
        self._phase = ReaderPhase.TLS
        self._tls_bytes += data[start:]

    def _next_tls_event(self) -> PlaintextAfterStls | TlsData | EndOfInput | NeedData:
        if self._unreported or self._overflow:
            size, self._unreported = self._unreported, 0
            overflow, self._overflow = self._overflow, False
            if overflow:
                self._phase = ReaderPhase.ENDED
            return PlaintextAfterStls(size, self._injected, overflow)
        if self._tls_bytes:
            data = bytes(self._tls_bytes)
            self._tls_bytes.clear()
            return TlsData(data)
        if self._eof:
            self._phase = ReaderPhase.ENDED
            return EndOfInput()
        return NEED_DATA


def sasl_user(mechanism: str, answer: bytes) -> str | None:
    """The user a first SASL answer names: PLAIN's authentication identity (RFC 4616 §2)
    or LOGIN's user name (draft-murchison-sasl-login); None for others or bad base64."""
    try:
        decoded = base64.b64decode(answer.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    if mechanism == "PLAIN":
        parts = decoded.split(b"\0")
        return decode_text(parts[1]) if len(parts) == 3 else None
    if mechanism == "LOGIN":
        return decode_text(decoded) or None
    return None


def login_identity(
    verb: str, args: bytes, first_sasl_answer: bytes | None = None
) -> tuple[str | None, str | None] | None:
    """``(user, SASL mechanism)`` a login command names, or None for any other command.

    Read from the command table: USER names the user with its whole argument, APOP with
    its first word (RFC 1939 §7); AUTH (``Credential.SASL``) names a
    mechanism (RFC 5034 §4) and, through its initial response or the first SASL answer,
    perhaps a user (:func:`sasl_user`). An AUTH without a mechanism is no login. Names are
    decoded as views show them (:func:`~pop3tap.protocol.decode_text`: bytes that are not
    UTF-8 become ``\\xNN``), so two names that differ in such bytes stay apart.
    """
    spec = spec_of(verb)
    if spec.credential is Credential.USER_NAME:  # USER: the whole argument
        return (decode_text(args) if args else None), None
    if spec.names_user:  # APOP: its first word
        words = args.split(None, 1)
        return (decode_text(words[0]) if words else None), None
    if spec.credential is not Credential.SASL:
        return None
    parts = args.split(None, 1)
    if not parts:
        return None
    mechanism = parts[0].decode("ascii", "replace").upper()
    answer = parts[1] if len(parts) == 2 else first_sasl_answer
    return (None if answer is None else sasl_user(mechanism, answer)), mechanism
