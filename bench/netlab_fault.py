"""The fault part of netlab_tcp.py: one link black-holed for a while, then restored,
in the middle of a direct transfer (sockimux's own TCP subflows, no socat).

What shows that the subflow healed by itself, all from the run itself:
LEFT's log ("subflow ... lost (...)", "subflow ... back after N attempts"),
LEFT's --stats-file every 0.5 s (which subflow ids it has on the faulty link,
and their data_out), and the lab's per-link wire counters (what passed the
link's shaper), all on the transfer's clock (t = 0 when LEFT is started;
the stats file's ``at`` is the event loop's monotonic clock, the lab's too).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from netlab_direct import DirectRun

MB = 1e6


def fault_run(nl: Any, opts: argparse.Namespace, args: argparse.Namespace) -> dict[str, Any]:
    k, at, until = args.fault_link, args.fault_at, args.fault_at + args.fault_for
    opts.fail = [nl.FaultEvent(at, "fail", k)]
    opts.restore = [nl.FaultEvent(until, "restore", k)]
    opts.fail_mode = "blackhole"
    lab = nl.Lab(opts)
    try:
        lab.setup()
        if not 0 <= k < len(lab.topo.links):
            raise nl.LabError(f"--fault-link {k}: there are only links 0..{len(lab.topo.links) - 1}")
        total, rate_k = lab.topo.total_rate, lab.topo.links[k].rate_mbit
        # Enough to keep every link busy until --fault-tail s after the restore (at ~90% of the rates).
        mbit = total * (until + args.fault_tail) - rate_k * args.fault_for
        nbytes = int(mbit * 1e6 / 8 * 0.9)
        run = DirectRun(nl, lab, nbytes=nbytes, stats_interval=0.5)
        result = run.execute()
        return analyse(result, lab.topo.links[k], at, until)
    finally:
        lab.close()


def analyse(result: dict[str, Any], link: Any, at: float, until: float) -> dict[str, Any]:
    t0 = result["t0"]
    prefix = f"{link.right_addr}:"
    samples = []  # (t, [(id, data_out), ...] of the subflows on the faulty link)
    for line in _lines(result["stats_files"]["A"]):
        on_link = [(s["id"], s["data_out"]) for s in line.get("subflows", [])
                   if str(s.get("label", "")).startswith(prefix) and s.get("state") == "open"]
        samples.append((round(line["at"] - t0, 2), on_link))
    before = {i for t, sfs in samples if t < at for i, _ in sfs}
    during = [sfs for t, sfs in samples if at + 0.5 < t < until]
    dropped = any(not sfs for sfs in during)
    after = [(t, sfs) for t, sfs in samples if t >= until]
    new_ids = sorted({i for _, sfs in after for i, _ in sfs} - before)
    carried = max((d for _, sfs in after for i, d in sfs if i in new_ids), default=0)
    first_new = next((t for t, sfs in after if any(i in new_ids for i, _ in sfs)), None)
    log = [line for line in text_of(result["stderr_path"]["A"]).splitlines() if link.right_addr in line
           and ("lost" in line or "back" in line or "could not" in line)]
    timeline = result.get("timeline", {})
    checks = {
        "transfer intact, both exit 0 on their own": result["verdict"] == "PASS",
        "LEFT's subflow on the link dropped during the black hole": dropped,
        "LEFT's log says it was lost": any("lost" in x for x in log),
        "a new subflow on the link after the restore": bool(new_ids),
        "LEFT's log says it is back": any(" back after " in x for x in log),
        "the new subflow carried data (data_out > 1 MB)": carried > MB,
    }
    return {
        "verdict": "PASS" if all(checks.values()) else "FAIL",
        "checks": checks,
        "link": link.index,
        "links": [lk_rate for lk_rate in (x.get("rate_mbit") for x in result.get("links", []))],
        "black_hole_s": [at, until],
        "ids_before": sorted(before),
        "new_ids": new_ids,
        "new_subflow_open_at_s": first_new,
        "new_subflow_data_out": carried,
        "log": log,
        "samples": samples,
        "timeline": timeline,
        "run": {key: result[key] for key in ("verdict", "reasons", "directions", "exit_status", "argv",
                                             "events", "cpu_busy_pct", "cpu_steal_pct", "links")},
    }


def _lines(path: str) -> list[dict[str, Any]]:
    out = []
    for text in text_of(path).splitlines():
        try:
            out.append(json.loads(text))
        except ValueError:
            continue
    return out


def text_of(path: str) -> str:
    """A log file's text ('' if it cannot be read)."""
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def render(f: dict[str, Any]) -> str:
    run = f["run"]
    d = run["directions"][0]
    k = f["link"]
    lines = [f"fault: link {k} black-holed from {f['black_hole_s'][0]:g} s to {f['black_hole_s'][1]:g} s; "
             f"{d['bytes']} bytes, {d.get('throughput_mbit') or d.get('partial_throughput_mbit')} Mbit/s, "
             f"intact {d['intact']}, exit {run['exit_status']}, cpu busy {run['cpu_busy_pct']}% "
             f"(steal {run['cpu_steal_pct']}%)"]
    lines += [f"  {ev['fired_s']:6.2f} s  {ev['action']} link {ev['link']}: {ev['detail']}"
              for ev in run["events"]]
    lines += [f"  LEFT: {x.split(': ', 1)[-1]}" for x in f["log"]]
    tl = f["timeline"]
    rows: dict[int, list[list[float]]] = {}
    for t, rates in zip(tl.get("t_s", []), tl.get("a2b_mbit", []), strict=False):
        rows.setdefault(int(t + 0.49), []).append(rates)
    by_second: dict[int, str] = {}
    for t, sfs in f["samples"]:
        by_second[int(t + 0.49)] = " ".join(f"#{i}:{d / MB:.1f}MB" for i, d in sfs) or "none"
    n = len(next(iter(rows.values()), [[]])[0])
    lines.append("   t  " + "  ".join(f"link{i:<2}" for i in range(n)) + f"   LEFT's subflow on link {k} "
                 "(id: data_out)")
    for sec in sorted(rows):
        avg = [sum(r[i] for r in rows[sec]) / len(rows[sec]) for i in range(n)]
        lines.append(f"{sec:4d}  " + "  ".join(f"{v:6.1f}" for v in avg) + f"   {by_second.get(sec, '')}")
    lines += [f"  [{'x' if ok else ' '}] {what}" for what, ok in f["checks"].items()]
    lines.append(f"fault: {f['verdict']}")
    return "\n".join(lines)
