"""Load generator for the benchmarks: plain blocking sockets, no poplib.

Each measurement is a function returning a dict; the command line runs one of them against
HOST:PORT and prints the dict as one JSON line, so the runner can keep the client in its own
process, apart from the relay being measured::

    python -m benchmarks.loadgen throughput --port 1100 --repeat 5
    python -m benchmarks.loadgen noop --port 1100 --count 5000
    python -m benchmarks.loadgen retr --port 1100 --count 500
    python -m benchmarks.loadgen sessions --port 1100 --sessions 200 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import socket
import statistics
import sys
import threading
import time
from typing import Any

TERMINATOR = b"\r\n.\r\n"
RECV_SIZE = 1024 * 1024
TIMEOUT = 60.0


class ReplyError(Exception):
    """The server answered -ERR, or the connection ended mid-reply."""


def read_reply(sock: socket.socket, buf: bytearray, multiline: bool) -> int:
    """Read one reply into ``buf`` (reused, contents discarded); return the octets read.

    Only the status line and the last five octets of each chunk are looked at, so a large
    body costs one ``recv_into`` per chunk and no copies.
    """
    view = memoryview(buf)
    total = 0
    tail = b""
    status = b""
    while True:
        n = sock.recv_into(view)
        if n == 0:
            raise ReplyError("connection closed mid-reply")
        total += n
        tail = bytes(view[n - 5 : n]) if n >= 5 else (tail + bytes(view[:n]))[-5:]
        if b"\r\n" not in status:
            status += bytes(view[: min(n, 512)])
            if b"\r\n" not in status:
                continue
            if not status.startswith(b"+OK"):
                raise ReplyError(status.split(b"\r\n", 1)[0].decode("ascii", "replace"))
        if multiline:
            if tail == TERMINATOR:
                return total
        elif tail.endswith(b"\r\n"):
            return total


def connect(host: str, port: int) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def command(sock: socket.socket, buf: bytearray, line: bytes, multiline: bool = False) -> int:
    sock.sendall(line + b"\r\n")
    return read_reply(sock, buf, multiline)


def login(host: str, port: int, buf: bytearray) -> socket.socket:
    sock = connect(host, port)
    read_reply(sock, buf, False)
    command(sock, buf, b"USER bench")
    command(sock, buf, b"PASS bench")
    return sock


def quit_(sock: socket.socket, buf: bytearray) -> None:
    try:
        command(sock, buf, b"QUIT")
    finally:
        sock.close()


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[rank - 1]


def throughput(host: str, port: int, msg: int = 1, repeat: int = 1) -> dict[str, Any]:
    """Log in, then RETR ``msg`` ``repeat`` times, each timed until the terminator is seen."""
    buf = bytearray(RECV_SIZE)
    sock = login(host, port, buf)
    line = b"RETR %d" % msg
    octets = 0
    seconds = 0.0
    per_retr: list[float] = []
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        n = command(sock, buf, line, multiline=True)
        took = time.perf_counter() - start
        octets += n
        seconds += took
        per_retr.append(n / took / 1e6)
    quit_(sock, buf)
    return {
        "octets": octets,
        "seconds": seconds,
        "mb_per_s": octets / seconds / 1e6,
        "per_retr_mb_per_s": per_retr,
    }


def noop_latency(host: str, port: int, count: int) -> dict[str, Any]:
    """``count`` sequential NOOP round trips on one session."""
    buf = bytearray(4096)
    sock = login(host, port, buf)
    samples: list[float] = []
    clock = time.perf_counter_ns
    for _ in range(count):
        t0 = clock()
        command(sock, buf, b"NOOP")
        samples.append((clock() - t0) / 1000.0)
    quit_(sock, buf)
    return {
        "count": count,
        "median_us": statistics.median(samples),
        "p99_us": percentile(samples, 99),
    }


def retr_latency(
    host: str, port: int, count: int, msg: int = 2, stall_ms: float = 35.0
) -> dict[str, Any]:
    """``count`` sequential RETRs of the small message; counts round trips above ``stall_ms``."""
    buf = bytearray(RECV_SIZE)
    sock = login(host, port, buf)
    samples: list[float] = []
    clock = time.perf_counter_ns
    line = b"RETR %d" % msg
    for _ in range(count):
        t0 = clock()
        command(sock, buf, line, multiline=True)
        samples.append((clock() - t0) / 1000.0)
    quit_(sock, buf)
    return {
        "count": count,
        "median_us": statistics.median(samples),
        "p99_us": percentile(samples, 99),
        "stalls": sum(1 for s in samples if s > stall_ms * 1000.0),
    }


def one_session(host: str, port: int, buf: bytearray) -> None:
    """login + STAT + LIST + 3 x RETR 2 + QUIT."""
    sock = login(host, port, buf)
    try:
        command(sock, buf, b"STAT")
        command(sock, buf, b"LIST", multiline=True)
        for _ in range(3):
            command(sock, buf, b"RETR 2", multiline=True)
        command(sock, buf, b"QUIT")
    finally:
        sock.close()


def _session_worker(
    host: str,
    port: int,
    threads: int,
    rounds: int,
    barrier: Any,
    results: Any,
) -> None:
    lock = threading.Lock()
    ok = 0
    errors: list[str] = []

    def run() -> None:
        nonlocal ok
        buf = bytearray(65536)
        try:
            one_session(host, port, buf)
        except (OSError, ReplyError) as exc:
            with lock:
                errors.append(f"{type(exc).__name__}: {exc}")
            return
        with lock:
            ok += 1

    barrier.wait()
    start = time.monotonic()
    for _ in range(rounds):
        pool = [threading.Thread(target=run) for _ in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
    results.put((start, time.monotonic(), ok, errors[:5], len(errors)))


def sessions(host: str, port: int, concurrent: int, rounds: int, procs: int = 2) -> dict[str, Any]:
    """``rounds`` rounds of ``concurrent`` simultaneous sessions spread over ``procs`` processes."""
    procs = max(1, min(procs, concurrent))
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(procs)
    results = ctx.Queue()
    share = [concurrent // procs + (1 if i < concurrent % procs else 0) for i in range(procs)]
    workers = [
        ctx.Process(target=_session_worker, args=(host, port, n, rounds, barrier, results))
        for n in share
    ]
    for w in workers:
        w.start()
    got = [results.get(timeout=600) for _ in workers]
    for w in workers:
        w.join()
    start = min(g[0] for g in got)
    end = max(g[1] for g in got)
    ok = sum(g[2] for g in got)
    nerr = sum(g[4] for g in got)
    samples = [e for g in got for e in g[3]][:5]
    seconds = end - start
    return {
        "sessions": ok + nerr,
        "ok": ok,
        "errors": nerr,
        "error_samples": samples,
        "seconds": seconds,
        "sessions_per_s": ok / seconds if seconds > 0 else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="POP3 benchmark load generator")
    parser.add_argument("what", choices=["throughput", "noop", "retr", "sessions"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="RETRs per throughput run")
    args = parser.parse_args(argv)
    result: dict[str, Any]
    if args.what == "throughput":
        result = throughput(args.host, args.port, repeat=args.repeat)
    elif args.what == "noop":
        result = noop_latency(args.host, args.port, args.count)
    elif args.what == "retr":
        result = retr_latency(args.host, args.port, args.count)
    else:
        result = sessions(args.host, args.port, args.sessions, args.rounds, args.procs)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
