"""What the client-stream secret masker costs, per input shape and after AUTH.

``SecretMasker.mask`` sees every byte a client sends (issue 10: one client must not starve
the others). For each input shape below it is fed 64 KiB chunks, as the relay reads them,
and the line reports MiB per CPU second and the slowest single call:

    binary, long-lines (no blanks, no LF for 60 KiB), commands (ordinary pipelined commands),
    pass-flood, apop-flood, odd-flood (mixed case, every separator byte, glued and lone-CR
    forms), auth-flood (AUTH, then SASL lines held for a verdict), split-lines (a PASS flood
    in chunks of 64 KiB - 3 bytes, so every chunk boundary falls inside a line),
    keyword-inside-lines (``x PASS`` lines: a keyword that is no line's first word),
    lone-cr-parts (``PASSWORD`` parts between lone CRs, no LF at all).

After a line holding AUTH every client line waits for the pairing's verdict before it is
written to the capture (docs/design.md, "Secrets, whatever the server does"). This drives
the protocol core the way the relay does (mask, parse, take what was resolved) and prints,
for the same client bytes, the time after an AUTH divided by the time before any AUTH:

    .venv/bin/python -m benchmarks.masking [--repeat 5] [--mib 16]

The shapes are absolute figures of this machine (read them against each other and
against ``binary``); the after-AUTH figures are same-run ratios.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

from pop3tap.protocol import SecretMasker, SessionObserver

CHUNK = 64 * 1024


def _session(after_auth: bool) -> SessionObserver:
    observer = SessionObserver()
    observer.feed_server(b"+OK ready\r\n", 0.0)
    if after_auth:
        line = b"AUTH PLAIN AGJvYgBwdw==\r\n"
        observer.receive_client(line, 0.0)
        observer.feed_server(b"+OK Logged in.\r\n", 0.0)
        observer.take_masked_client()
    return observer


def _seconds(payload: bytes, after_auth: bool, *, parse: bool) -> float:
    observer = _session(after_auth)
    start = time.perf_counter()
    for pos in range(0, len(payload), CHUNK):
        chunk = payload[pos : pos + CHUNK]
        observer.record_client(chunk, 1.0)
        if parse:
            observer.parse_recorded_client()
        observer.take_masked_client()
    return time.perf_counter() - start


LOADS = {
    # 4096 pipelined commands, parsed and answered later: the per-command cost.
    "commands": (b"".join(b"RETR %d\r\n" % (n % 99 + 1) for n in range(4096)), True),
    # 8 MiB of random bytes through the masker alone (an upload after AUTH).
    "binary": (os.urandom(8 * 1024 * 1024), False),
}


_SEPARATORS = [bytes([b]) for b in range(0x21) if b not in (0x0A, 0x0D)] + [b"\x7f"]


def _odd_lines(count: int) -> bytes:
    """PASS and APOP lines in random case with every separator byte, glued and lone-CR
    forms, CRLF and LF endings: the variants a server may take as a login."""
    rng = random.Random(10)

    def case(word: bytes) -> bytes:
        return bytes(b ^ 0x20 if rng.random() < 0.5 else b for b in word)

    lines = []
    for _ in range(count):
        sep = rng.choice(_SEPARATORS)
        form = rng.randrange(5)
        if form == 0:
            line = case(b"PASS") + sep + b"x"
        elif form == 1:
            line = case(b"APOP") + sep + b"bob" + sep + b"c4c9334bac560ecc979e58001b3e22fb"
        elif form == 2:
            line = case(b"pass") + b"1x"
        elif form == 3:
            line = sep + case(b"APOP") + b"\rbob digest"
        else:
            line = case(b"PASS") + b"\r" + sep + b"pw"
        lines.append(line + rng.choice([b"\r\n", b"\n"]))
    return b"".join(lines)


def shapes(mib: int) -> dict[str, tuple[bytes, int]]:
    """Each shape's client bytes (about ``mib`` MiB) and the chunk size it is fed in."""
    size = mib * 2**20
    long_line = b"A" * (60 * 1024) + b"\r\n"
    ordinary = b"".join(b"RETR %d\r\nUIDL %d\r\nNOOP\r\n" % (n, n) for n in range(1, 512))
    sasl = b"AUTH PLAIN\r\n" + b"AGJvYgBzM2tyMXQ=\r\n" * (size // 18)
    return {
        "binary": (random.Random(10).randbytes(size), CHUNK),
        "long-lines": (long_line * (size // len(long_line)), CHUNK),
        "commands": (ordinary * (size // len(ordinary)), CHUNK),
        "pass-flood": (b"PASS x\r\n" * (size // 8), CHUNK),
        "apop-flood": (b"APOP u d\r\n" * (size // 10), CHUNK),
        "odd-flood": (_odd_lines(size // 24), CHUNK),
        "auth-flood": (sasl, CHUNK),
        "split-lines": (b"PASS x\r\n" * (size // 8), CHUNK - 3),
        "keyword-inside-lines": (b"x PASS\n" * (size // 7), CHUNK),
        "lone-cr-parts": (b"PASSWORD\r" * (size // 9), CHUNK),
    }


def throughput(payload: bytes, chunk: int) -> tuple[float, float]:
    """MiB per CPU second through one masker, and the slowest call in milliseconds."""
    masker = SecretMasker()
    slowest = 0.0
    clock = time.process_time
    start = clock()
    for pos in range(0, len(payload), chunk):
        before = clock()
        masker.mask(payload[pos : pos + chunk])
        slowest = max(slowest, clock() - before)
        masker.take_released()
    seconds = clock() - start
    return len(payload) / 2**20 / seconds, slowest * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--mib", type=int, default=16, help="MiB per shape")
    args = parser.parse_args(argv)
    for name, (payload, chunk) in shapes(args.mib).items():
        runs = [throughput(payload, chunk) for _ in range(args.repeat)]
        rate = statistics.median(r[0] for r in runs)
        slowest = max(r[1] for r in runs)
        print(f"shape {name}: {rate:.1f} MiB/s, slowest {chunk // 1024} KiB call {slowest:.2f} ms")
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
