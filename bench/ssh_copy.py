"""ssh: a copy made the way users make it, ``sockimux ssh`` against plain ssh.

A private sshd on 127.0.0.1 (as in ssh_far.py: keys and configs of its
own, the far side runs the host's ``python3``, which has no uvloop: the
far half of sockimux runs on plain asyncio, as on a bare host).  Each run
is one command, timed from its start to its exit, as a user waits for it:

upload::

    sockimux ssh -n K -F CONFIG 127.0.0.1 -- 'wc -c' < payload
    ssh -F CONFIG 127.0.0.1 'wc -c' < payload

download (``PAYLOAD`` is the same file, read by the far side)::

    sockimux ssh -n K -F CONFIG 127.0.0.1 -- cat PAYLOAD | sink
    ssh -F CONFIG 127.0.0.1 cat PAYLOAD | sink

The far ``wc -c`` (upload) and the sink (download) check the byte count;
every command must exit 0.  Both include what each start costs: ssh's key
exchange and login (K of them for sockimux, in parallel), and for sockimux
its start-up and the far side's bootstrap (the package sent over the first
ssh).  Runs alternate sockimux / ssh; the ratio is of median throughputs
(higher is better: above 1.00, sockimux ssh copies faster than one ssh).
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from procs import SOCKIMUX, BenchError, Payload, Procs, Sink, close_fds, pipe, wait_exit
from ssh_far import start_sshd

DIRECTIONS = ("upload", "download")


def describe() -> dict[str, str]:
    return {
        "upload": "sockimux ssh -n K HOST -- 'wc -c' < payload  vs  ssh HOST 'wc -c' < payload",
        "download": "sockimux ssh -n K HOST -- cat payload | sink  vs  ssh HOST cat payload | sink",
        "sshd": "private sshd on 127.0.0.1; the far side runs the host's python3 (plain asyncio)",
    }


def _run(tmp: Path, argv: list[str], direction: str, payload: Payload, timeout: float) -> float:
    """Seconds from start to exit of one copy; BenchError if it failed or lost bytes."""
    what = f"ssh {direction}: {' '.join(argv[:5])}..."
    with Procs(tmp) as procs:
        t0 = time.monotonic()
        if direction == "upload":
            with open(payload.path, "rb") as source:
                child = procs.spawn("copy", [*argv, "wc -c"], stdin=source, stdout=subprocess.PIPE)
            out, _ = child.proc.communicate(timeout=timeout)
            seconds = time.monotonic() - t0
            if child.proc.returncode != 0 or out.split() != [str(payload.size).encode()]:
                raise BenchError(f"{what}: exit {child.proc.returncode}, far wc -c said {out[:80]!r}\n"
                                 f"{child.describe()}")
            return seconds
        read, write = pipe()
        try:
            child = procs.spawn("copy", [*argv, f"cat {payload.path}"], stdout=write)
        finally:
            close_fds(write)
        try:
            sink = Sink(procs, "sink", read, sha256=False)
        finally:
            close_fds(read)
        report = sink.result(timeout)
        rc = wait_exit(child, 30)
        seconds = time.monotonic() - t0
        if rc != 0 or report["bytes"] != payload.size:
            raise BenchError(f"{what}: exit {rc}, {report['bytes']} of {payload.size} bytes\n"
                             f"{child.describe()}")
        return seconds


def measure(tmp: Path, payload: Payload, subflow_counts: list[int], repeat: int, timeout: float,
            progress: Any) -> dict[str, Any]:
    for tool in ("ssh", "ssh-keygen", "/usr/sbin/sshd"):
        if shutil.which(tool) is None:
            raise BenchError(f"{tool} is not installed (make installs openssh-server)")
    root = Path(tempfile.mkdtemp(prefix="sockimux-bench-sshd-", dir=tmp))
    sshd, ssh = start_sshd(root)
    config = ssh[2]  # ["ssh", "-F", CONFIG, "127.0.0.1"]
    try:
        result: dict[str, Any] = {}
        mb = payload.size / 1e6
        for direction in DIRECTIONS:
            plain: list[float] = []
            ours: dict[int, list[float]] = {k: [] for k in subflow_counts}
            for rep in range(repeat):
                for k in subflow_counts:
                    argv = [SOCKIMUX, "ssh", "-n", str(k), "-F", config, "127.0.0.1", "--"]
                    sub = tmp / f"ssh-{direction}-{rep}-{k}"
                    sub.mkdir()
                    ours[k].append(mb / _run(sub, argv, direction, payload, timeout))
                    progress(f"ssh {direction} {rep + 1}/{repeat} sockimux -n {k:<2} "
                             f"{mb / ours[k][-1]:.2f} s")
                sub = tmp / f"ssh-{direction}-{rep}-plain"
                sub.mkdir()
                plain.append(mb / _run(sub, [*ssh], direction, payload, timeout))
                progress(f"ssh {direction} {rep + 1}/{repeat} plain ssh     {mb / plain[-1]:.2f} s")
            result[direction] = {
                str(k): {"ratio": statistics.median(v) / statistics.median(plain),
                         "mb_per_s": v, "plain_mb_per_s": plain}
                for k, v in ours.items()}
        return {"directions": result}
    finally:
        sshd.kill()
        sshd.wait()
        shutil.rmtree(root, ignore_errors=True)
