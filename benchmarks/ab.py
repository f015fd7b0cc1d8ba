"""Paired A/B of two pop3tap source trees, for changes smaller than this VM's noise.

Single runs here move by 30 % or more from one minute to the next, so comparing two runs
made one after the other says little about a 10 % change. This starts ``pop3tap record``
from both trees side by side in front of one benchmark server and alternates the same load
between them many times (A B, B A, A B, ...); drifts of the machine then hit both alike::

    git worktree add /tmp/base HEAD~1      # or: git archive HEAD~1 | tar -x -C /tmp/base
    python -m benchmarks.ab /tmp/base . --load noop --rounds 12 [--captures-on tmpfs]

With ``--serve replay`` both trees run ``pop3tap replay`` instead, serving the same capture,
recorded once through this checkout's ``pop3tap record`` in front of the benchmark server in
the shape of the load: the concurrency session for ``sessions`` (served as the ``replay``
mode of ``benchmarks.run`` serves it), a login, one NOOP (or one ``RETR 2``) and QUIT for
``noop`` (``retr``), served with ``--match any`` so that every repeated command gets the
recorded answer::

    python -m benchmarks.ab /tmp/base . --serve replay --load sessions --rounds 12

Each tree must be importable as ``pop3tap`` from its root (a built C scanner is used if it
is there). A and B each write their captures to a fresh file system of the kind
``--captures-on`` names (a tmpfs mount each by default), which is probed and named in the
output. Prints every sample, the medians, the median of the paired ratios B/A, and the
relays' CPU.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import capturefs, idlecpu, loadgen, paired, relays

#: What one recorded session for ``--serve replay`` does, per load (the capture's shape).
REPLAY_SHAPES = {
    "noop": lambda port: loadgen.noop_latency("127.0.0.1", port, 1),
    "retr": lambda port: loadgen.retr_latency("127.0.0.1", port, 1),
}


def replay_capture(load: str, server_port: int, workdir: Path) -> tuple[Path, list[str]]:
    """Record the capture ``--serve replay`` serves for ``load`` into ``workdir``; return
    it and the extra ``pop3tap replay`` arguments it is served with."""
    if load == "sessions":
        return relays.record_session(server_port, workdir), []
    recorder = relays.start_relay("pop3tap", server_port, workdir)
    try:
        REPLAY_SHAPES[load](recorder.port)
    finally:
        recorder.stop()
    # The recorder's readiness probe leaves a greeting-only capture: the largest is the session.
    captures = sorted((workdir / "captures").glob("*.p3cap"), key=lambda p: p.stat().st_size)
    if not captures:
        raise SystemExit(f"no capture of the {load} session in {workdir / 'captures'}")
    return captures[-1], ["--match", "any"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="root of tree A (the baseline)")
    parser.add_argument("b", type=Path, help="root of tree B (the change)")
    parser.add_argument("--load", choices=sorted(paired.LOADS), default="noop")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument(
        "--serve", choices=("record", "replay"), default="record",
        help="run `pop3tap record` in front of the benchmark server (default), or "
        "`pop3tap replay` serving one capture recorded for the load",
    )
    capturefs.add_argument(parser)
    idlecpu.add_argument(parser)
    args = parser.parse_args(argv)
    if args.serve == "replay" and args.load not in ("noop", "retr", "sessions"):
        parser.error("--serve replay: --load noop, retr or sessions")
    for name, root in (("A", args.a), ("B", args.b)):
        if not (root / "pop3tap" / "__init__.py").is_file():
            parser.error(f"tree {name}: no pop3tap package in {root}")
    if args.rounds < 1:
        parser.error("--rounds: at least 1")
    key = paired.LOADS[args.load][1]
    procs: dict[str, subprocess.Popen[bytes]] = {}
    targets: list[paired.Target] = []
    with (
        idlecpu.condition(args.cpus) as cpus,
        capturefs.CaptureSpace(args.captures_on, "pop3tap-ab") as space,
    ):
        print(f"CPUs: {idlecpu.summary(cpus)}", flush=True)
        workdirs = {name: space.fresh(name) for name in ("A", "B")}
        probes = {name: capturefs.probe(workdirs[name] / "fs-probe") for name in workdirs}
        print(f"captures on {space.description}")
        for name, probe in probes.items():
            print(f"  {name}: {capturefs.summary(probe)}", flush=True)

        def drop_big_captures(round_: int) -> None:
            # 64 MiB RETRs would fill a tmpfs over many rounds; a handful of large files
            # deleted between rounds is not the many-small-files artifact.
            if args.load == "throughput":
                for workdir in workdirs.values():
                    for path in (workdir / "captures").glob("*.p3cap"):
                        path.unlink()

        server = relays.start_server(64 * 1024 * 1024)
        try:
            mode = "pop3tap"
            extra: list[str] = []
            if args.serve == "replay":
                mode = "replay"
                capture, extra = replay_capture(args.load, server.port, space.fresh("record"))
                print(f"replaying {capture.stat().st_size} octets {' '.join(extra)}", flush=True)
            for name, root in (("A", args.a), ("B", args.b)):
                port = relays.free_port()
                (workdirs[name] / "captures").mkdir()
                if args.serve == "replay":
                    shutil.copyfile(capture, workdirs[name] / "session.p3cap")
                cmd = relays.relay_command(mode, port, server.port, workdirs[name]) + extra
                procs[name] = subprocess.Popen(
                    cmd, cwd=root.resolve(), stdin=subprocess.DEVNULL, start_new_session=True
                )
                targets.append(paired.Target(name, port, procs[name].pid))
            deadline = time.monotonic() + relays.READY_TIMEOUT
            while not all(relays._accepts(t.port) for t in targets):
                if time.monotonic() > deadline or any(p.poll() is not None for p in procs.values()):
                    raise SystemExit("a relay did not start")
                time.sleep(0.1)
            samples = paired.alternate(targets, [args.load], args.rounds, drop_big_captures)
        finally:
            for proc in procs.values():
                relays._stop(proc)
            server.stop()
    a, b = (samples[args.load][name]["value"] for name in ("A", "B"))
    print(f"{args.load} {key} A: {[round(x) for x in a]}")
    print(f"{args.load} {key} B: {[round(x) for x in b]}")
    print(
        f"median A {statistics.median(a):.0f}, B {statistics.median(b):.0f}; "
        f"median of paired B/A {paired.paired_ratio(b, a):.3f}"
    )
    print("\n".join(paired.report_lines(samples)[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
