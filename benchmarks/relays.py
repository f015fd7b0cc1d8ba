"""Starting and stopping the benchmark server and the relays, and reading their costs from /proc.

Every process here is started by the benchmark in its own session (process group) on a
127.0.0.1 port and is stopped by the benchmark: SIGTERM to that group, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import loadgen
from benchmarks.capturefs import CaptureSpace

REPO = Path(__file__).resolve().parent.parent
MODES = (
    "direct",
    "socat",
    "haproxy",
    "trio-floor",
    "trio-floor-one-task",
    "pop3tap",
    "pop3tap-workers",
    "replay",
    "replay-workers",
    "replay-model",
)
#: Variants of the bare trio forwarder (benchmarks/trio_floor.py flags), for
#: ``benchmarks.paired`` and ``--modes``; not run by default.
#: ``trio-floor`` followed by any of the suffixes, in this order: ``-one-task``,
#: ``-direct`` (--direct-connect), ``-recv-into``.
FLOOR_VARIANTS = {
    "trio-floor" + "".join(suffix for suffix, _ in chosen): tuple(f for _, f in chosen)
    for n in range(4)
    for chosen in itertools.combinations(
        (("-one-task", "--one-task"), ("-direct", "--direct-connect"),
         ("-recv-into", "--recv-into")),
        n,
    )
}
#: ``pop3tap record`` with part of its recording switched off, to measure what each part
#: costs (``benchmarks.paired``); not run by default: the extra arguments of each.
RECORD_VARIANTS = {
    "pop3tap-no-captures": ("--no-captures",),
    "pop3tap-no-log": ("--log-level", "error"),
    "pop3tap-relay-only": ("--no-captures", "--log-level", "error"),
}
#: Every mode ``--modes`` accepts.
ALL_MODES = (
    *MODES,
    *(m for m in FLOOR_VARIANTS if m not in MODES),
    *RECORD_VARIANTS,
)
#: Modes that serve a recorded session instead of relaying to the benchmark server.
REPLAY_MODES = frozenset({"replay", "replay-workers", "replay-model"})
#: Modes measured only with the concurrency load (a replay server has no 64 MiB message,
#: and its NOOP answer is a recorded line, so the other measurements say nothing).
CONCURRENCY_ONLY = REPLAY_MODES
#: Modes compared with haproxy in the report.
VS_HAPROXY = (
    *FLOOR_VARIANTS,
    "pop3tap",
    "pop3tap-workers",
    "replay",
    "replay-workers",
    "replay-model",
)
#: ``--workers`` for the *-workers modes: one per CPU, as haproxy's default nbthread.
WORKERS = os.cpu_count() or 1
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
READY_TIMEOUT = 20.0


class RelayStartError(Exception):
    """A relay (or the server) did not come up; the message is its last stderr line."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def ensure_tools(modes: list[str]) -> list[str]:
    """Install socat/haproxy from Debian's packages when missing (only as root).

    Returns a note for every tool still missing afterwards.
    """
    wanted = [m for m in modes if m in ("socat", "haproxy") and shutil.which(m) is None]
    if wanted and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-q"], check=False, env=env)
        subprocess.run(["apt-get", "install", "-y", "-q", *wanted], check=False, env=env)
    return [f"{m} is not installed" for m in wanted if shutil.which(m) is None]


def _last_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines()]
    except OSError:
        return "(no stderr)"
    lines = [ln for ln in lines if ln]
    return lines[-1] if lines else "(no stderr)"


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    # Children of a fork-mode relay may outlive the parent briefly.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


@dataclass
class BenchServer:
    proc: subprocess.Popen[bytes]
    port: int

    def stop(self) -> None:
        _stop(self.proc)


def start_server(big_size: int) -> BenchServer:
    """Run benchmarks.server in its own process and return it once it listens."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.server", "--big-size", str(big_size)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if not line.startswith("PORT "):
        _stop(proc)
        raise RelayStartError(f"benchmark server did not start: {line!r}")
    proc.stdout.close()
    return BenchServer(proc, int(line.split()[1]))


HAPROXY_CONF = """\
global
    maxconn 8000
    # nbthread is left at its default (one thread per CPU), as haproxy ships.
    # maxconn 8000 keeps the needed FD count (2 per connection) under a 20000 limit.

defaults
    mode tcp
    timeout connect 5s
    timeout client 120s
    timeout server 120s
    maxconn 8000

frontend bench_in
    bind 127.0.0.1:{port}
    default_backend bench_out

backend bench_out
    server pop3 127.0.0.1:{server_port}
"""


@dataclass
class Relay:
    mode: str
    port: int
    proc: subprocess.Popen[bytes] | None = None
    workdir: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)


def relay_command(mode: str, port: int, server_port: int, workdir: Path) -> list[str]:
    upstream = f"127.0.0.1:{server_port}"
    if mode == "socat":
        return [
            "socat",
            "-b",
            "262144",
            f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,nodelay,backlog=1024",
            f"TCP:{upstream},nodelay",
        ]
    if mode == "haproxy":
        conf = workdir / "haproxy.cfg"
        conf.write_text(HAPROXY_CONF.format(port=port, server_port=server_port))
        return ["haproxy", "-f", str(conf), "-db"]
    if mode in FLOOR_VARIANTS:
        return [
            sys.executable,
            "-m",
            "benchmarks.trio_floor",
            "--listen-port",
            str(port),
            "--upstream-port",
            str(server_port),
            *FLOOR_VARIANTS[mode],
        ]
    workers = ["--workers", str(WORKERS)] if mode.endswith("-workers") else []
    if mode in REPLAY_MODES:
        # The model mode serves every connection the same mailbox at once (--model-shared).
        model = ["--model", "--model-shared"] if mode == "replay-model" else []
        return [
            sys.executable,
            "-m",
            "pop3tap",
            "replay",
            *workers,
            *model,
            str(workdir / "session.p3cap"),
            "--listen",
            f"127.0.0.1:{port}",
            "--sessions",
            "cycle",
            "--log-format",
            "json",
            "--log-file",
            str(workdir / "log.jsonl"),
        ]
    if mode in ("pop3tap", "pop3tap-workers", *RECORD_VARIANTS):
        variant = RECORD_VARIANTS.get(mode, ())
        captures = workdir / "captures"
        captures.mkdir(exist_ok=True)
        where = [] if "--no-captures" in variant else ["--captures", str(captures)]
        return [
            sys.executable,
            "-m",
            "pop3tap",
            "record",
            *workers,
            "--upstream",
            upstream,
            "--listen",
            f"127.0.0.1:{port}",
            *where,
            "--log-format",
            "json",
            "--log-file",
            str(workdir / "log.jsonl"),
            *variant,
        ]
    raise ValueError(f"unknown mode {mode!r}")


MODE_NOTES = {
    "socat": ["socat runs in fork mode: one child per connection; RSS is per process "
              "(relay_peak_rss_mb is the parent, relay_tree_peak_rss_mb sums parent and children)"],
    "haproxy": ["haproxy uses its default nbthread (one thread per CPU)"],
    "pop3tap": ["pop3tap records every session with its default logging (JSON to a file)"],
    "pop3tap-no-captures": ["pop3tap record --no-captures: parses and logs, writes no capture"],
    "pop3tap-no-log": ["pop3tap record --log-level error: parses and captures, logs no "
                       "session lines"],
    "pop3tap-relay-only": ["pop3tap record --no-captures --log-level error: parses, "
                           "neither captures nor logs"],
    "replay": ["pop3tap replay serves one recorded concurrency session (--sessions cycle) "
               "with its default logging (JSON to a file); only the concurrency load is run"],
    "trio-floor": ["benchmarks/trio_floor.py: a bare trio forwarder with pop3tap's plain-TCP "
                   "I/O and no parsing, logging or capture: the floor for a trio relay"],
    "trio-floor-one-task": ["benchmarks/trio_floor.py --one-task: the same forwarder with one "
                            "task per session driving both directions (a per-session epoll "
                            "awaited with wait_readable), no nursery"],
    "pop3tap-workers": [f"pop3tap record --workers {WORKERS} (one per CPU), otherwise as "
                        "the pop3tap mode"],
    "replay-workers": [f"pop3tap replay --workers {WORKERS} (one per CPU), otherwise as "
                       "the replay mode"],
    "replay-model": ["pop3tap replay --model --model-shared: the mailbox model of the same "
                     "recorded session, otherwise as the replay mode"],
}


def record_session(server_port: int, workdir: Path) -> Path:
    """Record one concurrency-mode session through ``pop3tap record`` into ``workdir``.

    The session is exactly the load generator's (login + STAT + LIST + 3 x RETR 2 + QUIT).
    The recorder's readiness probe also leaves a capture (greeting only), so the largest
    capture file is the session. It is copied to ``workdir/session.p3cap`` for the replay.
    """
    rec_dir = workdir / "record"
    rec_dir.mkdir(exist_ok=True)
    recorder = start_relay("pop3tap", server_port, rec_dir)
    try:
        loadgen.one_session("127.0.0.1", recorder.port, bytearray(65536))
    except (OSError, loadgen.ReplyError) as exc:
        raise RelayStartError(f"recording the session failed: {exc}") from exc
    finally:
        recorder.stop()
    captures = sorted((rec_dir / "captures").glob("*.p3cap"), key=lambda p: p.stat().st_size)
    if not captures or captures[-1].stat().st_size < 3 * 16 * 1024:
        raise RelayStartError(f"no capture of the session in {rec_dir / 'captures'}")
    target = workdir / "session.p3cap"
    shutil.copyfile(captures[-1], target)
    return target


def each_relay(
    modes: list[str], server_port: int, prefix: str, space: CaptureSpace | None = None
) -> Iterator[tuple[str, Relay | str]]:
    """For each mode, a started relay with a private work directory, stopped after the
    loop body; a mode that fails to start yields its one-line error instead.

    With ``space`` the work directory (captures and log included) is a fresh one from it,
    and nothing in it is deleted before the space closes (a tmpfs mount is dropped whole
    when the mode is done); without, it is a temporary directory removed after the mode.
    """
    for mode in modes:
        print(f"== {mode}", flush=True)
        with contextlib.ExitStack() as stack:
            if space is None:
                workdir = Path(stack.enter_context(
                    tempfile.TemporaryDirectory(prefix=f"{prefix}-{mode}-")
                ))
            else:
                workdir = space.fresh(mode)
                stack.callback(space.release, workdir)
            try:
                relay = start_relay(mode, server_port, workdir)
            except RelayStartError as exc:
                print(f"{mode} failed to start: {exc}", flush=True)
                yield mode, f"failed to start: {exc}"
                continue
            try:
                yield mode, relay
            finally:
                relay.stop()


def start_relay(
    mode: str, server_port: int, workdir: Path, extra_args: tuple[str, ...] = ()
) -> Relay:
    """Start ``mode`` in front of the server; return once it accepts connections.

    ``extra_args`` go at the end of the relay's command line (e.g. ``--keep-secrets``).
    """
    if mode == "direct":
        return Relay(mode, server_port)
    notes: list[str] = list(MODE_NOTES.get(mode, []))
    if mode in FLOOR_VARIANTS and not notes:
        notes.append(f"benchmarks/trio_floor.py {' '.join(FLOOR_VARIANTS[mode])}")
    if mode in REPLAY_MODES:
        capture = record_session(server_port, workdir)
        notes.append(f"recorded capture: {capture.stat().st_size} octets")
    port = free_port()
    cmd = relay_command(mode, port, server_port, workdir) + list(extra_args)
    stderr_path = workdir / f"{mode}.stderr"
    with open(stderr_path, "wb") as err:
        try:
            proc = subprocess.Popen(
                cmd,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                start_new_session=True,
            )
        except OSError as exc:
            raise RelayStartError(str(exc)) from exc
    relay = Relay(mode, port, proc, workdir, notes)
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RelayStartError(_last_line(stderr_path))
        if _accepts(port):
            time.sleep(0.05)  # let the probe connection's upstream side finish
            return relay
        time.sleep(0.05)
    relay.stop()
    raise RelayStartError(f"not accepting on port {port} after {READY_TIMEOUT:.0f}s; "
                          f"{_last_line(stderr_path)}")


# --------------------------------------------------------------------------- /proc readers


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants."""
    out = [pid]
    i = 0
    while i < len(out):
        p = out[i]
        i += 1
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                text = Path(f"/proc/{p}/task/{tid}/children").read_text()
            except OSError:
                continue
            out.extend(int(c) for c in text.split())
    return out


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def process_cpu(pid: int) -> float:
    """CPU seconds of one live process plus its reaped children.

    The process's own time comes from its CPU clock (nanosecond resolution, all threads);
    reaped children come from cutime+cstime (clock ticks).
    """
    try:
        fields = _stat_fields(pid)
    except (OSError, ValueError):
        return 0.0
    children = (int(fields[13]) + int(fields[14])) / CLK_TCK
    try:
        own = time.clock_gettime(((~pid) << 3) | 2)  # CPUCLOCK_SCHED, whole process
    except OSError:
        own = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return own + children


def tree_cpu(pid: int) -> float:
    return sum(process_cpu(p) for p in process_tree(pid))


def process_system_cpu(pid: int) -> float:
    """CPU seconds one live process and its reaped children spent in the kernel (stime and
    cstime: clock ticks, so read it over loads of a second or more, or as a median)."""
    try:
        fields = _stat_fields(pid)
    except (OSError, ValueError):
        return 0.0
    return (int(fields[12]) + int(fields[14])) / CLK_TCK


def tree_system_cpu(pid: int) -> float:
    return sum(process_system_cpu(p) for p in process_tree(pid))


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def vm_hwm_mb(pid: int) -> float:
    return _status_kb(pid, "VmHWM") / 1024.0


def tree_rss_mb(pid: int) -> float:
    return sum(_status_kb(p, "VmRSS") for p in process_tree(pid)) / 1024.0


def _pss_kb(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def tree_pss_mb(pid: int) -> float:
    """Summed proportional set size: pages shared by forked processes count once overall."""
    return sum(_pss_kb(p) for p in process_tree(pid)) / 1024.0


class RssSampler:
    """Samples the summed VmRSS of a process tree every ``interval`` seconds in a thread."""

    def __init__(self, pid: int, interval: float = 0.05, *, pss: bool = False) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        #: Also sample the summed PSS (``pss=True``; reading smaps_rollup costs more).
        self.pss = pss
        self.pss_samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        t0 = time.monotonic()
        while not self._stop.is_set():
            self.samples.append((time.monotonic() - t0, tree_rss_mb(self.pid)))
            if self.pss:
                self.pss_samples.append(tree_pss_mb(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak(self) -> float:
        return max((s[1] for s in self.samples), default=0.0)

    @property
    def peak_pss(self) -> float:
        return max(self.pss_samples, default=0.0)
