"""Run every benchmark mode and print/write the comparison.

    .venv/bin/python -m benchmarks.run [--quick] [--json out.json]
        [--modes direct,socat,haproxy,trio-floor,pop3tap,pop3tap-workers,replay,replay-workers,
         replay-model]

For each mode the relay is started on a free 127.0.0.1 port in front of the benchmark server,
measured with the load generator (a separate process) and stopped. Every measurement is
repeated (3 times, once with --quick) and the median is reported. Ratios are computed within
this run only.

The ``replay`` mode is not a relay: it records one concurrency-mode session through
``pop3tap record`` in front of the benchmark server, then serves it with ``pop3tap replay
--sessions cycle`` and runs only the concurrency load against it. Its sessions/s is compared
with haproxy's (the benchmark server through haproxy) in the same run.

``trio-floor`` (benchmarks/trio_floor.py) forwards with the same trio I/O as pop3tap and does
nothing else; its ratios show how much of pop3tap's cost is trio's own. The ``-workers`` modes
run ``pop3tap record``/``replay`` with ``--workers`` set to the number of CPUs, as haproxy
runs one thread per CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks import capturefs, idlecpu, memory, relays
from benchmarks import loadgen as lg

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latest.json"


@dataclass(frozen=True)
class Config:
    big_size: int = 64 * 1024 * 1024
    throughput_retrs: int = 5
    noop_count: int = 5000
    retr_count: int = 500
    sessions: int = 200
    rounds: int = 3
    reps: int = 3
    procs: int = 2
    memory_check: bool = True
    probe_files: int = capturefs.PROBE_FILES
    probe_append_total: int = capturefs.PROBE_APPEND_TOTAL


QUICK = Config(
    big_size=4 * 1024 * 1024,
    throughput_retrs=1,
    noop_count=200,
    retr_count=20,
    sessions=20,
    rounds=1,
    reps=1,
    probe_files=200,
    probe_append_total=2 * 1024 * 1024,
)


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    better: str  # "higher", "lower" or "zero"
    relay_only: bool = False


METRICS = (
    Metric("throughput_mb_s", "64 MiB RETR throughput, MB/s", "higher"),
    Metric("noop_median_us", "NOOP round trip median, us", "lower"),
    Metric("noop_p99_us", "NOOP round trip p99, us", "lower"),
    Metric("retr16k_median_us", "16 KiB RETR median, us", "lower"),
    Metric("retr16k_p99_us", "16 KiB RETR p99, us", "lower"),
    Metric("retr16k_stalls", "16 KiB RETRs above 35 ms", "zero"),
    Metric("sessions_per_s", "sessions/s (concurrent)", "higher"),
    Metric("session_errors", "session errors", "zero"),
    Metric("relay_cpu_s_per_gb", "relay CPU s per GB", "lower", relay_only=True),
    Metric("relay_cpu_ms_per_session", "relay CPU ms per session", "lower", relay_only=True),
    Metric("relay_peak_rss_mb", "relay peak RSS (VmHWM), MB", "lower", relay_only=True),
    Metric("relay_tree_peak_rss_mb", "relay tree peak RSS (sampled), MB", "lower", True),
    Metric("relay_tree_peak_pss_mb", "relay tree peak PSS (sampled), MB", "lower", True),
    Metric("mem_growth_mb", "slow reader: RSS growth, MB", "lower"),
    Metric("mem_flat", "slow reader: RSS flat", "true"),
)
#: Metrics that are counts expected to be zero, or may legitimately be zero.
ZERO_OK = {"retr16k_stalls", "session_errors", "mem_growth_mb"}


class LoadgenError(Exception):
    pass


def loadgen(what: str, port: int, *extra: str, timeout: float = 900.0) -> dict[str, Any]:
    """Run one load-generator measurement in its own process and return its JSON result."""
    cmd = [sys.executable, "-m", "benchmarks.loadgen", what, "--port", str(port), *extra]
    try:
        proc = subprocess.run(
            cmd, cwd=relays.REPO, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise LoadgenError(f"{what}: timed out after {timeout:.0f}s") from exc
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        raise LoadgenError(f"{what}: {lines[-1] if lines else 'exit ' + str(proc.returncode)}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _remove_captures(relay: relays.Relay) -> int:
    """Delete the capture files a pop3tap mode wrote so far; return how many there were.

    Called only before a throughput repetition, when the mode has written a handful of
    (large) captures: the readiness probe's and the previous repetitions'. The ~1,800
    small captures of the concurrency load come last and stay until the run ends.
    """
    if relay.workdir is None or not relay.mode.startswith("pop3tap"):
        return 0
    removed = 0
    for path in (relay.workdir / "captures").glob("*"):
        if path.is_file():
            path.unlink()
            removed += 1
    return removed


def measure(relay: relays.Relay, server_pid: int, cfg: Config) -> dict[str, Any]:
    """All measurements for one running relay."""
    pid = relay.pid
    port = relay.port
    samples: dict[str, list[float]] = {
        m.key: [] for m in METRICS if not m.key.startswith("mem_")
    }
    errors: list[str] = []
    extra: dict[str, Any] = {}
    removed_captures = 0

    def cpu() -> float:
        return relays.tree_cpu(pid) if pid is not None else 0.0

    def settle() -> None:
        # Let fork-mode children exit and be reaped so their time lands in cutime/cstime.
        time.sleep(0.2 if relay.mode == "socat" else 0.05)

    if relay.workdir is not None and relay.mode.startswith(FILE_WRITING):
        # What creating and appending to a file costs on this mode's capture file system
        # right now, before the mode writes its own (the files stay, as captures do).
        extra["capture_fs"] = capturefs.probe(
            relay.workdir / "fs-probe", cfg.probe_files, append_total=cfg.probe_append_total
        )
    full = relay.mode not in relays.CONCURRENCY_ONLY
    sampler = relays.RssSampler(pid if pid is not None else server_pid, 0.05, pss=True)
    with sampler:
        for _ in range(cfg.reps if full else 0):
            try:
                # Every repetition starts alike: the captures of the previous one (5 x
                # 64 MiB) counted and deleted, and no dirty pages left to flush.
                removed_captures += _remove_captures(relay)
                os.sync()
                c0 = cpu()
                r = loadgen("throughput", port, "--repeat", str(cfg.throughput_retrs))
                settle()
                c1 = cpu()
                samples["throughput_mb_s"].append(r["mb_per_s"])
                if pid is not None:
                    samples["relay_cpu_s_per_gb"].append((c1 - c0) / (r["octets"] / 1e9))
            except LoadgenError as exc:
                errors.append(str(exc))
        for _ in range(cfg.reps if full else 0):
            try:
                r = loadgen("noop", port, "--count", str(cfg.noop_count))
                samples["noop_median_us"].append(r["median_us"])
                samples["noop_p99_us"].append(r["p99_us"])
            except LoadgenError as exc:
                errors.append(str(exc))
        for _ in range(cfg.reps if full else 0):
            try:
                r = loadgen("retr", port, "--count", str(cfg.retr_count))
                samples["retr16k_median_us"].append(r["median_us"])
                samples["retr16k_p99_us"].append(r["p99_us"])
                samples["retr16k_stalls"].append(r["stalls"])
            except LoadgenError as exc:
                errors.append(str(exc))
        for _ in range(cfg.reps):
            try:
                c0 = cpu()
                r = loadgen(
                    "sessions", port,
                    "--sessions", str(cfg.sessions),
                    "--rounds", str(cfg.rounds),
                    "--procs", str(cfg.procs),
                )
                settle()
                c1 = cpu()
                samples["sessions_per_s"].append(r["sessions_per_s"])
                samples["session_errors"].append(r["errors"])
                if r["error_samples"]:
                    errors.extend(f"session: {e}" for e in r["error_samples"])
                if pid is not None and r["sessions"]:
                    samples["relay_cpu_ms_per_session"].append(
                        (c1 - c0) * 1000.0 / r["sessions"]
                    )
            except LoadgenError as exc:
                errors.append(str(exc))
                samples["session_errors"].append(cfg.sessions * cfg.rounds)
    if pid is not None:
        samples["relay_peak_rss_mb"].append(relays.vm_hwm_mb(pid))
        samples["relay_tree_peak_rss_mb"].append(sampler.peak)
        samples["relay_tree_peak_pss_mb"].append(sampler.peak_pss)

    metrics: dict[str, Any] = {k: _median(v) for k, v in samples.items()}
    if not full:
        samples = {k: v for k, v in samples.items() if v}
        metrics = {k: v for k, v in metrics.items() if v is not None}
    if cfg.memory_check and full:
        try:
            mem = memory.slow_read(port, pid if pid is not None else server_pid, cfg.big_size)
            extra["memory"] = mem
            metrics["mem_growth_mb"] = mem["growth_mb"]
            metrics["mem_flat"] = mem["flat"]
            if not mem["completed"]:
                errors.append(f"memory check incomplete: {mem}")
        except (OSError, lg.ReplyError) as exc:
            errors.append(f"memory: {exc}")
    if pid is None:
        for m in METRICS:
            if m.relay_only:
                metrics.pop(m.key, None)
    if relay.mode.startswith("pop3tap") and relay.workdir is not None:
        captures = relay.workdir / "captures"
        extra["capture_files"] = removed_captures + sum(
            1 for p in captures.rglob("*") if p.is_file()
        )
    if relay.mode.startswith(("pop3tap", "replay")) and relay.workdir is not None:
        log = relay.workdir / "log.jsonl"
        extra["log_lines"] = log.read_bytes().count(b"\n") if log.exists() else 0
    return {
        "metrics": metrics,
        "samples": samples,
        "errors": errors,
        "notes": relay.notes,
        **extra,
    }


def ratios(
    results: dict[str, Any],
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Each mode's ratio to direct, and the pop3tap (and trio-floor) modes' to haproxy.

    The second result maps each mode of ``relays.VS_HAPROXY`` that was measured to its
    haproxy ratios.
    """

    def ratio(a: Any, b: Any) -> float | None:
        if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None or b == 0:
            return None
        return float(a) / float(b)

    to_direct: dict[str, dict[str, float]] = {}
    direct = results.get("direct", {}).get("metrics", {})
    for mode, res in results.items():
        if mode == "direct" or "metrics" not in res:
            continue
        row = {}
        for key, value in res["metrics"].items():
            r = ratio(value, direct.get(key))
            if r is not None:
                row[key] = r
        to_direct[mode] = row
    vs_haproxy: dict[str, dict[str, float]] = {}
    hap = results.get("haproxy", {}).get("metrics", {})
    for mode in relays.VS_HAPROXY:
        if "metrics" not in results.get(mode, {}) or not hap:
            continue
        row = {}
        for key, value in results[mode]["metrics"].items():
            r = ratio(value, hap.get(key))
            if r is not None:
                row[key] = r
        vs_haproxy[mode] = row
    return to_direct, vs_haproxy


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value)}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 1:
        return f"{value:.1f}"
    return f"{value:.3f}"


def table(results: dict[str, Any], to_direct: dict[str, Any], vs_haproxy: dict[str, Any]) -> str:
    modes = [m for m in results if "metrics" in results[m]]
    cols = ["metric", *modes, *(f"{m}/haproxy" for m in vs_haproxy)]
    rows: list[list[str]] = []
    for m in METRICS:
        row = [m.label]
        for mode in modes:
            value = results[mode]["metrics"].get(m.key)
            cell = _fmt(value)
            r = to_direct.get(mode, {}).get(m.key)
            if r is not None and m.better in ("higher", "lower"):
                cell += f" ({r:.2f}x)"
            row.append(cell)
        for row_vs in vs_haproxy.values():
            r = row_vs.get(m.key)
            row.append(f"{r:.2f}x" if r is not None and m.better in ("higher", "lower") else "-")
        rows.append(row)
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines.append("-+-".join("-" * w for w in widths))
    lines.extend(" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def version(cmd: list[str]) -> str:
        if shutil.which(cmd[0]) is None:
            return "missing"
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        text = (out.stdout or out.stderr).splitlines()
        return next((ln.strip() for ln in text if "version" in ln.lower()), "?")

    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "socat": version(["socat", "-V"]),
        "haproxy": version(["haproxy", "-v"]),
    }


#: Modes whose relay writes captures or a log file into its work directory.
FILE_WRITING = ("pop3tap", "replay")


def disk_write(cfg: Config, reps: int, directory: Path) -> dict[str, Any]:
    """How fast the captures' file system takes what one throughput repetition records.

    Writes ``throughput_retrs x big_size`` octets as 256 KiB appends (the relay's chunk
    size, one ``writev`` each) to a new file in ``directory``, on the file system where the
    pop3tap modes keep their captures, after deleting the previous repetition's file and an
    ``os.sync()``, as the throughput runs do; medians of ``reps``. This bounds the
    recording relay's throughput and CPU per GB on this machine; no relay is involved.
    """
    chunk = os.urandom(256 * 1024)
    total = cfg.throughput_retrs * cfg.big_size
    speeds: list[float] = []
    cpu_per_gb: list[float] = []
    for rep in range(reps):
        for old in directory.iterdir():  # as the throughput runs delete their captures
            old.unlink()
        os.sync()
        path = directory / f"write-{rep}"
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
        t0, c0 = time.perf_counter(), time.process_time()
        written = 0
        try:
            while written < total:
                written += os.writev(fd, [b"record header", chunk])
        finally:
            os.close(fd)
        wall, used = time.perf_counter() - t0, time.process_time() - c0
        speeds.append(written / wall / 1e6)
        cpu_per_gb.append(used / (written / 1e9))
    return {
        "octets_per_rep": total,
        "mb_per_s": statistics.median(speeds),
        "cpu_s_per_gb": statistics.median(cpu_per_gb),
        "samples_mb_per_s": speeds,
        "samples_cpu_s_per_gb": cpu_per_gb,
    }


def run(
    modes: list[str], cfg: Config, captures_on: str = "tmpfs", cpus_kept: str = "idle"
) -> dict[str, Any]:
    notes = relays.ensure_tools(modes)
    for n in notes:
        print(f"note: {n}", flush=True)
    results: dict[str, Any] = {}
    started = time.monotonic()
    with (
        idlecpu.condition(cpus_kept) as cpus,
        capturefs.CaptureSpace(captures_on, "pop3tap-bench") as space,
    ):
        print(f"CPUs: {idlecpu.summary(cpus)}", flush=True)
        print(f"captures on {space.description}", flush=True)
        probe_dir = space.fresh("fs-probe")
        before = capturefs.probe(probe_dir, cfg.probe_files, append_total=cfg.probe_append_total)
        space.release(probe_dir)
        server = relays.start_server(cfg.big_size)
        try:
            for mode, relay in relays.each_relay(modes, server.port, "pop3tap-bench", space):
                t0 = time.monotonic()
                if isinstance(relay, str):
                    results[mode] = {"error": relay}
                    continue
                results[mode] = measure(relay, server.proc.pid, cfg)
                for err in results[mode]["errors"]:
                    print(f"   error: {err}", flush=True)
                print(f"   done in {time.monotonic() - t0:.1f}s", flush=True)
        finally:
            server.stop()
        disk_dir = space.fresh("disk-write")
        disk = {**disk_write(cfg, cfg.reps, disk_dir), **capturefs.describe(disk_dir)}
        capture_fs = {**space.report(), "before_modes": before}
    to_direct, vs_haproxy = ratios(results)
    return {
        "capture_fs": capture_fs,
        "cpus": cpus,
        "disk_write": disk,
        "command": " ".join(sys.argv),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(time.monotonic() - started, 1),
        "machine": machine(),
        "config": asdict(cfg),
        "modes": results,
        "ratio_to_direct": to_direct,
        "to_haproxy": vs_haproxy,
        "pop3tap_to_haproxy": vs_haproxy.get("pop3tap", {}),
        "replay_to_haproxy": vs_haproxy.get("replay", {}),
        "model_to_replay": _model_to_replay(results),
    }


def capture_fs_lines(report: dict[str, Any]) -> list[str]:
    """The capture file system and its costs measured in this run, for the printed report."""
    fs = report["capture_fs"]
    lines = [
        f"captures on {fs['description']}",
        f"capture file system before the modes: {capturefs.summary(fs['before_modes'])}",
    ]
    for mode, res in report["modes"].items():
        if "capture_fs" in res:
            lines.append(f"  at the start of {mode}: {capturefs.summary(res['capture_fs'])}")
    disk = report["disk_write"]
    lines.append(
        f"capture file system, large writes: {disk['octets_per_rep'] / 2**20:.0f} MiB in "
        f"256 KiB appends at {disk['mb_per_s']:.0f} MB/s, {disk['cpu_s_per_gb']:.2f} CPU s "
        "per GB (no relay)"
    )
    return lines


def _model_to_replay(results: dict[str, Any]) -> dict[str, float]:
    """Sessions/s of the mailbox-model replay over the byte replay, in the same run."""
    try:
        model = float(results["replay-model"]["metrics"]["sessions_per_s"])
        replay = float(results["replay"]["metrics"]["sessions_per_s"])
    except (KeyError, TypeError):
        return {}
    return {"sessions_per_s": round(model / replay, 3)} if replay else {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="pop3tap vs direct, socat and haproxy")
    parser.add_argument("--quick", action="store_true", help="smallest configuration, one rep")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write results")
    parser.add_argument("--modes", default=",".join(relays.MODES))
    parser.add_argument("--reps", type=int, default=None, help="repetitions per measurement")
    parser.add_argument("--no-memory", action="store_true", help="skip the slow-reader check")
    capturefs.add_argument(parser)
    idlecpu.add_argument(parser)
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in relays.ALL_MODES]
    if unknown:
        parser.error(f"unknown modes: {', '.join(unknown)}")
    cfg = QUICK if args.quick else Config()
    if args.reps is not None:
        cfg = Config(**{**asdict(cfg), "reps": max(1, args.reps)})
    if args.no_memory:
        cfg = Config(**{**asdict(cfg), "memory_check": False})
    report = run(modes, cfg, args.captures_on, args.cpus)
    to_direct = report["ratio_to_direct"]
    print()
    print(table(report["modes"], to_direct, report["to_haproxy"]))
    m = report["machine"]
    print(f"\nmachine: {m['cpu']} x{m['cpus']}, kernel {m['kernel']}, python {m['python']}")
    print("(x) = ratio to direct in this run; medians of", cfg.reps, "repetition(s)")
    print(f"CPUs: {idlecpu.summary(report['cpus'])}")
    print("\n".join(capture_fs_lines(report)))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
