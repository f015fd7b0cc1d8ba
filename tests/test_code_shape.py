"""The size limits of pop3tap's code (issue 12): no module over 500 lines, no class over
300 and no function over 60, unless the function is a table.

Sizes are read from the syntax tree: a class or function counts from its first decorator
to its last line, docstring and comments included; a nested function counts on its own
and inside its parent. A function is a table when its body, after an optional docstring,
is one ``return`` or one assignment of a literal dict, list, tuple or set (data written
out, with no logic to read); nothing else is exempt.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pop3tap"

MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 300
MAX_FUNCTION_LINES = 60


_LITERALS = (ast.Dict, ast.List, ast.Tuple, ast.Set)


def is_table(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Whether the function only writes data out (see the module docstring)."""
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    if len(body) != 1:
        return False
    statement = body[0]
    if isinstance(statement, ast.Return | ast.Assign | ast.AnnAssign):
        return isinstance(statement.value, _LITERALS)
    return False


def _span(node: ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
    return (node.end_lineno or node.lineno) - first + 1


def oversized(source: str, name: str) -> Iterator[str]:
    """One line per limit the module ``source`` (shown as ``name``) breaks."""
    lines = len(source.splitlines())
    if lines > MAX_MODULE_LINES:
        yield f"{name}: module of {lines} lines (limit {MAX_MODULE_LINES})"
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and _span(node) > MAX_CLASS_LINES:
            yield (
                f"{name}:{node.lineno}: class {node.name} of {_span(node)} lines "
                f"(limit {MAX_CLASS_LINES})"
            )
        elif (
            isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and _span(node) > MAX_FUNCTION_LINES
            and not is_table(node)
        ):
            yield (
                f"{name}:{node.lineno}: function {node.name} of {_span(node)} lines "
                f"(limit {MAX_FUNCTION_LINES}, unless it is a table)"
            )


def test_no_module_class_or_function_is_over_its_limit() -> None:
    found: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        found.extend(oversized(path.read_text(encoding="utf-8"), name))
    assert not found, "split these along their concerns:\n" + "\n".join(found)


def _function(lines: int, body: str) -> str:
    filler = "".join(f"    # {i}\n" for i in range(lines - 2))
    return f"def f():\n{filler}    {body}\n"


@pytest.mark.parametrize(
    ("source", "broken"),
    [
        (_function(MAX_FUNCTION_LINES, "return 1"), False),
        (_function(MAX_FUNCTION_LINES + 1, "return 1"), True),
        (_function(MAX_FUNCTION_LINES + 1, "return {1: 2}"), False),  # a table
        (_function(MAX_FUNCTION_LINES + 1, "return {1: g()} or x"), True),  # logic
        ("class C:\n" + "    x = 1\n" * MAX_CLASS_LINES, True),
        ("class C:\n" + "    x = 1\n" * (MAX_CLASS_LINES - 1), False),
        ("x = 1\n" * (MAX_MODULE_LINES + 1), True),
        ("x = 1\n" * MAX_MODULE_LINES, False),
        ("@dec\n" + _function(MAX_FUNCTION_LINES, "return 1"), True),  # decorators count
        (
            "def outer():\n    " + _function(MAX_FUNCTION_LINES + 1, "pass").replace(
                "\n", "\n    "
            ),
            True,
        ),
    ],
)
def test_the_checker_sees_each_kind_of_excess(source: str, broken: bool) -> None:
    assert bool(list(oversized(source, "example.py"))) is broken
