"""Drain STDIN until EOF; print one JSON line: bytes, sha256, first-byte and EOF times.

Run by the bench as a process of its own, so hashing and rate limiting do
not share a GIL with the bench's own timing.  Times are CLOCK_MONOTONIC
(``time.monotonic()``), comparable across processes.  SIGTERM ends it
early; it still reports what it read (``eof`` false).

    sink.py [--sha256] [--rate BYTES_PER_SECOND]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
import time


class Stop(Exception):
    pass


def _stop(signo: int, frame: object) -> None:
    raise Stop


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--sha256", action="store_true")
    p.add_argument("--rate", type=float, default=None, help="read at most this many bytes/s")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, _stop)
    rate = args.rate
    # Rate-limited: small reads keep the pace smooth (64 KiB at 4 MB/s is 16 ms).
    buf = bytearray(64 * 1024 if rate else 1 << 20)
    view = memoryview(buf)
    h = hashlib.sha256() if args.sha256 else None
    total = 0
    t_first: float | None = None
    eof = False
    stdin = os.fdopen(0, "rb", buffering=0)
    try:
        while True:
            n = stdin.readinto(view)
            if not n:
                eof = True
                break
            if t_first is None:
                t_first = time.monotonic()
            total += n
            if h is not None:
                h.update(view[:n])
            if rate:
                ahead = t_first + total / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
    except Stop:
        pass
    t_end = time.monotonic()
    report = {"bytes": total, "sha256": h.hexdigest() if h is not None else None,
              "t_first": t_first, "t_eof": t_end if eof else None, "t_end": t_end, "eof": eof}
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
