"""The HTML view's data, for any bytes: it never fails, and capture text never becomes markup."""

from __future__ import annotations

import json
import re
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pop3tap.capture import CaptureWriter, read_capture
from pop3tap.htmlview import build_model, render_page
from pop3tap.htmlview.page import model_json

REPO = Path(__file__).resolve().parent.parent
SHIPPED = sorted((REPO / "captures").glob("*.p3cap"))

_EMBEDDED = re.compile(r'<script type="application/json" id="model">(.*?)</script>', re.S)


#: Protocol-shaped pieces, so the fuzzer reaches exchanges, bodies and odd lines quickly.
_LINES = st.lists(
    st.sampled_from(
        [
            b"+OK hi\r\n",
            b"RETR 1\r\n",
            b"+OK 9 octets\r\n",
            b"..dot\r\n",
            b".\r\n",
            b"USER <img src=x onerror=alert(1)>\r\n",
            b"PASS pw\r\n",
            b"-ERR \xff\xfe\r\n",
            b"AUTH PLAIN\r\n",
            b"+ \r\n",
            b"Subject: </script>\r\n",
            b"\r\n",
            b"STLS\r\n",
            b"\xed\xa0\x80\r\n",
            b"\x00\n",
        ]
    ),
    max_size=8,
).map(b"".join)


def embedded_model(page: str) -> object:
    match = _EMBEDDED.search(page)
    assert match is not None
    return json.loads(match.group(1))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    chunks=st.lists(
        st.tuples(st.sampled_from(["c2s", "s2c"]), st.one_of(st.binary(max_size=200), _LINES)),
        max_size=30,
    )
)
def test_any_session_bytes_give_a_page_whose_markup_is_ours(
    tmp_path_factory: object, chunks: list[tuple[str, bytes]]
) -> None:
    directory = tmp_path_factory.mktemp("fuzz")  # type: ignore[attr-defined]
    writer = CaptureWriter.create(directory, session_id="fuzz", header_fields={"client": "<b>"})
    for index, (direction, data) in enumerate(chunks):
        writer.write_data(direction, 0.001 * (index + 1), data)
    writer.close(0.5, "<i>closed</i>")
    model = build_model([writer.path])
    page = render_page(model)
    page.encode("utf-8")  # no lone surrogate or other unencodable text
    assert embedded_model(page) == json.loads(model_json(model))
    # The only elements are the page's own: capture text is inside the JSON, escaped.
    tags = set(re.findall(r"<([a-zA-Z][a-zA-Z0-9]*)", page))
    assert tags <= {
        "html",
        "head",
        "meta",
        "title",
        "style",
        "body",
        "header",
        "h1",
        "input",
        "span",
        "main",
        "noscript",
        "code",
        "script",
    }
    assert page.count("<script") == 2


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_torn_or_damaged_captures_still_give_a_page(data: st.DataObject) -> None:
    original = data.draw(st.sampled_from(SHIPPED)).read_bytes()
    cut = data.draw(st.integers(min_value=0, max_value=len(original)))
    damaged = bytearray(original[:cut])
    for _ in range(data.draw(st.integers(min_value=0, max_value=3))):
        if damaged:
            at = data.draw(st.integers(min_value=0, max_value=len(damaged) - 1))
            damaged[at] = data.draw(st.integers(min_value=0, max_value=255))
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "damaged.p3cap"
        path.write_bytes(bytes(damaged))
        model = build_model([path])
        page = render_page(model)
    assert len(model["sessions"]) + len(model["errors"]) == 1
    for session in model["sessions"]:
        capture_ok = session["problem"] is None
        if not capture_ok:
            assert "without a close record" in session["problem"]
    assert embedded_model(page) == json.loads(model_json(model))


def test_torn_capture_shows_every_complete_record_and_says_so() -> None:
    import tempfile

    source = REPO / "captures" / "pipelined.p3cap"
    whole = build_model([source])["sessions"][0]
    with tempfile.TemporaryDirectory() as tmp:
        torn = Path(tmp) / "torn.p3cap"
        data = source.read_bytes()
        torn.write_bytes(data[: len(data) - 40])
        session = build_model([torn])["sessions"][0]
        expected = len(read_capture(torn).exchanges())
    assert whole["problem"] is None
    assert session["problem"] is not None and "truncated" in session["problem"]
    assert session["exchanges"] == expected > 0


def test_sasl_steps_and_stls_switch_are_rows_of_their_own(tmp_path: Path) -> None:
    writer = CaptureWriter.create(tmp_path, session_id="stls", header_fields={})
    writer.write_data("s2c", 0.001, b"+OK ready\r\n")
    writer.write_data("c2s", 0.002, b"AUTH PLAIN\r\n")
    writer.write_data("s2c", 0.003, b"+ \r\n")
    writer.write_data("c2s", 0.004, b"AGFsaWNlAHNlY3JldA==\r\n")
    writer.write_data("s2c", 0.005, b"+OK in\r\n")
    writer.write_data("c2s", 0.006, b"STLS\r\n")
    writer.write_data("s2c", 0.007, b"+OK Begin TLS\r\n")
    writer.write_event("tls", 0.008)
    writer.write_data("c2s", 0.009, b"QUIT\r\n")
    writer.write_data("s2c", 0.010, b"+OK bye\r\n")
    writer.close(0.011, "server closed")
    (session,) = build_model([writer.path])["sessions"]
    kinds = [row[0] for row in session["rows"]]
    assert kinds.count("x") == 3 and "t" in kinds and "g" in kinds
    auth = next(row for row in session["rows"] if row[0] == "x" and row[2] == "AUTH")
    assert auth[14] == [["+", "0"], ["c", "********"]]
    switch = next(row for row in session["rows"] if row[0] == "t")
    assert switch[2] == "STLS accepted: TLS starts here"
    assert kinds.index("t") < len(kinds) - 1 - kinds[::-1].index("x")  # before QUIT's row
    assert session["tls"] is True
    assert "AGFsaWNl" not in render_page(build_model([writer.path]))
