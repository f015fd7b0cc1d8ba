"""Speed and memory of ``lint`` and ``diff`` against ``show --format json`` on the same captures::

    python -m benchmarks.evidence                     # 1 GiB of captures, about a minute
    python -m benchmarks.evidence --size-mb 64        # a quick look
    python -m benchmarks.evidence --json /tmp/evidence.json

Writes captures of sessions that each fetch one 32 MiB dot-stuffed message and one 16 KiB
one (the bodies of ``benchmarks.server``) in 256 KiB data records, as the relay would, until
the total reaches ``--size-mb``. Then it runs, each in its own process with the files in the
page cache, ``pop3tap show --format json DIR``, ``pop3tap lint DIR`` and ``pop3tap diff DIR
DIR`` (which reads every file twice), repetitions interleaved, and prints MB of capture read
per wall-clock and per CPU second, the ratios to ``show`` (issue 16 asks for at least 0.5)
and each process's peak RSS. Same-run ratios only: absolute figures depend on the machine,
and on a shared machine the CPU ratio is the steadier one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.server import SMALL_SIZE, _build_body, dot_stuff
from pop3tap.capture import CaptureWriter

CHUNK = 256 * 1024
BIG = 32 * 1024 * 1024


def session_steps() -> list[tuple[str, bytes]]:
    big = _build_body(BIG, "big")
    small = _build_body(SMALL_SIZE, "small")
    steps: list[tuple[str, bytes]] = [
        ("s", b"+OK bench ready <1.2@bench>\r\n"),
        ("c", b"CAPA\r\n"),
        ("s", b"+OK\r\nUSER\r\nUIDL\r\nPIPELINING\r\n.\r\n"),
        ("c", b"USER bench\r\n"),
        ("s", b"+OK\r\n"),
        ("c", b"PASS ********\r\n"),
        ("s", b"+OK logged in\r\n"),
        ("c", b"STAT\r\n"),
        ("s", f"+OK 2 {len(big) + len(small)}\r\n".encode()),
        ("c", b"LIST\r\n"),
        ("s", f"+OK\r\n1 {len(big)}\r\n2 {len(small)}\r\n.\r\n".encode()),
        ("c", b"UIDL\r\n"),
        ("s", b"+OK\r\n1 big-one\r\n2 small-two\r\n.\r\n"),
    ]
    for number, body in ((1, big), (2, small)):
        wire = f"+OK {len(body)} octets\r\n".encode() + dot_stuff(body) + b".\r\n"
        steps.append(("c", f"RETR {number}\r\n".encode()))
        steps.extend(("s", wire[i : i + CHUNK]) for i in range(0, len(wire), CHUNK))
    steps += [("c", b"QUIT\r\n"), ("s", b"+OK bye\r\n")]
    return steps


def write_captures(directory: Path, size_mb: int) -> int:
    """Write sessions until the directory holds ``size_mb`` MiB; return the bytes written."""
    steps = session_steps()
    total = 0
    number = 0
    while total < size_mb * 1024 * 1024:
        number += 1
        writer = CaptureWriter.create(
            directory,
            session_id=f"bench{number:05d}",
            header_fields={
                "pop3tap": "bench",
                "client": "127.0.0.1:1",
                "listen": "127.0.0.1:2",
                "upstream": "127.0.0.1:3",
            },
        )
        t = 0.0
        for direction, data in steps:
            t += 0.0001
            writer.write_data("c2s" if direction == "c" else "s2c", t, data)
        writer.write_event("eof", t, dir="c2s")
        writer.write_event("eof", t, dir="s2c")
        writer.close(t, "quit")
        total += writer.path.stat().st_size
    return total


def timed(argv: list[str]) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds and peak RSS (MiB) of one process, output discarded."""
    start = time.perf_counter()
    with open(os.devnull, "wb") as sink:
        proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.PIPE)
        _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):
        raise SystemExit(f"{' '.join(argv)} failed ({code}): {stderr.strip()}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss // 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="MiB of captures (1024)")
    parser.add_argument("--reps", type=int, default=3, help="runs per command; best is kept")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep", type=Path, help="write captures here and keep them")
    parser.add_argument("--write-only", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.write_only is not None:
        write_captures(args.write_only, args.size_mb)
        return 0
    directory = args.keep or Path(tempfile.mkdtemp(prefix="pop3tap-evidence-"))
    directory.mkdir(parents=True, exist_ok=True)
    try:
        # In a child process, so the bodies built here do not count in the peak RSS of
        # the commands forked from this one.
        subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.evidence",
                "--write-only",
                str(directory),
                "--size-mb",
                str(args.size_mb),
            ],
            check=True,
        )
        size = sum(p.stat().st_size for p in directory.iterdir())
        for path in directory.iterdir():  # into the page cache
            path.read_bytes()
        pop3tap = [sys.executable, "-m", "pop3tap"]
        commands = {
            "show --format json": ([*pop3tap, "show", "--format", "json", str(directory)], 1),
            "lint": ([*pop3tap, "lint", str(directory)], 1),
            "diff": ([*pop3tap, "diff", str(directory), str(directory)], 2),
        }
        # Repetitions are interleaved (show, lint, diff, show, ...) so that load from other
        # processes on a shared machine falls on every command alike; the best run counts.
        runs: dict[str, list[tuple[float, float, int]]] = {name: [] for name in commands}
        for _ in range(max(1, args.reps)):
            for name, (command, _passes) in commands.items():
                runs[name].append(timed(command))
        results: dict[str, dict[str, Any]] = {}
        for name, (_command, passes) in commands.items():
            wall = min(r[0] for r in runs[name])
            cpu = min(r[1] for r in runs[name])
            results[name] = {
                "seconds": round(wall, 3),
                "cpu_seconds": round(cpu, 3),
                "mb_per_s": round(size * passes / wall / 1e6, 1),
                "cpu_mb_per_s": round(size * passes / cpu / 1e6, 1),
                "peak_rss_mib": max(r[2] for r in runs[name]),
            }
        base = results["show --format json"]
        for entry in results.values():
            entry["speed_vs_show"] = round(entry["mb_per_s"] / base["mb_per_s"], 2)
            entry["cpu_speed_vs_show"] = round(entry["cpu_mb_per_s"] / base["cpu_mb_per_s"], 2)
        print(f"captures: {size / 1e6:.0f} MB in {len(list(directory.iterdir()))} files")
        print(
            f"{'command':20} {'wall s':>7} {'MB/s':>8} {'x show':>7} {'CPU s':>7} "
            f"{'CPU MB/s':>9} {'x show':>7} {'peak RSS MiB':>13}"
        )
        for name, entry in results.items():
            print(
                f"{name:20} {entry['seconds']:7.2f} {entry['mb_per_s']:8.1f} "
                f"{entry['speed_vs_show']:7.2f} {entry['cpu_seconds']:7.2f} "
                f"{entry['cpu_mb_per_s']:9.1f} {entry['cpu_speed_vs_show']:7.2f} "
                f"{entry['peak_rss_mib']:13d}"
            )
        if args.json:
            args.json.write_text(json.dumps({"capture_bytes": size, **results}, indent=2))
    finally:
        if args.keep is None:
            shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
