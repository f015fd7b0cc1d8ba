"""The command table is the only place that knows a verb's rules (issue 12).

A literal set, tuple, list or dict of two or more POP3 keywords anywhere in pop3tap/ but
``protocol/_commands.py`` is a verb rule kept apart from the table (``verb in ("PASS",
"APOP")``), and fails this test; the module that needs the rule asks the table instead
(:func:`pop3tap.protocol.spec_of`). The exemptions below hold words that are not verbs
although they are spelt like them, and one handler dispatch.

The other tests pin that reading the table changed nothing: the derived sets are compared
with the sets the modules used to spell out.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pop3tap.protocol import COMMANDS, Credential, Pop3State, known_verbs, spec_of

PACKAGE = Path(__file__).resolve().parents[1] / "pop3tap"
TABLE = "protocol/_commands.py"

#: (module, the name the literal is assigned to or the function holding it): why.
EXEMPT: dict[tuple[str, str], str] = {
    ("console/_render.py", "_CAPABILITIES"): "CAPA capability names (RFC 2449 §6), not verbs",
    ("lint/_rules.py", "KNOWN_RESPONSE_CODES"): "response codes (RFC 2449 §8, RFC 3206)",
    ("model/_authorization.py", "_capa"): "the model server's own CAPA reply text",
    ("model/_session.py", "_TRANSACTION"): "one handler a verb: the model server itself",
    ("_logfast.py", "render"): "the session summary's field names (retr, top, dele), not verbs",
}

_VERB_WORDS = frozenset(known_verbs())


def _is_verb(node: ast.AST | None) -> bool:
    """A str or bytes constant that is a POP3 keyword in any case (``"pass"``, ``b"Top"``)."""
    text = _text(node)
    return text is not None and text.upper() in _VERB_WORDS


#: Two POP3 keywords joined by ``|`` in a string: a regular expression's alternation.
_ALTERNATION = re.compile(
    "(?i)(?<![A-Za-z0-9])(?:{0})[)]?[|][(]?(?:{0})(?![A-Za-z0-9])".format(
        "|".join(sorted(known_verbs()))
    )
)


def _text(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str | bytes):
        value = node.value
        return value.decode("latin-1") if isinstance(value, bytes) else value
    return None


def _words_in(text: str) -> list[str]:
    return [word for word in re.findall(r"[A-Za-z0-9]+", text) if word.upper() in _VERB_WORDS]


def _elements(node: ast.AST) -> list[ast.expr | None]:
    """The parts of a node that each name one verb, when together they make a verb set:
    a literal set, tuple, list or dict; ``dict(PASS=...)``; ``a == "PASS" or a == "APOP"``;
    ``case "PASS" | "APOP"``; ``"PASS APOP".split()`` and ``verb in "PASS APOP"``."""
    if isinstance(node, ast.Set | ast.Tuple | ast.List):
        return list(node.elts)
    if isinstance(node, ast.Dict):
        return list(node.keys)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
        return [ast.Constant(k.arg) for k in node.keywords if k.arg is not None]
    if isinstance(node, ast.BoolOp):
        return [
            side
            for value in node.values
            if isinstance(value, ast.Compare)
            for side in (value.left, *value.comparators)
        ]
    if isinstance(node, ast.MatchOr):
        return [p.value for p in node.patterns if isinstance(p, ast.MatchValue)]
    spelt = None
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("split", "splitlines")
    ):
        spelt = _text(node.func.value)
    elif isinstance(node, ast.Compare) and isinstance(node.ops[0], ast.In | ast.NotIn):
        spelt = _text(node.comparators[0])
    if spelt is not None:
        return [ast.Constant(word) for word in _words_in(spelt)]
    return []


def _alternation(node: ast.AST) -> bool:
    """A string that alternates two verbs, as a regular expression does."""
    text = _text(node)
    return text is not None and _ALTERNATION.search(text) is not None


def _owner(stack: list[ast.AST]) -> str:
    """The function a literal sits in, else the module-level name it is assigned to."""
    for parent in reversed(stack):
        if isinstance(parent, ast.FunctionDef | ast.AsyncFunctionDef):
            return parent.name
    for parent in stack:
        if isinstance(parent, ast.Assign) and isinstance(parent.targets[0], ast.Name):
            return parent.targets[0].id
        if isinstance(parent, ast.AnnAssign) and isinstance(parent.target, ast.Name):
            return parent.target.id
    return "<module>"


def verb_literals(source: str) -> Iterator[tuple[int, str, str]]:
    """``(line, owner, source text)`` of every literal with two or more POP3 keywords."""

    def walk(node: ast.AST, stack: list[ast.AST]) -> Iterator[tuple[int, str, str]]:
        found = [e for e in _elements(node) if _is_verb(e)]
        if len(found) >= 2 or _alternation(node):
            yield getattr(node, "lineno", 0), _owner(stack), ast.unparse(node)[:80]
        for child in ast.iter_child_nodes(node):
            yield from walk(child, [*stack, node])

    yield from walk(ast.parse(source), [])


def test_no_verb_rule_outside_the_table() -> None:
    offences = []
    used = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE).as_posix()
        if name == TABLE:
            continue
        for line, owner, text in verb_literals(path.read_text()):
            if (name, owner) in EXEMPT:
                used.add((name, owner))
                continue
            offences.append(f"pop3tap/{name}:{line} ({owner}): {text}")
    assert offences == [], "verb rules outside the command table:\n" + "\n".join(offences)
    assert used == set(EXEMPT), f"exemptions no longer needed: {set(EXEMPT) - used}"


@pytest.mark.parametrize(
    "source",
    [
        'SECRET = frozenset({"PASS", "APOP"})',
        'def f(verb):\n    return verb in ("RETR", "TOP")',
        'USAGE = {"PASS": "PASS", "AUTH": "AUTH MECHANISM"}',
        "LINES = [b'STAT', b'LIST']",
        'def f(verb):\n    return verb == "PASS" or verb == "APOP"',
        'def f(verb):\n    return verb != "RETR" and "TOP" != verb',
        'def f(verb):\n    match verb:\n        case "PASS" | "APOP":\n            return 1',
        'SECRET = "PASS APOP AUTH".split()',
        "LINES = b'STAT LIST'.split()",
        'def f(verb):\n    return verb in "PASS APOP"',
        'USAGE = dict(PASS="PASS", AUTH="AUTH MECHANISM")',
        'SECRET = re.compile(r"^(?:PASS|APOP)\\b")',
        'SECRET = re.compile(rb"(?i)(pass|auth) ")',
        'def f(verb):\n    return verb.lower() in ("pass", "apop")',
    ],
)
def test_the_scan_finds_a_planted_rule(source: str) -> None:
    assert len(list(verb_literals(source))) == 1


def test_the_scan_leaves_single_verbs_and_other_words() -> None:
    source = (
        'if verb == "QUIT" or mech in ("PLAIN", "LOGIN"):\n    pass\nX = ("QUIT", "x")\n'
        'M = "USER, PASS, APOP or AUTH after a successful login"\n'
        'P = re.compile(r"PASSWORD|APOPLEXY")\nQ = "top".split()\n'
    )
    assert list(verb_literals(source)) == []


def _verbs(keep: object) -> frozenset[str]:
    return frozenset(verb for verb in COMMANDS if keep(COMMANDS[verb]))  # type: ignore[operator]


def test_the_derived_sets_are_the_ones_spelt_out_before() -> None:
    from pop3tap.console._core import NUMBERED
    from pop3tap.model._mailbox import MAILBOX_VERBS, STATELESS_VERBS

    assert {"CAPA", "NOOP", "USER"} == STATELESS_VERBS
    assert {"STAT", "LIST", "UIDL", "RETR", "TOP", "DELE", "RSET", "LAST", "QUIT"} == MAILBOX_VERBS
    assert {"LIST", "UIDL", "TOP", "RETR", "DELE", "HEADERS", "SAVE"} == NUMBERED
    assert _verbs(lambda s: s.message_argument) == {"LIST", "RETR", "DELE", "TOP", "UIDL"}
    assert _verbs(lambda s: s.reads_message) == {"RETR", "TOP"}
    assert _verbs(lambda s: s.lists_messages) == {"LIST", "UIDL"}
    assert _verbs(lambda s: s.login) == {"PASS", "APOP", "AUTH"}
    assert _verbs(lambda s: s.credential is not Credential.NONE) == {
        "USER",
        "PASS",
        "APOP",
        "AUTH",
    }
    assert _verbs(lambda s: s.state is Pop3State.AUTHORIZATION) == {
        "USER",
        "PASS",
        "APOP",
        "AUTH",
        "STLS",
        "UTF8",
    }
    # LAST (RFC 1725 §5) and XTND (RFC 1082 §3) are TRANSACTION commands as well.
    assert _verbs(lambda s: s.state is Pop3State.TRANSACTION) == {
        "STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP", "UIDL", "LAST", "XTND",
    }  # fmt: skip
    assert _verbs(lambda s: s.ends_session) == {"QUIT"}


def test_an_unknown_verb_has_no_rule() -> None:
    spec = spec_of("XYZZY")
    assert spec.secret_after is None and not spec.login and not spec.message_argument
    assert spec.credential is Credential.NONE and not spec.ends_session


def test_console_usage_of_secret_commands() -> None:
    from pop3tap.console._login import _secret_usage

    assert [_secret_usage(v) for v in ("PASS", "APOP", "AUTH")] == [
        "PASS",
        "APOP NAME",
        "AUTH MECHANISM",
    ]


#: Ways to spell a set of two verbs ``{a}`` and ``{b}`` in Python source.
_SPELLINGS = (
    "X = {{{a!r}, {b!r}}}",
    "X = ({a!r}, {b!r})",
    "X = {{{a!r}: 1, {b!r}: 2}}",
    "def f(v):\n    return v == {a!r} or v == {b!r}",
    "def f(v):\n    match v:\n        case {a!r} | {b!r}:\n            return 1",
    "X = '{a} {b}'.split()",
    "def f(v):\n    return v in '{a},{b}'",
    "X = re.compile(r'^({a}|{b}) ')",
)


@given(
    pair=st.lists(st.sampled_from(sorted(known_verbs())), min_size=2, max_size=2, unique=True),
    spelling=st.sampled_from(_SPELLINGS),
    case=st.sampled_from((str.upper, str.lower, str.title)),
    as_bytes=st.booleans(),
)
def test_every_spelling_of_a_verb_pair_is_found(
    pair: list[str], spelling: str, case: Callable[[str], str], as_bytes: bool
) -> None:
    a, b = (case(verb) for verb in pair)
    literal: Callable[[str], object] = (lambda w: w.encode()) if as_bytes else (lambda w: w)
    if "{a!r}" in spelling:
        source = spelling.format(a=literal(a), b=literal(b))
    else:
        source = spelling.format(a=a, b=b)
    assert len(list(verb_literals(source))) >= 1, source
