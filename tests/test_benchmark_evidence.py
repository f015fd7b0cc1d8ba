"""Smoke test for benchmarks/evidence.py: it runs and reports every figure (no timing asserts)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_evidence_benchmark_reports_every_command(tmp_path: Path) -> None:
    out = tmp_path / "evidence.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.evidence",
            "--size-mb",
            "1",
            "--reps",
            "1",
            "--json",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(out.read_text())
    assert figures["capture_bytes"] > 1024 * 1024
    for command in ("show --format json", "lint", "diff"):
        entry = figures[command]
        assert entry["mb_per_s"] > 0 and entry["peak_rss_mib"] > 0
        assert entry["speed_vs_show"] > 0 and entry["cpu_speed_vs_show"] > 0
        assert command in result.stdout
