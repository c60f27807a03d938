"""Startup: a sockimux pair started, one byte carried, both exited; against socat.

Every short command pays the start-up: a git fetch over ssh, a
ProxyCommand per login.  One run:

- sockimux: ``sockimux B.sock > out`` and ``sockimux A.sock < one-byte``
  spawned together; the time to listening is from the spawn until both
  socket files exist; then one relay ``socat UNIX-CONNECT:A.sock
  UNIX-CONNECT:B.sock``; the run ends when A and B have both exited (B's
  output checked: the one byte).
- socat: the same with ``socat -u OPEN:one-byte UNIX-LISTEN:a.sock`` and
  ``socat -u UNIX-LISTEN:b.sock STDOUT > out`` as the ends.

Reported, medians over the runs (alternated): wall time from the spawn
to the last exit, time to listening, and the CPU time (user + system,
from wait4's rusage) of the two ends together; ratios sockimux/socat
(higher is slower).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from procs import SOCKIMUX_CMD, BenchError

TIMEOUT = 30.0  # seconds for one run; a pair that needs longer has failed


def describe() -> dict[str, str]:
    return {
        "sockimux": "sockimux B.sock > out; sockimux A.sock < one-byte; relay socat "
                    "UNIX-CONNECT:A.sock UNIX-CONNECT:B.sock once both listen",
        "socat": "socat -u UNIX-LISTEN:b.sock STDOUT > out; socat -u OPEN:one-byte "
                 "UNIX-LISTEN:a.sock; the same relay",
        "measured": "spawn to both ends exited; spawn to both listening; CPU (user+system) of the ends",
    }


def _reap(pids: list[int], deadline: float) -> float:
    """Wait for every pid; the sum of their CPU seconds."""
    cpu = 0.0
    left = list(pids)
    while left:
        for pid in list(left):
            done, _status, usage = os.wait4(pid, os.WNOHANG)
            if done:
                cpu += usage.ru_utime + usage.ru_stime
                left.remove(pid)
        if left:
            if time.monotonic() > deadline:
                for pid in left:
                    os.kill(pid, 9)
                    os.wait4(pid, 0)
                raise BenchError(f"the ends did not exit within {TIMEOUT:g} s")
            time.sleep(0.001)
    return cpu


def _one(tmp: Path, kind: str) -> dict[str, float]:
    a_sock, b_sock = tmp / "a.sock", tmp / "b.sock"
    for p in (a_sock, b_sock):
        p.unlink(missing_ok=True)
    byte, out = tmp / "one-byte", tmp / "out"
    byte.write_bytes(b"x")
    if kind == "sockimux":
        b_argv, a_argv = [*SOCKIMUX_CMD, str(b_sock)], [*SOCKIMUX_CMD, str(a_sock)]
    else:
        b_argv = ["socat", "-u", f"UNIX-LISTEN:{b_sock}", "STDOUT"]
        a_argv = ["socat", "-u", f"OPEN:{byte}", f"UNIX-LISTEN:{a_sock}"]
    err = open(tmp / f"startup-{kind}.stderr", "wb")  # noqa: SIM115
    with err, open(out, "wb") as out_f, open(byte, "rb") as in_f:
        t0 = time.monotonic()
        # Popen is only the spawner here: the ends are reaped by wait4 for their rusage.
        b = subprocess.Popen(b_argv, stdin=subprocess.DEVNULL, stdout=out_f, stderr=err, cwd=tmp)
        a = subprocess.Popen(a_argv, stdin=in_f, stdout=subprocess.DEVNULL, stderr=err, cwd=tmp)
        deadline = t0 + TIMEOUT
        while not (a_sock.exists() and b_sock.exists()):
            if time.monotonic() > deadline or a.poll() is not None or b.poll() is not None:
                for p in (a, b):
                    p.kill()
                    p.wait()
                log = (tmp / f"startup-{kind}.stderr").read_text()
                raise BenchError(f"{kind} ends did not listen: {log}")
            time.sleep(0.0005)
        listening = time.monotonic() - t0
        relay = subprocess.Popen(["socat", f"UNIX-CONNECT:{a_sock}", f"UNIX-CONNECT:{b_sock}"],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, cwd=tmp)
        cpu = _reap([a.pid, b.pid], deadline)
        wall = time.monotonic() - t0
        a.returncode = b.returncode = 0  # reaped above
        relay.wait(TIMEOUT)
    if out.read_bytes() != b"x":
        raise BenchError(f"{kind}: the byte did not arrive: {(tmp / f'startup-{kind}.stderr').read_text()}")
    return {"wall_s": wall, "listening_s": listening, "cpu_s": cpu}


def measure(tmp: Path, repeat: int, progress: Any) -> dict[str, Any]:
    runs: dict[str, list[dict[str, float]]] = {"sockimux": [], "socat": []}
    for i in range(repeat):
        for kind in ("sockimux", "socat") if i % 2 == 0 else ("socat", "sockimux"):
            runs[kind].append(_one(tmp, kind))
    med = {k: {m: statistics.median(r[m] for r in v) for m in ("wall_s", "listening_s", "cpu_s")}
           for k, v in runs.items()}
    ratios = {m: med["sockimux"][m] / med["socat"][m] for m in ("wall_s", "listening_s", "cpu_s")}
    progress(f"startup: sockimux {med['sockimux']['wall_s'] * 1e3:.0f} ms (CPU "
             f"{med['sockimux']['cpu_s'] * 1e3:.0f} ms), socat {med['socat']['wall_s'] * 1e3:.0f} ms "
             f"(CPU {med['socat']['cpu_s'] * 1e3:.0f} ms)")
    return {"runs": repeat, "median": med, "ratio": ratios}
