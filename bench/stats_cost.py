"""Stats: what ``--stats`` and ``--stats-file`` cost a bulk transfer.

The counters behind them (core/stats.py) are plain integers bumped on the
way, always; what the options add is a snapshot of them every SEC seconds
(``--stats-interval``, default 0.2 s: five times what a user would
likely ask for, so that even a 1 GiB run on a quiet machine, 2 s or so,
takes several) and at exit, printed as a table on
stderr (a file here: plain lines) and, with ``--stats-file``, appended as a
JSON line.  This section runs the bulk topology (bulk.py: STDIN a file in
tmpfs, STDOUT a pipe to the sink, K socat relays, the clock from the first
relay spawned to EOF at the sink) with both sockimux given

- ``none``: no stats option,
- ``stats``: ``--stats=SEC``,
- ``stats-file``: ``--stats=SEC --stats-file PATH``,

in rounds (``--stats-rounds``), each round running the three kinds once,
in an order rotated from round to round so that none always runs first or
last.  Each run is checked: every byte arrived, both sides exit 0, the
tables are on stderr, and the JSON Lines end with an ``exit`` line that
counts the payload (A acknowledged, B written).

Reported per kind, against ``none``: the ratio of median throughputs and
the range of the per-round ratios (the spread: how much two runs of the
same round differ anyway), and the same for CPU time, A's and B's
utime+stime from /proc/PID/stat read when each has exited (a zombie's
times are final), the measure to trust while other work loads the
machine: wall-clock throughput there says more about the neighbours.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import bulk
from ends import Feed, Output
from procs import SOCKIMUX_CMD, BenchError, Child, Payload, Procs, cpu_at_exit, wait_exit, wait_listening

KINDS = ("none", "stats", "stats-file")
MIN_ROUNDS = 5  # to call a cost measurable (see measure)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("stats (also takes --bytes, --timeout, --socat-block, --payload-dir)")
    g.add_argument("--stats-subflows", type=int, default=4, metavar="K", help="default 4")
    g.add_argument("--stats-rounds", type=int, default=5, metavar="N",
                   help="rounds of one run of each kind, order rotated (default 5)")
    g.add_argument("--stats-interval", type=float, default=0.2, metavar="SEC",
                   help="--stats=SEC of the runs with stats (0.1 to 86400; default 0.2)")


def bad_usage(args: argparse.Namespace) -> str | None:
    if args.stats_subflows < 1 or args.stats_rounds < 1:
        return "--stats-subflows and --stats-rounds must be at least 1"
    if not 0.1 <= args.stats_interval <= 86400:
        return "--stats-interval must be from 0.1 to 86400 (as sockimux's --stats=SEC)"
    return None


def options(kind: str, interval: float, stats_file: Path) -> list[str]:
    if kind == "none":
        return []
    if kind == "stats":
        return [f"--stats={interval:g}"]
    return [f"--stats={interval:g}", "--stats-file", str(stats_file)]


def describe(block: int, interval: float) -> dict[str, str]:
    return {
        "topology": (f"sockimux [OPTIONS] A.sock < payload; sockimux [OPTIONS] B.sock < /dev/null | "
                     f"sink; K x socat -b{block} UNIX-CONNECT:A.sock UNIX-CONNECT:B.sock"),
        "kinds": (f"none: no OPTIONS; stats: --stats={interval:g}; stats-file: --stats={interval:g} "
                  "--stats-file PATH (both sides, stderr to a file)"),
    }


def _check_stats(kind: str, what: str, payload: Payload, sides: dict[str, Child],
                 files: dict[str, Path]) -> int:
    """The options did their work: a table on stderr per snapshot, the last at
    exit; JSON Lines, one per table, that count the payload.  Returns how
    many snapshots A took at an interval (before the one at exit)."""
    if kind == "none":
        return 0
    tables = {name: side.stderr_tail(1 << 22).count("stats: subflows open")
              for name, side in sides.items()}
    for name, count in tables.items():
        if count < 1:
            raise BenchError(f"{what}: no stats table on {name}'s stderr: {sides[name].describe()}")
    if kind == "stats":
        return tables["A"] - 1
    lines = {}
    for name, path in files.items():
        try:
            lines[name] = [json.loads(line) for line in path.read_text().splitlines()]
        except (OSError, ValueError) as exc:
            raise BenchError(f"{what}: {name}'s stats file {path}: {exc}") from None
        if not lines[name] or lines[name][-1]["event"] != "exit":
            raise BenchError(f"{what}: {name}'s stats file has no exit line")
    a, b = lines["A"][-1], lines["B"][-1]
    if a["acked"] != payload.size or b["written"] != payload.size:
        raise BenchError(f"{what}: the exit lines count {a['acked']} acknowledged (A) and "
                         f"{b['written']} written (B) of {payload.size} bytes")
    for name, count in tables.items():
        if len(lines[name]) != count:
            raise BenchError(f"{what}: {name} printed {count} tables but wrote "
                             f"{len(lines[name])} JSON lines")
    return sum(1 for r in lines["A"] if r["event"] == "interval")


def run(tmp: Path, payload: Payload, subflows: int, block: int, timeout: float, kind: str,
        interval: float) -> dict[str, Any]:
    what = f"stats {kind}, {subflows} subflow(s)"
    files = {"A": tmp / "A.jsonl", "B": tmp / "B.jsonl"}
    with Procs(tmp) as procs, Output("pipe", payload) as out:
        a_sock, b_sock = str(tmp / "A.sock"), str(tmp / "B.sock")
        b = procs.spawn("sockimux-B", [*SOCKIMUX_CMD, *options(kind, interval, files["B"]), b_sock],
                        stdout=out.fd)
        sink = out.sink(procs, False)
        with Feed(procs, payload, "file") as feed:
            a = procs.spawn("sockimux-A", [*SOCKIMUX_CMD, *options(kind, interval, files["A"]),
                                           a_sock], stdin=feed.fd)
        wait_listening([(a, a_sock), (b, b_sock)])
        relay_err = procs.shared_stderr("relays")
        argv = ["socat", f"-b{block}", f"UNIX-CONNECT:{a_sock}", f"UNIX-CONNECT:{b_sock}"]
        t0 = time.monotonic()
        for i in range(subflows):
            procs.spawn(f"relay{i}", argv, stderr_file=relay_err)
        report = sink.result(max(1.0, timeout - (time.monotonic() - t0)))
        seconds = bulk._check(report, payload, what, t0, timeout, [a, b])
        sides = {"A": a, "B": b}
        cpu = {}
        for name, side in sides.items():
            cpu[name] = cpu_at_exit(side, 30)
            rc = wait_exit(side, 5)
            if cpu[name] is None or rc != 0:
                raise BenchError(f"{what}: all bytes arrived but {side.name} "
                                 f"{'did not exit within 30 s' if rc is None else f'exited {rc}'}: "
                                 f"{side.describe()}")
        snapshots = _check_stats(kind, what, payload, sides, files)
        return {"seconds": seconds, "mb_per_s": payload.size / 1e6 / seconds,
                "cpu_s": {n: round(c, 3) for n, c in cpu.items() if c is not None},
                "cpu_s_total": sum(c for c in cpu.values() if c is not None),
                "interval_snapshots": snapshots}


def _against(runs: dict[str, list[dict[str, Any]]], kind: str, key: str) -> dict[str, float]:
    """Median of ``kind`` over median of none, and the range of the per-round ratios."""
    mine = [r[key] for r in runs[kind]]
    base = [r[key] for r in runs["none"]]
    rounds = [m / b for m, b in zip(mine, base, strict=True)]
    return {"ratio": statistics.median(mine) / statistics.median(base),
            "ratio_min": min(rounds), "ratio_max": max(rounds)}


def measure(tmp: Path, payload: Payload, subflows: int, rounds: int, block: int, timeout: float,
            interval: float, progress: Any) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    for rnd in range(rounds):
        order = KINDS[rnd % len(KINDS):] + KINDS[:rnd % len(KINDS)]
        for kind in order:
            sub = tmp / f"stats-{rnd}-{kind}"
            sub.mkdir()
            r = run(sub, payload, subflows, block, timeout, kind, interval)
            runs[kind].append(r)
            progress(f"stats {rnd + 1}/{rounds} {kind:10} K={subflows} {r['seconds']:.2f} s, "
                     f"cpu {r['cpu_s_total']:.2f} s, {r['interval_snapshots']} interval snapshots")
    base = [r["mb_per_s"] for r in runs["none"]]
    kinds: dict[str, Any] = {}
    for kind in KINDS[1:]:
        throughput, cpu = _against(runs, kind, "mb_per_s"), _against(runs, kind, "cpu_s_total")
        kinds[kind] = {
            "throughput": throughput, "cpu": cpu,
            # A cost shows as every round slower (or busier) than its own baseline
            # run; by chance alone that happens 1 time in 2**rounds: with fewer
            # than MIN_ROUNDS, the bench does not say (None).
            "throughput_cost_measurable": (throughput["ratio_max"] < 1.0
                                           if rounds >= MIN_ROUNDS else None),
            "cpu_cost_measurable": cpu["ratio_min"] > 1.0 if rounds >= MIN_ROUNDS else None,
            "mb_per_s_median": statistics.median(r["mb_per_s"] for r in runs[kind]),
            "interval_snapshots_median": statistics.median(r["interval_snapshots"] for r in runs[kind]),
        }
    return {"subflows": subflows, "rounds": rounds, "interval_s": interval, "kinds": kinds,
            "none_mb_per_s_median": statistics.median(base),
            # How much the baseline alone varies: (max - min) / median.
            "none_spread": (max(base) - min(base)) / statistics.median(base),
            "loadavg_at_end": os.getloadavg(), "runs": runs}
