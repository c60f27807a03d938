"""Drain STDIN until EOF; print one JSON line: bytes, sha256, first-byte and EOF times.

Run by the bench as a process of its own, so hashing and rate limiting do
not share a GIL with the bench's own timing.  Times are CLOCK_MONOTONIC
(``time.monotonic()``), comparable across processes.  SIGTERM ends it
early; it still reports what it read (``eof`` false).

    sink.py [--sha256] [--rate BYTES_PER_SECOND]
    sink.py --file PATH [--sha256]

With ``--file``, the output is a regular file that another process writes
(``writer > PATH``): the sink watches it with inotify and its "EOF" is the
file's IN_CLOSE_WRITE, which the kernel sends when the last descriptor of
the writer's open file is closed, as a pipe's reader sees EOF when the
last writer closes it.  The first byte is the first IN_MODIFY (the watch
then narrows to IN_CLOSE_WRITE, so the writes do not wake the sink).  It
prints "watching" on a line of its own once the watch is set (the bench
waits for that before data may flow); bytes and sha256 are the file's,
read after the close.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import signal
import struct
import sys
import time

IN_MODIFY = 0x2
IN_CLOSE_WRITE = 0x8
IN_CLOEXEC = os.O_CLOEXEC
EVENT = struct.Struct("iIII")  # struct inotify_event without its name: wd, mask, cookie, len


class Stop(Exception):
    pass


def _stop(signo: int, frame: object) -> None:
    raise Stop


def _watch_file(path: str, sha256: bool) -> dict[str, object]:
    """Wait for the last writer to close ``path``; the report for it."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(IN_CLOEXEC)
    if fd < 0 or libc.inotify_add_watch(fd, os.fsencode(path), IN_MODIFY | IN_CLOSE_WRITE) < 0:
        raise SystemExit(f"sink.py: inotify on {path}: {os.strerror(ctypes.get_errno())}")
    sys.stdout.write("watching\n")
    sys.stdout.flush()
    t_first: float | None = None
    t_close: float | None = None
    try:
        while t_close is None:
            events = os.read(fd, 4096)
            now = time.monotonic()
            for offset in range(0, len(events), EVENT.size):  # a watched file's events have no name
                mask = EVENT.unpack_from(events, offset)[1]
                if mask & IN_MODIFY and t_first is None:
                    t_first = now
                    libc.inotify_add_watch(fd, os.fsencode(path), IN_CLOSE_WRITE)
                if mask & IN_CLOSE_WRITE:
                    t_close = now
    except Stop:
        pass
    t_end = time.monotonic()
    digest = None
    if sha256:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        digest = h.hexdigest()
    return {"bytes": os.stat(path).st_size, "sha256": digest,
            "t_first": t_first, "t_eof": t_close, "t_end": t_end, "eof": t_close is not None}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--sha256", action="store_true")
    p.add_argument("--rate", type=float, default=None, help="read at most this many bytes/s")
    p.add_argument("--file", default=None, metavar="PATH", help="watch this file instead of reading STDIN")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, _stop)
    if args.file is not None:
        sys.stdout.write(json.dumps(_watch_file(args.file, args.sha256)) + "\n")
        sys.stdout.flush()
        return 0
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
