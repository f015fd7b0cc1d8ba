"""How the HTML view's load time grows with the session: 1,000 against 10,000 exchanges.

    .venv/bin/python -m benchmarks.html_view [--repeat 5] [--json FILE]

Writes two synthetic pipelined captures (tests/synthetic_captures.py), renders each with
``pop3tap show --format html``, and loads each page in headless Chromium (Debian's
``chromium`` and ``chromium-driver``, driven by Selenium), alternating the two so both see
the same machine load. A load is timed from navigation start until the second animation
frame after the load event: the page has built every row and painted once. The result is
the ratio of the medians (the target is under 5, i.e. linear or better) and the sizes of
each page against the capture's text view (``show`` and ``show --bodies``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from browser import find_browser, headless_chromium  # noqa: E402
from synthetic_captures import pipelined_capture  # noqa: E402

SIZES = (1000, 10000)

_RENDERED_MS = """
var done = arguments[arguments.length - 1];
requestAnimationFrame(function () { requestAnimationFrame(function () {
  done([performance.now(), document.querySelectorAll('.row.ex').length]);
}); });
"""


def _pop3tap(*args: str) -> bytes:
    return subprocess.run(
        [sys.executable, "-m", "pop3tap", *args], check=True, capture_output=True
    ).stdout


def run(repeat: int) -> dict[str, Any]:
    found = find_browser()
    if found is None:
        raise SystemExit(
            "chromium and chromedriver are needed (apt-get install chromium chromium-driver)"
        )
    result: dict[str, Any] = {"repeat": repeat}
    with tempfile.TemporaryDirectory(prefix="pop3tap-html-bench-") as tmp:
        pages: dict[int, Path] = {}
        for size in SIZES:
            capture = pipelined_capture(
                Path(tmp) / str(size), size, slow_seq=size // 2, session=f"bench{size}"
            )
            page = Path(tmp) / f"{size}.html"
            _pop3tap("show", "--format", "html", str(capture), "-o", str(page))
            text = len(_pop3tap("show", str(capture)))
            text_bodies = len(_pop3tap("show", "--bodies", str(capture)))
            pages[size] = page
            result[f"html_bytes_{size}"] = page.stat().st_size
            result[f"html_to_text_{size}"] = round(page.stat().st_size / text, 3)
            result[f"html_to_text_bodies_{size}"] = round(page.stat().st_size / text_bodies, 3)
        times: dict[int, list[float]] = {size: [] for size in SIZES}
        with headless_chromium(*found) as web:
            web.set_script_timeout(120)
            for _ in range(repeat):
                for size in SIZES:
                    web.get(pages[size].as_uri())
                    elapsed, rows = web.execute_async_script(_RENDERED_MS)
                    if rows != size:
                        raise SystemExit(f"page of {size} exchanges shows {rows} rows")
                    times[size].append(elapsed)
        for size in SIZES:
            result[f"load_ms_median_{size}"] = round(statistics.median(times[size]), 1)
            result[f"load_ms_all_{size}"] = [round(t, 1) for t in times[size]]
        result["load_ratio_10k_to_1k"] = round(
            result["load_ms_median_10000"] / result["load_ms_median_1000"], 2
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", metavar="FILE", help="also write the result here")
    args = parser.parse_args()
    result = run(args.repeat)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
