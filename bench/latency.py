"""Latency: 1-byte echo round trips, sockimux pair vs socat alone.

The bench writes one byte into the near end's STDIN pipe and blocks until
it reads it back from the near end's STDOUT pipe; the far end hands the
stream to ``cat``, which sends it straight back.

sockimux::

    bench -> pipe -> sockimux A.sock -> pipe -> bench
                     N x socat -b BLOCK UNIX-CONNECT:A.sock UNIX-CONNECT:B.sock
                     sockimux B.sock: STDOUT -> pipe -> cat -> pipe -> STDIN

reference, socat alone::

    bench -> pipe -> socat -b BLOCK STDIO UNIX-LISTEN:a.sock -> pipe -> bench
                     socat -b BLOCK UNIX-CONNECT:a.sock UNIX-CONNECT:b.sock
                     socat -b BLOCK UNIX-LISTEN:b.sock EXEC:cat,pipes

``cat`` is joined by two pipes on both sides, as in the sockimux topology
(socat's EXEC uses a socketpair unless told ``pipes``; socat alone echoes
faster over pipes: p50 138 against 155 us in 10 alternated rounds, so the
socketpair flattered the ratio).

Round trips are timed with ``perf_counter_ns`` from before the write to
after the read, after a warm-up whose samples are dropped.  Runs alternate
(sockimux, socat, ...); percentiles are over all samples of a kind.
After the last round trip the bench closes sockimux A's STDIN: both
sockimux processes must then end the session and exit 0.
"""

from __future__ import annotations

import math
import os
import select
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from procs import (
    BenchError,
    Child,
    Procs,
    Watchdog,
    close_fds,
    pipe,
    sockimux_argv,
    wait_exit,
    wait_listening,
)

T = TypeVar("T")


def describe(subflows: int, block: int) -> dict[str, str]:
    return {
        "sockimux": (f"bench <-> sockimux A.sock; {subflows} x socat -b{block} UNIX-CONNECT:A.sock "
                     f"UNIX-CONNECT:B.sock; sockimux B.sock <-> cat (pipes)"),
        "reference": (f"bench <-> socat -b{block} STDIO UNIX-LISTEN:a.sock; socat -b{block} "
                      f"UNIX-CONNECT:a.sock UNIX-CONNECT:b.sock; "
                      f"socat -b{block} UNIX-LISTEN:b.sock EXEC:cat,pipes"),
    }


@dataclass
class Echo:
    """A running echo topology: each byte written to ``to_near`` comes back on ``from_near``."""

    what: str  # for error messages
    procs: Procs
    to_near: int
    from_near: int
    blame: list[Child]  # whose stderr an error message shows: the two endpoints
    relays: list[Child]
    add_relay: Callable[[], Child] | None = None  # another subflow joins (sockimux only)

    def error(self, why: str) -> BenchError:
        return BenchError(f"{self.what}: {why}\n" + "\n".join(c.describe() for c in self.blame))


def _round_trips(echo: Echo, count: int, warmup: int, timeout: float) -> list[int]:
    """Nanoseconds per round trip (warm-up dropped).  A stuck echo is cut by a watchdog
    that stops the children, so the blocking read sees EOF."""
    dog = Watchdog(timeout, echo.procs.close)
    samples: list[int] = []
    write, read, clock = os.write, os.read, time.perf_counter_ns
    to_near, from_near = echo.to_near, echo.from_near
    try:
        for i in range(warmup + count):
            byte = bytes((i & 0xFF,))
            t = clock()
            write(to_near, byte)
            got = read(from_near, 1)
            dt = clock() - t
            if got != byte:
                why = f"no echo within {timeout:g} s" if dog.expired else (
                    "echo ended (EOF)" if not got else f"echo returned {got!r}, expected {byte!r}")
                raise echo.error(f"round trip {i}: {why}")
            if i >= warmup:
                samples.append(dt)
    except OSError as exc:
        raise echo.error(str(exc)) from None
    finally:
        dog.cancel()
    return samples


def _drain_to_eof(fd: int, seconds: float) -> bool:
    """Read ``fd`` until EOF; False if that takes longer than ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if ready and not os.read(fd, 65536):
            return True
    return False


def sockimux_echo(tmp: Path, subflows: int, block: int, what: str, drive: Callable[[Echo], T]) -> T:
    """Run ``drive`` on the sockimux topology, then end the session: closing A's STDIN
    must end A's STDOUT, and both sides must exit 0."""
    with Procs(tmp) as procs:
        a_sock, b_sock = str(tmp / "A.sock"), str(tmp / "B.sock")
        to_a_r, to_a_w = pipe()
        from_a_r, from_a_w = pipe()
        b_to_cat_r, b_to_cat_w = pipe()
        cat_to_b_r, cat_to_b_w = pipe()
        try:
            try:
                a = procs.spawn("sockimux-A", sockimux_argv(a_sock), stdin=to_a_r, stdout=from_a_w)
                b = procs.spawn("sockimux-B", sockimux_argv(b_sock), stdin=cat_to_b_r, stdout=b_to_cat_w)
                procs.spawn("cat", ["cat"], stdin=b_to_cat_r, stdout=cat_to_b_w)
            finally:
                close_fds(to_a_r, from_a_w, b_to_cat_r, b_to_cat_w, cat_to_b_r, cat_to_b_w)
            wait_listening([(a, a_sock), (b, b_sock)])
            relay_err = procs.shared_stderr("relays")
            argv = ["socat", f"-b{block}", f"UNIX-CONNECT:{a_sock}", f"UNIX-CONNECT:{b_sock}"]
            relays: list[Child] = []

            def add_relay() -> Child:
                relays.append(procs.spawn(f"relay{len(relays)}", argv, stderr_file=relay_err))
                return relays[-1]

            for _ in range(subflows):
                add_relay()
            echo = Echo(what, procs, to_a_w, from_a_r, [a, b], relays, add_relay)
            result = drive(echo)
            close_fds(to_a_w)
            if not _drain_to_eof(from_a_r, 20):
                raise echo.error("A's STDOUT did not end within 20 s after its STDIN did")
            for side in (a, b):
                rc = wait_exit(side, 20)
                if rc != 0:
                    status = "did not exit within 20 s" if rc is None else f"exited {rc}"
                    raise echo.error(f"{side.name} {status} after the session ended")
            return result
        finally:
            close_fds(to_a_w, from_a_r)


def socat_echo(tmp: Path, block: int, what: str, drive: Callable[[Echo], T]) -> T:
    """Run ``drive`` on the socat-alone topology."""
    with Procs(tmp) as procs:
        a_sock, b_sock = str(tmp / "a.sock"), str(tmp / "b.sock")
        to_a_r, to_a_w = pipe()
        from_a_r, from_a_w = pipe()
        try:
            try:
                a = procs.spawn("socat-a", ["socat", f"-b{block}", "STDIO", f"UNIX-LISTEN:{a_sock}"],
                                stdin=to_a_r, stdout=from_a_w)
            finally:
                close_fds(to_a_r, from_a_w)
            b = procs.spawn("socat-b", ["socat", f"-b{block}", f"UNIX-LISTEN:{b_sock}",
                                        "EXEC:cat,pipes"])
            wait_listening([(a, a_sock), (b, b_sock)])
            relay = procs.spawn("relay", ["socat", f"-b{block}", f"UNIX-CONNECT:{a_sock}",
                                          f"UNIX-CONNECT:{b_sock}"])
            return drive(Echo(what, procs, to_a_w, from_a_r, [a, b, relay], [relay]))
        finally:
            close_fds(to_a_w, from_a_r)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))]


def measure(tmp: Path, subflows: int, repeat: int, block: int, count: int, warmup: int,
            progress: Any) -> dict[str, Any]:
    timeout = 60.0 + count * 0.05
    samples: dict[str, list[int]] = {"sockimux": [], "socat": []}

    def drive(echo: Echo) -> list[int]:
        return _round_trips(echo, count, warmup, timeout)

    for rep in range(repeat):
        for kind in ("sockimux", "socat"):
            sub = tmp / f"latency-{rep}-{kind}"
            sub.mkdir()
            if kind == "sockimux":
                got = sockimux_echo(sub, subflows, block, f"latency sockimux, {subflows} subflow(s)", drive)
            else:
                got = socat_echo(sub, block, "latency socat reference", drive)
            samples[kind].extend(got)
            s = sorted(got)
            progress(f"latency {rep + 1}/{repeat} {kind:8} p50 {percentile(s, 0.5) / 1e3:.0f} us "
                     f"p99 {percentile(s, 0.99) / 1e3:.0f} us")
    stats: dict[str, Any] = {}
    for kind, values in samples.items():
        s = sorted(values)
        stats[kind] = {"samples": len(s), "p50_us": percentile(s, 0.5) / 1e3,
                       "p99_us": percentile(s, 0.99) / 1e3, "max_us": s[-1] / 1e3,
                       "min_us": s[0] / 1e3}
    return {
        "subflows": subflows,
        "round_trips_per_run": count,
        "warmup_per_run": warmup,
        "runs_per_kind": repeat,
        **stats,
        "ratio_p50": stats["sockimux"]["p50_us"] / stats["socat"]["p50_us"],
        "ratio_p99": stats["sockimux"]["p99_us"] / stats["socat"]["p99_us"],
    }
