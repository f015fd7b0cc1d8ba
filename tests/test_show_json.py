"""``show --format json``: every fact of the text view as a record with a kind, in stream
order, each valid against docs/show-json.schema.json, as the README's tables say."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import show_corpus
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pop3tap.capture import CaptureWriter, read_capture
from pop3tap.render import json_records

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = ROOT / "docs" / "show-json.schema.json"
EXPECTED = Path(__file__).resolve().parent / "show_json"


@pytest.fixture
def validator() -> jsonschema.Draft202012Validator:
    return show_corpus.schema_validator()


def schema_kinds() -> dict[str, set[str]]:
    """Each record kind in the schema and the fields it allows."""
    schema = json.loads(SCHEMA_PATH.read_text())
    kinds = {}
    for ref in schema["oneOf"]:
        definition = schema["$defs"][ref["$ref"].rsplit("/", 1)[1]]
        kinds[definition["properties"]["kind"]["const"]] = set(definition["properties"])
    return kinds


def show_json(*paths: Path) -> list[dict[str, Any]]:
    """What ``pop3tap show --format json`` prints, parsed line by line."""
    result = subprocess.run(
        [sys.executable, "-m", "pop3tap", "show", "--format", "json", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


# --------------------------------------------------------------------------- the corpus


@pytest.mark.parametrize("name", sorted(show_corpus.SESSIONS))
def test_quirky_session_json_view_in_full(
    name: str, tmp_path: Path, validator: jsonschema.Draft202012Validator
) -> None:
    path = show_corpus.write_session(tmp_path, name)
    records = show_json(path)
    expected = [json.loads(line) for line in (EXPECTED / f"{name}.jsonl").read_text().splitlines()]
    assert records == expected
    for record in records:
        validator.validate(record)


def test_unsolicited_and_stray_lines_are_records_of_their_own(tmp_path: Path) -> None:
    """What a program reading the JSON needs to tell a clean session from a quirky one."""
    name = "multiline-answer-to-single-line-command"
    quirky = show_json(show_corpus.write_session(tmp_path, name))
    stat = next(r for r in quirky if r["kind"] == "exchange" and r["verb"] == "STAT")
    assert (stat["stray"], stat["stray_lines"]) == (True, 3)
    assert [r["text"] for r in quirky if r["kind"] == "stray"] == ["1 120", "2 200", "."]
    closing = show_json(show_corpus.write_session(tmp_path, "unsolicited-err-before-close"))
    assert [r["kind"] for r in closing][-5:] == ["exchange", "unsolicited", "end", "end", "summary"]
    auth = show_json(show_corpus.write_session(tmp_path, "auth-cancelled"))[2]
    assert (auth["verb"], auth["sasl_steps"], auth["sasl_cancelled"]) == ("AUTH", 1, True)


def test_shipped_captures_validate(validator: jsonschema.Draft202012Validator) -> None:
    records = show_json(ROOT / "captures")
    assert {r["kind"] for r in records} >= {"session", "greeting", "exchange", "end", "summary"}
    for record in records:
        validator.validate(record)
    auth = [r for r in records if r["kind"] == "exchange" and r["verb"] == "AUTH"]
    assert auth and all(r["sasl_steps"] == 1 for r in auth)


# --------------------------------------------------------------------------- the README


def _readme_table(heading: str) -> list[list[str]]:
    """Rows of the first table after ``heading`` in README.md, as cell texts."""
    text = (ROOT / "README.md").read_text()
    after = text[text.index(heading) :]
    if not after.startswith("|"):
        after = after[after.index("\n|") + 1 :]
    rows = []
    for line in after.splitlines():
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows[2:]  # without the header and the separator


def _names(cell: str) -> list[str]:
    """Names written as `code` in a table cell, leaving out parenthesised remarks."""
    return re.findall(r"`([a-z_0-9.]+)`", re.sub(r"\([^)]*\)", "", cell))


def test_readme_json_table_matches_the_schema() -> None:
    kinds = schema_kinds()
    rows = _readme_table("### `show --format json`")
    table = {_names(row[0])[0]: set(_names(row[2])) for row in rows}
    assert set(table) == set(kinds)
    common = {"kind", "session", "t", "time"}
    for kind, fields in table.items():
        assert fields == kinds[kind] - common, kind


def test_readme_log_table_names_only_json_kinds_of_the_schema() -> None:
    kinds = set(schema_kinds())
    named: set[str] = set()
    for row in _readme_table("| event | when | main fields |"):
        named.update(_names(row[3]))
    assert named <= kinds
    # Every kind stands for a log event, except what only a capture file can show.
    assert kinds - named == set()


# --------------------------------------------------------------------------- any capture

_LINES = st.sampled_from(
    [
        b"+OK\r\n",
        b"-ERR no\r\n",
        b"+ \r\n",
        b".\r\n",
        b"..x\r\n",
        b"stray text\r\n",
        b"+OK 2 320\r\n",
        b"\xff\xfe\x00\r\n",
        b"bare\n",
        b"",
    ]
)
_COMMANDS = st.sampled_from(
    [
        b"USER a\r\n",
        b"PASS s\r\n",
        b"STAT\r\n",
        b"LIST\r\n",
        b"RETR 1\r\n",
        b"AUTH PLAIN\r\n",
        b"*\r\n",
        b"dGVzdA==\r\n",
        b"STLS\r\n",
        b"QUIT\r\n",
    ]
)
_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("s2c"), st.lists(_LINES, max_size=4).map(b"".join)),
        st.tuples(st.just("c2s"), st.lists(_COMMANDS, max_size=3).map(b"".join)),
        st.tuples(st.just("s2c"), st.binary(max_size=20)),
        st.tuples(st.just("event"), st.sampled_from(["eof", "reset", "tls", "error"])),
    ),
    max_size=14,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=_STEPS, close=st.booleans(), torn=st.binary(max_size=6))
def test_every_record_of_any_capture_validates(
    steps: list[tuple[str, Any]],
    close: bool,
    torn: bytes,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    validator = show_corpus.schema_validator()
    directory = tmp_path_factory.mktemp("caps")
    writer = CaptureWriter.create(
        directory, session_id="any", header_fields={"options": {}}, now=show_corpus.STARTED
    )
    writer.write_data("s2c", 0.0, b"+OK hi\r\n")
    for number, (what, payload) in enumerate(steps, start=1):
        if what == "event":
            fields = {"dir": "c2s" if number % 2 else "s2c"} if payload != "error" else {}
            writer.write_event(payload, number / 10, **fields)
        else:
            writer.write_data(what, number / 10, payload)
    if close:
        writer.close(len(steps) / 10 + 0.1, "closed")
    path = writer.path
    writer.release()
    if torn and not close:
        with open(path, "ab") as f:
            f.write(torn)
    records = [json.loads(json.dumps(r)) for r in json_records(read_capture(path))]
    for record in records:
        validator.validate(record)
    assert records[0]["kind"] == "session"
    last = "summary" if close else "incomplete"
    assert records[-1]["kind"] == last
    assert [r["kind"] for r in records].count(last) == 1
    # An exchange's stray count is the number of server stray records right after it.
    for index, record in enumerate(records):
        if record["kind"] != "exchange":
            continue
        following = 0
        for later in records[index + 1 :]:
            if later["kind"] != "stray":
                break
            following += later["direction"] == "s2c"
        assert record["stray_lines"] == following
        assert record["stray"] is (following > 0)
