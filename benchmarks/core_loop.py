"""The sans-IO core alone, in a loop: a capture's records fed to a fresh SessionObserver.

No sockets, no trio, no log: what parsing, pairing and masking one recorded session costs,
for the compiled core against the pure one (same tree, same process count)::

    python -m benchmarks.core_loop                       # whichever core this install loads
    POP3TAP_PURE_PYTHON=1 python -m benchmarks.core_loop # the pure-Python core

Prints which core was loaded, the events one session produced and the median and the
lowest CPU µs per session over ``--repeat`` batches (CPU time of this process: on a shared
machine, wall time mostly measures the neighbours). Run the two commands alternately a few times and
compare the medians: a loop on a shared machine drifts like any other benchmark.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import pop3tap.protocol
from pop3tap.capture import DataRecord, read_capture
from pop3tap.protocol import Direction, SessionObserver

SAMPLES = Path(__file__).resolve().parent.parent / "captures"


def run_session(records: list[DataRecord]) -> int:
    """Feed one session's data records to a new observer; the number of events."""
    observer = SessionObserver()
    events = 0
    for record in records:
        if record.dir == Direction.CLIENT:
            events += len(observer.feed_client(record.data, record.t))
            observer.take_masked_client()
        else:
            events += len(observer.feed_server(record.data, record.t))
    end = records[-1].t if records else 0.0
    events += len(observer.end_client(end)) + len(observer.end_server(end))
    return events


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("capture", nargs="*", type=Path, help="captures (default: the samples)")
    parser.add_argument("--sessions", type=int, default=2000, help="sessions per batch")
    parser.add_argument("--repeat", type=int, default=7, help="timed batches")
    args = parser.parse_args(argv)
    paths = args.capture or sorted(SAMPLES.glob("*.p3cap"))
    sessions = [
        [r for r in read_capture(path).records if isinstance(r, DataRecord)] for path in paths
    ]
    events = sum(run_session(records) for records in sessions)
    per_batch = max(1, args.sessions // len(sessions))
    samples = []
    for _ in range(args.repeat):
        start = time.process_time()
        for _ in range(per_batch):
            for records in sessions:
                run_session(records)
        samples.append((time.process_time() - start) / (per_batch * len(sessions)) * 1e6)
    build = "compiled" if pop3tap.protocol.COMPILED else "pure"
    print(
        f"{build} core: {statistics.median(samples):.1f} CPU us per session "
        f"(lowest batch {min(samples):.1f}) "
        f"({len(sessions)} captures, {events} events per pass, {args.repeat} batches)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
