"""Speed of the body scanners alone on the benchmark's 64 MiB message, in 256 KiB chunks::

    python -m benchmarks.scan

The message is the one ``benchmarks.server`` sends (dot-stuffed, three lines in five begin
with a dot). Prints MB/s and CPU s per GB for the C scanner (when built) and the Python one.
"""

from __future__ import annotations

import sys
import time

from benchmarks.server import BIG_DEFAULT, _build_body, dot_stuff
from pop3tap.protocol._bodyscan import ChunkScanner, scan_chunk_python

CHUNK = 256 * 1024


def measure(scan: ChunkScanner, chunks: list[bytes], repeat: int = 3) -> float:
    """Best MB/s over ``repeat`` passes."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for chunk in chunks:
            scan(chunk, 0, len(chunk), False)
        best = min(best, time.process_time() - start)
    return sum(map(len, chunks)) / best / 1e6


def main() -> int:
    body = dot_stuff(_build_body(BIG_DEFAULT, "big"))
    chunks = [body[i : i + CHUNK] for i in range(0, len(body), CHUNK)]
    scanners: list[tuple[str, ChunkScanner]] = [("python", scan_chunk_python)]
    try:
        from pop3tap.protocol._bodyscan_c import scan_chunk
    except ImportError:
        print("C scanner: not built")
    else:
        scanners.insert(0, ("c", scan_chunk))
    for name, scan in scanners:
        speed = measure(scan, chunks)
        print(f"{name:6s} {speed:8.0f} MB/s  {1000 / speed:6.2f} CPU s per GB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
