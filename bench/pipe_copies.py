"""What it costs the kernel to move a pipe's bytes into a UNIX stream socket,
each way a sender could (docs/PERFORMANCE.md, item 19).

    .venv/bin/python bench/pipe_copies.py [PAYLOAD] [ROUNDS]

``cat PAYLOAD`` writes into a 1 MiB pipe; this process moves its bytes into
one end of a socketpair whose other end ``cat > /dev/null`` drains; its own
CPU time (user, system) is printed per way, rounds alternated:

- read-write: read() into our memory, write() to the socket (two copies:
  what sockimux does with a STDIN pipe);
- memfd-ring: splice() into an 18 MiB memfd used as a ring, sendfile() from
  it (one copy into the page cache; the socket takes its pages by reference);
- memfd-mmap: the same ring mapped, filled by readv();
- tee-kept: splice() into a pipe of our own that keeps the bytes (by
  reference), tee() what is sent into another pipe, splice() that into the
  socket (what a re-send needs stays in the kept pipe until acknowledged);
- splice: splice() straight into the socket (nothing kept: the floor).
"""

from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
import resource
import socket
import subprocess
import sys

F_SETPIPE_SZ = 1031
MIB = 1 << 20
RING = 18 * MIB


def _pipe() -> tuple[int, int]:
    r, w = os.pipe()
    fcntl.fcntl(w, F_SETPIPE_SZ, MIB)
    return r, w


def _tee() -> ctypes._CFuncPtr:  # type: ignore[name-defined]
    call = ctypes.CDLL(None, use_errno=True).tee
    call.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint]
    call.restype = ctypes.c_ssize_t
    return call


def _send_all(sock: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(sock, view):]


def move(way: str, src: int, sock: int) -> int:
    """Move everything from ``src`` into ``sock`` the given way; bytes moved."""
    total = 0
    if way == "read-write":
        while data := os.read(src, MIB):
            _send_all(sock, data)
            total += len(data)
    elif way in ("memfd-ring", "memfd-mmap"):
        ring = os.memfd_create("ring")
        os.ftruncate(ring, RING)
        view = memoryview(mmap.mmap(ring, RING)) if way == "memfd-mmap" else None
        position = 0
        while True:
            count = min(MIB, RING - position)
            if view is None:
                moved = os.splice(src, ring, count, offset_dst=position)
            else:
                moved = os.readv(src, [view[position:position + count]])
            if not moved:
                break
            offset, left = position, moved
            while left:
                sent = os.sendfile(sock, ring, offset, left)
                offset, left = offset + sent, left - sent
            position = (position + moved) % RING
            total += moved
        if view is not None:
            view.release()
        os.close(ring)
    elif way == "tee-kept":
        tee = _tee()
        kept = [_pipe() for _ in range(4)]
        out_r, out_w = _pipe()
        null = os.open(os.devnull, os.O_WRONLY)
        for round_ in range(1 << 40):
            keep_r, keep_w = kept[round_ % len(kept)]
            os.set_blocking(keep_r, False)
            try:  # what it kept four rounds ago is acknowledged by now
                while os.splice(keep_r, null, MIB):
                    pass
            except BlockingIOError:
                pass
            moved = os.splice(src, keep_w, MIB)
            if not moved:
                break
            half = moved // 2  # sent as two pieces, the second one from the middle
            if tee(keep_r, out_w, half, 0) != half:
                raise OSError(ctypes.get_errno(), "tee")
            left = half
            while left:
                left -= os.splice(out_r, sock, left)
            if tee(keep_r, out_w, moved, 0) != moved:
                raise OSError(ctypes.get_errno(), "tee")
            os.splice(out_r, null, half)
            left = moved - half
            while left:
                left -= os.splice(out_r, sock, left)
            total += moved
        os.close(null)
    elif way == "splice":
        while moved := os.splice(src, sock, MIB):
            total += moved
    else:
        raise SystemExit(f"no way {way!r}")
    return total


def measure(way: str, payload: str) -> tuple[int, float, float]:
    src, w = _pipe()
    producer = subprocess.Popen(["cat", payload], stdout=w)
    os.close(w)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    consumer = subprocess.Popen(["sh", "-c", "cat > /dev/null"], stdin=theirs.fileno())
    theirs.close()
    before = resource.getrusage(resource.RUSAGE_SELF)
    total = move(way, src, ours.fileno())
    after = resource.getrusage(resource.RUSAGE_SELF)
    ours.close()
    os.close(src)
    consumer.wait()
    producer.wait()
    return total, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime


def main() -> None:
    payload = sys.argv[1] if len(sys.argv) > 1 else "/dev/shm/pay512"
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    for _ in range(rounds):
        for way in ("read-write", "memfd-ring", "memfd-mmap", "tee-kept", "splice"):
            total, user, system = measure(way, payload)
            print(f"{way:11} {total / MIB:.0f} MiB  user {user:.3f} s  sys {system:.3f} s",
                  flush=True)


if __name__ == "__main__":
    main()
