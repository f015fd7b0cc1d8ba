"""Smoke test for benchmarks/: run the quick configuration once and check the JSON it writes.

No timing assertions: only that every metric is there, positive where it must be, and that no
session failed. pop3tap is included when ``pop3tap.relay`` (and ``pop3tap.cli``, which starts
it) can be imported, and the replay mode (record one session, then serve it with ``pop3tap
replay``; concurrency load only) when ``pop3tap.replay`` can be imported too; otherwise only
their checks are skipped.
"""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent

CLIENT_METRICS = (
    "throughput_mb_s",
    "noop_median_us",
    "noop_p99_us",
    "retr16k_median_us",
    "retr16k_p99_us",
    "sessions_per_s",
)
#: The replay mode runs only the concurrency load.
REPLAY_METRICS = (
    "sessions_per_s",
    "relay_cpu_ms_per_session",
    "relay_peak_rss_mb",
    "relay_tree_peak_rss_mb",
    "relay_tree_peak_pss_mb",
)
RELAY_METRICS = (
    "relay_cpu_s_per_gb",
    "relay_cpu_ms_per_session",
    "relay_peak_rss_mb",
    "relay_tree_peak_rss_mb",
    "relay_tree_peak_pss_mb",
)


def _pop3tap_relay_available() -> bool:
    """True once the relay and the command line that starts it can both be imported."""
    try:
        importlib.import_module("pop3tap.relay")
        importlib.import_module("pop3tap.cli")
    except ImportError:
        return False
    return True


def _pop3tap_replay_available() -> bool:
    try:
        importlib.import_module("pop3tap.replay")
    except ImportError:
        return False
    return _pop3tap_relay_available()


HAVE_SOCAT = shutil.which("socat") is not None
HAVE_RELAY = _pop3tap_relay_available()
HAVE_REPLAY = _pop3tap_replay_available()
MODES = [
    "direct",
    *(["socat"] if HAVE_SOCAT else []),
    "trio-floor",
    *(["pop3tap", "pop3tap-workers"] if HAVE_RELAY else []),
    *(["replay", "replay-model"] if HAVE_REPLAY else []),
]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench") / "quick.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--quick",
            "--json",
            str(out),
            "--modes",
            ",".join(MODES),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data: dict[str, Any] = json.loads(out.read_text())
    return data


@pytest.mark.parametrize("mode", ["direct", "socat", "trio-floor", "pop3tap", "pop3tap-workers"])
def test_quick_mode(report: dict[str, Any], mode: str) -> None:
    if mode == "socat" and not HAVE_SOCAT:
        pytest.skip("socat is not installed")
    if mode.startswith("pop3tap") and not HAVE_RELAY:
        pytest.skip("pop3tap.relay / pop3tap.cli is not importable yet")
    result = report["modes"][mode]
    assert "error" not in result, result.get("error")
    assert result["errors"] == []
    metrics = result["metrics"]
    expected = CLIENT_METRICS + (RELAY_METRICS if mode != "direct" else ())
    for key in expected:
        value = metrics.get(key)
        assert isinstance(value, int | float), (key, value)
        assert value > 0, (key, value)
    assert metrics["session_errors"] == 0
    assert metrics["retr16k_stalls"] >= 0
    assert isinstance(metrics["mem_growth_mb"], int | float)
    assert isinstance(metrics["mem_flat"], bool)
    assert result["memory"]["completed"] is True
    if mode == "direct":
        assert not any(key in metrics for key in RELAY_METRICS)
    if mode.startswith("pop3tap"):
        # Every connection (load generator sessions and readiness probes) left a capture.
        assert result["capture_files"] >= 20 and result["log_lines"] > 0


@pytest.mark.parametrize("mode", ["replay", "replay-model"])
def test_quick_replay(report: dict[str, Any], mode: str) -> None:
    if not HAVE_REPLAY:
        pytest.skip("pop3tap.replay / pop3tap.relay is not importable yet")
    result = report["modes"][mode]
    assert "error" not in result, result.get("error")
    assert result["errors"] == []
    metrics = result["metrics"]
    for key in REPLAY_METRICS:
        value = metrics.get(key)
        assert isinstance(value, int | float), (key, value)
        assert value > 0, (key, value)
    assert metrics["session_errors"] == 0
    # Only the concurrency load runs against a replay server.
    assert "throughput_mb_s" not in metrics
    assert "memory" not in result
    assert result["log_lines"] > 0


def test_quick_report_shape(report: dict[str, Any]) -> None:
    assert report["config"]["reps"] == 1
    assert set(report["modes"]) == set(MODES)
    disk = report["disk_write"]
    assert disk["octets_per_rep"] == report["config"]["big_size"]
    assert disk["mb_per_s"] > 0 and disk["cpu_s_per_gb"] > 0
    for mode in MODES:
        if mode != "direct" and "error" not in report["modes"][mode]:
            assert mode in report["ratio_to_direct"]


def test_masking_benchmark_reports_both_loads() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.masking", "--repeat", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["commands", "binary"]
    assert all(float(line.rsplit(" ", 1)[1]) > 0 for line in lines)


def test_hostile_quick_reports_every_figure(tmp_path: Path) -> None:
    """benchmarks.hostile --quick runs end to end; figures are present and positive."""
    out = tmp_path / "hostile.json"
    subprocess.run(
        [sys.executable, "-m", "benchmarks.hostile", "--quick", "--json", str(out)],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=300,
    )
    results = json.loads(out.read_text())
    pop3tap = results["pop3tap"]
    assert pop3tap["lf_burst"]["sessions"] == 3
    assert pop3tap["lf_burst"]["cpu_ms_per_burst_max"] > 0
    for run in ("victim", "victim_noop_bursts"):
        assert pop3tap[run]["attacked_noops"] > 0 and pop3tap[run]["bursts"] > 0
        assert pop3tap[run]["p99_ratio"] > 0
    for name in ("pop3tap", "pop3tap-keep-secrets", "trio-floor"):
        assert results[name]["upload"]["mib_per_relay_cpu_s"] > 0
    assert results["masker_alone"]["mib_per_cpu_s"] > 0
    assert set(results["upload_cpu_ratios"]) == {"pop3tap_to_keep_secrets", "pop3tap_to_trio_floor"}
