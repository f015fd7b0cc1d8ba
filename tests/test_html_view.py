"""``pop3tap show --format html`` in a real headless Chromium (Debian's chromium, Selenium).

The page is loaded from a file, as a user opening an attachment would, and checked through
the DOM: one row per exchange, the slowest one highlighted, the filter, bodies, keyboard;
hostile capture bytes stay text and no script of theirs runs.
"""

from __future__ import annotations

import re
import struct
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from browser import chromium_driver
from clients import raw_session, running_relay
from dovecot import Dovecot
from synthetic_captures import hostile_capture, pipelined_capture

from pop3tap.capture import Capture, iter_capture_paths, read_capture
from pop3tap.cli import main
from pop3tap.render import render_lines

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "captures" / "pipelined.p3cap"

PAYLOADS = [
    "<script>alert('script')</script>",
    '"><img src=x onerror=alert("img")>',
    "javascript:alert('link')",
    "</script><script>alert(1)</script>",
    "<svg onload=alert('svg')>",
    "\u2028<!--",
]


web = pytest.fixture(scope="module", name="web")(chromium_driver)


def html_for(tmp_path: Path, *captures: Path, name: str = "report.html") -> Path:
    out = tmp_path / name
    assert main(["show", "--format", "html", *map(str, captures), "-o", str(out)]) == 0
    return out


def load(web: Any, page: Path) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    web.get(page.as_uri())
    WebDriverWait(web, 60).until(
        lambda d: d.execute_script("return document.body.getAttribute('data-ready')") == "1"
    )


def visible_rows(web: Any) -> int:
    return int(
        web.execute_script(
            "return Array.from(document.querySelectorAll('.row.ex')).filter(r => !r.hidden).length"
        )
    )


def type_filter(web: Any, text: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = web.find_element(By.ID, "filter")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)
    if text:
        box.send_keys(text)


def slowest_seq(capture: Capture) -> int:
    """The first exchange with the longest command-to-last-byte time."""
    done = [e for e in capture.exchanges() if e.latency_complete is not None]
    return max(done, key=lambda e: e.latency_complete or 0.0).seq


def png_is_not_blank(png: bytes) -> bool:
    """Decode the PNG's pixel rows (stdlib only) and check they are not one flat colour."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind = png[pos + 4 : pos + 8]
        data = png[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width = struct.unpack(">I", data[:4])[0]
        elif kind == b"IDAT":
            idat += data
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = 1 + width * 4 if len(raw) % (1 + width * 4) == 0 else 1 + width * 3
    rows = [raw[i + 1 : i + stride] for i in range(0, len(raw), stride)]
    # Row filters make equal rows compress alike: count distinct rows and distinct bytes.
    return len(set(rows)) > 20 and len(set(raw)) > 20


def assert_clean(web: Any) -> None:
    """No alert/confirm/prompt/open, no script error, no CSP violation, no console error."""
    assert web.execute_script("return window.__trapped") == []
    severe = [e for e in web.get_log("browser") if e.get("level") == "SEVERE"]
    assert severe == []


def check_page(web: Any, page: Path, capture: Capture, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    load(web, page)
    exchanges = capture.exchanges()
    rows = web.find_elements(By.CSS_SELECTOR, ".row.ex")
    assert len(rows) == len(exchanges)
    slow = web.find_elements(By.CSS_SELECTOR, ".row.ex.slowest")
    assert [r.get_attribute("data-seq") for r in slow] == [str(slowest_seq(capture))]
    # The filter narrows the rows, by verb and by text, and clears again.
    retr = sum(1 for e in exchanges if e.verb == "RETR")
    type_filter(web, "verb:retr")
    assert 0 < visible_rows(web) == retr < len(exchanges)
    type_filter(web, "status:ok flag:pipelined")
    assert visible_rows(web) == sum(
        1 for e in exchanges if e.status is not None and e.status.value == "+OK" and e.pipelined
    )
    type_filter(web, "")
    assert visible_rows(web) == len(exchanges)
    # A RETR body expands, dot-unstuffed, its header names highlighted.
    first_retr = next(e for e in exchanges if e.verb == "RETR")
    row = web.find_element(By.CSS_SELECTOR, f'.row.ex[data-seq="{first_retr.seq}"]')
    assert web.find_elements(By.CSS_SELECTOR, "pre.body") == []
    row.find_element(By.CSS_SELECTOR, "button.more").click()
    body = web.find_element(By.CSS_SELECTOR, "pre.body")
    server = capture.stream("s2c")[first_retr.response_start : first_retr.response_end]
    expected_lines = [line.removeprefix(".") for line in server.decode().split("\r\n")[1:-2]]
    assert body.text.split("\n")[: len(expected_lines)] == [
        line.rstrip() for line in expected_lines
    ]
    assert body.find_elements(By.CSS_SELECTOR, ".hname")
    assert row.get_attribute("aria-expanded") == "true"
    # Keyboard: the clicked row has the cursor; j moves down, Enter toggles, / focuses the
    # filter, Escape clears it.
    page_body = web.find_element(By.TAG_NAME, "body")
    page_body.send_keys("jj")
    below = exchanges[exchanges.index(first_retr) + 2]
    current = web.find_elements(By.CSS_SELECTOR, ".row.cur")
    assert [r.get_attribute("data-seq") for r in current] == [str(below.seq)]
    page_body.send_keys("k")
    page_body.send_keys("k")
    page_body.send_keys(Keys.ENTER)
    assert web.find_elements(By.CSS_SELECTOR, "pre.body") == []
    assert row.get_attribute("aria-expanded") == "false"
    page_body.send_keys("/")
    assert web.switch_to.active_element.get_attribute("id") == "filter"
    web.switch_to.active_element.send_keys("QUIT")
    assert visible_rows(web) == sum(1 for e in exchanges if "quit" in e.verb.lower())
    web.switch_to.active_element.send_keys(Keys.ESCAPE)
    assert visible_rows(web) == len(exchanges)
    shot = web.get_screenshot_as_png()
    (tmp_path / "screenshot.png").write_bytes(shot)
    assert png_is_not_blank(shot)
    assert_clean(web)


@pytest.mark.realpeer
def test_shipped_capture_in_chromium(web: Any, tmp_path: Path) -> None:
    page = html_for(tmp_path, SHIPPED)
    check_page(web, page, read_capture(SHIPPED), tmp_path)


@pytest.mark.realpeer
@pytest.mark.lint_findings("pipelining-without-capability")  # pipelines, never asks CAPA
def test_pipelined_100_retr_from_dovecot_in_chromium(
    web: Any, dovecot: Dovecot, tmp_path: Path
) -> None:
    messages = [
        b"Subject: message %d\r\nFrom: a@example.test\r\n\r\nbody %d\r\n.a dotted line\r\n" % (n, n)
        for n in range(1, 101)
    ]
    box = dovecot.new_mailbox(messages)
    commands = b"USER %s\r\nPASS %s\r\n" % (box.user.encode(), box.password.encode())
    commands += b"".join(b"RETR %d\r\n" % n for n in range(1, 101)) + b"QUIT\r\n"
    with running_relay(dovecot.host, dovecot.pop3_port, tmp_path / "captures") as relay:
        raw_session(relay.host, relay.port, commands)
        deadline = time.monotonic() + 10
        while not all(read_capture(p).complete for p in relay.capture_files()):
            assert time.monotonic() < deadline
            time.sleep(0.02)
    (path,) = iter_capture_paths([tmp_path / "captures"])
    capture = read_capture(path)
    assert len(capture.exchanges()) == 103
    page = html_for(tmp_path, path)
    check_page(web, page, capture, tmp_path)
    overlapping = web.execute_script("return document.querySelectorAll('.row.ex.overlap').length")
    assert overlapping == sum(1 for e in capture.exchanges() if e.pipelined)
    assert box.password not in page.read_text()


@pytest.mark.realpeer
def test_hostile_bytes_render_as_text_and_run_nothing(web: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    path = hostile_capture(tmp_path / "caps", PAYLOADS)
    page = html_for(tmp_path, path)
    load(web, page)
    for button in web.find_elements(By.CSS_SELECTOR, "button.more"):
        button.click()
    text = web.execute_script("return document.getElementById('app').textContent")
    for payload in PAYLOADS:
        assert payload.replace("\u2028", "") in text.replace("\u2028", "")
    assert web.execute_script("return document.querySelectorAll('img, svg, iframe').length") == 0
    assert web.execute_script("return document.scripts.length") == 2
    hrefs = web.execute_script(
        "return Array.from(document.querySelectorAll('a')).map(a => a.getAttribute('href'))"
    )
    assert hrefs and all(re.fullmatch(r"#s\d+", h) for h in hrefs)
    assert len(web.find_elements(By.CSS_SELECTOR, "pre.body")) == len(PAYLOADS)
    assert_clean(web)
    html = page.read_text()
    assert "<script>alert" not in html and "<img" not in html
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', html)
    assert policy is not None and "default-src 'none'" in policy.group(1)
    assert "'unsafe-inline'" not in policy.group(1)
    assert not re.search(r"(src|href)=\"?(https?:)?//", html)


@pytest.mark.realpeer
def test_corrupt_and_foreign_files_still_give_a_page(
    web: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from selenium.webdriver.common.by import By

    folder = tmp_path / "caps"
    folder.mkdir()
    data = SHIPPED.read_bytes()
    (folder / "a-torn.p3cap").write_bytes(data[: len(data) * 2 // 3])
    (folder / "b-junk.p3cap").write_bytes(b"<script>alert('file')</script>" * 10)
    page = html_for(tmp_path, folder)
    assert "b-junk.p3cap" in capsys.readouterr().err
    torn = read_capture(folder / "a-torn.p3cap")
    assert not torn.complete
    load(web, page)
    assert len(web.find_elements(By.CSS_SELECTOR, ".row.ex")) == len(torn.exchanges()) > 0
    problem = web.find_element(By.CSS_SELECTOR, ".problem").text
    assert "truncated" in problem
    errors = [e.text for e in web.find_elements(By.CSS_SELECTOR, ".errors li")]
    assert len(errors) == 1 and "b-junk.p3cap" in errors[0]
    assert_clean(web)


def test_page_stays_under_twice_the_text_view(tmp_path: Path) -> None:
    path = pipelined_capture(tmp_path / "caps", 10_000, slow_seq=5_000)
    text = "\n".join(render_lines(read_capture(path))) + "\n"
    page = html_for(tmp_path, path)
    assert page.stat().st_size < 2 * len(text.encode())


def test_page_masks_secrets_as_the_text_view_does(tmp_path: Path) -> None:
    path = pipelined_capture(tmp_path / "caps", 20)
    assert b"hunter2-password" in path.read_bytes()  # written unmasked on purpose
    page = html_for(tmp_path, path).read_text()
    assert "hunter2" not in page
    shown = [line.split("] ", 1)[1] for line in render_lines(read_capture(path)) if "[tx]" in line]
    assert "PASS ********" in shown
    assert '"PASS","********"' in page


def test_missing_output_and_missing_capture_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["show", "--format", "html", str(SHIPPED)]) == 2
    assert main(["show", "--format", "html", str(tmp_path / "nope"), "-o", "x.html"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("pop3tap") for line in err)
    assert not (tmp_path / "x.html").exists()
