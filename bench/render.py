"""The table run.py prints: one block per section, ratios only (``--json`` has the rest)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def table(header: list[str], rows: list[list[str]], indent: str = "  ") -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    lines = [header, *rows]
    return "\n".join(indent + "  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                     for line in lines)


def x(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def failed(error: str) -> str:
    return "  FAILED: " + error.replace("\n", "\n    ")


def _bulk(s: dict[str, Any]) -> list[str]:
    check = ("byte count (sha256 checked in one untimed run per K first)" if s["verify"] == "sha256"
             else "byte count")
    out = [f"  {s['bytes_mib']:g} MiB from {s['payload_dir']} to a sink that checks the {check}",
           f"  time {s.get('clock', 'from first relay spawned to EOF at the sink')}; "
           f"median of {s['repeat']}, runs alternated",
           f"  sockimux:  {s['describe']['sockimux']}",
           f"  reference: {s['describe']['reference']}"]
    rows = [[k, x(v["ratio"]), f"{x(v['ratio_min'])}-{x(v['ratio_max'])}",
             pct(v["all_joined_fraction_of_run_median"]) if not v["runs_where_not_all_joined"]
             else f"{pct(v['all_joined_fraction_of_run_median'])}, "
                  f"{v['runs_where_not_all_joined']} run(s) never",
             str(v["subflows_refused"]), x(v.get("endpoints_cpu_ratio"))]
            for k, v in s["subflows"].items()]
    out.append(table(["subflows", "sockimux/socat", "per-pair range", "all joined at (of run)",
                      "refused", "CPU sockimux/socat"], rows))
    out.append("  CPU: both endpoints' CPU time during the run (medians), sockimux over socat "
               "(lower is better)")
    if any(v["subflows_refused"] for v in s["subflows"].values()):
        out.append("  refused: subflows sockimux turned away, summed over runs (JSON: its stderr)")
    if "ratio_128_to_1" in s:
        line = f"  sockimux 128 subflows / 1 subflow: {x(s['ratio_128_to_1'])}"
        if "target_128_to_1" in s:
            line += f"  (target >= {s['target_128_to_1']:.2f}: " \
                    f"{'met' if s['ratio_128_to_1'] >= s['target_128_to_1'] else 'NOT MET'})"
        out.append(line)
    elif "ratio_max_to_min_subflows" in s:
        r = s["ratio_max_to_min_subflows"]
        out.append(f"  sockimux {r['to']} subflows / {r['from']}: {x(r['ratio'])}")
    return out


def target(met: bool, text: str) -> str:
    return f"{text}: {'met' if met else 'NOT MET'}"


def _paths(s: dict[str, Any]) -> list[str]:
    check = "sha256 checked in one untimed run per K first" if s["verify"] == "sha256" else "bytes counted"
    out = [f"  {s['bytes_mib']:g} MiB from {s['payload_dir']} ({check}); time from first relay spawned "
           f"to EOF at the sink or the file's close; median of {s['repeat']}, runs alternated",
           *(f"  {end}: {text}" for end, text in s["describe"].items())]
    rows = [[c["stdin"], c["stdout"], k, x(v["ratio"]), f"{x(v['ratio_min'])}-{x(v['ratio_max'])}",
             target(v["target_met"], f">= {s['target_ratio']:.2f}"), x(v.get("endpoints_cpu_ratio"))]
            for c in s["combinations"].values() for k, v in c["subflows"].items()]
    out.append(table(["STDIN", "STDOUT", "subflows", "sockimux/socat", "per-pair range", "target",
                      "CPU sockimux/socat"], rows))
    out.append("  CPU: both endpoints' CPU time during the run (medians), sockimux over socat "
               "(lower is better)")
    return out


def _measurable(throughput: bool | None, cpu: bool | None) -> str:
    if throughput is None or cpu is None:
        return "- (too few rounds)"
    return ", ".join(n for n, m in (("throughput", throughput), ("cpu", cpu)) if m) or "no"


def _stats(s: dict[str, Any]) -> list[str]:
    out = [f"  {s['bytes_mib']:g} MiB from {s['payload_dir']}, {s['subflows']} subflows, "
           f"{s['rounds']} rounds of one run of each kind, order rotated",
           *(f"  {k}: {text}" for k, text in s["describe"].items()),
           f"  no option: median {x(s['none_mb_per_s_median'], 0)} MB/s, its own spread "
           f"(max-min)/median {pct(s['none_spread'])}"]
    rows = []
    for kind, v in s["kinds"].items():
        t, c = v["throughput"], v["cpu"]
        rows.append([kind, x(t["ratio"], 3), f"{x(t['ratio_min'], 3)}-{x(t['ratio_max'], 3)}",
                     x(c["ratio"], 3), f"{x(c['ratio_min'], 3)}-{x(c['ratio_max'], 3)}",
                     x(v["interval_snapshots_median"], 0),
                     _measurable(v["throughput_cost_measurable"], v["cpu_cost_measurable"])])
    out.append(table(["kind", "throughput / none", "per-round range", "cpu / none",
                      "per-round range", "snapshots/run", "cost measurable"], rows))
    out.append("  cpu: utime+stime of both sockimux (/proc, at exit); a cost is measurable when "
               "every round's run with the option was slower (or used more cpu) than the round's "
               "run without (said from 5 rounds on; chance alone: 1 in 2**rounds)")
    if any(not v["interval_snapshots_median"] for v in s["kinds"].values()):
        out.append(f"  note: runs shorter than the interval ({s['interval_s']:g} s) took only the "
                   "snapshot at exit: give more --bytes or a smaller --stats-interval")
    return out


def _latency(s: dict[str, Any]) -> list[str]:
    return [f"  {s['round_trips_per_run']} round trips after {s['warmup_per_run']} warm-up, "
            f"x{s['runs_per_kind']} runs alternated, percentiles over all samples",
            f"  sockimux:  {s['describe']['sockimux']}",
            f"  reference: {s['describe']['reference']}",
            table(["", "sockimux/socat"], [["p50", x(s["ratio_p50"])], ["p99", x(s["ratio_p99"])]])]


def _ssh(s: dict[str, Any]) -> list[str]:
    out = [f"  {s['bytes_mib']:g} MiB, one command from start to exit (logins and bootstrap included); "
           f"median of {s['repeat']}, runs alternated",
           *(f"  {k}: {v}" for k, v in s["describe"].items())]
    rows = [[direction, k, x(v["ratio"])] for direction, per_k in s["directions"].items()
            for k, v in per_k.items()]
    out.append(table(["direction", "subflows", "sockimux ssh / ssh"], rows))
    return out


def _startup(s: dict[str, Any]) -> list[str]:
    med, ratio = s["median"], s["ratio"]
    rows = [[name, x(ratio[key]), f"{med['sockimux'][key] * 1e3:.0f}", f"{med['socat'][key] * 1e3:.1f}"]
            for name, key in (("start to both exited", "wall_s"), ("start to listening", "listening_s"),
                              ("CPU of both ends", "cpu_s"))]
    return [f"  {s['runs']} runs of each, alternated; medians",
            f"  sockimux:  {s['describe']['sockimux']}",
            f"  reference: {s['describe']['socat']}",
            table(["", "sockimux/socat", "sockimux ms", "socat ms"], rows)]


def _stall(s: dict[str, Any]) -> list[str]:
    slow = f"over {s['slow_ms']:g} ms"
    names = {"stall": "sockimux, stalls", "quiet": "sockimux, no stall", "socat": "socat alone"}
    rows = [[names[k], x(s[k]["p50_ms"]), x(s[k]["p99_ms"]), x(s[k]["max_ms"], 1),
             f"{s[k]['over_slow_ms']} of {s[k]['echoes']}",
             target(s["target_met"], "none") if k == "stall" else ""]
            for k in ("stall", "quiet", "socat")]
    return [f"  a byte every {s['period_ms']:g} ms through {s['subflows']} subflows; every "
            f"{s['stall_every_s']:g} s the relay carrying it is stopped (SIGSTOP: connections open, "
            f"nothing moves)",
            f"  and a new one joins; {s['seconds_per_run']:g} s per run (first {s['warmup_s']:g} s dropped), "
            f"x{s['runs_per_kind']} of each kind alternated",
            *(f"  {k}: {text}" for k, text in s["describe"].items()),
            "  echo times in ms (absolute: socat alone has no subflow to stall)",
            table(["", "p50", "p99", "max", slow, "target"], rows),
            f"  stalls made: {s['stalls']} (the worst echo after each: "
            f"{', '.join(x(e['worst_ms_after'], 0) for e in s['stall_events'][:12]) or '-'}"
            f"{', ...' if len(s['stall_events']) > 12 else ''} ms); "
            f"'subflow stalled; dropping it' logged {s['stalled_drops_logged']} times (A and B each log)",
            f"  no stall, sockimux/socat (lower is better): p50 {x(s['ratio_quiet_p50'])}, "
            f"p99 {x(s['ratio_quiet_p99'])}"]


def _memory(s: dict[str, Any]) -> list[str]:
    rows = [[n, x(v["at_listen_mib"], 1), x(v["peak_mib"], 1), x(v["above_baseline_mib"], 1)]
            for n, v in s["sides"].items()]
    return [f"  {s['payload_mib']:g} MiB ready at the sender, reader {s['reader_rate_mb_per_s']:g} "
            f"MB/s, {s['seconds']:g} s, {s['subflows']} subflows",
            f"  {s['describe']}",
            table(["side", "at listen MiB", "peak MiB", "peak - baseline MiB"], rows),
            f"  baseline: B at listen ({x(s['baseline_mib'], 1)} MiB), a sockimux holding "
            f"no data; A at listen already holds its window of STDIN"]


def _links(s: dict[str, Any]) -> list[str]:
    if "skipped" in s:
        return [f"  skipped: {s['skipped']}"]
    rows = []
    for r in s["sets"]:
        if "error" in r:
            rows.append([r["links"], "FAILED", "-", "-", "-", "-"])
            continue
        cpu = "/".join(x(r[k]["cpu_busy_pct"], 0) for k in ("tcp", "mptcp", "imux"))
        rows.append([r["links"], pct(r["imux_of_link_sum"]), pct(r["mptcp_of_link_sum"]),
                     x(r["ratio_imux_mptcp"]), r["verdict"] or "-", cpu + "%"])
    out = [table(["links Mbit/s", "imux of sum", "mptcp of sum", "imux/mptcp", "verdict",
                  "cpu tcp/mptcp/imux"], rows),
           "  (TCP payload ceiling: 95.6% of the link rate; cpu: share of the whole machine "
           "during each run, anything else running included)"]
    for r in s["sets"]:
        if "error" in r:
            out.append(failed(f"{r['links']}: {r['error']}"))
        elif r["verdict"] != "PASS":
            reasons = [reason for kind in ("tcp", "mptcp", "imux") for reason in r[kind]["reasons"]]
            out.append(f"  {r['links']}: {'; '.join(reasons) or r['verdict']}")
            for side, tail in (r["imux"].get("stderr_tail") or {}).items():
                if tail:
                    out.append(f"    imux {side} stderr: " + tail.replace("\n", "\n      "))
    return out


# Per section, in the order printed: its heading and the lines of a measured section.
SECTIONS: dict[str, tuple[str, Callable[[dict[str, Any]], list[str]]]] = {
    "bulk": ("throughput ratio sockimux/socat (higher is better; 1.00 = as fast as socat)", _bulk),
    "dialed": ("bulk with the subflows sockimux opens itself, no relays, ratio sockimux/socat "
               "(higher is better)", _bulk),
    "paths": ("bulk throughput ratio sockimux/socat by kind of STDIN and STDOUT (higher is better)",
              _paths),
    "stats": ("bulk with --stats and --stats-file over without (1.00 = no cost)", _stats),
    "latency": ("1-byte echo round trip ratio sockimux/socat (lower is better; 1.00 = as fast)", _latency),
    "ssh": ("a copy through sshd: sockimux ssh / plain ssh, throughput (higher is better)", _ssh),
    "startup": ("a pair started, 1 byte carried, both exited, ratio sockimux/socat (lower is better)",
                _startup),
    "stall": ("1-byte echo while subflows silently stall", _stall),
    "memory": ("peak RSS (VmHWM) per sockimux, MiB, while the consumer is slow", _memory),
    "links": ("netlab compare: sockimux throughput / sum of link rates, and / MPTCP", _links),
}


def render(result: dict[str, Any]) -> str:
    m = result["machine"]
    out = [
        f"sockimux bench  {m['date']}",
        f"machine: nproc {m['nproc']} ({m['cpus_usable']} usable), Linux {m['kernel']}, "
        f"Python {m['python']}, uvloop {m['uvloop'] or 'not available'}, socat {m['socat']}, "
        f"sockimux {m['sockimux_commit']}, load {m['loadavg_at_start'][0]:.2f}",
        f"mode: {'quick' if result['options']['quick'] else 'full'}, repeat {result['options']['repeat']}, "
        f"sockimux command: {result['options']['sockimux']}",
    ]
    for name, (heading, body) in SECTIONS.items():
        s = result["sections"].get(name)
        if s is None:
            continue
        out += ["", f"[{name}] {heading}"]
        # links keeps the sets that did measure next to the one that failed
        out += [failed(s["error"])] if "error" in s and not s.get("sets") else body(s)
    return "\n".join(out)
