"""Whole-line work of the client-stream masker, done by C-level searches and substitutions.

:class:`~pop3tap.protocol._masking.SecretMasker` steps through bytes in Python only where a
line's kind is still open at a chunk's edge. Everything a hostile client can repeat cheaply
(issue 10: a flood of ``PASS x`` lines, mixed-case or odd-separator variants, clear lines,
binary) is decided here, a chunk at a time, by the rule of
:func:`~pop3tap.protocol._commands.mask_line` written as regular expressions:

* :func:`mask_run` takes, from a line start, the run of line parts whose masking the
  line rule decides without any state: clear parts (a first word without a secret verb)
  up to their line end or lone CR, with or without a LF in the chunk, and whole lines
  whose first such part begins with PASS or APOP (that part decides the rest of the
  line, RFC 1939 §7), and returns them masked. An AUTH line
  ends the run: every line after one waits for the pairing's verdict (RFC 5034 §4), which
  the step machine and :mod:`._heldlines` handle.

It has two implementations with the same results, as the body scanner has
(:mod:`._bodyscan`): ``_maskscan_c`` (``_maskscan.c``, built when a C compiler is
present), one pass jumping from LF to LF with ``memchr``, and :func:`mask_run_python`, a
regular-expression match and substitution. A C extension was chosen because the
substitution costs about a microsecond of Python per masked line on the supported
Pythons (its template is expanded in Python before 3.12), so a flood of ``PASS x`` lines
would still run at a few MiB/s; ``POP3TAP_PURE_PYTHON=1`` forces the Python one.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from pop3tap import _pure
from pop3tap.protocol._commands import (
    SASL_KEYWORD,
    SECRET_PLACEHOLDER_BYTES,
    SECRET_VERBS,
    WORD_SEPARATORS,
)

_SEPARATOR_BYTES = bytes(sorted(WORD_SEPARATORS))
_SEP = b"[" + re.escape(_SEPARATOR_BYTES) + b"]"
#: A byte of a word: neither a separator nor a line end.
_WORD = b"[^" + re.escape(_SEPARATOR_BYTES) + b"\\r\\n]"
_LONE_CR = rb"\r(?!\n)"

#: Secret verbs the substitution handles: their line is decided by its first part. AUTH is
#: not among them: after it every line waits for a verdict (the step machine holds them).
_ONE_WORD = [verb for verb, words in SECRET_VERBS.items() if words == 1]
_TWO_WORDS = [verb for verb, words in SECRET_VERBS.items() if words == 2 and verb != SASL_KEYWORD]


def _either(verbs: list[bytes] | tuple[bytes, ...]) -> bytes:
    return b"(?i:" + b"|".join(re.escape(verb) for verb in verbs) + b")"


_ANY_VERB = _either(tuple(SECRET_VERBS))
_PASS = _either(_ONE_WORD)
_APOP = _either(_TWO_WORDS)
_PASS_OR_APOP = _either(_ONE_WORD + _TWO_WORDS)
#: A first word that begins with a secret verb followed by anything but a letter.
_VERB_HEAD = _ANY_VERB + b"(?![A-Za-z])"
#: A part of a line (up to a CR or LF) whose first word is no secret verb.
_CLEAR_PART = _SEP + b"*+(?!" + _VERB_HEAD + rb")[^\r\n]*+"

#: Parts of lines the line rule decides alone, one part at a time: a clear part up to its
#: line end or a lone CR (a CR at the chunk's end may be half of a CR LF: not yet), or a
#: part that begins with PASS or APOP, which decides the rest of its line, up to its LF.
#: Each byte is looked at once, whether or not the chunk holds a LF.
_DECIDED_RUN = re.compile(
    b"(?:"
    + _CLEAR_PART
    + rb"(?:\r(?=[^\n])|\r?\n)|"
    + _SEP
    + b"*+"
    + _PASS_OR_APOP
    + rb"(?![A-Za-z])[^\n]*+\n)++"
)

#: Where the secret of a PASS or APOP part begins (group 1 is what stays clear), the same
#: places as :func:`~pop3tap.protocol._commands._secret_start`: one separator after the
#: last clear word, right after a verb glued to a non-letter, or after a lone CR that ends
#: the part before its secret began. The secret runs to the line end, lone CRs included;
#: a CR right before the LF belongs to the line end (group 2).
_SECRET_IN_RUN = re.compile(
    rb"(?:^|(?<=[\r\n]))("
    + _SEP
    + b"*+(?:"
    + (_PASS + _SEP)
    + b"|"
    + (_PASS_OR_APOP + b"(?=" + _WORD + b")(?![A-Za-z])")
    + b"|"
    + (_APOP + _SEP + b"++" + _WORD + b"*+" + _SEP)
    + b"|"
    + (_PASS + _LONE_CR)
    + b"|"
    + (_APOP + b"(?:" + _SEP + b"++" + _WORD + b"*+)?" + _LONE_CR)
    + rb"))(?:[^\r\n]++|\r(?!\n))++(\r?\n)"
)
_SECRET_TEMPLATE = b"\\1" + SECRET_PLACEHOLDER_BYTES.replace(b"\\", b"\\\\") + b"\\2"

#: The end of a word (a separator or a line end), and the end of a run of separators.
WORD_END = re.compile(b"[" + re.escape(_SEPARATOR_BYTES) + rb"\r\n]")
SEPARATOR_RUN_END = re.compile(b"[^" + re.escape(_SEPARATOR_BYTES) + b"]")
#: The content of a line that masking replaces: everything before its LF except a CR right
#: before the LF (greedy, so one match per non-empty line).
_LINE_CONTENT = re.compile(rb"(?:[^\r\n]++|\r(?!\n))++")


def mask_lines_python(block: bytes) -> bytes:
    """Every line of ``block`` masked whole: its content (all but its LF and a CR right
    before that LF) becomes the placeholder, an empty line stays empty."""
    return _LINE_CONTENT.sub(SECRET_PLACEHOLDER_BYTES, block)


def mask_run_python(data: bytes, pos: int) -> tuple[bytes, int]:
    """The run of line parts from ``pos`` (a line start) that the line rule decides
    without state, masked, and where it ends (``pos``: an AUTH part, or a part whose end
    the chunk does not hold yet)."""
    match = _DECIDED_RUN.match(data, pos)
    if match is None:
        return b"", pos
    block = data[pos : match.end()]
    upper = block.upper()
    if all(verb not in upper for verb in _ONE_WORD + _TWO_WORDS):
        return block, match.end()
    return _SECRET_IN_RUN.sub(_SECRET_TEMPLATE, block), match.end()


#: ``mask_run(data, pos) -> (masked, end)``.
RunMasker = Callable[[bytes, int], tuple[bytes, int]]
#: ``mask_lines(block) -> masked``.
LinesMasker = Callable[[bytes], bytes]


def _load() -> tuple[RunMasker, LinesMasker, str]:
    if _pure.requested():
        return mask_run_python, mask_lines_python, "python"
    try:
        from pop3tap.protocol._maskscan_c import mask_lines as mask_lines_c
        from pop3tap.protocol._maskscan_c import mask_run as mask_run_c
    except ImportError:
        return mask_run_python, mask_lines_python, "python"
    return mask_run_c, mask_lines_c, "c"


mask_run, mask_lines, MASKER = _load()


def may_hold_secret(data: bytes) -> bool:
    """Whether a keyword of :data:`SECRET_VERBS` occurs anywhere, in any case."""
    upper = data.upper()
    return any(keyword in upper for keyword in SECRET_VERBS)


KEYWORDS = tuple(SECRET_VERBS)
#: Every upper-cased beginning of a keyword: a first word that is not one is clear.
KEYWORD_PREFIXES = frozenset(
    keyword[:length] for keyword in KEYWORDS for length in range(1, len(keyword) + 1)
)


#: A first word at a line boundary (a LF, or a CR: before a separator or a letter it is a
#: lone one) that begins with a secret keyword, in any case (ASCII letters only, as the
#: step machine folds them); and the same at the search's start.
_KEYWORD_AFTER_BOUNDARY = re.compile(rb"[\r\n]" + _SEP + b"*+" + _ANY_VERB)
_KEYWORD_AT_START = re.compile(_SEP + b"*+" + _ANY_VERB)


def next_keyword_line(data: bytes, pos: int) -> int:
    """Where the first line at or after ``pos`` (a line start) whose first word may begin
    with a secret keyword starts, or -1.

    One C-level search: a keyword counts only when nothing but word separators stands
    between it and a line boundary (``pos``, a LF or a CR), so keywords inside a line
    cost no Python step each (issue 10 item 8: ``x PASS`` lines by the thousand).
    """
    if _KEYWORD_AT_START.match(data, pos) is not None:
        return pos
    found = _KEYWORD_AFTER_BOUNDARY.search(data, pos)
    return -1 if found is None else found.start() + 1
