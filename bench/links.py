"""Links: ``netlab compare`` on rate-limited links between two network namespaces.

For each link set, runs (needs root)::

    netlab compare --imux-cmd /abs/path/sockimux --links 40,20,10,5 --json

which measures, back to back on the very same links, one plain TCP stream
over the fastest link, one Linux MPTCP connection with a subflow per link,
and a sockimux pair with one socat subflow pair per link.  We report from
its JSON: ``efficiency_of_link_sum`` (throughput / sum of the configured link
rates; 95.6% is the ceiling for TCP payload) for imux and mptcp, and
``ratio_imux_mptcp``, plus each run's verdict and CPU load.

bench/netlab_tcp.py measures the same links with sockimux opening its own
TCP subflows (``--connect TCP:...,bind=``, no socat), alternated with this
topology and MPTCP, and a link black-holed and restored (docs/NETLAB.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

from procs import ROOT, BenchError, sockimux_command

NETLAB = ROOT.parent / "shared" / "lab" / "netlab"


def available(netlab: Path) -> str | None:
    """None if the lab can run here, else why not."""
    if os.geteuid() != 0:
        return "needs root"
    if not os.access(netlab, os.X_OK):
        return f"needs root and {netlab} (not found)"
    return None


def _stop(proc: subprocess.Popen[bytes]) -> str:
    """Stop netlab; its stderr."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
    return (err or b"").decode(errors="replace")


def measure(netlab: Path, links: str, timeout: float, progress: Any) -> dict[str, Any]:
    argv = [str(netlab), "compare", "--imux-cmd", sockimux_command(), "--links", links, "--json"]
    progress(f"links {links}: {' '.join(argv)}")
    # A session of its own, so a Ctrl-C meant for the bench reaches netlab only through
    # us: we stop it with SIGTERM (it then removes its namespaces), SIGKILL as a last resort.
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        err_text = _stop(proc)
        raise BenchError(f"netlab compare --links {links}: no result within {timeout:g} s; stderr:\n"
                         + err_text[-3000:]) from None
    finally:
        if proc.poll() is None:
            _stop(proc)
    try:
        result: dict[str, Any] = json.loads(out.decode())
    except ValueError:
        raise BenchError(f"netlab compare --links {links} exited {proc.returncode} without a JSON "
                         f"report; stderr:\n" + err.decode(errors="replace")[-3000:]) from None
    eff = result.get("efficiency_of_link_sum", {})
    summary: dict[str, Any] = {
        "links_mbit": [float(x) for x in links.split(",")],
        "netlab_exit": proc.returncode,
        "verdict": result.get("verdict"),
        "imux_of_link_sum": eff.get("imux"),
        "mptcp_of_link_sum": eff.get("mptcp"),
        "tcp_of_link_sum": eff.get("tcp"),
        "ratio_imux_mptcp": result.get("ratio_imux_mptcp"),
        "ratio_imux_tcp": result.get("ratio_imux_tcp"),
    }
    for kind in ("tcp", "mptcp", "imux"):
        run = result.get(kind, {})
        d = (run.get("directions") or [{}])[0]
        summary[kind] = {
            "verdict": run.get("verdict"),
            "reasons": run.get("reasons", []),
            "throughput_mbit": d.get("throughput_mbit"),
            "partial_throughput_mbit": d.get("partial_throughput_mbit"),
            "duration_s": d.get("duration_s"),
            "intact": d.get("intact"),
            "cpu_busy_pct": run.get("cpu_busy_pct"),
            "cpu_steal_pct": run.get("cpu_steal_pct"),
        }
    imux = result.get("imux", {})
    summary["imux"]["exit_status"] = imux.get("exit_status")
    summary["imux"]["stderr_tail"] = imux.get("stderr_tail")
    summary["imux"]["per_link"] = [
        {k: link.get(k) for k in ("link", "rate_mbit", "a2b_mbit", "a2b_share")}
        for link in imux.get("links", [])
    ] if isinstance(imux.get("links"), list) else None
    return summary
