"""Smoke test for benchmarks/: run the quick configuration once and check the JSON it writes.

No timing assertions: only that every metric is there, positive where it must be, that no
session failed, and that the capture file system is named and probed. pop3tap is included
when ``pop3tap.relay`` (and ``pop3tap.cli``, which starts it) can be imported, and the
replay mode (record one session, then serve it with ``pop3tap replay``; concurrency load
only) when ``pop3tap.replay`` can be imported too; otherwise only their checks are skipped.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
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
    "trio-floor-one-task",
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


@pytest.mark.parametrize(
    "mode", ["direct", "socat", "trio-floor", "trio-floor-one-task", "pop3tap", "pop3tap-workers"]
)
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
    assert disk["statfs_type"] == "tmpfs"
    cpus = report["cpus"]
    assert cpus["cpus_kept"] == "idle" and cpus["cpus"] == len(os.sched_getaffinity(0))
    assert 0 < cpus["wakeup"]["median_us"] <= cpus["wakeup"]["p99_us"]
    for mode in MODES:
        if mode != "direct" and "error" not in report["modes"][mode]:
            assert mode in report["ratio_to_direct"]


def test_masking_benchmark_reports_every_shape_and_both_loads() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.masking", "--repeat", "1", "--mib", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    shapes = [line for line in lines if line.startswith("shape ")]
    ratios = [line for line in lines if not line.startswith("shape ")]
    assert [line.split(":")[0] for line in shapes] == [
        f"shape {name}"
        for name in (
            "binary", "long-lines", "commands", "pass-flood", "apop-flood", "odd-flood",
            "auth-flood", "split-lines", "keyword-inside-lines", "lone-cr-parts",
        )
    ]  # fmt: skip
    assert all(float(line.split(": ")[1].split(" ")[0]) > 0 for line in shapes)
    assert [line.split(":")[0] for line in ratios] == ["commands", "binary"]
    assert all(float(line.rsplit(" ", 1)[1]) > 0 for line in ratios)


@pytest.mark.parametrize("pure", ["1", "0"])
def test_core_loop_names_the_core_it_ran(pure: str) -> None:
    """benchmarks.core_loop feeds the sample captures to the core and says which build ran."""
    env = {**os.environ, "POP3TAP_PURE_PYTHON": pure}
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.core_loop", "--sessions", "5", "--repeat", "1"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    import pop3tap.protocol

    built = any(Path(pop3tap.protocol.__file__).parent.glob("_observer.*.so"))
    build = "compiled" if pure == "0" and built else "pure"
    words = result.stdout.split()
    assert words[:2] == [build, "core:"] and float(words[2]) > 0, result.stdout
    assert "(5 captures, " in result.stdout and " 0 events" not in result.stdout


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
    flood = pop3tap["victim_pass_flood"]
    assert flood["attacked_noops"] > 0 and flood["flood_mib_per_s"] > 0
    assert flood["p99_ratio"] > 0 and flood["relay_cpu_ms_per_mib"] > 0
    for name in ("pop3tap", "pop3tap-keep-secrets", "trio-floor"):
        assert results[name]["upload"]["mib_per_relay_cpu_s"] > 0
    assert results["masker_alone"]["mib_per_cpu_s"] > 0
    assert set(results["upload_cpu_ratios"]) == {"pop3tap_to_keep_secrets", "pop3tap_to_trio_floor"}


def _assert_probe(probe: dict[str, Any], statfs_type: str) -> None:
    """A capture file system probe names the file system and has positive costs."""
    assert probe["statfs_type"] == statfs_type
    assert probe["fstype"] and probe["mount_point"]
    assert probe["files"] > 0 and probe["create_us_per_file"] > 0
    assert probe["create_cpu_us_per_file"] >= 0
    assert probe["append_octets"] > 0 and probe["append_mb_s"] > 0


def test_quick_captures_on_tmpfs_by_default(report: dict[str, Any]) -> None:
    """Without --captures-on the captures go to a tmpfs, named and probed in the same run."""
    fs = report["capture_fs"]
    assert fs["choice"] == "tmpfs"
    assert fs["description"].startswith("tmpfs: ")
    _assert_probe(fs["before_modes"], "tmpfs")
    writers = [m for m in MODES if m.startswith(("pop3tap", "replay"))]
    for mode in writers:
        _assert_probe(report["modes"][mode]["capture_fs"], "tmpfs")
    if len(writers) > 1 and "mount per mode" in fs["description"]:
        # Each mode writes to a file system of its own.
        points = {report["modes"][m]["capture_fs"]["mount_point"] for m in writers}
        assert len(points) == len(writers)
    assert "capture_fs" not in report["modes"]["direct"]


def test_quick_run_leaves_no_mount_behind(report: dict[str, Any]) -> None:
    mounts = Path("/proc/self/mountinfo").read_text()
    root = report["capture_fs"]["root"]["path"]
    assert root not in mounts
    assert not Path(root).exists()


def _statfs(path: Path) -> str:
    return subprocess.run(
        ["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_quick_captures_on_path(tmp_path: Path) -> None:
    """--captures-on PATH: fresh directories inside PATH, named in the report and printed,
    and nothing left in PATH after the run."""
    where = tmp_path / "captures here"  # a space in the path
    where.mkdir()
    out = tmp_path / "quick.json"
    modes = ["direct", *(["pop3tap"] if HAVE_RELAY else [])]
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--no-memory", "--json", str(out),
         "--modes", ",".join(modes), "--captures-on", str(where)],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    fs = data["capture_fs"]
    assert fs["choice"] == str(where.resolve())
    assert fs["root"]["path"].startswith(str(where.resolve()) + "/")
    _assert_probe(fs["before_modes"], _statfs(where))
    assert Path(fs["before_modes"]["path"]).is_relative_to(where.resolve())
    assert f"captures on {fs['description']}" in proc.stdout
    assert "capture file system before the modes: " in proc.stdout
    if HAVE_RELAY:
        probe = data["modes"]["pop3tap"]["capture_fs"]
        _assert_probe(probe, _statfs(where))
        assert Path(probe["path"]).is_relative_to(where.resolve())
        assert data["modes"]["pop3tap"]["capture_files"] >= 20
        assert "at the start of pop3tap: " in proc.stdout
    assert list(where.iterdir()) == []


@pytest.mark.parametrize("value", ["/nonexistent/pop3tap-bench", "tmpfs2"])
def test_captures_on_rejects_a_missing_directory(value: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--captures-on", value],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "neither tmpfs, disk nor an existing directory" in proc.stderr
    assert value in proc.stderr


def test_capture_fs_probe_keeps_its_files(tmp_path: Path) -> None:
    """The probe creates files and appends without deleting anything (no artifact)."""
    from benchmarks import capturefs

    probe = capturefs.probe(tmp_path / "p", files=50, append_total=1024 * 1024)
    _assert_probe(probe, _statfs(tmp_path))
    names = sorted(p.name for p in (tmp_path / "p").iterdir())
    assert len(names) == 51 and names[-1] == "probe-appends.p3cap"
    assert (tmp_path / "p" / "probe-appends.p3cap").stat().st_size == probe["append_octets"]
    assert probe["append_octets"] >= 1024 * 1024


def test_capture_space_gives_fresh_directories_until_closed(tmp_path: Path) -> None:
    from benchmarks import capturefs

    with capturefs.CaptureSpace(str(tmp_path), "pop3tap-test") as space:
        first, second = space.fresh("pop3tap"), space.fresh("pop3tap")
        assert first != second and first.parent == second.parent
        (first / "kept").write_bytes(b"x")
        space.release(first)  # a directory (not a mount) stays until the space closes
        assert (first / "kept").read_bytes() == b"x"
        assert space.report()["root"]["statfs_type"] == _statfs(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_mount_of_reads_escaped_mount_points() -> None:
    from benchmarks import capturefs

    assert capturefs._unescape(r"/mnt/a\040b\134c") == "/mnt/a b\\c"
    root = capturefs.mount_of(Path("/"))
    assert root["mount_point"] == "/" and root["fstype"]
    proc_mount = capturefs.mount_of(Path("/proc/self"))
    assert proc_mount["fstype"] == "proc" and proc_mount["mount_point"] == "/proc"


@pytest.mark.parametrize(
    "mode",
    ["trio-floor", "trio-floor-one-task", "trio-floor-recv-into",
     "trio-floor-one-task-direct-recv-into"],
)
def test_floor_forwards_both_directions_verbatim(mode: str) -> None:
    """Every bare forwarder variant passes 2 MiB each way unchanged, half-closes included:
    a floor that lost or reordered bytes would not be a floor."""
    import socket
    import threading

    from benchmarks import relays

    upload, download = os.urandom(2 * 1024 * 1024), os.urandom(2 * 1024 * 1024)
    received: dict[str, bytes] = {}
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(30)

        def server() -> None:
            # The benchmark relay's readiness probe connects and closes first.
            while True:
                conn, _ = listener.accept()
                with conn:
                    conn.settimeout(30)
                    first = conn.recv(65536)
                    if not first:
                        continue
                    sender = threading.Thread(target=conn.sendall, args=(download,))
                    sender.start()
                    chunks = [first]
                    while chunk := conn.recv(65536):
                        chunks.append(chunk)
                    sender.join()
                    conn.shutdown(socket.SHUT_WR)
                    received["server"] = b"".join(chunks)
                    return

        thread = threading.Thread(target=server, daemon=True)
        thread.start()
        with tempfile.TemporaryDirectory() as tmp:
            relay = relays.start_relay(mode, listener.getsockname()[1], Path(tmp))
            try:
                with socket.create_connection(("127.0.0.1", relay.port), timeout=30) as c:
                    sender = threading.Thread(target=c.sendall, args=(upload,))
                    sender.start()
                    chunks: list[bytes] = []
                    reader = threading.Thread(
                        target=lambda: chunks.extend(iter(lambda: c.recv(65536), b""))
                    )
                    reader.start()
                    sender.join()
                    c.shutdown(socket.SHUT_WR)
                    reader.join(30)
                    received["client"] = b"".join(chunks)
            finally:
                relay.stop()
        thread.join(30)
    assert received["server"] == upload
    assert received["client"] == download


def test_paired_compares_modes_with_cpu(tmp_path: Path) -> None:
    """benchmarks.paired runs every load against every mode each round and reports CPU,
    and the part of it spent in the kernel."""
    out = tmp_path / "paired.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.paired", "--modes", "trio-floor,trio-floor-one-task",
         "--rounds", "2", "--loads", "noop,sessions", "--json", str(out),
         "--captures-on", str(tmp_path), "--cpus", "awake"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    assert data["capture_fs"]["statfs_type"] == _statfs(tmp_path)
    assert data["cpus"]["cpus_kept"] == "awake"
    assert "CPUs: " in proc.stdout and "kept awake by SCHED_IDLE busy loops" in proc.stdout
    for load in ("noop", "sessions"):
        for mode in ("trio-floor", "trio-floor-one-task"):
            got = data["samples"][load][mode]
            assert len(got["value"]) == 2 and all(v > 0 for v in got["value"])
            assert len(got["cpu"]) == 2 and all(v > 0 for v in got["cpu"])
            # The kernel's part is read in clock ticks: 0 is possible for a short load.
            assert len(got["sys"]) == 2 and all(k >= 0 for k in got["sys"])
    assert len(data["samples"]["noop"]["trio-floor"]["p99"]) == 2
    assert "paired ratios to trio-floor" in proc.stdout and "of it in the kernel" in proc.stdout
    assert "trio-floor-one-task" in proc.stdout and "captures on " in proc.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["paired.json"]


def test_ab_names_the_capture_file_system(tmp_path: Path) -> None:
    """benchmarks.ab carries --captures-on and says where A's and B's captures went."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.ab", str(REPO), str(REPO), "--load", "noop",
         "--rounds", "2", "--captures-on", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    kind = _statfs(tmp_path)
    assert f"captures on {tmp_path.resolve()}: fresh directories" in proc.stdout
    assert "  A: " in proc.stdout and f"(statfs {kind})" in proc.stdout
    assert "CPUs: " in proc.stdout and "left to go idle" in proc.stdout
    assert "median of paired B/A" in proc.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("load", ["noop", "sessions"])
def test_ab_serve_replay_plays_one_recorded_capture_to_both_trees(
    tmp_path: Path, load: str
) -> None:
    """benchmarks.ab --serve replay: both trees serve the capture recorded for the load, and
    every command of every round gets its recorded answer (the load generator fails on an
    -ERR, and so would the A/B)."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.ab", str(REPO), str(REPO), "--serve", "replay",
         "--load", load, "--rounds", "2", "--captures-on", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "replaying " in proc.stdout
    assert ("--match any" in proc.stdout) == (load == "noop")
    samples = {
        name: [float(v) for v in re.findall(r"[0-9.]+", line.split(": ", 1)[1])]
        for name, line in (
            (x.split()[2].rstrip(":"), x)
            for x in proc.stdout.splitlines()
            if x.startswith(f"{load} ")
        )
    }
    assert set(samples) == {"A", "B"} and all(
        len(v) == 2 and min(v) > 0 for v in samples.values()
    )
    assert list(tmp_path.iterdir()) == []


def test_capture_space_tmpfs_without_mounting_uses_dev_shm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not root (or no mount allowed): fresh directories on the /dev/shm tmpfs, each
    dropped when its mode is done, the root when the space closes."""
    from benchmarks import capturefs

    if capturefs.mount_of(capturefs.SHM_BASE).get("fstype") != "tmpfs":
        pytest.skip("/dev/shm is not a tmpfs here")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with capturefs.CaptureSpace("tmpfs", "pop3tap-test") as space:
        assert "/dev/shm" in space.description
        workdir = space.fresh("pop3tap")
        assert workdir.is_relative_to(capturefs.SHM_BASE)
        assert capturefs.describe(workdir)["statfs_type"] == "tmpfs"
        (workdir / "capture.p3cap").write_bytes(b"x")
        space.release(workdir)
        assert not workdir.exists()
        root = workdir.parent
        assert root.is_dir()
    assert not root.exists()


def test_hostile_pass_flood_alone_reports_both_relays(tmp_path: Path) -> None:
    out = tmp_path / "flood.json"
    command = [sys.executable, "-m", "benchmarks.hostile", "--quick", "--only", "pass-flood"]
    subprocess.run(
        [*command, "--json", str(out)],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=300,
    )
    results = json.loads(out.read_text())
    for name in ("pop3tap", "trio-floor"):
        flood = results[name]["victim_pass_flood"]
        assert flood["attacked_noops"] > 0 and flood["p99_ratio"] > 0
        assert flood["relay_cpu_ms_per_mib"] > 0


def test_record_variants_switch_off_one_part_each(tmp_path: Path) -> None:
    """The pop3tap-no-* modes run the same `pop3tap record` command with one part of the
    recording switched off, and nothing else changed."""
    from benchmarks import relays

    full = relays.relay_command("pop3tap", 1100, 110, tmp_path)
    assert "--captures" in full and "--no-captures" not in full
    for mode, extra in relays.RECORD_VARIANTS.items():
        assert mode in relays.ALL_MODES and mode not in relays.MODES
        command = relays.relay_command(mode, 1100, 110, tmp_path)
        assert command[len(command) - len(extra) :] == list(extra)
        without = [a for a in full if "--no-captures" not in extra or a != "--captures"]
        if "--no-captures" in extra:
            without.remove(str(tmp_path / "captures"))
        assert command[: len(command) - len(extra)] == without


def test_a_kernel_time_of_zero_ticks_leaves_out_the_ratio_not_the_report() -> None:
    """A short load can spend 0 clock ticks in the kernel every round: the report prints
    the median without a ratio to it (a ratio to nothing is no figure) instead of failing."""
    from benchmarks import paired

    a = {"value": [36.0, 35.0], "p99": [50.0, 51.0], "cpu": [90.0, 92.0], "sys": [0.0, 0.0]}
    b = {"value": [34.0, 35.0], "p99": [49.0, 50.0], "cpu": [88.0, 91.0], "sys": [5.0, 0.0]}
    samples = {"noop": {"A": a, "B": b}}
    lines = paired.report_lines(samples)
    (b_line,) = [line for line in lines if line.lstrip().startswith("B ")]
    assert "CPU 89.5 (0.98x)" in b_line
    assert b_line.endswith("of it in the kernel 2.500")
    (a_line,) = [line for line in lines if line.lstrip().startswith("A ")]
    assert "of it in the kernel 0.000 (" not in a_line
    assert math.isnan(paired.paired_ratio([1.0], [0.0]))
    assert paired.paired_ratio([2.0, 3.0, 9.0], [1.0, 0.0, 3.0]) == 2.5
