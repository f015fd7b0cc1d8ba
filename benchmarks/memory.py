"""Memory check: RSS of the relay while it relays the large RETR to a slow reader.

The client logs in, the relay's RSS is taken as the baseline, then it sends RETR 1 and reads
64 KiB at a time with a 2 ms pause, capped in total time. The relay's process tree is sampled
every 50 ms (VmRSS). The relay is flat when the growth over the baseline stays well under the
message size (under a quarter of it). In direct mode the benchmark server itself is measured.

Standalone::

    python -m benchmarks.memory [--quick] [--modes pop3tap,haproxy]
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Any

from benchmarks import loadgen, relays

FLAT_FRACTION = 0.25


def slow_read(
    port: int,
    pid: int,
    size: int,
    recv_size: int = 65536,
    pause: float = 0.002,
    cap_seconds: float = 60.0,
    interval: float = 0.05,
) -> dict[str, Any]:
    """Relay RETR 1 to a slow reader through ``port`` while sampling the RSS of ``pid``'s tree."""
    buf = bytearray(65536)
    sock = loadgen.login("127.0.0.1", port, buf)
    time.sleep(0.1)
    baseline = relays.tree_rss_mb(pid)
    done = threading.Event()
    result: dict[str, Any] = {"completed": False, "octets": 0}

    def reader() -> None:
        try:
            sock.sendall(b"RETR 1\r\n")
            tail = b""
            total = 0
            deadline = time.monotonic() + cap_seconds
            while time.monotonic() < deadline:
                data = sock.recv(recv_size)
                if not data:
                    break
                total += len(data)
                tail = (tail + data[-5:])[-5:]
                if tail == loadgen.TERMINATOR:
                    result["completed"] = True
                    break
                time.sleep(pause)
            result["octets"] = total
        except OSError as exc:
            result["error"] = str(exc)
        finally:
            done.set()

    start = time.monotonic()
    with relays.RssSampler(pid, interval) as sampler:
        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        thread.join(cap_seconds + 10)
    seconds = time.monotonic() - start
    end = relays.tree_rss_mb(pid)
    try:
        if result["completed"]:
            loadgen.quit_(sock, buf)
    except (OSError, loadgen.ReplyError):
        pass
    finally:
        sock.close()
    peak = max(sampler.peak, baseline)
    growth = peak - baseline
    size_mb = size / (1024 * 1024)
    return {
        "baseline_mb": round(baseline, 2),
        "peak_mb": round(peak, 2),
        "end_mb": round(end, 2),
        "growth_mb": round(growth, 2),
        "message_mb": round(size_mb, 2),
        "flat": growth < FLAT_FRACTION * size_mb,
        "completed": bool(result["completed"]),
        "octets": result["octets"],
        "seconds": round(seconds, 2),
        "samples": len(sampler.samples),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="RSS of each relay under a slow reader")
    parser.add_argument("--quick", action="store_true", help="4 MiB message instead of 64 MiB")
    parser.add_argument("--modes", default=",".join(relays.MODES))
    args = parser.parse_args(argv)
    size = 4 * 1024 * 1024 if args.quick else 64 * 1024 * 1024
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    relays.ensure_tools(modes)
    server = relays.start_server(size)
    out: dict[str, Any] = {}
    try:
        for mode, relay in relays.each_relay(modes, server.port, "pop3tap-mem"):
            if isinstance(relay, str):
                out[mode] = {"error": relay}
                continue
            pid = relay.pid if relay.pid is not None else server.proc.pid
            out[mode] = slow_read(relay.port, pid, size)
            print(mode, json.dumps(out[mode]), flush=True)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
