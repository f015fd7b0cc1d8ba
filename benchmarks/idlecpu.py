"""Idle CPUs and what waking one costs: the machine condition the benchmarks report next to
the capture file system.

A CPU with nothing to run goes idle. On a virtual machine an idle CPU halts and the
hypervisor takes it back; waking it (another CPU's interrupt) is a trip through the
hypervisor, unless the guest first polls for a while (the ``haltpoll`` cpuidle driver,
``guest_halt_poll_ns``; 0 turns polling off). On bare metal deep idle states cost a
wake-up too. Between two requests of a round-trip load, a relay that finishes its work
sooner goes idle sooner and is then woken for the next request: the same load can take
longer and use more CPU through a faster relay. Those wake-ups are the machine's, not the
relay's, and they differ between relays.

``--cpus`` chooses the condition:

- ``idle`` (default): the machine as it is.
- ``awake``: one ``SCHED_IDLE`` busy loop per CPU for the whole run. The scheduler runs
  such a task only when nothing else wants that CPU, and any other task takes the CPU
  from it at once, so a CPU never goes idle and a wake-up is a plain context switch. The
  loops' own CPU time is not counted: the benchmarks read the relays' CPU per process.

The same run reports the cpuidle driver, governor and halt-poll setting, and a wake-up
probe: the median round trip of one byte between two processes on two CPUs that each
block in ``recv`` (every message wakes the other CPU). Try it alone::

    python -m benchmarks.idlecpu [--cpus awake]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.loadgen import percentile

CHOICES = ("idle", "awake")
SYSFS_CPU = Path("/sys/devices/system/cpu")
HALTPOLL = Path("/sys/module/haltpoll/parameters")
PROBE_ROUND_TRIPS = 2000
#: A pause between probe round trips, long enough for a CPU to go idle.
PROBE_PAUSE_S = 0.0002

#: One busy loop at SCHED_IDLE in a session of its own whose autogroup gets the lowest
#: weight (nice 19), so it yields to tasks of other sessions too; it ignores Ctrl-C (its
#: parent stops it) and ends on its own once its parent is gone.
_SPIN = """\
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
try:
    with open("/proc/self/autogroup", "w") as autogroup:
        autogroup.write("19")
except OSError:
    pass  # no autogroups (CONFIG_SCHED_AUTOGROUP off): the policy alone decides
parent = int(sys.argv[1])
sys.stdout.write("ready\\n")
sys.stdout.flush()
while os.getppid() == parent:
    for _ in range(200000):
        pass
"""


def add_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cpus",
        choices=CHOICES,
        default="idle",
        help="leave idle CPUs to the machine (default), or keep every CPU awake with a "
        "SCHED_IDLE busy loop so a wake-up is a context switch, not a return from halt",
    )


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def describe(sysfs_cpu: Path = SYSFS_CPU, haltpoll: Path = HALTPOLL) -> dict[str, Any]:
    """The cpuidle driver and governor, and the guest halt-poll limit when there is one."""
    info: dict[str, Any] = {"cpus": len(os.sched_getaffinity(0))}
    for key in ("current_driver", "current_governor"):
        value = _read(sysfs_cpu / "cpuidle" / key)
        if value is not None:
            info[f"cpuidle_{key.removeprefix('current_')}"] = value
    poll = _read(haltpoll / "guest_halt_poll_ns")
    if poll is not None and poll.isdigit():
        info["guest_halt_poll_ns"] = int(poll)
    return info


def wakeup_probe(round_trips: int = PROBE_ROUND_TRIPS) -> dict[str, float]:
    """Median and p99 round trip, in microseconds, of one byte between this process and a
    child that each block in ``recv`` on CPUs of their own (when there are two), with a
    pause before each round trip: each message wakes the other CPU."""
    allowed = sorted(os.sched_getaffinity(0))
    ours, theirs = socket.socketpair()
    # No signal handler may run in the child: it would run this process's code there.
    stops = {signal.SIGINT, signal.SIGTERM}
    held = signal.pthread_sigmask(signal.SIG_BLOCK, stops)
    pid = os.fork()
    if pid == 0:  # the child echoes until the socket closes
        try:
            for stop in stops:
                signal.signal(stop, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
            os.sched_setaffinity(0, {allowed[-1]})
            ours.close()
            while data := theirs.recv(1):
                theirs.send(data)
        finally:
            os._exit(0)
    signal.pthread_sigmask(signal.SIG_SETMASK, held)
    theirs.close()
    times: list[float] = []
    try:
        os.sched_setaffinity(0, {allowed[0]})
        for _ in range(round_trips):
            time.sleep(PROBE_PAUSE_S)
            start = time.perf_counter_ns()
            ours.send(b"x")
            ours.recv(1)
            times.append((time.perf_counter_ns() - start) / 1000)
    finally:
        os.sched_setaffinity(0, allowed)
        ours.close()
        os.waitpid(pid, 0)
    return {
        "round_trips": round_trips,
        "median_us": statistics.median(times),
        "p99_us": percentile(times, 99),
    }


@contextlib.contextmanager
def keep_awake(cpus: int | None = None) -> Iterator[list[int]]:
    """Run one SCHED_IDLE busy loop per CPU until the block ends; yields their pids.

    Each loop exits by itself once this process is gone, even after ``kill -9``.
    """
    count = cpus or len(os.sched_getaffinity(0)) or 1
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(count):
            proc = subprocess.Popen(
                [sys.executable, "-c", _SPIN, str(os.getpid())],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                start_new_session=True,
            )
            procs.append(proc)
            assert proc.stdout is not None
            if proc.stdout.readline() != b"ready\n":
                raise RuntimeError("a SCHED_IDLE busy loop did not start")
        yield [p.pid for p in procs]
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGKILL)
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


@contextlib.contextmanager
def condition(choice: str) -> Iterator[dict[str, Any]]:
    """The CPUs as ``--cpus`` says for the block; yields what :func:`summary` prints."""
    if choice not in CHOICES:
        raise ValueError(f"--cpus: {choice!r} is not one of {', '.join(CHOICES)}")
    with contextlib.ExitStack() as stack:
        if choice == "awake":
            stack.enter_context(keep_awake())
        yield {"cpus_kept": choice, **describe(), "wakeup": wakeup_probe()}


def summary(info: dict[str, Any]) -> str:
    """One line for :func:`condition`'s report."""
    parts = [f"{info.get('cpus', '?')} CPUs"]
    if info.get("cpus_kept") == "awake":
        parts.append("kept awake by SCHED_IDLE busy loops")
    else:
        parts.append("left to go idle")
    if "cpuidle_driver" in info:
        parts.append(f"cpuidle {info['cpuidle_driver']}/{info.get('cpuidle_governor', '?')}")
    if "guest_halt_poll_ns" in info:
        poll = info["guest_halt_poll_ns"]
        parts.append(
            "guest halt polling off" if poll == 0 else f"guest halt polling up to {poll} ns"
        )
    wake = info.get("wakeup")
    if wake:
        parts.append(
            f"wake-up round trip {wake['median_us']:.0f} us median (p99 {wake['p99_us']:.0f})"
        )
    return ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_argument(parser)
    args = parser.parse_args(argv)
    with condition(args.cpus) as info:
        print(f"CPUs: {summary(info)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
