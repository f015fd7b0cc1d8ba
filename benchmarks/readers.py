"""Reader check: time and peak RSS of ``pop3tap show`` and replay start-up on large and
pathological captures, measured on the real command line.

Captures built here (in a temporary directory, removed afterwards):

- ``lf-1mib``: a greeting, then 1 MiB of bare client LFs (the pathological case of the
  hostile-peers issue), then a close record;
- ``big``: one session retrieving 4 MiB messages until the file reaches ``--size`` MiB
  (default 2048, ``--quick`` 64).

Each ``show`` (text, ``--bodies``, ``--format json``) runs as a child process with its output
sent to /dev/null; its wall time and ``ru_maxrss`` come from ``os.wait4``. Replay start-up is
the time until ``replay.listening`` appears in its JSON log, and its peak RSS is VmHWM read
from /proc at that moment. Targets (issue 10): show and replay start-up on ``lf-1mib`` under
2 s and 100 MB; show of a 2 GiB capture under 150 MB RSS with or without ``--bodies``.

Standalone::

    python -m benchmarks.readers [--quick] [--size MIB] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pop3tap.capture import CaptureWriter

MIB = 1024 * 1024


def build_lf_capture(directory: Path) -> Path:
    """1 MiB of bare client LFs after a greeting, in 64 KiB records."""
    writer = CaptureWriter.create(
        directory, session_id="1f1f1f1f1f1f", header_fields={"client": "c:1", "upstream": "u:2"}
    )
    writer.write_data("s2c", 0.0, b"+OK ready\r\n")
    for _ in range(16):
        writer.write_data("c2s", 0.1, b"\n" * (64 * 1024))
    writer.write_event("eof", 0.2, dir="c2s")
    writer.write_event("eof", 0.2, dir="s2c")
    writer.close(0.2, "client closed", {})
    return writer.path


def build_big_capture(directory: Path, size_mib: int) -> Path:
    """RETR after RETR of 4 MiB bodies (80-byte lines) until the file is ``size_mib`` MiB."""
    writer = CaptureWriter.create(
        directory, session_id="b1b1b1b1b1b1", header_fields={"client": "c:1", "upstream": "u:2"}
    )
    writer.write_data("s2c", 0.0, b"+OK ready\r\n")
    line = b"x" * 78 + b"\r\n"
    body = line * (4 * MIB // len(line))
    number = 0
    while writer.path.stat().st_size < size_mib * MIB:
        number += 1
        writer.write_data("c2s", 0.1, f"RETR {number}\r\n".encode())
        writer.write_data("s2c", 0.2, f"+OK {len(body)} octets\r\n".encode() + body + b".\r\n")
    writer.write_data("c2s", 0.3, b"QUIT\r\n")
    writer.write_data("s2c", 0.3, b"+OK bye\r\n")
    writer.write_event("eof", 0.4, dir="s2c")
    writer.write_event("eof", 0.4, dir="c2s")
    writer.close(0.4, "server closed", {})
    return writer.path


def measure_show(path: Path, *options: str) -> dict[str, Any]:
    """Wall time and peak RSS of ``pop3tap show [options] path`` (output discarded)."""
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pop3tap", "show", *options, str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    _pid, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.monotonic() - started
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    return {
        "seconds": round(elapsed, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "exit": os.waitstatus_to_exitcode(status),
        "stderr": stderr.strip()[-200:],
    }


def measure_replay_startup(path: Path, workdir: Path, timeout: float = 600.0) -> dict[str, Any]:
    """Seconds until ``pop3tap replay`` logs ``replay.listening``, and its VmHWM then."""
    log = workdir / "replay.log.jsonl"
    log.unlink(missing_ok=True)
    started = time.monotonic()
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "pop3tap", "replay", str(path)),
            *("--listen", "127.0.0.1:0", "--log-format", "json", "--log-file", str(log)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    try:
        while time.monotonic() - started < timeout:
            if log.exists() and '"replay.listening"' in log.read_text():
                elapsed = time.monotonic() - started
                peak = _vm_hwm_mb(proc.pid)
                return {"seconds": round(elapsed, 2), "peak_rss_mb": peak, "started": True}
            if proc.poll() is not None:
                break
            time.sleep(0.01)
        return {"seconds": round(time.monotonic() - started, 2), "started": False}
    finally:
        proc.kill()
        proc.wait()


def _vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def run(size_mib: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="pop3tap-readers-") as tmp:
        work = Path(tmp)
        lf = build_lf_capture(work)
        results["lf-1mib"] = {
            "file_mb": round(lf.stat().st_size / MIB, 2),
            "show": measure_show(lf),
            "show_json": measure_show(lf, "--format", "json"),
            "replay_startup": measure_replay_startup(lf, work),
        }
        lf.unlink()
        big = build_big_capture(work, size_mib)
        results["big"] = {
            "file_mb": round(big.stat().st_size / MIB, 1),
            "show": measure_show(big),
            "show_bodies": measure_show(big, "--bodies"),
            "show_json": measure_show(big, "--format", "json"),
        }
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a 64 MiB big capture")
    parser.add_argument("--size", type=int, metavar="MIB", help="size of the big capture")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results here")
    args = parser.parse_args(argv)
    size = args.size or (64 if args.quick else 2048)
    results = run(size)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
