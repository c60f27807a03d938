"""sockimux benchmarks: figures as ratios against socat (or MPTCP) measured in the same run.

    .venv/bin/python bench/run.py                     # everything (links only as root)
    .venv/bin/python bench/run.py --quick --skip-links
    .venv/bin/python bench/run.py --only links --json

Sections (``--only bulk,dialed,paths,stats,latency,startup,ssh,stall,memory,links``):

bulk
    N bytes (``--bytes``, default 1 GiB; ``--quick`` 128 MiB) of random data
    from a file in /dev/shm, through ``sockimux A.sock < payload`` and
    ``sockimux B.sock | sink`` joined by K relays
    ``socat -b BLOCK UNIX-CONNECT:A.sock UNIX-CONNECT:B.sock`` for K in 1, 4,
    128; against the reference, the same topology with socat alone:
    endpoint A ``socat -b BLOCK -u OPEN:payload UNIX-LISTEN:a.sock``,
    endpoint B ``socat -b BLOCK -u UNIX-LISTEN:b.sock STDOUT > sink`` and one
    relay ``socat -b BLOCK UNIX-CONNECT:a.sock UNIX-CONNECT:b.sock``.  BLOCK
    (``--socat-block``) is the same for every socat in both topologies.
    Both endpoints listen before the clock starts; the time runs from just
    before the bench spawns the first relay (it spawns the K one after the
    other, as a shell loop would, so late subflows join while data flows)
    to EOF at the sink, a separate process reading a 1 MiB pipe that counts
    the bytes.  ``--verify sha256`` (default): one untimed sockimux run per
    K first checks the output's sha256 (hashing during timed runs would eat
    CPU that the faster socat pipeline needs more).  Runs alternate
    sockimux/socat, ``--repeat`` times.  Reported: the ratio of median
    throughputs sockimux/socat per K (the range of the per-pair ratios
    beside it), how far into the run all K subflows were connected, how
    many subflows sockimux refused, and sockimux's 128-subflow /
    1-subflow throughput ratio.  See bulk.py for the details.

dialed
    bulk with the subflows opened by sockimux A itself (``--connect
    UNIX-CONNECT:B.sock,count=K``, K as for bulk), no relay processes,
    against socat's sender connecting to its receiver; timed from the
    first byte at the sink to EOF.  Reported as bulk is, with the
    128-subflow / 1-subflow ratio against its target (0.85).  See
    dialed.py.

paths
    bulk (same payload size, relays, clock, verification, alternation) for
    each kind of end: STDIN the payload file or a pipe that ``cat payload``
    fills, times STDOUT a pipe to the sink or a new regular file in tmpfs
    (``> out``, its end seen when the writer closes it: inotify
    IN_CLOSE_WRITE), with 1 and 4 subflows (``--paths-subflows``), each
    against socat alone with the same ends (socat reading ``OPEN:payload``
    or that pipe, writing ``STDOUT`` into that pipe or file).  Reported:
    the ratio of median throughputs, with its target (>= 1.00) beside it.
    See paths.py and ends.py.

stats
    bulk (4 subflows) with no stats option, ``--stats=SEC`` and ``--stats=SEC
    --stats-file PATH``, in rounds of one run of each (order rotated):
    throughput and CPU-time (utime+stime, /proc) ratios over no option, with
    their per-round ranges.  See stats_cost.py.

latency
    1-byte echo round trips (``--round-trips`` after ``--warmup``) written
    by this process into the near end's STDIN pipe and read back from its
    STDOUT pipe; the far end's stream goes through ``cat`` and back.
    sockimux pair with 4 subflows vs socat alone (endpoint ``socat STDIO
    UNIX-LISTEN:a.sock``, relay, endpoint ``socat UNIX-LISTEN:b.sock
    EXEC:cat,pipes``: cat joined by pipes on both sides).  Runs alternate,
    ``--repeat`` times; percentiles over all samples of a kind.  Ratios of
    p50 and p99 (higher is slower).

ssh
    a copy made as users make it, one command timed from start to exit:
    ``sockimux ssh -n K HOST -- 'wc -c' < payload`` (upload) and ``--
    cat payload | sink`` (download), K 1 and 4, against plain ``ssh HOST``
    with the same command, through a private sshd on 127.0.0.1 (the far
    side on the host's python3: plain asyncio); payload at most 512 MiB.
    Ratio of median throughputs per direction and K (higher is better).
    Needs ssh and sshd (make installs them).  See ssh_copy.py.

startup
    a sockimux pair started, one byte carried (``A.sock < one-byte``,
    ``B.sock > out``, one relay once both listen), both exited; against
    the same made of socat.  ``--startup-runs`` alternated runs (default
    20; ``--quick`` 10).  Reported, medians: the wall time from the spawn
    to the last exit, the time to listening, and the CPU time of the two
    ends (wait4's rusage), as ratios sockimux/socat, with sockimux's own
    figures in ms.  See startup.py.

stall
    a byte every 20 ms, written on schedule whatever came back, through the
    latency topology with 4 subflows, for ``--stall-seconds`` (default 20,
    ``--quick`` 10); every 2 s the relay that moved the most since the last
    stall is stopped with SIGSTOP just after a byte is written (its
    connections stay open, nothing moves: a silent stall) and stays stopped,
    and a new relay joins.  Alternated ``--repeat`` times with the same echo
    without stalls and through socat alone.  Reported, in absolute ms (socat
    has no subflow to stall): p50, p99, max and the echoes over 100 ms
    (target: none), the worst echo after each stall; and, without stalls,
    the p50 and p99 ratios sockimux/socat.  See stall.py.

memory
    Peak RSS (VmHWM) of each sockimux while the receiver's consumer reads
    4 MB/s (4e6 B/s) and the sender has 256 MiB (``--quick``: 64 MiB) ready
    in tmpfs, 4 subflows, for ``--memory-seconds`` (VmHWM polled every
    50 ms, and read once more before they are stopped).  MiB per side, and
    above the baseline: sockimux B's RSS at start-up, holding no data.

links
    ``netlab compare`` (../shared/lab/netlab, root only) for links
    40,20,10,5 and 30,30,30,1 Mbit/s: sockimux throughput as a fraction of
    the sum of the link rates, and as a ratio to Linux MPTCP on the same
    links in the same run (netlab's ``efficiency_of_link_sum`` and
    ``ratio_imux_mptcp``).  Without root: "skipped: needs root".

The table holds ratios only (but for the stall section's echo times);
``--json`` prints one JSON object with every figure, absolute ones
included.  Progress goes to stderr.  Exit status 0 if every section
measured, 1 if any failed (its error, with the stderr of the sockimux that
failed, is in the output), 2 for bad usage.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import bulk
import dialed
import latency
import links
import memory
import paths
import procs
import render
import ssh_copy
import stall
import startup
import stats_cost
from procs import ROOT, BenchError, Payload, make_payload, payload_dir

SECTIONS = ("bulk", "dialed", "paths", "stats", "latency", "startup", "ssh", "stall", "memory", "links")
GiB = 1 << 30
MiB = 1 << 20
LINK_SETS = ("40,20,10,5", "30,30,30,1")


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": MiB, "g": GiB}
    t = text.strip().lower().removesuffix("b").removesuffix("i")
    try:
        value = int(float(t[:-1]) * units[t[-1]]) if t and t[-1] in units else int(t)
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 1G, 128M)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive: {text!r}")
    return value


def _sections(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [n for n in names if n not in SECTIONS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown section(s) {bad}; choose from {','.join(SECTIONS)}")
    return names


def _counts(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of counts: {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"counts must be at least 1: {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench/run.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="bulk, paths and stats 128 MiB, stall runs of 10 s, memory 64 MiB for 8 s "
                        "(unless given explicitly)")
    p.add_argument("--only", type=_sections, default=list(SECTIONS), metavar="LIST",
                   help="sections to run, comma-separated: " + ",".join(SECTIONS))
    p.add_argument("--skip-links", action="store_true", help="do not run the links section")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--sockimux", default=None, metavar="CMD",
                   help="command that runs sockimux, split like a shell would; the socket path is "
                        "appended (default: ./sockimux of this checkout)")
    p.add_argument("--repeat", type=int, default=3, metavar="R",
                   help="alternated runs of each kind, bulk, paths, latency and stall (default 3)")
    g = p.add_argument_group("bulk")
    g.add_argument("--bytes", type=_size, default=None, metavar="SIZE",
                   help="payload size (default 1G; --quick 128M)")
    g.add_argument("--subflows", type=_counts, default=[1, 4, 128], metavar="LIST",
                   help="subflow counts (default 1,4,128)")
    g.add_argument("--verify", choices=["sha256", "count"], default="sha256",
                   help="sha256: one untimed sockimux run per K checks the output's digest "
                        "before the timed runs (whose sink only counts bytes); default sha256")
    g.add_argument("--timeout", type=float, default=None, metavar="SEC",
                   help="per bulk run (default 60 s + 1 s per 5 MB)")
    g.add_argument("--socat-block", type=_size, default=262144, metavar="SIZE",
                   help="socat -b for every socat, both kinds (default 262144)")
    g.add_argument("--payload-dir", default=None, metavar="DIR", help="default /dev/shm")
    g = p.add_argument_group("paths (also takes the bulk options)")
    g.add_argument("--paths-subflows", type=_counts, default=[1, 4], metavar="LIST",
                   help="subflow counts (default 1,4)")
    stats_cost.add_arguments(p)
    g = p.add_argument_group("latency")
    g.add_argument("--round-trips", type=int, default=2000, metavar="N", help="per run (default 2000)")
    g.add_argument("--warmup", type=int, default=200, metavar="N", help="per run, dropped (default 200)")
    g.add_argument("--latency-subflows", type=int, default=4, metavar="N", help="default 4")
    g = p.add_argument_group("startup")
    g.add_argument("--startup-runs", type=int, default=None, metavar="N",
                   help="alternated runs of each kind (default 20; --quick 10)")
    g = p.add_argument_group("stall")
    g.add_argument("--stall-seconds", type=float, default=None, metavar="SEC",
                   help="length of each run (default 20; --quick 10)")
    g = p.add_argument_group("memory")
    g.add_argument("--memory-bytes", type=_size, default=None, metavar="SIZE",
                   help="ready at the sender (default 256M; --quick 64M)")
    g.add_argument("--memory-rate", type=float, default=4e6, metavar="B/S",
                   help="consumer read rate, bytes/s (default 4e6)")
    g.add_argument("--memory-seconds", type=float, default=None, metavar="SEC",
                   help="length of the run (default 20; --quick 8)")
    g = p.add_argument_group("links")
    g.add_argument("--netlab", type=Path, default=links.NETLAB, metavar="PATH",
                   help=f"default {links.NETLAB}")
    g.add_argument("--links", dest="link_sets", action="append", default=None, metavar="RATES",
                   help="a link set in Mbit/s, repeatable (default 40,20,10,5 and 30,30,30,1)")
    g.add_argument("--links-timeout", type=float, default=900.0, metavar="SEC",
                   help="per netlab compare (default 900)")
    return p


# -- the machine ------------------------------------------------------------------------


def _output(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=ROOT).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine() -> dict[str, Any]:
    venv_python = ROOT / ".venv" / "bin" / "python"
    probe = ("import sys\ntry:\n import uvloop; u = uvloop.__version__\nexcept ImportError:\n u = ''\n"
             "print(sys.version.split()[0], u)")
    py, _, uv = _output([str(venv_python), "-c", probe]).partition(" ")
    socat = _output(["socat", "-V"])
    socat_version = next((line.split()[2] for line in socat.splitlines()
                          if line.startswith("socat version")), "?")
    commit = _output(["git", "rev-parse", "--short", "HEAD"])
    dirty = bool(_output(["git", "status", "--porcelain", "--untracked-files=no", "--", "src"]))
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "kernel": platform.release(),
        "python": py or "?",
        "uvloop": uv or None,
        "socat": socat_version,
        "sockimux_commit": commit + ("+dirty src" if dirty else ""),
        "loadavg_at_start": os.getloadavg(),
    }


# -- the run ------------------------------------------------------------------------------


def _on_signal(signo: int, frame: object) -> None:
    raise SystemExit(128 + signo)  # unwinds through every finally: children are stopped


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sections = [s for s in args.only if not (s == "links" and args.skip_links)]
    size = args.bytes or (128 * MiB if args.quick else GiB)
    mem_size = args.memory_bytes or (64 * MiB if args.quick else 256 * MiB)
    mem_seconds = args.memory_seconds or (8.0 if args.quick else 20.0)
    stall_seconds = args.stall_seconds or (10.0 if args.quick else 20.0)
    if args.repeat < 1:
        print("bench/run.py: --repeat must be at least 1", file=sys.stderr)
        return 2
    if "stall" in sections and stall_seconds < 2 * stall.STALL_EVERY:
        print(f"bench/run.py: --stall-seconds must be at least {2 * stall.STALL_EVERY:g} "
              f"(a stall every {stall.STALL_EVERY:g} s)", file=sys.stderr)
        return 2
    if "memory" in sections and mem_seconds * args.memory_rate > 0.9 * mem_size:
        print(f"bench/run.py: the reader would take {mem_seconds * args.memory_rate / MiB:.0f} MiB in "
              f"{mem_seconds:g} s: give more --memory-bytes than that", file=sys.stderr)
        return 2
    if "stats" in sections and (bad := stats_cost.bad_usage(args)):
        print(f"bench/run.py: {bad}", file=sys.stderr)
        return 2
    if args.sockimux:
        procs.SOCKIMUX_CMD[:] = shlex.split(args.sockimux)
    # Ctrl-C raises KeyboardInterrupt even where SIGINT came in ignored (a background job).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    if shutil.which("socat") is None and set(sections) & {"bulk", "stats", "latency", "startup", "memory"}:
        print("bench/run.py: socat is not installed (run `make`)", file=sys.stderr)
        return 2

    def progress(msg: str) -> None:
        print(f"bench: {msg}", file=sys.stderr, flush=True)

    result: dict[str, Any] = {
        "machine": machine(),
        "options": {"sockimux": procs.sockimux_command(), "quick": args.quick, "repeat": args.repeat,
                    "sections": sections, "socat_block": args.socat_block},
        "sections": {},
    }
    failed = False
    tmp = Path(tempfile.mkdtemp(prefix="sockimux-bench-"))
    payloads: list[Payload] = []

    @contextlib.contextmanager
    def scratch_payload(name: str, nbytes: int) -> Iterator[Payload]:
        """Random bytes in the payload directory for one section, removed after it."""
        pdir = payload_dir(args.payload_dir)
        progress(f"writing {nbytes / MiB:g} MiB of random payload in {pdir}")
        payload = make_payload(pdir, f"sockimux-bench-{os.getpid()}-{name}", nbytes)
        payloads.append(payload)
        try:
            yield payload
        finally:
            payload.path.unlink(missing_ok=True)

    def section(name: str, body: Callable[[], dict[str, Any]]) -> None:
        nonlocal failed
        t = time.monotonic()
        try:
            result["sections"][name] = body()
        except BenchError as exc:
            failed = True
            result["sections"][name] = {"error": str(exc)}
            progress(f"{name} FAILED: {exc}")
        result["sections"][name]["wall_s"] = round(time.monotonic() - t, 1)

    try:
        def transfers(module: Any, counts: list[int]) -> dict[str, Any]:
            """bulk and paths: the same payload size and options."""
            timeout = args.timeout or 60.0 + size / 5e6
            with scratch_payload(module.__name__, size) as payload:
                r = module.measure(tmp, payload, counts, args.repeat, args.socat_block,
                                   args.verify == "sha256", timeout, progress)
            return {"bytes": size, "bytes_mib": size / MiB, "payload_dir": str(payload.path.parent),
                    "verify": args.verify, "repeat": args.repeat, "timeout_s": timeout,
                    "describe": module.describe(args.socat_block), **r}

        if "bulk" in sections:
            section("bulk", lambda: transfers(bulk, args.subflows))

        if "dialed" in sections:
            section("dialed", lambda: transfers(dialed, args.subflows))

        if "paths" in sections:
            section("paths", lambda: transfers(paths, args.paths_subflows))

        if "stats" in sections:
            def run_stats() -> dict[str, Any]:
                timeout = args.timeout or 60.0 + size / 5e6
                with scratch_payload("stats", size) as payload:
                    r = stats_cost.measure(tmp, payload, args.stats_subflows, args.stats_rounds,
                                           args.socat_block, timeout, args.stats_interval, progress)
                return {"bytes": size, "bytes_mib": size / MiB, "payload_dir": str(payload.path.parent),
                        "timeout_s": timeout, "describe": stats_cost.describe(args.socat_block,
                                                                               args.stats_interval), **r}
            section("stats", run_stats)

        if "latency" in sections:
            def run_latency() -> dict[str, Any]:
                r = latency.measure(tmp, args.latency_subflows, args.repeat, args.socat_block,
                                    args.round_trips, args.warmup, progress)
                return {"describe": latency.describe(args.latency_subflows, args.socat_block), **r}
            section("latency", run_latency)

        if "startup" in sections:
            def run_startup() -> dict[str, Any]:
                sub = tmp / "startup"
                sub.mkdir()
                runs = args.startup_runs or (10 if args.quick else 20)
                return {"describe": startup.describe(), **startup.measure(sub, runs, progress)}
            section("startup", run_startup)

        if "ssh" in sections:
            def run_ssh() -> dict[str, Any]:
                sub = tmp / "ssh"
                sub.mkdir()
                ssh_size = min(size, 512 * MiB)
                with scratch_payload("ssh", ssh_size) as payload:
                    r = ssh_copy.measure(sub, payload, [1, 4], args.repeat,
                                         args.timeout or 60.0 + ssh_size / 5e6, progress)
                return {"bytes_mib": ssh_size / MiB, "repeat": args.repeat,
                        "describe": ssh_copy.describe(), **r}
            section("ssh", run_ssh)

        if "stall" in sections:
            def run_stall() -> dict[str, Any]:
                r = stall.measure(tmp, 4, args.repeat, args.socat_block, stall_seconds, progress)
                return {"describe": stall.describe(4, args.socat_block), **r}
            section("stall", run_stall)

        if "memory" in sections:
            def run_memory() -> dict[str, Any]:
                sub = tmp / "memory"
                sub.mkdir()
                with scratch_payload("memory", mem_size) as payload:
                    r = memory.measure(sub, payload, 4, args.socat_block, args.memory_rate, mem_seconds,
                                       progress)
                return {"describe": memory.describe(4, args.socat_block, args.memory_rate), **r}
            section("memory", run_memory)

        if "links" in sections:
            why = links.available(args.netlab)
            if why is not None:
                result["sections"]["links"] = {"skipped": why}
                progress(f"links skipped: {why}")
            else:
                def run_links() -> dict[str, Any]:
                    nonlocal failed
                    sets = []
                    for rates in args.link_sets or LINK_SETS:
                        try:
                            r = links.measure(args.netlab, rates, args.links_timeout, progress)
                            sets.append({"links": rates, **r})
                            progress(f"links {rates}: imux {render.pct(r['imux_of_link_sum'])} of the sum, "
                                     f"imux/mptcp {render.x(r['ratio_imux_mptcp'])}, verdict {r['verdict']}")
                        except BenchError as exc:
                            failed = True
                            sets.append({"links": rates, "error": str(exc)})
                            progress(f"links {rates} FAILED: {exc}")
                    return {"sets": sets}
                section("links", run_links)
    except KeyboardInterrupt:
        progress("interrupted; children stopped")
        return 130
    finally:
        for p in payloads:
            p.path.unlink(missing_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)

    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(render.render(result))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
