"""benchmarks/idlecpu.py: the CPUs' idle condition a benchmark runs in, and reports."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import idlecpu

REPO = Path(__file__).resolve().parent.parent


def _alive(pid: int) -> bool:
    """Running or runnable (a zombie left for its new parent to reap has ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def test_keep_awake_runs_one_sched_idle_loop_per_cpu_until_the_block_ends() -> None:
    with idlecpu.keep_awake(2) as pids:
        assert len(pids) == 2
        for pid in pids:
            assert os.sched_getscheduler(pid) == os.SCHED_IDLE
            assert _alive(pid)
            # A session of its own, whose autogroup weighs least: it yields to the tasks of
            # other sessions (the relays run in theirs) as well as to those of its own.
            assert os.getsid(pid) == pid
            autogroup = Path(f"/proc/{pid}/autogroup")
            if autogroup.exists():
                assert autogroup.read_text().split()[-1] == "19"
            ignored = int(_status(pid)["SigIgn"], 16)
            assert ignored & (1 << (signal.SIGINT - 1))  # Ctrl-C is the parent's to handle
    assert not any(_alive(pid) for pid in pids)


def test_the_loops_end_by_themselves_when_their_parent_is_killed() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c",
         "import os, signal, sys\n"
         "from benchmarks import idlecpu\n"
         "with idlecpu.keep_awake(1) as pids:\n"
         "    print(pids[0], flush=True)\n"
         "    os.kill(os.getpid(), signal.SIGKILL)\n"],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert parent.stdout is not None
    loop = int(parent.stdout.readline())
    assert parent.wait(30) == -signal.SIGKILL
    deadline = time.monotonic() + 15
    while _alive(loop) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(loop)


def test_describe_reads_the_idle_driver_and_halt_polling(tmp_path: Path) -> None:
    cpu, haltpoll = tmp_path / "cpu", tmp_path / "haltpoll"
    (cpu / "cpuidle").mkdir(parents=True)
    haltpoll.mkdir()
    (cpu / "cpuidle" / "current_driver").write_text("haltpoll\n")
    (cpu / "cpuidle" / "current_governor").write_text("haltpoll\n")
    (haltpoll / "guest_halt_poll_ns").write_text("0\n")
    info = idlecpu.describe(cpu, haltpoll)
    assert info["cpuidle_driver"] == "haltpoll" and info["guest_halt_poll_ns"] == 0
    line = idlecpu.summary({"cpus_kept": "idle", **info})
    assert "left to go idle" in line and "guest halt polling off" in line
    (haltpoll / "guest_halt_poll_ns").write_text("200000\n")
    assert "up to 200000 ns" in idlecpu.summary(idlecpu.describe(cpu, haltpoll))
    bare = idlecpu.describe(tmp_path / "none", tmp_path / "none")
    assert bare == {"cpus": len(os.sched_getaffinity(0))}


def test_the_wakeup_probe_times_every_round_trip() -> None:
    probe = idlecpu.wakeup_probe(50)
    assert probe["round_trips"] == 50
    assert 0 < probe["median_us"] <= probe["p99_us"]


def test_condition_refuses_an_unknown_choice() -> None:
    with pytest.raises(ValueError, match="--cpus"), idlecpu.condition("busy"):
        pass
