"""The POP3 command table: every rule that depends on the verb, in one place.

:data:`COMMANDS` maps each keyword pop3tap knows to a :class:`CommandSpec`: whether a
``+OK`` opens a multi-line body, where a secret sits in the arguments, whether later client
lines are held back behind it (STLS, ``AUTH mechanism``), whether a ``+OK`` logs the user
in, which summary counter it moves, the shape of valid arguments, the RFC 1939 state it
belongs to, whether it names a message, what credential it carries, what its answer
depends on and whether it ends the session. The observer's pairing, the masker, the
summary, replay, lint, the console, check and pop3tap.testing all read this table (through
:func:`spec_of` and the query functions below); no other module keeps a verb's rules.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

# The table's words (._commandspec) and what a server line says (._replies) are
# re-exported here for the core's modules.
from pop3tap.protocol._commandspec import AnswerSource as AnswerSource
from pop3tap.protocol._commandspec import Barrier as Barrier
from pop3tap.protocol._commandspec import CommandSpec as CommandSpec
from pop3tap.protocol._commandspec import Counter as Counter
from pop3tap.protocol._commandspec import Credential as Credential
from pop3tap.protocol._commandspec import Multiline as Multiline
from pop3tap.protocol._commandspec import Pop3State as Pop3State
from pop3tap.protocol._replies import decode_text as decode_text
from pop3tap.protocol._replies import find_apop_timestamp as find_apop_timestamp
from pop3tap.protocol._replies import find_resp_code as find_resp_code
from pop3tap.protocol._replies import parse_status as parse_status

#: Mask that replaces secret bytes in logs and captures.
SECRET_PLACEHOLDER = "********"
SECRET_PLACEHOLDER_BYTES = SECRET_PLACEHOLDER.encode()


_NUMBER = rb"[0-9]{1,10}"
_WORD = rb"[\x21-\x7e\x80-\xff]+"
_TEXT = rb"[\x21-\x7e\x80-\xff][\x20-\x7e\x80-\xff]*"
_BLANK = rb"[ \t]+"


def _spec(verb: str, arguments: bytes = b"", **rules: object) -> tuple[str, CommandSpec]:
    return verb, CommandSpec(verb, arguments, **rules)  # type: ignore[arg-type]


_AUTHORIZATION = Pop3State.AUTHORIZATION
_TRANSACTION = Pop3State.TRANSACTION
_PHASE = AnswerSource.PHASE
_MAILDROP = AnswerSource.MAILDROP
_ALWAYS = Multiline.ALWAYS
_OPTIONAL_NUMBER = b"(?:" + _BLANK + _NUMBER + b")?"
#: The TRANSACTION commands that take a message-number and are answered from the maildrop.
_NUMBERED: dict[str, object] = {
    "state": _TRANSACTION,
    "message_argument": True,
    "answer_from": _MAILDROP,
}


#: The command table: RFC 1939 §§4-7, RFC 2449 §5 CAPA, RFC 2595 §4 STLS, RFC 5034 §4
#: AUTH, RFC 6856 §§2-3 UTF8 and LANG, XTND of RFC 1082, and LAST of RFC 1460/1725
#: (dropped by RFC 1939 but still served by Dovecot and qmail).
COMMANDS: Mapping[str, CommandSpec] = MappingProxyType(
    dict(
        (
            _spec(
                "USER",
                _BLANK + _TEXT,
                names_user=True,
                state=_AUTHORIZATION,
                credential=Credential.USER_NAME,
                answer_from=_PHASE,
            ),
            _spec(
                "PASS",
                _BLANK + _TEXT,
                secret_after=1,
                login=True,
                state=_AUTHORIZATION,
                credential=Credential.PASSWORD,
            ),
            _spec(
                "APOP",
                _BLANK + _WORD + _BLANK + _WORD,
                secret_after=2,
                login=True,
                names_user=True,
                state=_AUTHORIZATION,
                credential=Credential.GREETING_DIGEST,
            ),
            # The initial response is base64, or the placeholder a masked capture holds.
            _spec(
                "AUTH",
                b"(?:"
                + _BLANK
                + rb"[A-Za-z0-9_-]{1,20}(?:"
                + _BLANK
                + rb"(?:[A-Za-z0-9+/]*={0,2}|\*{8}))?)?",
                multiline=Multiline.WITHOUT_ARGUMENT,
                secret_after=2,
                barrier=Barrier.SASL,
                login=True,
                state=_AUTHORIZATION,
                credential=Credential.SASL,
            ),
            _spec("STLS", barrier=Barrier.STLS, state=_AUTHORIZATION),
            _spec("STAT", state=_TRANSACTION, answer_from=_MAILDROP),
            _spec("LIST", _OPTIONAL_NUMBER, multiline=Multiline.WITHOUT_ARGUMENT, **_NUMBERED),
            _spec("UIDL", _OPTIONAL_NUMBER, multiline=Multiline.WITHOUT_ARGUMENT, **_NUMBERED),
            _spec("RETR", _BLANK + _NUMBER, multiline=_ALWAYS, counter=Counter.RETR, **_NUMBERED),
            _spec(
                "TOP",
                _BLANK + _NUMBER + _BLANK + _NUMBER,
                multiline=_ALWAYS,
                counter=Counter.TOP,
                **_NUMBERED,
            ),
            _spec("DELE", _BLANK + _NUMBER, counter=Counter.DELE, **_NUMBERED),
            _spec("NOOP", state=_TRANSACTION, answer_from=_PHASE),
            _spec("RSET", state=_TRANSACTION, answer_from=_MAILDROP),
            _spec("QUIT", counter=Counter.QUIT, answer_from=_MAILDROP, ends_session=True),
            _spec("CAPA", multiline=_ALWAYS, answer_from=_PHASE),
            _spec("UTF8", state=_AUTHORIZATION),
            _spec(
                "LANG", b"(?:" + _BLANK + rb"[\x21-\x7e]+)?", multiline=Multiline.WITHOUT_ARGUMENT
            ),
            _spec(
                "XTND",
                _BLANK + rb"[\x21-\x7e]+(?:" + _BLANK + rb"[\x21-\x7e]+)*",
                multiline=Multiline.XLST_ARGUMENT,
                state=_TRANSACTION,
            ),
            _spec("LAST", state=_TRANSACTION, answer_from=_MAILDROP),
        )
    )
)


class CommandRules(NamedTuple):
    """What the table says about one command line (its verb and arguments)."""

    #: A ``+OK`` opens a multi-line body.
    multiline: bool
    barrier: Barrier
    #: A ``+OK`` logs the user in.
    login: bool
    counter: Counter


_UNKNOWN_RULES = CommandRules(False, Barrier.NONE, False, Counter.NONE)


def _derive_rules(spec: CommandSpec, *, has_args: bool, xlst: bool) -> CommandRules:
    rule = spec.multiline
    multiline = rule is Multiline.ALWAYS or (
        (rule is Multiline.WITHOUT_ARGUMENT and not has_args)
        or (rule is Multiline.XLST_ARGUMENT and xlst)
    )
    sasl = spec.barrier is Barrier.SASL
    return CommandRules(
        multiline,
        Barrier.NONE if sasl and not has_args else spec.barrier,
        spec.login and (has_args or not sasl),
        spec.counter,
    )


#: Per verb: its rules without an argument, with one, and with ``XLST`` first.
_RULES: dict[str, tuple[CommandRules, CommandRules, CommandRules]] = {
    verb: (
        _derive_rules(spec, has_args=False, xlst=False),
        _derive_rules(spec, has_args=True, xlst=False),
        _derive_rules(spec, has_args=True, xlst=True),
    )
    for verb, spec in COMMANDS.items()
}


def rules_for(verb: str, args: bytes) -> CommandRules:
    """The rules of one command, from one table lookup (the observer's hot path)."""
    rules = _RULES.get(verb)
    if rules is None:
        return _UNKNOWN_RULES
    if not args:
        return rules[0]
    stripped = args.strip()
    if not stripped:
        return rules[0]
    return rules[2] if stripped[:4].upper() == b"XLST" else rules[1]


def command_spec(verb: str) -> CommandSpec | None:
    """The rules of an upper-cased keyword, or None for a verb pop3tap does not know."""
    return COMMANDS.get(verb)


#: What an unknown verb gets from :func:`spec_of`: no rule at all.
UNKNOWN_COMMAND = CommandSpec("", b"")


def spec_of(verb: str) -> CommandSpec:
    """The rules of an upper-cased keyword; :data:`UNKNOWN_COMMAND` for any other."""
    return COMMANDS.get(verb, UNKNOWN_COMMAND)


def known_verbs() -> frozenset[str]:
    """Every keyword of :data:`COMMANDS`."""
    return _KNOWN_VERBS


def secret_position(verb: str) -> int | None:
    """Words (keyword included) before the verb's secret, or None when it has none."""
    spec = COMMANDS.get(verb)
    return None if spec is None else spec.secret_after


def barrier_of(verb: str, args: bytes) -> Barrier:
    """What the command holds back: STLS always, AUTH only with a mechanism (RFC 5034 §4)."""
    return rules_for(verb, args).barrier


def opens_sasl(verb: str) -> bool:
    """Whether the verb may be answered with ``+`` continuations (AUTH, RFC 5034 §4)."""
    spec = COMMANDS.get(verb)
    return spec is not None and spec.barrier is Barrier.SASL


def counts_as_login(verb: str, has_args: bool) -> bool:
    """Whether a ``+OK`` to the command logs the user in (AUTH only with a mechanism)."""
    spec = COMMANDS.get(verb)
    return spec is not None and spec.login and (spec.barrier is not Barrier.SASL or has_args)


def summary_counter(verb: str) -> Counter:
    """The session summary counter a ``+OK`` to the command moves."""
    spec = COMMANDS.get(verb)
    return Counter.NONE if spec is None else spec.counter


def login_name(verb: str, args: str) -> str | None:
    """The user named by a (masked) command's argument text: USER's or APOP's first word,
    by the masker's word rule (:data:`WORD_SEPARATORS`: a tab or any control byte
    separates ``APOP name digest`` as surely as a space does)."""
    spec = COMMANDS.get(verb)
    if spec is None or not spec.names_user or not args:
        return None
    match = _FIRST_WORD_TEXT.match(args)
    assert match is not None  # the pattern matches the empty string
    return match.group(1) or None


_KNOWN_VERBS = frozenset(COMMANDS)
#: The verb of a SASL barrier, as a keyword of the client byte stream.
SASL_KEYWORD = next(v for v, s in COMMANDS.items() if s.barrier is Barrier.SASL).encode()


#: Bytes that separate the words of a command line. RFC 1939 §3 uses one space and
#: RFC 1734 allows tabs, but servers split on whatever their C library calls a blank, so
#: every ASCII control byte and space counts (CR and LF end lines; see :mod:`._masking`).
#: One definition for the log, the capture masker and replay.
WORD_SEPARATORS = frozenset(b for b in range(0x21) if b not in (0x0A, 0x0D)) | {0x7F}
_SEPARATOR_CLASS = rb"\x00-\x09\x0b\x0c\x0e-\x20\x7f"
_FIRST_WORD = re.compile(rb"[" + _SEPARATOR_CLASS + rb"]*([^" + _SEPARATOR_CLASS + rb"]*)")
_SEPARATOR_RUN = re.compile(rb"[" + _SEPARATOR_CLASS + rb"]+")
#: :data:`_FIRST_WORD` for decoded argument text.
_FIRST_WORD_TEXT = re.compile(_FIRST_WORD.pattern.decode("ascii"))

#: Keywords whose arguments hold a secret (RFC 1939 §7, RFC 5034 §4), and how many words
#: (the keyword included) come before the secret: ``PASS secret``, ``APOP name digest``,
#: ``AUTH mechanism initial-response``.
SECRET_VERBS: dict[bytes, int] = {
    verb.encode(): spec.secret_after
    for verb, spec in COMMANDS.items()
    if spec.secret_after is not None
}
#: ASCII letters: a secret-bearing keyword followed by one is another word (PASSWORD).
LETTERS = frozenset(range(0x41, 0x5B)) | frozenset(range(0x61, 0x7B))
#: Any secret-bearing keyword anywhere in a line: without one, nothing in it is secret.
_ANY_SECRET_KEYWORD = re.compile(rb"(?i)" + b"|".join(SECRET_VERBS))


def split_command(line: bytes) -> tuple[str, bytes]:
    """Split a command line into its upper-cased keyword and the raw argument bytes.

    Words are separated by runs of :data:`WORD_SEPARATORS` (RFC 1939 §3 asks for a single
    space; RFC 1734 allows tabs after AUTH); separators before the keyword are skipped.
    """
    match = _FIRST_WORD.match(line)
    assert match is not None  # the pattern matches the empty string
    keyword = match.group(1).decode("ascii", "backslashreplace").upper()
    rest = line[match.end() :]
    gap = _SEPARATOR_RUN.match(rest)
    return keyword, rest if gap is None else rest[gap.end() :]


def secret_verb(line: bytes) -> bytes | None:
    """``PASS``, ``APOP`` or ``AUTH`` when the line's first word begins with one of them in
    any case, followed by anything but a letter; None otherwise.

    ``PASS\0 pw`` or ``pass1pw`` carry a password as surely as ``PASS pw`` does, since a
    server may split words differently from pop3tap.
    """
    match = _FIRST_WORD.match(line)
    assert match is not None
    word = match.group(1)
    if len(word) < 4 or (len(word) > 4 and word[4] in LETTERS):
        return None
    head = word[:4].upper()
    return head if head in SECRET_VERBS else None


def _secret_start(part: bytes) -> int | None:
    """Where the secret of one line (no CR, no LF) begins, or None if it has none."""
    verb = secret_verb(part)
    if verb is None:
        return None
    match = _FIRST_WORD.match(part)
    assert match is not None
    pos = match.start(1) + 4
    if len(match.group(1)) > 4:
        return pos  # glued to its keyword: all of it is secret
    for _ in range(SECRET_VERBS[verb] - 1):
        gap = _SEPARATOR_RUN.match(part, pos)
        if gap is None:
            return None
        word = _FIRST_WORD.match(part, gap.end())
        assert word is not None
        pos = word.end(1)
    if pos >= len(part) or part[pos] not in WORD_SEPARATORS:
        return None
    return pos + 1


def _walk(line: bytes) -> tuple[bytes, bool]:
    """:func:`mask_line`, and whether a part of the line that was classified is an AUTH."""
    if _ANY_SECRET_KEYWORD.search(line) is None:
        return line, False
    out = bytearray()
    pos = 0
    auth = False
    while True:
        cr = line.find(b"\r", pos)
        part = line[pos:] if cr < 0 else line[pos:cr]
        verb = secret_verb(part)
        auth = auth or verb == SASL_KEYWORD
        start = _secret_start(part)
        if start is not None:
            out += part[:start]
            if line[pos + start :]:
                out += SECRET_PLACEHOLDER_BYTES
            return bytes(out), auth
        out += part
        if cr < 0:
            return bytes(out), auth
        out += b"\r"
        pos = cr + 1
        if auth or verb is not None:
            # After an AUTH, a server that ends lines at a lone CR takes the rest as SASL;
            # after PASS or APOP, one that splits words at any C blank takes it as the
            # secret.
            return bytes(out) + (SECRET_PLACEHOLDER_BYTES if line[pos:] else b""), auth


def mask_line(line: bytes) -> bytes:
    """One command line (no line ending) with its secret replaced by the placeholder.

    The reference the streaming :class:`~pop3tap.protocol.SecretMasker` agrees with: after a
    secret-bearing keyword glued to a non-letter, everything after the keyword is secret;
    otherwise the secret starts one separator byte after the keyword's last clear word
    (the APOP name, the AUTH mechanism) and runs to the end of the line, lone CRs included
    (RFC 1939 §7: PASS takes the rest of the line). Outside a secret a lone CR starts a
    new line, since a server that ends lines there would run what follows it; after an
    AUTH, what follows a lone CR is secret (that server would take it as SASL data), and
    so is what follows one after PASS or APOP before their secret began (a server that
    splits words at any C blank takes the CR as a separator).
    """
    return _walk(line)[0]


def opens_auth(line: bytes) -> bool:
    """Whether the line holds an AUTH command as the masker classifies it (see
    :func:`mask_line`): every client line after it may be SASL data (RFC 5034 §4)."""
    return _walk(line)[1]


def expects_multiline(verb: str, args: bytes) -> bool:
    """Whether a ``+OK`` to this command opens a multi-line body (RFC 1939 §3; the
    :class:`Multiline` rule of its :data:`COMMANDS` entry)."""
    return rules_for(verb, args).multiline


def mask_arguments(verb: str, args: bytes) -> str:
    """The argument text as it may appear in a log: secrets replaced by the placeholder.

    Same rule as :func:`mask_line`, for a line already split by :func:`split_command`.
    """
    if secret_position(verb) is not None:
        _verb, masked = split_command(mask_line(verb.encode() + b" " + args))
        return decode_text(masked)
    return decode_text(args)


#: Known commands and the shape of valid arguments (the ``arguments`` of :data:`COMMANDS`).
_VALID_ARGUMENTS: dict[str, re.Pattern[bytes]] = {
    verb: re.compile(spec.arguments + rb"[ \t]*", re.DOTALL) for verb, spec in COMMANDS.items()
}
_KEYWORD = re.compile(rb"[A-Za-z0-9]{3,4}")


def is_known_command(line: bytes) -> bool:
    """Whether a line (no line ending) is a known POP3 command with valid arguments.

    After an AUTH only such lines are shown: SASL data is base64 (RFC 5034 §4, RFC 4648
    §4) and never contains a blank, so it cannot pass for a command that takes arguments.
    Separators other than space and tab, or any control byte, make a line invalid.
    """
    keyword = _KEYWORD.match(line)
    if keyword is None:
        return False
    pattern = _VALID_ARGUMENTS.get(keyword.group(0).decode("ascii").upper())
    return pattern is not None and pattern.fullmatch(line, keyword.end()) is not None


def describe_command(line: bytes) -> tuple[str, str]:
    """The keyword and argument text of a command line as logs and views show them.

    Secrets are masked (:func:`mask_line`); a known keyword is upper-cased, any other first
    word is shown exactly as sent, never case-folded. A lone CR ends what is shown: a
    server that ends lines there would run what follows, so that part is masked.
    """
    cr = line.find(b"\r")
    head = line if cr < 0 else line[:cr]
    has_secret = _ANY_SECRET_KEYWORD.search(head) is not None
    masked = mask_line(head) if has_secret else head
    match = _FIRST_WORD.match(masked)
    assert match is not None
    word = match.group(1)
    verb = secret_verb(head) if has_secret else None
    if verb is not None:
        shown_verb = verb.decode()
        if len(word) > 4:  # glued to its keyword: all of it is secret
            args = SECRET_PLACEHOLDER_BYTES
        else:
            _keyword, args = split_command(masked)
    else:
        upper = word.decode("ascii", "backslashreplace").upper()
        shown_verb = upper if upper in _VALID_ARGUMENTS else decode_text(word)
        _keyword, args = split_command(masked)
    text = decode_text(args)
    if cr >= 0:
        text = f"{text}\\r{SECRET_PLACEHOLDER}"
    return shown_verb, text


def shown_command(line: bytes, *, after_auth: bool = False) -> str:
    """``VERB args`` as logs and views may show a client line (no line ending).

    Secrets are masked (:func:`describe_command`). After an AUTH, a line that is not a
    known command with valid arguments may be SASL data (RFC 5034 §4): it is shown as the
    placeholder, whatever the pairing says.
    """
    if after_auth and not is_known_command(line):
        return SECRET_PLACEHOLDER
    verb, args = describe_command(line)
    return f"{verb} {args}".rstrip()
