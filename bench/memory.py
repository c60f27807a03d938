"""Memory: peak RSS of both sockimux processes while the consumer is slow.

::

    sockimux A.sock < payload (SIZE bytes in tmpfs: all of it ready at once)
    sockimux B.sock < /dev/null | sink --rate RATE      (a reader at RATE bytes/s)
    N x socat -b BLOCK UNIX-CONNECT:A.sock UNIX-CONNECT:B.sock

The run lasts ``seconds`` (chosen so that SIZE is not used up: the sender
always has more ready than the reader takes).  Every 50 ms the bench reads
VmHWM and VmRSS from /proc/PID/status of both sockimux processes (the
``sockimux`` script execs Python, so the PID is the interpreter's); VmHWM
(the kernel's own high-water mark of RSS) is read once more just before
they are stopped.  "at listen" is VmRSS once both listen, before any
subflow: for B (whose STDIN is empty) that is a sockimux holding no data,
the baseline; A has by then already read its window's worth of STDIN.
With flow control working, memory stays bounded by the window whatever SIZE is.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from procs import (
    BenchError,
    Payload,
    Procs,
    Sink,
    close_fds,
    pipe,
    proc_status_kib,
    sockimux_argv,
    wait_listening,
)

POLL = 0.05


def describe(subflows: int, block: int, rate: float) -> str:
    return (f"sockimux A.sock < payload; sockimux B.sock > sink reading {rate / 1e6:g} MB/s; "
            f"{subflows} x socat -b{block} UNIX-CONNECT:A.sock UNIX-CONNECT:B.sock")


def measure(tmp: Path, payload: Payload, subflows: int, block: int, rate: float, seconds: float,
            progress: Any) -> dict[str, Any]:
    what = "memory"
    with Procs(tmp) as procs:
        a_sock, b_sock = str(tmp / "A.sock"), str(tmp / "B.sock")
        r, w = pipe()  # default pipe size: the slow reader's backlog stays in sockimux
        try:
            sink = Sink(procs, "sink", r, sha256=False, rate=rate)
            b = procs.spawn("sockimux-B", sockimux_argv(b_sock), stdout=w)
        finally:
            close_fds(r, w)
        with open(payload.path, "rb") as src:
            a = procs.spawn("sockimux-A", sockimux_argv(a_sock), stdin=src)
        wait_listening([(a, a_sock), (b, b_sock)])
        sides = {"A (sender)": a, "B (receiver)": b}
        idle: dict[str, int] = {}
        for name, child in sides.items():
            st = proc_status_kib(child.pid, "VmRSS")
            if st is None:
                raise BenchError(f"{what}: {child.name} is gone: {child.describe()}")
            idle[name] = st["VmRSS"]
        relay_err = procs.shared_stderr("relays")
        argv = ["socat", f"-b{block}", f"UNIX-CONNECT:{a_sock}", f"UNIX-CONNECT:{b_sock}"]
        t0 = time.monotonic()
        for i in range(subflows):
            procs.spawn(f"relay{i}", argv, stderr_file=relay_err)
        peak = dict.fromkeys(sides, 0)
        rss_peak = dict.fromkeys(sides, 0)
        timeline: list[dict[str, Any]] = []
        next_mark = 0.0
        while True:
            now = time.monotonic() - t0
            for name, child in sides.items():
                st = proc_status_kib(child.pid, "VmHWM", "VmRSS")
                if st is None or child.proc.poll() is not None:
                    raise BenchError(f"{what}: {child.name} exited during the run: {child.describe()}")
                peak[name] = max(peak[name], st["VmHWM"])
                rss_peak[name] = max(rss_peak[name], st["VmRSS"])
            if now >= next_mark:
                timeline.append({"t_s": round(now, 2), **{
                    n: round(p / 1024, 1) for n, p in rss_peak.items()}})
                next_mark += 1.0
            if now >= seconds:
                break
            time.sleep(POLL)
        for name, child in sides.items():  # the last word, just before they are stopped
            st = proc_status_kib(child.pid, "VmHWM")
            if st is not None:
                peak[name] = max(peak[name], st["VmHWM"])
        baseline = idle["B (receiver)"]
        report = sink.stop()
        read_s = (report["t_end"] - report["t_first"]) if report["t_first"] else None
        if not report["bytes"]:
            raise BenchError(f"{what}: the reader got nothing in {seconds:g} s\n"
                             + "\n".join(c.describe() for c in (a, b)))
        if report["eof"]:
            raise BenchError(f"{what}: the stream ended within {seconds:g} s: the payload is too small "
                             f"for this duration and rate")
        progress(f"memory: read {report['bytes'] / 1e6:.1f} MB in {read_s:.1f} s; "
                 + ", ".join(f"{n} peak {peak[n] / 1024:.1f} MiB" for n in sides))
        return {
            "payload_mib": payload.size / (1 << 20),
            "reader_rate_mb_per_s": rate / 1e6,
            "seconds": seconds,
            "subflows": subflows,
            "read_mb": report["bytes"] / 1e6,
            "read_mb_per_s": report["bytes"] / 1e6 / read_s if read_s else None,
            "baseline_mib": baseline / 1024,
            "sides": {n: {"at_listen_mib": idle[n] / 1024, "peak_mib": peak[n] / 1024,
                          "above_baseline_mib": (peak[n] - baseline) / 1024} for n in sides},
            "rss_mib_timeline": timeline,
        }
