"""What hostile clients cost ``pop3tap record`` (issue 10): LF bursts, a victim's NOOP
round trips while attackers burst, and client binary uploads through the secret masker.

    .venv/bin/python -m benchmarks.hostile [--quick] [--json PATH] [--only pass-flood]

Behind the relay is a small upstream (this module with ``--serve``, its own process) that
greets, answers each ``NOOP`` line with ``+OK`` and reads everything else without ever
answering: the case where a client's pipelined lines stay unanswered. Every figure is read
against another one from the same run (the machine may be shared and noisy):

* ``lf_burst``: a session writes 256 KiB of LFs at once and stays open. Reported: relay
  CPU milliseconds per burst (the event loop is one thread: CPU time is loop time) and
  relay RSS per bursting session, next to the RSS per idle session measured just before.
* ``victim``: one session sends NOOPs back to back; its p99 round trip is taken idle, then
  while a new attacker session writes 256 KiB of LFs every second. Reported: both p99s and
  their ratio. ``victim_noop_bursts`` is the same with 1000 pipelined NOOPs per attacker,
  which the upstream answers (each answer is paired and logged).
* ``victim_pass_flood``: the same victim while one attacker session writes ``PASS x``
  lines as fast as the relay takes them (every line goes through the secret masker; the
  upstream never answers them). ``--only pass-flood`` runs this figure alone.
* ``upload``: a client sends random binary bytes (no line structure) to the upstream
  through the relay, and the same through ``trio-floor`` (a bare trio forwarder).
  Reported: MiB per second of wall time and per relay CPU second ("per core").
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks import loadgen, relays

GREETING = b"+OK hostile-benchmark upstream ready\r\n"
BURST = b"\n" * (256 * 1024)


# --------------------------------------------------------------------------- the upstream


def _serve_one(sock: socket.socket) -> None:
    with sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tail = b""
        try:
            sock.sendall(GREETING)
            while True:
                data = sock.recv(1 << 18)
                if not data:
                    return
                joined = tail + data  # a NOOP line may be split between reads
                answers = joined.count(b"NOOP\r\n")
                if answers:
                    sock.sendall(b"+OK\r\n" * answers)
                tail = joined[-5:]
        except OSError:
            return


def serve() -> None:
    """Listen on 127.0.0.1:0, print the port, serve until killed."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
    print(f"PORT {listener.getsockname()[1]}", flush=True)
    while True:
        sock, _ = listener.accept()
        threading.Thread(target=_serve_one, args=(sock,), daemon=True).start()


def start_upstream() -> relays.BenchServer:
    import subprocess

    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.hostile", "--serve"],
        cwd=relays.REPO,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    proc.stdout.close()
    if not line.startswith("PORT "):
        raise relays.RelayStartError(f"upstream did not start: {line!r}")
    return relays.BenchServer(proc, int(line.split()[1]))


# --------------------------------------------------------------------------- measurements


def _greeted(port: int) -> socket.socket:
    sock = loadgen.connect("127.0.0.1", port)
    sock.settimeout(30)
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed before the greeting")
        data += chunk
    return sock


def _settle(pid: int, quiet: float = 0.3, cap: float = 20.0) -> float:
    """Wait until the relay's CPU clock stops moving; return its value."""
    deadline = time.monotonic() + cap
    last = relays.process_cpu(pid)
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = relays.process_cpu(pid)
        if now - last < 0.002:
            return now
        last = now
    return last


def lf_burst(port: int, pid: int, sessions: int) -> dict[str, Any]:
    idle: list[socket.socket] = []
    bursting: list[socket.socket] = []
    try:
        _settle(pid)
        base = relays.tree_rss_mb(pid)
        idle = [_greeted(port) for _ in range(sessions)]
        _settle(pid)
        after_idle = relays.tree_rss_mb(pid)
        cpu_ms: list[float] = []
        for _ in range(sessions):
            sock = _greeted(port)
            before = _settle(pid)
            sock.sendall(BURST)
            cpu_ms.append((_settle(pid) - before) * 1000)
            bursting.append(sock)
        after_bursts = relays.tree_rss_mb(pid)
    finally:
        for sock in idle + bursting:
            sock.close()
    idle_mb = (after_idle - base) / sessions
    burst_mb = (after_bursts - after_idle) / sessions
    return {
        "sessions": sessions,
        "cpu_ms_per_burst": sorted(cpu_ms),
        "cpu_ms_per_burst_max": max(cpu_ms),
        "rss_mb_per_idle_session": round(idle_mb, 3),
        "rss_mb_per_bursting_session": round(burst_mb, 3),
    }


def _noops(sock: socket.socket, count: int) -> list[float]:
    buf = bytearray(4096)
    samples = []
    clock = time.perf_counter_ns
    for _ in range(count):
        t0 = clock()
        loadgen.command(sock, buf, b"NOOP")
        samples.append((clock() - t0) / 1000.0)
    return samples


def victim(port: int, count: int, attack_seconds: float, burst: bytes = BURST) -> dict[str, Any]:
    sock = _greeted(port)
    try:
        _noops(sock, 200)  # warm up
        idle = _noops(sock, count)
        stop = threading.Event()
        attackers: list[socket.socket] = []

        def attack() -> None:
            while not stop.is_set():
                try:
                    attacker = _greeted(port)
                    attacker.sendall(burst)
                    attackers.append(attacker)
                except OSError:
                    pass
                stop.wait(1.0)

        thread = threading.Thread(target=attack, daemon=True)
        thread.start()
        attacked: list[float] = []
        deadline = time.monotonic() + attack_seconds
        while time.monotonic() < deadline:
            attacked += _noops(sock, 100)
        stop.set()
        thread.join(5)
        for attacker in attackers:
            attacker.close()
    finally:
        sock.close()
    idle_p99 = loadgen.percentile(idle, 99)
    attacked_p99 = loadgen.percentile(attacked, 99)
    return {
        "idle_noops": len(idle),
        "attacked_noops": len(attacked),
        "bursts": len(attackers),
        "idle_p99_us": round(idle_p99, 1),
        "attacked_p99_us": round(attacked_p99, 1),
        "attacked_max_us": round(max(attacked), 1),
        "p99_ratio": round(attacked_p99 / idle_p99, 2),
    }


PASS_FLOOD = b"PASS x\r\n" * 8192


def victim_flood(
    port: int, count: int, attack_seconds: float, pid: int | None = None
) -> dict[str, Any]:
    """The victim's NOOP p99 idle, then while one session floods ``PASS x`` lines; with
    the relay's ``pid``, also its CPU milliseconds per flooded MiB."""
    sock = _greeted(port)
    attacker = _greeted(port)
    sent = 0
    try:
        _noops(sock, 200)  # warm up
        idle = _noops(sock, count)
        stop = threading.Event()

        def flood() -> None:
            nonlocal sent
            while not stop.is_set():
                try:
                    attacker.sendall(PASS_FLOOD)
                except OSError:
                    return
                sent += len(PASS_FLOOD)

        thread = threading.Thread(target=flood, daemon=True)
        thread.start()
        attacked: list[float] = []
        cpu0 = relays.process_cpu(pid) if pid else 0.0
        start = time.monotonic()
        while time.monotonic() - start < attack_seconds:
            attacked += _noops(sock, 100)
        seconds = time.monotonic() - start
        cpu = relays.process_cpu(pid) - cpu0 if pid else 0.0
        stop.set()
        attacker.close()
        thread.join(5)
    finally:
        sock.close()
        attacker.close()
    idle_p99 = loadgen.percentile(idle, 99)
    attacked_p99 = loadgen.percentile(attacked, 99)
    result: dict[str, Any] = {
        "idle_noops": len(idle),
        "attacked_noops": len(attacked),
        "flood_mib_per_s": round(sent / 2**20 / seconds, 1),
        "idle_p99_us": round(idle_p99, 1),
        "attacked_p99_us": round(attacked_p99, 1),
        "attacked_max_us": round(max(attacked), 1),
        "p99_ratio": round(attacked_p99 / idle_p99, 2),
    }
    if pid and sent:
        result["relay_cpu_ms_per_mib"] = round(cpu * 1000 / (sent / 2**20), 1)
    return result


def upload(port: int, pid: int | None, total: int) -> dict[str, Any]:
    block = random.Random(10).randbytes(256 * 1024)
    sock = _greeted(port)
    cpu0 = relays.process_cpu(pid) if pid else 0.0
    start = time.perf_counter()
    sent = 0
    with sock:
        while sent < total:
            sock.sendall(block)
            sent += len(block)
        sock.sendall(b"\r\nNOOP\r\n")  # answered once every byte before it went through
        data = b""
        while not data.endswith(b"+OK\r\n"):
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError("upstream closed during the upload")
            data += chunk
    seconds = time.perf_counter() - start
    result: dict[str, Any] = {"mib": sent / 2**20, "mib_per_s": round(sent / 2**20 / seconds, 1)}
    if pid:
        cpu = relays.process_cpu(pid) - cpu0
        result["relay_cpu_s"] = round(cpu, 3)
        result["mib_per_relay_cpu_s"] = round(sent / 2**20 / cpu, 1)
    return result


def masker_alone(total: int) -> dict[str, Any]:
    """The secret masker by itself on the same random binary, in 256 KiB chunks."""
    from pop3tap.protocol import SecretMasker

    block = random.Random(10).randbytes(256 * 1024)
    masker = SecretMasker()
    start = time.process_time()
    for _ in range(total // len(block)):
        masker.mask(block)
    seconds = time.process_time() - start
    return {"mib": total / 2**20, "mib_per_cpu_s": round(total / 2**20 / seconds, 1)}


def attacks(port: int, pid: int, sessions: int, noops: int, attack_s: float) -> dict[str, Any]:
    """The figures taken against pop3tap only: LF bursts and the three victims."""
    return {
        "lf_burst": lf_burst(port, pid, sessions),
        "victim": victim(port, noops, attack_s),
        # Answered commands cost more than LFs: a pairing and a log line each.
        "victim_noop_bursts": victim(port, noops, attack_s, b"NOOP\r\n" * 1000),
        "victim_pass_flood": victim_flood(port, noops, attack_s, pid),
    }


def _only_pass_flood(quick: bool, json_path: Path | None) -> int:
    """The PASS-flood victim through pop3tap and through trio-floor, in the same run."""
    noops, attack_s = (300, 2.0) if quick else (5000, 10.0)
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "load_avg": os.getloadavg()}}
    upstream = start_upstream()
    try:
        with tempfile.TemporaryDirectory(prefix="pop3tap-hostile-") as tmp:
            for mode in ("pop3tap", "trio-floor"):
                relay = relays.start_relay(mode, upstream.port, Path(tmp), ())
                try:
                    flood = victim_flood(relay.port, noops, attack_s, relay.pid)
                    results[mode] = {"victim_pass_flood": flood}
                finally:
                    relay.stop()
    finally:
        upstream.stop()
    text = json.dumps(results, indent=2)
    print(text)
    if json_path is not None:
        json_path.write_text(text + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a few seconds")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--only", choices=["pass-flood"], help="run one figure alone (against pop3tap)"
    )
    args = parser.parse_args(argv)
    if args.serve:
        serve()
        return 0
    if args.only:
        return _only_pass_flood(args.quick, args.json)
    sessions, noops, attack_s, upload_mib = (
        (3, 300, 2.0, 32) if args.quick else (16, 5000, 10.0, 512)
    )
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "load_avg": os.getloadavg()},
        "note": "shared machine: read figures against each other, not as absolutes",
    }
    upstream = start_upstream()
    try:
        with tempfile.TemporaryDirectory(prefix="pop3tap-hostile-") as tmp:
            workdir = Path(tmp)
            runs = (
                ("pop3tap", "pop3tap", ()),
                ("pop3tap-keep-secrets", "pop3tap", ("--keep-secrets",)),
                ("trio-floor", "trio-floor", ()),
            )
            for name, mode, extra in runs:
                relay = relays.start_relay(mode, upstream.port, workdir, extra)
                try:
                    assert relay.pid is not None
                    out: dict[str, Any] = {}
                    if name == "pop3tap":
                        out = attacks(relay.port, relay.pid, sessions, noops, attack_s)
                    out["upload"] = upload(relay.port, relay.pid, upload_mib * 2**20)
                    results[name] = out
                finally:
                    relay.stop()
    finally:
        upstream.stop()
    results["masker_alone"] = masker_alone(upload_mib * 2**20)
    uploads = {name: results[name]["upload"] for name, _, _ in runs}
    masked = uploads["pop3tap"]["mib_per_relay_cpu_s"]
    results["upload_cpu_ratios"] = {
        "pop3tap_to_keep_secrets": round(
            masked / uploads["pop3tap-keep-secrets"]["mib_per_relay_cpu_s"], 2
        ),
        "pop3tap_to_trio_floor": round(masked / uploads["trio-floor"]["mib_per_relay_cpu_s"], 2),
    }
    text = json.dumps(results, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
