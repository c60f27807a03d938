"""Bulk: one file through sockimux with K subflows, and through socat alone.

sockimux (the original README's topology)::

    sockimux A.sock < payload            (A's STDOUT: /dev/null; B sends nothing)
    sockimux B.sock < /dev/null | sink
    K x  socat -b BLOCK UNIX-CONNECT:A.sock UNIX-CONNECT:B.sock

reference, socat alone: the same two endpoints joined by one relay::

    socat -b BLOCK -u OPEN:payload UNIX-LISTEN:a.sock
    socat -b BLOCK -u UNIX-LISTEN:b.sock STDOUT | sink
    socat -b BLOCK UNIX-CONNECT:a.sock UNIX-CONNECT:b.sock

These are the default ends (STDIN a file, STDOUT a pipe); the paths
section (paths.py) runs the same with the other kinds (ends.py), for
sockimux and socat alike.

Both endpoints listen before the clock starts.  t0 is just before the
bench spawns the first relay; it then spawns the K relays one after the
other (as a shell loop would, ~2 ms each), and the time runs from t0 to
the sink reading EOF.  Data flows as soon as the first subflow is up, so
with K=128 the later subflows join during the transfer, and their start-up
(fork, exec, connect, handshake) is inside the time, as it is in real use.
The JSON gives when all K were connected at both ends (/proc/net/unix) and
how many subflows sockimux refused (its stderr).  sockimux A may have read
up to its window (16 MiB) of the file before t0; the socat sender reads
only once connected.

(Releasing 128 pre-forked relays at once was tried and rejected: the burst
of simultaneous connections trips sockimux's cap of 64 connections in
handshake, and about half the subflows are refused, which no shell loop
does.)  The sink (``sink.py``) is
the same process for both, reading a 1 MiB pipe; in timed runs it only
counts bytes (hashing at ~1.7 GB/s would take a core's worth of CPU from a
socat pipeline moving ~1.2 GB/s on 2 vCPUs, and flatter the ratio).  With
``--verify sha256`` (default) one untimed sockimux run per K first checks
the sha256 of the output against the payload's; it doubles as a warm-up.
sockimux must exit 0 on both sides after every run.
"""

from __future__ import annotations

import os
import re
import statistics
import time
from pathlib import Path
from typing import Any

from ends import FEED_TEXT, OUTPUT_TEXT, Feed, Output
from procs import (
    SOCKIMUX_CMD,
    BenchError,
    Child,
    Payload,
    Procs,
    connections,
    cpu_at_exit,
    cpu_seconds,
    sockimux_argv,
    wait_exit,
    wait_listening,
)

REFUSED = re.compile(r"subflow \d+ refused:")


DEFAULT_ENDS = ("file", "pipe")  # STDIN, STDOUT: see ends.py


def describe(block: int, ends: tuple[str, str] = DEFAULT_ENDS) -> dict[str, str]:
    before, after, address = FEED_TEXT[ends[0]]
    out = OUTPUT_TEXT[ends[1]]
    return {
        "sockimux": (f"{before}sockimux A.sock{after}; sockimux B.sock < /dev/null{out}; "
                     f"K x socat -b{block} UNIX-CONNECT:A.sock UNIX-CONNECT:B.sock"),
        "reference": (f"{before}socat -b{block} -u {address} UNIX-LISTEN:a.sock; "
                      f"socat -b{block} -u UNIX-LISTEN:b.sock STDOUT{out}; "
                      f"socat -b{block} UNIX-CONNECT:a.sock UNIX-CONNECT:b.sock"),
    }


def _check(report: dict[str, Any], payload: Payload, what: str, t0: float,
           timeout: float, blame: list[Child]) -> float:
    """Seconds from t0 to EOF, after checking the bytes; BenchError otherwise."""
    if report["timed_out"]:
        raise BenchError(f"{what}: no EOF within {timeout:g} s ({report['bytes']} of {payload.size} "
                         f"bytes arrived)\n" + "\n".join(c.describe() for c in blame))
    if report["bytes"] != payload.size:
        raise BenchError(f"{what}: EOF after {report['bytes']} of {payload.size} bytes\n"
                         + "\n".join(c.describe() for c in blame))
    if report["sha256"] is not None and report["sha256"] != payload.sha256:
        raise BenchError(f"{what}: output differs from the payload (sha256)")
    return float(report["t_eof"] - t0)


def _all_connected(socks: tuple[str, ...], count: int, t0: float, timeout: float) -> float | None:
    """Seconds from t0 until /proc/net/unix shows ``count`` connections on each
    of ``socks`` (None if the transfer ended, or too long passed, before that)."""
    deadline = t0 + min(timeout, 60.0)
    while time.monotonic() < deadline:
        try:
            if all(connections(sock) >= count for sock in socks):
                return time.monotonic() - t0
        except OSError:
            return None
        if not os.path.exists(socks[0]):  # sockimux is done: it removes its socket
            return None
        time.sleep(0.01)
    return None


def run_sockimux(tmp: Path, payload: Payload, subflows: int, block: int, verify: bool,
                 timeout: float, ends: tuple[str, str] = DEFAULT_ENDS,
                 dialed: bool = False) -> dict[str, Any]:
    if dialed:
        return _run_dialed(tmp, payload, subflows, verify, timeout, ends)
    what = f"bulk sockimux, STDIN {ends[0]}, STDOUT {ends[1]}, {subflows} subflow(s)"
    with Procs(tmp) as procs, Output(ends[1], payload) as out:
        a_sock, b_sock = str(tmp / "A.sock"), str(tmp / "B.sock")
        b = procs.spawn("sockimux-B", sockimux_argv(b_sock), stdout=out.fd)
        sink = out.sink(procs, verify)
        with Feed(procs, payload, ends[0]) as feed:
            a = procs.spawn("sockimux-A", sockimux_argv(a_sock), stdin=feed.fd)
        wait_listening([(a, a_sock), (b, b_sock)])
        relay_err = procs.shared_stderr("relays")
        argv = ["socat", f"-b{block}", f"UNIX-CONNECT:{a_sock}", f"UNIX-CONNECT:{b_sock}"]
        cpu0 = _cpu_now(a, b)
        t0 = time.monotonic()
        for i in range(subflows):
            procs.spawn(f"relay{i}", argv, stderr_file=relay_err)
        t_spawned = time.monotonic()
        connected_s = _all_connected((a_sock, b_sock), subflows, t0, timeout)
        report = sink.result(max(1.0, timeout - (time.monotonic() - t0)))
        seconds = _check(report, payload, what, t0, timeout, [a, b])
        return {"seconds": seconds, "first_byte_s": report["t_first"] - t0,
                "spawned_s": t_spawned - t0, "all_connected_s": connected_s,
                **_ended(what, report, a, b, cpu0)}


def _cpu_now(*children: Child) -> float:
    """CPU seconds the endpoints have used so far (their start-up, before the clock)."""
    total = 0.0
    for child in children:
        now = cpu_seconds(child.pid)
        if now is None:
            raise BenchError(f"{child.name} is gone before the run: {child.describe()}")
        total += now[0]
    return total


def _cpu_run(what: str, cpu0: float, *children: Child) -> float:
    """CPU seconds the endpoints used from ``cpu0`` (taken before the clock) to their exit."""
    total = 0.0
    for child in children:
        cpu = cpu_at_exit(child, 30)
        if cpu is None:
            raise BenchError(f"{what}: {child.name} did not exit within 30 s: {child.describe()}")
        total += cpu
    return round(total - cpu0, 3)


def _ended(what: str, report: dict[str, Any], a: Child, b: Child, cpu0: float) -> dict[str, Any]:
    """Both sockimux must exit 0 after the last byte: how long each took, what they
    said, the CPU both used in the run."""
    cpu = _cpu_run(what, cpu0, a, b)
    exits = {}
    for side in (a, b):
        rc = wait_exit(side, 30)
        if rc != 0:
            raise BenchError(f"{what}: all bytes arrived but {side.name} "
                             f"{'did not exit within 30 s' if rc is None else f'exited {rc}'}: "
                             f"{side.describe()}")
        exits[side.name] = round(time.monotonic() - report["t_eof"], 3)
    logs = {side.name: side.stderr_tail(1 << 20) for side in (a, b)}
    # A refusal is logged as "subflow N refused: why" by the side that refused it.
    refused = sum(len(REFUSED.findall(text)) for text in logs.values())
    return {"subflows_refused": refused, "exited_after_eof_s": exits, "endpoints_cpu_s": cpu,
            "stderr_lines": {n: text.splitlines()[:5] for n, text in logs.items() if text}}


def _run_dialed(tmp: Path, payload: Payload, subflows: int, verify: bool, timeout: float,
                ends: tuple[str, str]) -> dict[str, Any]:
    """sockimux A opens its K subflows itself (``--connect UNIX-CONNECT:B.sock,count=K``):
    no relay.  Timed from the first byte at the sink (A starts inside the clock
    otherwise) to EOF; the subflows after the first join during that time."""
    what = f"bulk sockimux dialing {subflows} subflow(s), STDIN {ends[0]}, STDOUT {ends[1]}"
    with Procs(tmp) as procs, Output(ends[1], payload) as out:
        b_sock = str(tmp / "B.sock")
        b = procs.spawn("sockimux-B", sockimux_argv(b_sock), stdout=out.fd)
        sink = out.sink(procs, verify)
        wait_listening([(b, b_sock)])
        cpu0 = _cpu_now(b)
        t0 = time.monotonic()
        with Feed(procs, payload, ends[0]) as feed:
            a = procs.spawn("sockimux-A", [*SOCKIMUX_CMD, "--connect",
                                           f"UNIX-CONNECT:{b_sock},count={subflows}"], stdin=feed.fd)
        # A's start-up ends with its first subflow: its CPU counts from there.
        if _all_connected((b_sock,), 1, t0, timeout) is not None:
            cpu0 += _cpu_now(a)
        connected_s = _all_connected((b_sock,), subflows, t0, timeout)
        report = sink.result(max(1.0, timeout - (time.monotonic() - t0)))
        seconds = _check(report, payload, what, report["t_first"], timeout, [a, b])
        first = report["t_first"] - t0
        return {"seconds": seconds, "first_byte_s": first,
                "all_connected_s": None if connected_s is None else max(0.0, connected_s - first),
                **_ended(what, report, a, b, cpu0)}


def run_socat(tmp: Path, payload: Payload, block: int, verify: bool, timeout: float,
              ends: tuple[str, str] = DEFAULT_ENDS, dialed: bool = False) -> dict[str, Any]:
    what = f"bulk socat reference, STDIN {ends[0]}, STDOUT {ends[1]}"
    with Procs(tmp) as procs, Output(ends[1], payload) as out:
        a_sock, b_sock = str(tmp / "a.sock"), str(tmp / "b.sock")
        b = procs.spawn("socat-b", ["socat", f"-b{block}", "-u", f"UNIX-LISTEN:{b_sock}", "STDOUT"],
                        stdout=out.fd)
        sink = out.sink(procs, verify)
        if dialed:  # the sender connects itself, as sockimux A does: no relay
            wait_listening([(b, b_sock)])
            cpu0 = _cpu_now(b)
            with Feed(procs, payload, ends[0]) as feed:
                a = procs.spawn("socat-a", ["socat", f"-b{block}", "-u", feed.socat_address,
                                            f"UNIX-CONNECT:{b_sock}"], stdin=feed.fd)
            report = sink.result(timeout)
            seconds = _check(report, payload, what, report["t_first"], timeout, [a, b])
            return {"seconds": seconds, "endpoints_cpu_s": _cpu_run(what, cpu0, a, b)}
        with Feed(procs, payload, ends[0]) as feed:
            a = procs.spawn("socat-a", ["socat", f"-b{block}", "-u", feed.socat_address,
                                        f"UNIX-LISTEN:{a_sock}"], stdin=feed.fd)
        wait_listening([(a, a_sock), (b, b_sock)])
        cpu0 = _cpu_now(a, b)
        t0 = time.monotonic()
        relay = procs.spawn("relay", ["socat", f"-b{block}", f"UNIX-CONNECT:{a_sock}",
                                      f"UNIX-CONNECT:{b_sock}"])
        report = sink.result(timeout)
        seconds = _check(report, payload, what, t0, timeout, [a, b, relay])
        return {"seconds": seconds, "first_byte_s": report["t_first"] - t0,
                "endpoints_cpu_s": _cpu_run(what, cpu0, a, b)}


def measure(tmp: Path, payload: Payload, subflow_counts: list[int], repeat: int, block: int,
            verify: bool, timeout: float, progress: Any, ends: tuple[str, str] = DEFAULT_ENDS,
            tag: str = "bulk", dialed: bool = False) -> dict[str, Any]:
    """Alternate sockimux and socat runs; medians and ratios per subflow count.  ``tag``
    names the runs (progress, directories); ``dialed``: sockimux A opens its subflows
    itself, and socat's sender connects itself (no relays in either)."""
    runs: dict[int, dict[str, list[dict[str, Any]]]] = {
        k: {"sockimux": [], "socat": []} for k in subflow_counts}
    mb = payload.size / 1e6
    verified: dict[str, Any] = {}
    if verify:  # untimed: the timed runs' sink only counts, so hashing costs neither kind CPU
        for k in subflow_counts:
            sub = tmp / f"{tag}-verify-{k}"
            sub.mkdir()
            run = run_sockimux(sub, payload, k, block, True, timeout, ends, dialed)
            verified[str(k)] = {"sha256_ok": True, "seconds": run["seconds"],
                                "subflows_refused": run["subflows_refused"]}
            progress(f"{tag} verify sockimux K={k:<3} sha256 ok ({run['seconds']:.2f} s, untimed)")
    for rep in range(repeat):
        for k in subflow_counts:
            for kind in ("sockimux", "socat"):
                sub = tmp / f"{tag}-{rep}-{k}-{kind}"
                sub.mkdir()
                if kind == "sockimux":
                    run = run_sockimux(sub, payload, k, block, False, timeout, ends, dialed)
                else:
                    run = run_socat(sub, payload, block, False, timeout, ends, dialed)
                run["mb_per_s"] = mb / run["seconds"]
                runs[k][kind].append(run)
                progress(f"{tag} {rep + 1}/{repeat} {kind:8} K={k:<3} {run['seconds']:.2f} s")
    per_k: dict[str, Any] = {}
    for k in subflow_counts:
        imux = [r["mb_per_s"] for r in runs[k]["sockimux"]]
        ref = [r["mb_per_s"] for r in runs[k]["socat"]]
        pairs = [i / s for i, s in zip(imux, ref, strict=True)]
        cpu_imux = [r["endpoints_cpu_s"] for r in runs[k]["sockimux"]]
        cpu_ref = [r["endpoints_cpu_s"] for r in runs[k]["socat"]]
        joined = [r["all_connected_s"] / r["seconds"] for r in runs[k]["sockimux"]
                  if r["all_connected_s"] is not None]
        per_k[str(k)] = {
            "ratio": statistics.median(imux) / statistics.median(ref),
            "subflows_refused": sum(r["subflows_refused"] for r in runs[k]["sockimux"]),
            "all_joined_fraction_of_run_median": statistics.median(joined) if joined else None,
            "runs_where_not_all_joined": len(runs[k]["sockimux"]) - len(joined),
            # CPU both endpoints used during the run (start-up excluded but for a
            # dialing sockimux A), sockimux over socat: steadier than time on a
            # loaded machine, and what a CPU-bound pipeline's throughput follows.
            "endpoints_cpu_ratio": statistics.median(cpu_imux) / statistics.median(cpu_ref),
            "ratio_min": min(pairs),
            "ratio_max": max(pairs),
            "sockimux_mb_per_s_median": statistics.median(imux),
            "socat_mb_per_s_median": statistics.median(ref),
            "runs": runs[k],
        }
    result: dict[str, Any] = {"subflows": per_k, "verified": verified}
    if "1" in per_k and "128" in per_k:
        result["ratio_128_to_1"] = (per_k["128"]["sockimux_mb_per_s_median"]
                                    / per_k["1"]["sockimux_mb_per_s_median"])
    lo, hi = min(subflow_counts), max(subflow_counts)
    if lo != hi:
        result["ratio_max_to_min_subflows"] = {
            "from": lo, "to": hi,
            "ratio": per_k[str(hi)]["sockimux_mb_per_s_median"] / per_k[str(lo)]["sockimux_mb_per_s_median"],
        }
    return result
