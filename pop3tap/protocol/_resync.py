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
  multi-line (RETR, TOP, LIST, UIDL, CAPA, LANG, XTND, AUTH), a barrier (STLS, AUTH), a
  login (PASS, APOP) or QUIT, found by a case-insensitive search anywhere in the bytes (a
  word that merely contains one, such as a user name, taints too: the search is
  conservative), or a lone CR (a server that ends lines there answers more lines than
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

#: Keywords after which the lines no longer answer one to one (see the module docstring).
_UNSAFE_VERBS = sorted(
    verb
    for verb, spec in COMMANDS.items()
    if spec.multiline is not Multiline.NEVER
    or spec.barrier is not Barrier.NONE
    or spec.login
    or spec.counter is Counter.QUIT
)
_UNSAFE = re.compile(rb"(?i)" + b"|".join(verb.encode() for verb in _UNSAFE_VERBS))
_KEYWORD_CARRY = max(len(verb) for verb in _UNSAFE_VERBS) - 1


def unsafe_to_count(data: bytes | bytearray) -> bool:
    """Whether client bytes hold a verb whose answer is not sure to be one line."""
    return _UNSAFE.search(data) is not None


class LostRun:
    """What is counted from the moment pairing was lost until it resumes."""

    __slots__ = (
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

    def _check(self, data: bytes, pos: int) -> None:
        if unsafe_to_count(data[pos:] if pos else data) or (
            self.tail and unsafe_to_count(self.tail + data[pos : pos + _KEYWORD_CARRY])
        ):
            self.tainted = True
            return
        crs = data.count(b"\r", pos)
        if crs or self.cr_at_edge:
            lone = crs - data.count(b"\r\n", pos) - data.endswith(b"\r")
            if self.cr_at_edge and data[pos] != 0x0A:
                lone += 1
            if lone:
                self.tainted = True
        self.cr_at_edge = data.endswith(b"\r")
        self.tail = data[max(pos, len(data) - _KEYWORD_CARRY) :]
