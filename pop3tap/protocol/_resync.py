"""Counting while pairing is lost, and the point where it may safely resume.

Past the pending bounds (a command flood) the observer gives up pairing and only counts
bytes (:mod:`._pending`). It may pick up again only where the next client line and the
next server line are sure to belong together. That is safe when every command since the
loss has exactly one one-line answer: then the server has answered everything once it has
sent as many lines as the client sent commands.

So, with C-level work only (``bytes.count``, one regex search per chunk):

* the client's lines (LFs) and the server's lines (LFs) are counted from the loss, the
  commands still unanswered at the loss included;
* the run is *tainted* for good when any command since (or pending at) the loss may get
  more than one line, or may change what the lines mean: a verb whose answer can be
  multi-line (RETR, TOP, CAPA, XTND, AUTH; LIST, UIDL and LANG without an argument), a
  barrier (STLS, AUTH), a login (PASS, APOP) or QUIT, found by one case-insensitive search
  per chunk (a word that merely contains one, such as a user name, taints too: the search
  is conservative), or a lone CR (a server that ends lines there answers more lines than
  the client sent LFs), or a body open at the loss;
* pairing resumes when the client starts a new line while both directions sit at a line
  boundary, the counts are equal and the run is not tainted. Resuming at the start of a
  client chunk, never in the middle of a server chunk, keeps every event of the lost run
  out of the feed that completed it.

Why not more: a body line that is ``+OK`` or ``-ERR`` (any mail may hold one) looks like
an answer, so counting status lines across a RETR resumes inside the body; only the
command table says which answers have bodies, and the commands themselves are what was
given up. A server that answers nothing to some line (an empty line, for one) or sends an
unsolicited line keeps the counts apart, and pairing stays lost: the safe failure.
Masking never depends on any of this (:mod:`._masking` runs on every byte regardless).
"""

from __future__ import annotations

import re

from pop3tap.protocol._commands import COMMANDS, Barrier, Counter, Multiline
from pop3tap.protocol._state import SessionPhase

#: Keywords after which the lines no longer answer one to one (see the module docstring):
#: anywhere for most, and at the end of a line (no argument) for those whose answer has a
#: body only then, such as LIST (RFC 1939 §5). The end of the bytes searched counts as
#: the end of a line, so a keyword cut off there taints (the search is conservative).
_UNSAFE_ANYWHERE = sorted(
    verb
    for verb, spec in COMMANDS.items()
    if spec.multiline not in (Multiline.NEVER, Multiline.WITHOUT_ARGUMENT)
    or spec.barrier is not Barrier.NONE
    or spec.login
    or spec.counter is Counter.QUIT
)
_UNSAFE_WITHOUT_ARGUMENT = sorted(
    verb
    for verb, spec in COMMANDS.items()
    if spec.multiline is Multiline.WITHOUT_ARGUMENT and verb not in _UNSAFE_ANYWHERE
)
_SEPARATORS = rb"[\x00-\x09\x0b\x0c\x0e-\x20\x7f]*"
_ANYWHERE = b"|".join(verb.encode() for verb in _UNSAFE_ANYWHERE)
_BARE = b"(?:" + b"|".join(verb.encode() for verb in _UNSAFE_WITHOUT_ARGUMENT) + b")" + _SEPARATORS
#: An unsafe verb inside the bytes (a bare one followed by a line end).
_UNSAFE = re.compile(rb"(?i)" + _ANYWHERE + b"|" + _BARE + rb"[\r\n]")
#: The same where the bytes end may cut a line: their end counts as a line end.
_UNSAFE_AT_EDGE = re.compile(rb"(?i)" + _ANYWHERE + b"|" + _BARE + rb"(?:[\r\n]|\Z)")
#: The bytes end with a bare verb (and separators): the next bytes say whether it ends there.
_BARE_AT_END = re.compile(rb"(?i)" + _BARE + rb"\Z")
_SEPARATOR_RUN = re.compile(_SEPARATORS)
#: Bytes of a chunk kept to find a keyword that straddles two chunks.
_KEYWORD_CARRY = max(len(verb) for verb in COMMANDS) - 1


def unsafe_to_count(data: bytes | bytearray) -> bool:
    """Whether complete client lines hold a verb whose answer is not sure to be one line."""
    return _UNSAFE.search(data) is not None


class LostRun:
    """What is counted from the moment pairing was lost until it resumes."""

    __slots__ = (
        "bare_verb_open",
        "client_at_line_start",
        "client_lines",
        "cr_at_edge",
        "phase",
        "server_at_line_start",
        "server_lines",
        "tail",
        "tainted",
    )

    def __init__(
        self,
        phase: SessionPhase,
        *,
        outstanding: int,
        tainted: bool,
        client_line_open: bool,
        server_line_open: bool,
    ) -> None:
        #: The phase to return to.
        self.phase = phase
        #: Client lines sent (commands still unanswered at the loss included).
        self.client_lines = outstanding
        #: Server lines sent since the loss.
        self.server_lines = 0
        self.tainted = tainted
        self.client_at_line_start = not client_line_open
        self.server_at_line_start = not server_line_open
        #: The last bytes of the previous client chunk (a keyword may straddle chunks).
        self.tail = b""
        self.cr_at_edge = False
        #: The last chunk ended in a verb whose answer has a body without an argument.
        self.bare_verb_open = False

    def client_bytes(self, data: bytes, pos: int = 0) -> None:
        """Count client bytes; taint the run if they may break one-line answers."""
        if pos >= len(data):
            return
        if not self.tainted:
            self._check(data, pos)
        self.client_lines += data.count(b"\n", pos)
        self.client_at_line_start = data.endswith(b"\n")

    def server_bytes(self, data: bytes, pos: int = 0) -> None:
        """Count server bytes."""
        if pos >= len(data):
            return
        self.server_lines += data.count(b"\n", pos)
        self.server_at_line_start = data.endswith(b"\n")

    def may_resume(self) -> bool:
        """Both directions at a line start, every command answered, nothing unsafe seen."""
        return (
            not self.tainted
            and self.client_at_line_start
            and self.server_at_line_start
            and self.client_lines == self.server_lines
        )

    def line_open_at_loss(self, kept: bytes | bytearray) -> None:
        """The client line cut by the loss began with ``kept``: check it as a chunk."""
        if kept:
            self._check(bytes(kept), 0)

    def _check(self, data: bytes, pos: int) -> None:
        size = len(data)
        if self.bare_verb_open:
            # The last chunk ended in a bare LIST (or the like): does its line end here?
            gap = _SEPARATOR_RUN.match(data, pos)
            assert gap is not None  # the pattern matches the empty string
            if gap.end() < size:
                self.bare_verb_open = False
                if data[gap.end()] in b"\r\n":
                    self.tainted = True
                    return
        if _UNSAFE.search(data, pos) is not None or self._straddles(data, pos):
            self.tainted = True
            return
        if _BARE_AT_END.search(data, pos) is not None:
            self.bare_verb_open = True
        crs = data.count(b"\r", pos)
        if crs or self.cr_at_edge:
            lone = crs - data.count(b"\r\n", pos) - data.endswith(b"\r")
            if self.cr_at_edge and data[pos] != 0x0A:
                lone += 1
            if lone:
                self.tainted = True
        self.cr_at_edge = data.endswith(b"\r")
        self.tail = (self.tail + data[max(pos, size - _KEYWORD_CARRY) :])[-_KEYWORD_CARRY:]

    def _straddles(self, data: bytes, pos: int) -> bool:
        """An unsafe verb begins in the last chunk and ends in this one."""
        if not self.tail:
            return False
        window_end = pos + _KEYWORD_CARRY + 3
        window = self.tail + data[pos:window_end]
        if _UNSAFE.search(window) is not None:
            return True
        bare = _BARE_AT_END.search(window)
        if bare is None or bare.start() >= len(self.tail):
            return False  # a verb wholly in this chunk is the chunk's own search's
        if window_end < len(data):
            return True  # separators run past the window: assume the line ends there
        self.bare_verb_open = True
        return False
