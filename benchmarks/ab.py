"""Paired A/B of two pop3tap source trees, for changes smaller than this VM's noise.

Single runs here move by 30 % or more from one minute to the next, so comparing two runs
made one after the other says little about a 10 % change. This starts ``pop3tap record``
from both trees side by side in front of one benchmark server and alternates the same load
between them many times (A B, B A, A B, ...); drifts of the machine then hit both alike::

    git worktree add /tmp/base HEAD~1      # or: git archive HEAD~1 | tar -x -C /tmp/base
    python -m benchmarks.ab /tmp/base . --load noop --rounds 12

Each tree must be importable as ``pop3tap`` from its root (a built C scanner is used if it
is there). Prints every sample, the medians and the median of the paired ratios B/A.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import relays

LOADS = {
    "noop": (["--count", "2000"], "median_us"),
    "retr": (["--count", "500"], "median_us"),
    "sessions": (["--sessions", "200", "--rounds", "1"], "sessions_per_s"),
    "throughput": (["--repeat", "2"], "mb_per_s"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="root of tree A (the baseline)")
    parser.add_argument("b", type=Path, help="root of tree B (the change)")
    parser.add_argument("--load", choices=sorted(LOADS), default="noop")
    parser.add_argument("--rounds", type=int, default=12)
    args = parser.parse_args(argv)
    extra, key = LOADS[args.load]
    server = relays.start_server(64 * 1024 * 1024)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    ports: dict[str, int] = {}
    samples: dict[str, list[float]] = {"A": [], "B": []}
    with tempfile.TemporaryDirectory(prefix="pop3tap-ab-") as tmp:
        try:
            for name, root in (("A", args.a), ("B", args.b)):
                port = relays.free_port()
                ports[name] = port
                workdir = Path(tmp) / name
                (workdir / "captures").mkdir(parents=True)
                cmd = relays.relay_command("pop3tap", port, server.port, workdir)
                procs[name] = subprocess.Popen(
                    cmd, cwd=root.resolve(), stdin=subprocess.DEVNULL, start_new_session=True
                )
            deadline = time.monotonic() + relays.READY_TIMEOUT
            while not all(relays._accepts(p) for p in ports.values()):
                if time.monotonic() > deadline:
                    raise SystemExit("a relay did not start")
                time.sleep(0.1)
            for round_ in range(args.rounds):
                for name in ("A", "B") if round_ % 2 == 0 else ("B", "A"):
                    out = subprocess.run(
                        [sys.executable, "-m", "benchmarks.loadgen", args.load,
                         "--port", str(ports[name]), *extra],
                        cwd=relays.REPO, capture_output=True, text=True, check=True,
                    )
                    samples[name].append(json.loads(out.stdout.strip().splitlines()[-1])[key])
        finally:
            for proc in procs.values():
                relays._stop(proc)
            server.stop()
    a, b = samples["A"], samples["B"]
    print(f"{args.load} {key} A: {[round(x) for x in a]}")
    print(f"{args.load} {key} B: {[round(x) for x in b]}")
    paired = statistics.median(y / x for x, y in zip(a, b, strict=True))
    print(
        f"median A {statistics.median(a):.0f}, B {statistics.median(b):.0f}; "
        f"median of paired B/A {paired:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
