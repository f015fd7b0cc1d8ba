"""A real headless Chromium (Debian's ``chromium`` and ``chromium-driver``) driven by Selenium.

Selenium is pointed at the system chromedriver and browser binary, so nothing is downloaded.
Each browser gets a fresh profile directory and the switches that keep it off the network.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

#: Installed before any page script runs: counts alert/confirm/prompt calls and errors.
TRAP_SCRIPT = """
window.__trapped = [];
['alert', 'confirm', 'prompt', 'print', 'open'].forEach(function (name) {
  window[name] = function () { window.__trapped.push(name + ':' + [].join.call(arguments, ' ')); };
});
window.addEventListener('error', function (e) { window.__trapped.push('error:' + e.message); });
document.addEventListener('securitypolicyviolation', function (e) {
  window.__trapped.push('csp:' + e.violatedDirective + ' ' + e.blockedURI);
});
"""


def find_browser() -> tuple[str, str] | None:
    """Paths of chromium and chromedriver, or None when either is missing."""
    browser = shutil.which("chromium") or (CHROMIUM if os.path.exists(CHROMIUM) else None)
    driver = shutil.which("chromedriver") or (
        CHROMEDRIVER if os.path.exists(CHROMEDRIVER) else None
    )
    return (browser, driver) if browser and driver else None


@contextmanager
def headless_chromium(
    browser: str, driver: str, width: int = 1400, height: int = 900
) -> Iterator[Any]:
    """A Selenium WebDriver for a fresh headless Chromium; quits and removes its profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="pop3tap-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for switch in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
    ):
        options.add_argument(switch)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    web = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    try:
        web.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": TRAP_SCRIPT})
        yield web
    finally:
        web.quit()
        shutil.rmtree(profile, ignore_errors=True)


def chromium_driver() -> Iterator[Any]:
    """Body of the ``web`` fixtures: a headless Chromium, or a skip (a failure when real peers
    are required) when it is not installed."""
    found = find_browser()
    if found is None:
        from conftest import _missing_peer

        _missing_peer("chromium and chromedriver are not installed (run: bash scripts/test.sh)")
        raise AssertionError("unreachable")
    with headless_chromium(*found) as driver:
        yield driver
