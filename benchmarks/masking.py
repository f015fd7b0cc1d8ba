"""What masking costs a session after AUTH, as same-run ratios (no absolute targets).

After a line holding AUTH every client line waits for the pairing's verdict before it is
written to the capture (docs/design.md, "Secrets, whatever the server does"). This drives
the protocol core the way the relay does (mask, parse, take what was resolved) and prints,
for the same client bytes, the time after an AUTH divided by the time before any AUTH:

    .venv/bin/python -m benchmarks.masking [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from pop3tap.protocol import SessionObserver

CHUNK = 64 * 1024


def _session(after_auth: bool) -> SessionObserver:
    observer = SessionObserver()
    observer.feed_server(b"+OK ready\r\n", 0.0)
    if after_auth:
        line = b"AUTH PLAIN AGJvYgBwdw==\r\n"
        observer.mask_client(line, 0.0)
        observer.feed_client(line, 0.0)
        observer.feed_server(b"+OK Logged in.\r\n", 0.0)
        observer.take_masked_client()
    return observer


def _seconds(payload: bytes, after_auth: bool, *, parse: bool) -> float:
    observer = _session(after_auth)
    start = time.perf_counter()
    for pos in range(0, len(payload), CHUNK):
        chunk = payload[pos : pos + CHUNK]
        observer.mask_client(chunk, 1.0)
        if parse:
            observer.feed_client(chunk, 1.0)
        observer.take_masked_client()
    return time.perf_counter() - start


LOADS = {
    # 4096 pipelined commands, parsed and answered later: the per-command cost.
    "commands": (b"".join(b"RETR %d\r\n" % (n % 99 + 1) for n in range(4096)), True),
    # 8 MiB of random bytes through the masker alone (an upload after AUTH).
    "binary": (os.urandom(8 * 1024 * 1024), False),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    for name, (payload, parse) in LOADS.items():
        ratios = []
        for _ in range(args.repeat):
            before = _seconds(payload, False, parse=parse)
            after = _seconds(payload, True, parse=parse)
            ratios.append(after / before)
        print(
            f"{name}: {len(payload)} bytes; after-AUTH / before-AUTH time, median of "
            f"{args.repeat}: {statistics.median(ratios):.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
