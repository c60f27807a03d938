"""sockimux over the lab's links with its own TCP subflows (no socat), against the
lab's socat-relay topology and Linux MPTCP on the same links; then a black hole.

Needs root and ../shared/lab/netlab (beside the checkout), as ``netlab`` does::

    sudo .venv/bin/python bench/netlab_tcp.py                     # both parts, ~6 min
    sudo .venv/bin/python bench/netlab_tcp.py --only throughput --links 40,20,10,5 --repeat 3
    sudo .venv/bin/python bench/netlab_tcp.py --only fault --fault-link 0 --json out.json

throughput
    For each --links set (default 40,20,10,5 and 30,30,30,1) one pair of
    namespaces, and in it, --repeat rounds of three a2b transfers of the
    same size (--seconds worth of the links' sum), their order rotated each
    round (alternated):

    direct  RIGHT ``sockimux --listen TCP-LISTEN:PORT`` (stdout to the lab's
            checker: byte count, sha256, first/last byte times); LEFT
            ``sockimux --connect TCP:10.199.k.2:PORT,bind=10.199.k.1,
            connect-timeout=2`` once per link k, stdin the payload
            (netlab_direct.py);
    relay   netlab's own ``run``: the same sockimux on UNIX sockets, one socat
            pair per link carrying each subflow across its link;
    mptcp   netlab's ``anchor mptcp``: one MPTCP connection, one subflow per link.

    Reported: each kind's median throughput, its share of the sum of the link
    rates (95.6% is TCP's ceiling), direct/relay and direct/mptcp (ratio of
    medians, and each round's), the verdicts, the machine's cpu busy
    during each transfer (netlab's: everything on the host; above ~85% the
    machine, not the links, may be the limit) and "own cpu s": user+system
    CPU seconds of every process the transfer started (getrusage
    RUSAGE_CHILDREN once they are reaped: sockimux, socat, the anchors'
    endpoints, and the lab's short ip/ss/tc commands, alike for each kind),
    a figure the other load on the machine does not change.

fault
    On --fault-links (default 40,20,10,5), one direct transfer sized to last
    about --fault-at + --fault-for + --fault-tail seconds; link --fault-link
    is black-holed at --fault-at s for --fault-for s (netlab's blackhole:
    both of its shapers become zero-length queues: no error anywhere, TCP just
    stalls), then restored.  PASS needs: the transfer intact, both sockimux
    exit 0 on their own, LEFT's subflow on that link dropped (its log says
    "lost"), a new subflow on that link established by LEFT itself after the
    restore (its log says "back"), and that subflow carrying data (its
    data_out in LEFT's --stats-file, and the link's wire counter after it).
    Printed: per second, each link's wire Mbit/s (what passed its shaper)
    and the subflow id LEFT has on the faulty link with its data_out.

Every transfer uses the lab's --cc (default cubic) on every TCP socket:
netlab sets it on its own sockets; for sockimux, see netlab_direct.py.
Exit status: 0 if every transfer passed, 1 if one failed, 2 setup or usage
error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shlex
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import netlab_fault
from netlab_direct import NETLAB, ROOT, DirectRun, load_netlab

KINDS = ("direct", "relay", "mptcp")


def lab_opts(nl: Any, args: argparse.Namespace, links: str, extra: list[str]) -> argparse.Namespace:
    """netlab's own options for a ``compare`` on these links (its defaults for the rest)."""
    imux = shlex.join([str(ROOT / "sockimux")])
    argv = ["compare", "--imux-cmd", imux, "--links", links, "--cc", args.cc,
            "--queue-ms", f"{args.queue_ms:g}", "--seconds", f"{args.seconds:g}", *extra]
    if args.keep:
        argv.append("--keep")
    opts: argparse.Namespace = nl.build_parser().parse_args(argv)
    return opts


def one_run(nl: Any, lab: Any, kind: str) -> dict[str, Any]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    if kind == "direct":
        result: dict[str, Any] = DirectRun(nl, lab).execute()
    elif kind == "relay":
        result = nl.ImuxRun(lab).execute()
    else:
        result = nl.AnchorRun(lab, "mptcp").execute()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU time of every process the transfer started, once reaped (sockimux, socat, the
    # anchors' endpoints, and the lab's short ip/ss/tc commands, alike for every kind):
    # what the transfer cost, whatever else loads the machine.
    result["children_cpu_s"] = round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 3)
    time.sleep(1.0)  # let the queues drain, as netlab's compare does
    return result


def throughput(nl: Any, args: argparse.Namespace, links: str) -> dict[str, Any]:
    lab = nl.Lab(lab_opts(nl, args, links, []))
    try:
        lab.setup()
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
        for r in range(args.repeat):
            order = KINDS[r % 3:] + KINDS[:r % 3]
            for kind in order:
                result = one_run(nl, lab, kind)
                runs[kind].append(result)
                d = result["directions"][0]
                nl.log.info(f"  {kind}: {d.get('throughput_mbit')} Mbit/s, {result['verdict']} "
                            f"{'; '.join(result.get('reasons', []))} cpu busy {result['cpu_busy_pct']}%")
        return summarize(links, lab.topo.total_rate, runs)
    finally:
        lab.close()


def summarize(links: str, total: float, runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {"links": links, "sum_mbit": total}
    tput: dict[str, list[float | None]] = {}
    for kind, results in runs.items():
        tput[kind] = [r["directions"][0].get("throughput_mbit") for r in results]
        done = [t for t in tput[kind] if t]
        med = statistics.median(done) if done and len(done) == len(results) else None
        out[kind] = {
            "throughput_mbit": tput[kind],
            "median_mbit": med,
            "of_link_sum": round(med / total, 4) if med else None,
            "verdicts": [r["verdict"] for r in results],
            "reasons": [r.get("reasons", []) for r in results],
            "cpu_busy_pct": [r["cpu_busy_pct"] for r in results],
            "cpu_steal_pct": [r["cpu_steal_pct"] for r in results],
            "children_cpu_s": [r.get("children_cpu_s") for r in results],
            "per_link_a2b_mbit": [[row.get("a2b_mbit") for row in r.get("links", [])] for r in results],
        }
    for other in ("relay", "mptcp"):
        a, b = out["direct"]["median_mbit"], out[other]["median_mbit"]
        out[f"direct_over_{other}"] = round(a / b, 4) if a and b else None
        ca, cb = (statistics.median(c) if c and None not in c else None
                  for c in (out["direct"]["children_cpu_s"], out[other]["children_cpu_s"]))
        out[f"direct_over_{other}_cpu"] = round(ca / cb, 4) if ca and cb else None
        out[f"direct_over_{other}_per_round"] = [
            round(x / y, 4) if x and y else None for x, y in zip(tput["direct"], tput[other], strict=True)]
    return out


def render_throughput(s: dict[str, Any]) -> str:
    lines = [f"links {s['links']} Mbit/s (sum {s['sum_mbit']:g}); TCP payload ceiling 95.6% of the sum"]
    head = (f"{'kind':7} {'median':>8} {'of sum':>7}  {'per round (Mbit/s)':28} {'cpu busy %':12} "
            f"{'own cpu s':16} verdicts")
    lines.append(head)
    for kind in KINDS:
        k = s[kind]
        med = f"{k['median_mbit']:.2f}" if k["median_mbit"] else "-"
        eff = f"{100 * k['of_link_sum']:.1f}%" if k["of_link_sum"] else "-"
        rounds = ", ".join("-" if t is None else f"{t:.2f}" for t in k["throughput_mbit"])
        cpu = ", ".join(f"{c:.0f}" for c in k["cpu_busy_pct"])
        own = ", ".join(f"{c:.1f}" for c in k["children_cpu_s"])
        lines.append(f"{kind:7} {med:>8} {eff:>7}  {rounds:28} {cpu:12} {own:16} {' '.join(k['verdicts'])}")
        for reasons in k["reasons"]:
            lines += [f"        {reason}" for reason in reasons]
    for other in ("relay", "mptcp"):
        per = ", ".join("-" if x is None else f"{x:.3f}" for x in s[f"direct_over_{other}_per_round"])
        ratio = s[f"direct_over_{other}"]
        cpu_ratio = s[f"direct_over_{other}_cpu"]
        lines.append(f"direct/{other}: {'-' if ratio is None else f'{ratio:.3f}'} (per round: {per}); "
                     f"own cpu s {'-' if cpu_ratio is None else f'{cpu_ratio:.2f}'}x")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="netlab_tcp.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=["throughput", "fault"], help="one part only (default both)")
    p.add_argument("--links", action="append", metavar="R1,R2,..",
                   help="link set for the throughput part, repeatable (default 40,20,10,5 and 30,30,30,1)")
    p.add_argument("--repeat", type=int, default=2, help="rounds of direct/relay/mptcp (default 2)")
    p.add_argument("--seconds", type=float, default=10.0,
                   help="size each throughput transfer for about this long at the links' sum (default 10)")
    p.add_argument("--cc", default="cubic", help="TCP congestion control of every socket, or 'default' "
                                                 "(the namespaces' bbr) (default cubic)")
    p.add_argument("--queue-ms", type=float, default=50.0, help="netlab's tbf queue (default 50)")
    p.add_argument("--fault-links", default="40,20,10,5", help="links of the fault run (default 40,20,10,5)")
    p.add_argument("--fault-link", type=int, default=1, help="the link black-holed (default 1)")
    p.add_argument("--fault-at", type=float, default=6.0, help="black hole from this second (default 6)")
    p.add_argument("--fault-for", type=float, default=20.0, help="for this long (default 20)")
    p.add_argument("--fault-tail", type=float, default=20.0,
                   help="seconds of data left after the restore, at the links' sum (default 20)")
    p.add_argument("--json", metavar="PATH", help="also write every figure as JSON to PATH")
    p.add_argument("--keep", action="store_true", help="keep netlab's scratch dirs (payloads, logs, stats)")
    p.add_argument("-v", "--verbose", action="store_true", help="log every command netlab runs")
    return p


def commit() -> str:
    out = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                         capture_output=True, text=True, check=False)
    return out.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if os.geteuid() != 0:
        print("netlab_tcp.py: needs root (network namespaces, tc), as netlab does", file=sys.stderr)
        return 2
    if not os.access(NETLAB, os.X_OK):
        print(f"netlab_tcp.py: {NETLAB} not found", file=sys.stderr)
        return 2
    nl = load_netlab()
    logging.basicConfig(format="netlab: %(message)s", stream=sys.stderr,
                        level=logging.DEBUG if args.verbose else logging.INFO)
    for sig in nl.HANDLED_SIGNALS:
        signal.signal(sig, nl._on_signal)
    report: dict[str, Any] = {"commit": commit(), "cc": args.cc, "started": time.strftime("%F %T %Z")}

    def run() -> bool:
        ok = True
        if args.only in (None, "throughput"):
            report["throughput"] = []
            for links in args.links or ["40,20,10,5", "30,30,30,1"]:
                s = throughput(nl, args, links)
                report["throughput"].append(s)
                print(render_throughput(s) + "\n", flush=True)
                ok &= all(v == "PASS" for k in KINDS for v in s[k]["verdicts"])
        if args.only in (None, "fault"):
            opts = lab_opts(nl, args, args.fault_links, [])
            fault = netlab_fault.fault_run(nl, opts, args)
            report["fault"] = fault
            print(netlab_fault.render(fault), flush=True)
            ok &= fault["verdict"] == "PASS"
        return ok

    return reported("netlab_tcp.py", nl, report, args.json,
                    f"commit {report['commit']}, cc {args.cc}", run)


def reported(name: str, nl: Any, report: dict[str, Any], json_path: str | None, label: str,
             run: Callable[[], bool]) -> int:
    """A lab script's ending: ``run()`` says whether every verdict passed
    (exit 0, else 1); a lab error is one line and exit 2, an interruption
    exit 130; the JSON report is written whatever happened."""
    try:
        ok = run()
    except nl.LabError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    except nl.Interrupted as exc:
        print(f"{name}: interrupted by {exc}", file=sys.stderr)
        return 130
    finally:
        if json_path:
            with open(json_path, "w") as f:
                json.dump(report, f, indent=1)
    print(f"{label}: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1

if __name__ == "__main__":
    sys.exit(main())
