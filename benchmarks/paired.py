"""Paired comparison of relay modes, for differences smaller than this VM's noise.

Every mode is started side by side in front of one benchmark server, and the same loads are
run against each of them in turn, round after round, with the order rotated every round
(A B C, B C A, C A B, ...), so drifts of the machine hit every mode alike. For each load it
prints every mode's median, its relay CPU, and the median of the paired ratios to the first
mode::

    python -m benchmarks.paired --modes trio-floor,trio-floor-one-task,haproxy --rounds 12

``benchmarks.ab`` uses the same alternation for two source trees of ``pop3tap record``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import capturefs, idlecpu, relays

#: Load generator arguments, the figure taken from its result, and the unit relay CPU is
#: counted per: (arguments, key, CPU per, how many of that unit one load is).
LOADS: dict[str, tuple[list[str], str, str]] = {
    "noop": (["--count", "2000"], "median_us", "round trip"),
    "retr": (["--count", "500"], "median_us", "round trip"),
    "sessions": (["--sessions", "200", "--rounds", "1"], "sessions_per_s", "session"),
    "throughput": (["--repeat", "2"], "mb_per_s", "GB"),
}


@dataclass(frozen=True)
class Target:
    """One running relay: a name for the report, its port, its process (None: no relay)."""

    name: str
    port: int
    pid: int | None


def _units(load: str, result: dict[str, Any]) -> float:
    """How many of the load's CPU unit one result covers."""
    if load == "sessions":
        return float(result["sessions"])
    if load == "throughput":
        return float(result["octets"]) / 1e9
    return float(result["count"])


def alternate(
    targets: list[Target],
    loads: list[str],
    rounds: int,
    before_round: Callable[[int], None] | None = None,
) -> dict[str, dict[str, dict[str, list[float]]]]:
    """Run every load against every target, ``rounds`` times, the order rotated each round.

    Returns ``{load: {target: {"value": [...], "cpu": [...], "sys": [...], "p99": [...]}}}``;
    ``cpu`` is the relay's CPU per unit of the load (ms per session, us per round trip, s per
    GB), ``sys`` the part of it spent in the kernel, ``p99`` the round trips' 99th
    percentile (noop and retr only). ``before_round`` (if given) is called with the round
    number first.
    """
    out: dict[str, dict[str, dict[str, list[float]]]] = {
        load: {t.name: {"value": [], "cpu": [], "sys": [], "p99": []} for t in targets}
        for load in loads
    }
    scale = {"round trip": 1e6, "session": 1e3, "GB": 1.0}
    for round_ in range(rounds):
        if before_round is not None:
            before_round(round_)
        shift = round_ % len(targets)
        order = targets[shift:] + targets[:shift]
        if (round_ // len(targets)) % 2:
            order.reverse()
        for load in loads:
            extra, key, unit = LOADS[load]
            for target in order:
                c0 = relays.tree_cpu(target.pid) if target.pid is not None else 0.0
                s0 = relays.tree_system_cpu(target.pid) if target.pid is not None else 0.0
                proc = subprocess.run(
                    [sys.executable, "-m", "benchmarks.loadgen", load,
                     "--port", str(target.port), *extra],
                    cwd=relays.REPO, capture_output=True, text=True, check=True,
                )
                result = json.loads(proc.stdout.strip().splitlines()[-1])
                if target.pid is not None:
                    time.sleep(0.05)  # the relay finishes closing what the client closed
                    used = relays.tree_cpu(target.pid) - c0
                    in_kernel = relays.tree_system_cpu(target.pid) - s0
                    per_unit = scale[unit] / max(_units(load, result), 1e-9)
                    out[load][target.name]["cpu"].append(used * per_unit)
                    out[load][target.name]["sys"].append(in_kernel * per_unit)
                out[load][target.name]["value"].append(float(result[key]))
                if "p99_us" in result:
                    out[load][target.name]["p99"].append(float(result["p99_us"]))
    return out


def paired_ratio(values: list[float], baseline: list[float]) -> float:
    """Median of the per-round ratios ``values[i] / baseline[i]``, over the rounds whose
    baseline is not 0; NaN if there is none (a kernel time of 0 clock ticks every round)."""
    ratios = [v / b for v, b in zip(values, baseline, strict=True) if b]
    return statistics.median(ratios) if ratios else math.nan


def _short(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.3f}"


def report_lines(samples: dict[str, dict[str, dict[str, list[float]]]]) -> list[str]:
    """Medians, relay CPU and paired ratios to the first target (and to haproxy), per load."""
    lines = []
    cpu_units = {"noop": "us CPU per round trip", "retr": "us CPU per round trip",
                 "sessions": "ms CPU per session", "throughput": "CPU s per GB"}
    for load, per_target in samples.items():
        key = LOADS[load][1]
        names = list(per_target)
        refs = [names[0], *(["haproxy"] if "haproxy" in names[1:] else [])]
        lines.append(
            f"{load} ({key}{'; p99' if load in ('noop', 'retr') else ''}; "
            f"relay {cpu_units[load]}), paired ratios to "
            + " and ".join(refs) + ":"
        )
        for name in names:
            got = per_target[name]
            text = f"  {name:36}"
            for field, label in (
                ("value", ""), ("p99", "p99 "), ("cpu", "CPU "), ("sys", "of it in the kernel ")
            ):
                if not got[field]:
                    continue
                text += f"  {label}{_short(statistics.median(got[field]))}"
                ratios = [
                    f"{paired_ratio(got[field], per_target[ref][field]):.2f}x"
                    for ref in refs
                    if ref != name and any(per_target[ref][field])
                ]
                if ratios:
                    text += f" ({', '.join(ratios)})"
            lines.append(text)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="trio-floor,trio-floor-one-task,haproxy",
                        help="comma-separated relay modes; ratios are to the first")
    parser.add_argument("--loads", default="noop,retr,sessions",
                        help=f"comma-separated, of {', '.join(LOADS)}")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--json", type=Path, help="also write every sample here")
    capturefs.add_argument(parser)
    idlecpu.add_argument(parser)
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    loads = [x.strip() for x in args.loads.split(",") if x.strip()]
    bad = [m for m in modes if m not in relays.ALL_MODES or m in relays.REPLAY_MODES]
    if bad or len(modes) < 2 or len(set(modes)) != len(modes):
        parser.error("--modes: two or more different relay modes (no replay modes)")
    if any(x not in LOADS for x in loads) or not loads:
        parser.error(f"--loads: of {', '.join(LOADS)}")
    if args.rounds < 1:
        parser.error("--rounds: at least 1")
    for note in relays.ensure_tools(modes):
        print(f"note: {note}")
    with (
        idlecpu.condition(args.cpus) as cpus,
        capturefs.CaptureSpace(args.captures_on, "pop3tap-paired") as space,
    ):
        print(f"CPUs: {idlecpu.summary(cpus)}", flush=True)
        probe_dir = space.fresh("fs-probe")
        fs = capturefs.probe(probe_dir)
        space.release(probe_dir)
        print(f"captures on {space.description}\n  {capturefs.summary(fs)}", flush=True)
        server = relays.start_server(64 * 1024 * 1024)
        started: list[relays.Relay] = []
        try:
            for mode in modes:
                started.append(relays.start_relay(mode, server.port, space.fresh(mode)))
            targets = [Target(r.mode, r.port, r.pid) for r in started]
            samples = alternate(targets, loads, args.rounds)
        finally:
            for relay in started:
                relay.stop()
            server.stop()
    command = " ".join(["python -m benchmarks.paired", *(argv or sys.argv[1:])])
    print(f"{command}: {args.rounds} rounds, medians")
    print("\n".join(report_lines(samples)))
    if args.json is not None:
        args.json.write_text(json.dumps(
            {"command": command, "capture_fs": fs, "cpus": cpus, "rounds": args.rounds,
             "samples": samples},
            indent=2,
        ) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
