"""Keystrokes over the lab's links while the link carrying them is black-holed (issue 15 target 3).

sockimux with its own TCP subflows, one per link, as netlab_direct.py runs it,
but the stream is an echo:

    RIGHT: sockimux --listen TCP-LISTEN:PORT --stream EXEC:cat
    LEFT:  sockimux --connect TCP:10.199.k.2:PORT,bind=10.199.k.1,connect-timeout=2
                    (once per link k)           STDIN <- a byte every 20 ms, STDOUT -> back

The bench writes one byte every 20 ms (bench/stall.py's paced echo: on a fixed
schedule, whatever has come back) for --seconds, and times each echo from just
before its write to the read that returned it.  With --fault, at each
``--fault AT:FOR`` (seconds from t0, when LEFT is started) the link whose
subflow moved the most DATA over the second before (LEFT's --stats-file: the
link carrying the echo) is black-holed (netlab's blackhole: both of its shapers become zero-length
queues: no error anywhere, TCP just stalls) and restored FOR s later.
``--fault-link K`` black-holes link K instead.  ``--cross`` adds bulk TCP
(not through sockimux) from RIGHT to LEFT on every link for the whole run, so
that every link's queue is full, as on a path shared with a download: the lab
has no propagation delay, and idle links answer in a fraction of a millisecond.

The round trip of each link is measured beside the echo, on the same links
and queues: a TCP connection per link (bound to its addresses) to a
``socat ... EXEC:cat`` in RIGHT, one byte sent and echoed every 0.2 s, timed
like the echo (there is no ping here).  So "the slowest remaining link's round
trip" is measured, not assumed: the largest median round trip among the links
not black-holed, while the black hole lasts.

Reported per run: echo p50/p99/max over the run, and for each black hole the
link, the worst echo of the bytes not back when it came and of those sent
until 3 s after it (beyond the 2.5 s stall timeout), that worst against the slowest remaining
link's round trip, the echoes over 100 ms; LEFT's and RIGHT's probe copies and
stalled drops (their --stats-file and -v log); whether the session ended
cleanly (LEFT's STDIN closed: its STDOUT ends, both exit 0); the machine's cpu busy during the
run (netlab's: everything on the host) and the CPU seconds of the processes
the run started (getrusage RUSAGE_CHILDREN).

    sudo .venv/bin/python bench/netlab_echo.py --links 40,20,10,5 --links 30,30,30,1
    sudo .venv/bin/python bench/netlab_echo.py --fault 10:8 --fault 20:6 --cross --keep

Exit status: 0 if every run ended cleanly, 1 if one did not, 2 setup or usage
error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import resource
import select
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

from latency import percentile
from netlab_direct import NETLAB, VENV_PYTHON, DirectRun, load_netlab
from netlab_fault import text_of as _text
from netlab_tcp import commit, lab_opts, reported
from stall import DROPPED, SLOW_MS, _echoes

RTT_PORT = 9100
CROSS_PORT = 9200
RTT_EVERY = 0.2  # s between two round-trip probes on a link
ECHO_DELAY = 0.5  # s from every link's subflow open (LEFT's stats) to the first keystroke
AFTER_S = 3.0  # the echoes "after a black hole": sent up to this long after it


class EchoEnds:
    """What stall._echoes needs: the two pipe ends, and an error naming the run."""

    def __init__(self, run: EchoRun, to_near: int, from_near: int) -> None:
        self.run = run
        self.to_near = to_near
        self.from_near = from_near

    def error(self, why: str) -> RuntimeError:
        return RuntimeError(f"echo: {why}; A: {self.run.stderr_tail('A')}; B: {self.run.stderr_tail('B')}")


class EchoRun(DirectRun):
    """One paced echo over every link, with black holes on the way."""

    def __init__(self, nl: Any, lab: Any, seconds: float, faults: list[tuple[float, float]],
                 fault_link: int | None, cross: bool = False) -> None:
        super().__init__(nl, lab, nbytes=1, stats_interval=0.5)
        self.seconds = seconds
        self.timeout_s = seconds + 60.0
        self.clock = nl.TransferClock(self.topo, nl.FaultSchedule([], "blackhole", self.topo), self.timeout_s)
        self.plan = sorted(faults)
        self.fault_link = fault_link
        self.cross = cross
        self.holes: list[dict[str, Any]] = []  # black holes made: link, fired, restored
        self._snap: tuple[float, list[tuple[int, int]]] | None = None
        self.samples: list[tuple[float, int]] = []  # (sent, s from t0; echo ns)
        self.failure: str | None = None
        self.rtt_files: list[str] = []

    def right_args(self) -> list[str]:
        return ["--listen", f"TCP-LISTEN:{self.port}", "--stream", "EXEC:cat", *self._common("B")]

    # -- the run

    def execute(self) -> dict[str, Any]:
        rfd, wfd = os.pipe()
        thread: threading.Thread | None = None
        try:
            self._start("B", self.right_args(), subprocess.DEVNULL)
            self._wait_listening()
            self._start_rtt_probes()
            if self.cross:
                self._start_cross()
            holder: dict[str, Any] = {}

            def start() -> None:
                left = self._start("A", self.left_args(), rfd)
                os.close(rfd)
                assert left.stdout is not None
                holder["out"] = left.stdout.fileno()
                nonlocal thread
                thread = threading.Thread(target=self._echo, args=(wfd, holder["out"]), daemon=True)
                thread.start()

            def finished() -> bool:
                return thread is not None and not thread.is_alive()

            in_time = self.clock.run(start=start, finished=finished, on_tick=self._on_tick)
            self.topo.heal()
            clean = self._end_session(wfd, holder.get("out"), in_time)
            return self._report(in_time, clean)
        finally:
            for fd in (rfd, wfd):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self.lab.procs.stop(self.procs.values())
            self.topo.heal()

    def _echo(self, wfd: int, out: int) -> None:
        # Keystrokes start once LEFT has a subflow open on every link (its stats file says
        # so), and half a second more: a loaded machine may take over a second to start
        # sockimux, and the first echo would time that instead (339 ms once, at 99% busy).
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline and len(self._open_subflows()) < len(self.topo.links):
            time.sleep(0.05)
        time.sleep(ECHO_DELAY)
        offset = time.monotonic() - self.clock.t0
        try:
            got = _echoes(EchoEnds(self, wfd, out), self.seconds, None)  # type: ignore[arg-type]
            self.samples = [(offset + t, ns) for t, ns in got]
        except (RuntimeError, OSError) as exc:
            self.failure = str(exc)

    def _on_tick(self, elapsed: float) -> None:
        for at, length in self.plan:
            if at - 1.0 <= elapsed and self._snap is None and not any(h["at_s"] == at for h in self.holes):
                self._snap = (elapsed, self._moved_per_link())
            if at <= elapsed and not any(h["at_s"] == at for h in self.holes):
                self._black_hole(at, length, elapsed)
        for hole in self.holes:
            if hole["restored_s"] is None and elapsed >= hole["at_s"] + hole["for_s"]:
                self.topo.set_link_state(self.topo.links[hole["link"]], "up")
                hole["restored_s"] = round(elapsed, 3)

    def _black_hole(self, at: float, length: float, elapsed: float) -> None:
        moved: list[int] = []
        if self._snap is not None:
            now = self._moved_per_link()
            moved = [a - b for a, b in zip(now, self._snap[1], strict=True)]
        self._snap = None
        k = self.fault_link if self.fault_link is not None else max(range(len(moved)), key=moved.__getitem__)
        self.topo.set_link_state(self.topo.links[k], "blackhole")
        done = time.monotonic() - self.clock.t0
        self.holes.append({"at_s": at, "for_s": length, "link": k, "fired_s": round(elapsed, 3),
                           "in_place_s": round(done, 3), "restored_s": None, "echo_bytes_last_s": moved})
        self.nl.log.info(f"t={elapsed:.2f}s black-holed link {k} (in place at {done:.2f} s; LEFT's DATA "
                         f"bytes per link over the second before: {moved})")

    def _open_subflows(self) -> list[dict[str, Any]]:
        for line in reversed(_text(self.stats_files["A"]).splitlines()):
            try:
                data = json.loads(line)
            except ValueError:
                continue
            return [sf for sf in data.get("subflows", []) if sf.get("state") == "open"]
        return []

    def _moved_per_link(self) -> list[int]:
        """Per link, the DATA bytes LEFT's subflows on it sent and received so far (its
        last --stats-file line): where the echo goes, whatever other traffic the link has."""
        moved = [0] * len(self.topo.links)
        by_addr = {f"TCP:{lk.right_addr}:": lk.index for lk in self.topo.links}
        lines = _text(self.stats_files["A"]).splitlines()
        for line in reversed(lines):
            try:
                data = json.loads(line)
            except ValueError:
                continue
            for sf in data.get("subflows", []):
                for prefix, k in by_addr.items():
                    if str(sf.get("label", "")).startswith(prefix):
                        moved[k] += int(sf.get("data_out", 0)) + int(sf.get("data_in", 0))
            break
        return moved

    def _end_session(self, wfd: int, out: int | None, in_time: bool) -> bool:
        """Close LEFT's STDIN: its STDOUT must end and both must exit 0."""
        os.close(wfd)
        if out is None:
            return False
        deadline = time.monotonic() + 20.0
        eof = False
        while not eof and time.monotonic() < deadline:
            if select.select([out], [], [], 0.5)[0]:
                eof = not os.read(out, 65536)
        pair = [self.procs[side] for side in "AB"]
        self.nl.wait_until(lambda: all(p.poll() is not None for p in pair), timeout_s=self.lab.opts.grace,
                           tick_s=0.05)
        return in_time and eof and all(p.poll() == 0 for p in pair)

    # -- round trips of each link, beside the echo

    def _start_rtt_probes(self) -> None:
        nl, topo = self.nl, self.topo
        listener = self.lab.procs.start(["socat", f"TCP-LISTEN:{RTT_PORT},reuseaddr,fork", "EXEC:cat"],
                                        netns=topo.right_ns, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs["rtt-listener"] = listener
        ok = nl.wait_until(lambda: f":{RTT_PORT} " in nl.run_cmd(["ss", "-N", topo.right_ns, "-Hltn"],
                                                               check=False), timeout_s=10.0)
        if not ok:
            raise nl.LabError("round-trip listener (socat) not listening")
        for link in topo.links:
            path = os.path.join(self.dir, f"rtt-{link.index}.jsonl")
            self.rtt_files.append(path)
            with open(path, "wb") as out:
                proc = self.lab.procs.start(
                    [str(VENV_PYTHON), os.path.abspath(__file__), "_rtt", link.right_addr, str(RTT_PORT),
                     link.left_addr], netns=topo.left_ns, stdin=subprocess.DEVNULL, stdout=out,
                    stderr=subprocess.DEVNULL)
            self.procs[f"rtt-{link.index}"] = proc

    def _start_cross(self) -> None:
        """Bulk TCP beside sockimux, RIGHT to LEFT on every link: the links' queues fill
        (each its --queue-ms), as a download sharing the path fills them."""
        nl, topo = self.nl, self.topo
        me = [str(VENV_PYTHON), os.path.abspath(__file__)]
        self.procs["cross-server"] = self.lab.procs.start(
            [*me, "_cross_server", str(CROSS_PORT), self.lab.opts.cc], netns=topo.right_ns,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ok = nl.wait_until(lambda: f":{CROSS_PORT} " in nl.run_cmd(["ss", "-N", topo.right_ns, "-Hltn"],
                                                                 check=False), timeout_s=10.0)
        if not ok:
            raise nl.LabError("cross-traffic server not listening")
        for link in topo.links:
            self.procs[f"cross-{link.index}"] = self.lab.procs.start(
                [*me, "_cross_client", link.right_addr, str(CROSS_PORT), link.left_addr], netns=topo.left_ns,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(2.0)  # the queues fill

    def _rtts(self) -> list[list[tuple[float, float | None]]]:
        """Per link, (s from t0, round trip in ms or None if lost)."""
        out = []
        for path in self.rtt_files:
            rows = []
            for line in _text(path).splitlines():
                try:
                    at, ms = json.loads(line)
                except ValueError:
                    continue
                rows.append((at - self.clock.t0, ms))
            out.append(rows)
        return out

    # -- the report

    def _report(self, in_time: bool, clean: bool) -> dict[str, Any]:
        samples = self.samples
        ms = sorted(ns / 1e6 for _, ns in samples)
        rtts = self._rtts()
        whole = {"echoes": len(ms)}
        if ms:
            whole |= {"p50_ms": round(percentile(ms, 0.5), 2), "p99_ms": round(percentile(ms, 0.99), 2),
                      "max_ms": round(ms[-1], 1), "over_slow_ms": sum(1 for v in ms if v > SLOW_MS)}
        holes = [self._hole_report(h, rtts) for h in self.holes]
        start = samples[0][0] if samples else 0.0
        quiet = [_median([v for t, v in rows if v is not None and t >= start]) for rows in rtts]
        stats = {side: _last_stats(self.stats_files[side]) for side in "AB"}
        logs = {side: _text(os.path.join(self.dir, f"sockimux-{side}.stderr")) for side in "AB"}
        return {
            "links": [lk.rate_mbit for lk in self.topo.links],
            "cross_traffic": self.cross,
            "ok": in_time and clean and self.failure is None,
            "failure": self.failure,
            "session_ended_cleanly": clean,
            "echo": whole,
            "rtt_ms_median_per_link": quiet,
            "black_holes": holes,
            "probe_copies": {s: stats[s].get("probe_copies") for s in "AB"},
            "head_copies": {s: stats[s].get("head_copies") for s in "AB"},
            "stalled_drops_logged": {s: len(DROPPED.findall(logs[s])) for s in "AB"},
            "cpu_busy_pct": self.clock.cpu_busy_pct,
            "cpu_steal_pct": self.clock.cpu_steal_pct,
            "argv": {"A": self.left_args(), "B": self.right_args()},
            "dir": self.dir,
            "samples": [(round(t, 3), round(ns / 1e6, 2)) for t, ns in samples],
        }

    def _hole_report(self, hole: dict[str, Any], rtts: list[list[tuple[float, float | None]]]
                     ) -> dict[str, Any]:
        t, k = hole["in_place_s"], hole["link"]
        end = hole["restored_s"] or t + hole["for_s"]
        # Every byte whose echo was not back when the black hole was in place (with queues
        # full, one sent 50 ms before may still be on its way), up to AFTER_S after it.
        after = [(s, ns / 1e6) for s, ns in self.samples if s < t + AFTER_S and s + ns / 1e9 > t]
        remaining = {i: _median([v for s, v in rows if v is not None and t <= s < end])
                     for i, rows in enumerate(rtts) if i != k}
        slowest = max(remaining, key=lambda i: remaining[i] or 0.0) if remaining else None
        rtt = remaining.get(slowest) if slowest is not None else None
        worst = max((v for _, v in after), default=0.0)
        return {**hole, "echoes_after": len(after), "worst_ms_after": round(worst, 1),
                "over_slow_ms_after": sum(1 for _, v in after if v > SLOW_MS),
                "echoes_after_ms": [round(v, 1) for _, v in after[:10]],
                "rtt_ms_remaining": remaining, "slowest_remaining_link": slowest,
                "slowest_remaining_rtt_ms": rtt,
                "worst_in_rtts": round(worst / rtt, 1) if rtt else None}


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


def _last_stats(path: str) -> dict[str, Any]:
    for line in reversed(_text(path).splitlines()):
        try:
            data: dict[str, Any] = json.loads(line)
        except ValueError:
            continue
        totals: dict[str, Any] = data.get("totals", data)
        return totals
    return {}


def cross_server(port: int, cc: str) -> int:
    """In RIGHT: every connection accepted is sent zeros as fast as its link takes them."""
    server = socket.create_server(("", port), reuse_port=True)
    if cc != "default":
        server.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cc.encode())
    zeros = bytes(1 << 16)

    def send(conn: socket.socket) -> None:
        try:
            while True:
                conn.sendall(zeros)
        except OSError:
            conn.close()

    while True:
        conn, _ = server.accept()
        threading.Thread(target=send, args=(conn,), daemon=True).start()


def cross_client(host: str, port: int, bind: str) -> int:
    """In LEFT: one connection over one link, read and dropped; again if it ends."""
    buf = bytearray(1 << 16)
    while True:
        try:
            with socket.create_connection((host, port), timeout=5.0, source_address=(bind, 0)) as sock:
                sock.settimeout(None)
                while sock.recv_into(buf):
                    pass
        except OSError:
            time.sleep(0.5)


def rtt_probe(host: str, port: int, bind: str) -> int:
    """In LEFT: one byte to RIGHT's echo over one link every RTT_EVERY s; prints
    [monotonic when sent, round trip in ms or null] per byte, until killed."""
    sock: socket.socket | None = None
    while True:
        sent = time.monotonic()
        try:
            if sock is None:
                sock = socket.create_connection((host, port), timeout=1.0, source_address=(bind, 0))
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sent = time.monotonic()
            sock.sendall(b"x")
            got = sock.recv(1)
            ms: float | None = (time.monotonic() - sent) * 1e3 if got else None
            if not got:
                sock.close()
                sock = None
        except OSError:
            # Lost in a black hole: start over on a fresh connection (the old one's
            # queue would hold every later byte behind the lost one).
            ms = None
            if sock is not None:
                sock.close()
            sock = None
        print(json.dumps([sent, ms]), flush=True)
        time.sleep(max(0.0, sent + RTT_EVERY - time.monotonic()))


def render(r: dict[str, Any]) -> str:
    e = r["echo"]
    what = (" + cross traffic" if r["cross_traffic"] else "") + (", black holes" if r["black_holes"] else "")
    lines = [f"links {','.join(f'{x:g}' for x in r['links'])}{what}: {e['echoes']} echoes, "
             f"p50 {e.get('p50_ms')} ms, p99 {e.get('p99_ms')} ms, max {e.get('max_ms')} ms, "
             f"{e.get('over_slow_ms')} over {SLOW_MS:g} ms; "
             f"cpu busy {r['cpu_busy_pct']}% (steal {r['cpu_steal_pct']}%)",
             f"  link round trips, median ms: {r['rtt_ms_median_per_link']}",
             f"  probe copies A/B {r['probe_copies']['A']}/{r['probe_copies']['B']}, head copies "
             f"{r['head_copies']['A']}/{r['head_copies']['B']}, stalled drops logged "
             f"{r['stalled_drops_logged']['A']}/{r['stalled_drops_logged']['B']}; session ended cleanly "
             f"{r['session_ended_cleanly']}" + (f"; FAILED: {r['failure']}" if r["failure"] else "")]
    for h in r["black_holes"]:
        lines.append(f"  black hole link {h['link']} at {h['in_place_s']:.2f} s (restored "
                     f"{h['restored_s']}): worst echo after {h['worst_ms_after']} ms, "
                     f"{h['over_slow_ms_after']} over {SLOW_MS:g} ms; "
                     f"slowest remaining link {h['slowest_remaining_link']}, rtt "
                     f"{h['slowest_remaining_rtt_ms']} ms: {h['worst_in_rtts']} round trips; "
                     f"first echoes {h['echoes_after_ms']}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="netlab_echo.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--links", action="append", metavar="R1,R2,..",
                   help="link set, repeatable (default 40,20,10,5 and 30,30,30,1)")
    p.add_argument("--seconds", type=float, default=30.0, help="of paced echo per run (default 30)")
    p.add_argument("--fault", action="append", metavar="AT:FOR",
                   help="black-hole the echo's link at AT s for FOR s, repeatable; each link set "
                        "runs once without and once with them (default 10:8 and 22:6)")
    p.add_argument("--fault-link", type=int, help="black-hole this link instead of the echo's")
    p.add_argument("--cross", action="store_true",
                   help="bulk TCP (not sockimux) from RIGHT to LEFT on every link throughout, "
                        "so that each link's queue is full (round trips up to --queue-ms)")
    p.add_argument("--no-clean", action="store_true", help="skip the run without faults")
    p.add_argument("--cc", default="cubic", help="TCP congestion control of every socket (default cubic)")
    p.add_argument("--queue-ms", type=float, default=50.0, help="netlab's tbf queue (default 50)")
    p.add_argument("--json", metavar="PATH", help="also write every figure as JSON to PATH")
    p.add_argument("--keep", action="store_true", help="keep netlab's scratch dirs (logs, stats)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if os.geteuid() != 0 or not os.access(NETLAB, os.X_OK):
        print(f"netlab_echo.py: needs root and {NETLAB}", file=sys.stderr)
        return 2
    nl = load_netlab()
    logging.basicConfig(format="netlab: %(message)s", stream=sys.stderr, level=logging.INFO)
    for sig in nl.HANDLED_SIGNALS:
        signal.signal(sig, nl._on_signal)
    faults = [tuple(float(x) for x in f.split(":")) for f in (args.fault or ["10:8", "22:6"])]
    report: dict[str, Any] = {"commit": commit(), "started": time.strftime("%F %T %Z"), "runs": []}

    def run() -> bool:
        ok = True
        for links in args.links or ["40,20,10,5", "30,30,30,1"]:
            lab_args = argparse.Namespace(cc=args.cc, queue_ms=args.queue_ms, seconds=10.0, keep=args.keep)
            lab = nl.Lab(lab_opts(nl, lab_args, links, []))
            try:
                lab.setup()
                for plan in ([] if args.no_clean else [[]]) + [faults]:
                    before = resource.getrusage(resource.RUSAGE_CHILDREN)
                    echo_run = EchoRun(nl, lab, args.seconds, plan, args.fault_link, args.cross)  # type: ignore[arg-type]
                    r = echo_run.execute()
                    after = resource.getrusage(resource.RUSAGE_CHILDREN)
                    r["children_cpu_s"] = round(after.ru_utime + after.ru_stime - before.ru_utime
                                                - before.ru_stime, 2)
                    report["runs"].append(r)
                    print(render(r) + f"\n  own cpu s {r['children_cpu_s']}", flush=True)
                    ok &= r["ok"]
                    time.sleep(1.0)
            finally:
                lab.close()
        return ok

    return reported("netlab_echo.py", nl, report, args.json, f"commit {report['commit']}", run)

if __name__ == "__main__":
    helpers = {"_rtt": rtt_probe, "_cross_client": cross_client}
    if len(sys.argv) == 5 and sys.argv[1] in helpers:
        sys.exit(helpers[sys.argv[1]](sys.argv[2], int(sys.argv[3]), sys.argv[4]))
    if len(sys.argv) == 4 and sys.argv[1] == "_cross_server":
        sys.exit(cross_server(int(sys.argv[2]), sys.argv[3]))
    sys.exit(main())
