"""docs/capture-format.md and the format's vocabulary in code say the same thing.

The document is hand-written for people; these tests fail when a word of the format (a
record type or key, a direction, an event name, a fixed close reason) is added, renamed
or dropped on one side only.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from pop3tap.capture import (
    FORMAT_VERSION,
    MAGIC,
    RECORD_KEYS,
    CloseReason,
    Direction,
    EventName,
    RecordType,
    Secrets,
)

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "capture-format.md").read_text(encoding="utf-8")


def section(heading: str) -> str:
    """The text under ``heading`` (a whole markdown heading line) up to the next heading."""
    match = re.search(rf"^{re.escape(heading)}\n(.*?)(?=^#)", DOC, re.M | re.S)
    assert match is not None, f"docs/capture-format.md has no {heading!r}"
    return match.group(1)


def table(text: str, first_header: str) -> list[list[str]]:
    """The body rows of the markdown table in ``text`` whose first column is ``first_header``."""
    rows: list[list[str]] = []
    inside = False
    for line in text.splitlines():
        if not line.startswith("|"):
            if inside:
                break
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if not inside:
            inside = cells[0] == first_header
            continue
        if set(cells[0]) <= {"-"}:
            continue
        rows.append(cells)
    assert rows, f"no table starting with {first_header!r}"
    return rows


def code_words(rows: list[list[str]]) -> list[str]:
    """The first column of each row, without its backticks."""
    words = []
    for row in rows:
        match = re.fullmatch(r"`([^`]+)`", row[0])
        assert match is not None, f"first column is not one `word`: {row[0]!r}"
        words.append(match.group(1))
    return words


def test_the_title_and_header_table_name_the_current_version() -> None:
    assert f"(format version {FORMAT_VERSION})" in DOC.splitlines()[0]
    rows = {r[0]: r for r in table(section("### `header`"), "key")}
    assert f"currently `{FORMAT_VERSION}`" in rows["`format`"][2]
    assert f'`"{MAGIC}"`' in rows["`magic`"][2]


def test_every_record_type_has_its_section_and_no_other() -> None:
    documented = set(re.findall(r"^### `([a-z_]+)`$", DOC, re.M))
    assert documented == {kind.value for kind in RecordType}


@pytest.mark.parametrize("kind", list(RecordType))
def test_each_record_table_lists_exactly_the_keys_in_order(kind: RecordType) -> None:
    rows = table(section(f"### `{kind.value}`"), "key")
    assert code_words(rows) == list(RECORD_KEYS[kind])
    assert rows[0][2] == f'`"{kind.value}"`'


def test_the_values_of_dir_and_secrets_are_the_enums() -> None:
    data = {r[0]: r[2] for r in table(section("### `data`"), "key")}
    assert set(re.findall(r'`"([a-z0-9]+)"`', data["`dir`"])) == {d.value for d in Direction}
    header = {r[0]: r[2] for r in table(section("### `header`"), "key")}
    assert set(re.findall(r'`"([a-z]+)"`', header["`secrets`"])) == {s.value for s in Secrets}


def test_the_event_name_table_is_the_enum() -> None:
    names = code_words(table(section("### `event`"), "name"))
    assert len(names) == len(set(names))
    assert set(names) == {name.value for name in EventName}


def test_the_close_reason_table_is_the_enum() -> None:
    reasons = code_words(table(section("### `close`"), "reason"))
    assert len(reasons) == len(set(reasons))
    assert set(reasons) == {reason.value for reason in CloseReason}


def _written_name(arg: ast.expr) -> str | None:
    """The event name an argument spells: a string literal, or ``EventName.MEMBER`` (the
    member's value; ``EventName.MEMBER`` itself when there is no such member)."""
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    if (
        isinstance(arg, ast.Attribute)
        and isinstance(arg.value, ast.Name)
        and arg.value.id == "EventName"
    ):
        member = EventName.__members__.get(arg.attr)
        return member.value if member is not None else f"EventName.{arg.attr}"
    return None


def written_event_names() -> set[tuple[str, str]]:
    """(file, name) for every event name given as a literal or an ``EventName`` member to a
    capture event writer."""
    found: set[tuple[str, str]] = set()
    for path in sorted((ROOT / "pop3tap").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("write_event", "record_event", "event")
                and node.args
            ):
                name = _written_name(node.args[0])
                if name is not None:
                    found.add((str(path.relative_to(ROOT)), name))
    return found


def test_every_event_name_pop3tap_writes_is_in_the_vocabulary() -> None:
    written = written_event_names()
    assert len(written) > 5  # the scan finds the writers (relay, console, check)
    unknown = {(path, name) for path, name in written if name not in set(EventName)}
    assert not unknown, f"event names missing from EventName: {sorted(unknown)}"
