"""A slow consumer pushes back all the way to the far STDIN; memory stays bounded."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

from .harness import SOCKIMUX, Peer, require, socat_subflow, wait_for

MB = 1 << 20
RATE = 4 * MB  # the consumer's reading speed, bytes per second
WINDOW = 16 * MB  # the default window


def _peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _read_position(pid: int, path: Path) -> int:
    """How far process `pid` has read the file at `path` (whichever fd holds it)."""
    for fd in os.listdir(f"/proc/{pid}/fd"):
        if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                return int(f.readline().split()[1])
    raise AssertionError(f"{path} is not open in {pid}")


def test_slow_consumer_bounds_memory_and_far_stdin(tmp_path: Path) -> None:
    require("socat")
    payload = tmp_path / "big.in"
    with open(payload, "wb") as f:
        f.truncate(256 * MB)  # 256 MiB ready at once
    a = Peer(tmp_path, "a", payload)
    b_sock = str(tmp_path / "b.sock")
    b = subprocess.Popen([SOCKIMUX, b_sock], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    wait_for(lambda: os.path.exists(b_sock), 10, "b to listen")
    consumed = 0
    stop = threading.Event()

    def consume() -> None:
        nonlocal consumed
        assert b.stdout is not None
        start = time.monotonic()
        while not stop.is_set():
            ahead = consumed - RATE * (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead / RATE)
            data = b.stdout.read1(64 * 1024)
            if not data:
                return
            consumed += len(data)

    reader = threading.Thread(target=consume, daemon=True)
    relays = []
    try:
        b_peer = type("P", (), {"socket": b_sock})()
        relays = [socat_subflow(a, b_peer) for _ in range(4)]  # type: ignore[arg-type]
        reader.start()
        time.sleep(6)
        read_by_a = _read_position(a.proc.pid, payload)
        rss_a, rss_b = _peak_rss(a.proc.pid), _peak_rss(b.pid)
        # The consumer sets the pace...
        assert 4 * RATE < consumed < 8 * RATE, consumed
        # ...and A reads its STDIN only as far as B's window and A's send buffer allow.
        assert read_by_a <= consumed + 2 * WINDOW + 2 * MB, (read_by_a, consumed)
        assert rss_a < 100 * MB and rss_b < 100 * MB, (rss_a / MB, rss_b / MB)
        print(f"peak RSS: A {rss_a / MB:.1f} MiB, B {rss_b / MB:.1f} MiB; "
              f"A read {read_by_a / MB:.1f} MiB while the consumer took {consumed / MB:.1f} MiB")
    finally:
        stop.set()
        for r in relays:
            r.kill()
        b.kill()
        b.wait()
        a.close()
