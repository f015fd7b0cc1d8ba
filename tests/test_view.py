"""``pop3tap view``: the HTML view served on loopback, read-only, refreshed as captures arrive."""

from __future__ import annotations

import http.client
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from browser import chromium_driver

web = pytest.fixture(scope="module", name="web")(chromium_driver)

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "captures"


@dataclass
class View:
    proc: subprocess.Popen[str]
    url: str
    port: int
    #: The secret first path segment, with its slashes: ``/<key>/``.
    base: str


@pytest.fixture
def view(tmp_path: Path) -> Iterator[View]:
    folder = tmp_path / "captures"
    folder.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pop3tap", "view", str(folder)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.fullmatch(
            r"pop3tap view: (http://127\.0\.0\.1:(\d+)(/[A-Za-z0-9_-]{20,}/)) \(Ctrl-C stops\)\n",
            line,
        )
        assert match, line
        yield View(proc, match.group(1), int(match.group(2)), match.group(3))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise


def request(view: View, method: str, path: str, host: str | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", view.port, timeout=10)
    try:
        headers = {"Host": host} if host else {}
        conn.request(method, path, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_view_serves_read_only_on_loopback_and_follows_new_captures(
    view: View, tmp_path: Path
) -> None:
    status, first_state = request(view, "GET", view.base + "state")
    assert status == 200
    status, page = request(view, "GET", view.base)
    assert status == 200 and b"Content-Security-Policy" in page and b'data-live="1"' in page
    shutil.copy(SHIPPED / "apop.p3cap", tmp_path / "captures" / "apop.p3cap")
    status, second_state = request(view, "GET", view.base + "state")
    assert second_state != first_state
    status, model = request(view, "GET", view.base + "model.json")
    assert status == 200 and b'"file":"apop.p3cap"' in model
    assert request(view, "POST", view.base)[0] == 405
    assert request(view, "DELETE", view.base + "model.json")[0] == 405
    assert request(view, "GET", view.base + "../../etc/passwd")[0] == 404
    # DNS rebinding: a page on another name that resolves to 127.0.0.1 gets nothing.
    assert (
        request(view, "GET", view.base + "model.json", host=f"evil.example:{view.port}")[0] == 403
    )
    assert request(view, "GET", view.base, host=f"localhost:{view.port}")[0] == 200
    view.proc.send_signal(signal.SIGINT)
    assert view.proc.wait(10) == 0
    assert view.proc.stderr is not None and view.proc.stderr.read() == ""


@pytest.mark.realpeer
def test_open_page_shows_captures_as_they_arrive(
    view: View,
    web: Any,
    tmp_path: Path,
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    web.get(view.url)
    WebDriverWait(web, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "p.empty"))
    shutil.copy(SHIPPED / "pipelined.p3cap", tmp_path / "captures" / "pipelined.p3cap")
    WebDriverWait(web, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".row.ex")) == 13)
    shutil.copy(SHIPPED / "apop.p3cap", tmp_path / "captures" / "apop.p3cap")
    WebDriverWait(web, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".row.ex")) == 18)
    assert len(web.find_elements(By.CSS_SELECTOR, "table.sessions tr")) == 3
    assert web.execute_script("return window.__trapped") == []


def test_non_loopback_listen_warns(tmp_path: Path) -> None:
    # 192.0.2.1 (TEST-NET-1) is on no interface here: the warning comes, then the bind fails.
    result = subprocess.run(
        [sys.executable, "-m", "pop3tap", "view", str(tmp_path), "--listen", "192.0.2.1:0"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    lines = result.stderr.splitlines()
    assert result.returncode == 1
    assert "warning: serving captures on 192.0.2.1" in lines[0]
    assert lines[1].startswith("pop3tap: cannot listen on 192.0.2.1:0")


def test_missing_directory_is_a_one_line_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pop3tap", "view", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "no such file or directory" in result.stderr


def test_other_local_users_without_the_printed_key_get_nothing(view: View, tmp_path: Path) -> None:
    # Every user of the machine can connect to 127.0.0.1: only the printed URL opens the view.
    shutil.copy(SHIPPED / "apop.p3cap", tmp_path / "captures" / "apop.p3cap")
    assert request(view, "GET", view.base + "model.json")[0] == 200
    wrong = "/" + "A" * (len(view.base) - 2) + "/"
    for path in ("/", "/model.json", "/state", wrong, wrong + "model.json", view.base[:-2] + "/"):
        status, body = request(view, "GET", path)
        assert status == 404 and b"apop" not in body, path
    status, _ = request(view, "GET", view.base.rstrip("/"))
    assert status == 301


def test_wildcard_listen_serves_its_addresses_but_not_dns_names(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pop3tap", "view", str(tmp_path), "--listen", "0.0.0.0:0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.fullmatch(
            r"pop3tap view: http://0\.0\.0\.0:(\d+)(/\S+/) \(Ctrl-C stops\)\n", line
        )
        assert match, line
        port = int(match.group(1))
        view = View(proc, "", port, match.group(2))
        # What another machine would send: an address of this one.
        assert request(view, "GET", view.base, host=f"127.0.0.1:{port}")[0] == 200
        assert request(view, "GET", view.base, host=f"localhost:{port}")[0] == 200
        assert request(view, "GET", view.base, host=f"rebind.example:{port}")[0] == 403
        assert request(view, "GET", view.base, host="127.0.0.1:1")[0] == 403
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


@pytest.mark.parametrize("listen", ["localhost:0", "[::1]:0"])
def test_printed_url_opens_the_view_whatever_the_listen_name(tmp_path: Path, listen: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pop3tap", "view", str(tmp_path), "--listen", listen],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.fullmatch(r"pop3tap view: (http://(\S+):(\d+)(/\S+/)) \(Ctrl-C stops\)\n", line)
        assert match, line
        port = int(match.group(3))
        view = View(proc, match.group(1), port, match.group(4))
        host = match.group(2).strip("[]")
        # The Host header a browser sends for the printed URL, and for localhost.
        for header in (None, f"localhost:{port}"):
            conn = http.client.HTTPConnection(host, port, timeout=10)
            try:
                conn.request("GET", view.base, headers={"Host": header} if header else {})
                assert conn.getresponse().status == 200, header
            finally:
                conn.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


@pytest.mark.realpeer
def test_live_redraw_keeps_an_open_body_and_the_focused_row(
    view: View, web: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from pop3tap.capture import CaptureWriter

    # A session still being recorded: it grows while the reader has a body open.
    writer = CaptureWriter.create(
        tmp_path / "captures",
        session_id="growing",
        header_fields={"client": "127.0.0.1:1", "upstream": "127.0.0.1:2", "listen": ""},
    )
    try:
        writer.write_data("s2c", 0.001, b"+OK ready\r\n")
        writer.write_data("c2s", 0.002, b"RETR 1\r\n")
        writer.write_data("s2c", 0.003, b"+OK\r\nSubject: kept open\r\n\r\nbody\r\n.\r\n")
        web.get(view.url)
        WebDriverWait(web, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".row.ex")))
        web.find_element(By.CSS_SELECTOR, ".row.ex button.more").click()
        assert len(web.find_elements(By.CSS_SELECTOR, ".bodyrow")) == 1
        for n in range(2, 5):
            writer.write_data("c2s", 0.001 * (n + 3), b"NOOP\r\n")
            writer.write_data("s2c", 0.001 * (n + 4), b"+OK\r\n")
        # New rows come only from a redraw of the whole page.
        WebDriverWait(web, 30).until(
            lambda d: len(d.find_elements(By.CSS_SELECTOR, ".row.ex")) == 4
        )
        bodies = web.find_elements(By.CSS_SELECTOR, ".bodyrow")
        assert len(bodies) == 1 and "kept open" in bodies[0].text
        focused = web.find_elements(By.CSS_SELECTOR, ".row.ex.cur")
        assert [row.get_attribute("data-seq") for row in focused] == ["1"]
        assert web.execute_script("return window.__trapped") == []
    finally:
        writer.close(0.01, "server closed")
        writer.release()
