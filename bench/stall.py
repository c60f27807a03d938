"""Stall: a byte echoed every 20 ms while subflows silently stall and new ones join.

The echo topology of latency.py (the bench writes into sockimux A's STDIN;
sockimux B hands the stream to ``cat``, which sends it back), 4 subflows,
but paced: one byte every PERIOD (20 ms, as keystrokes or a heartbeat) on
a fixed schedule, whatever has come back, so a late echo does not hold
back the next byte and every byte sent during a stall shows it.  The
stream is in order, so the n-th byte back is the echo of the n-th sent;
its echo time runs from just before its write to the read that returned
it.  Echoes sent in the first WARMUP (subflows joining) are dropped.

Every STALL_EVERY (2 s) one subflow silently stops forwarding: the bench
stops a relay with SIGSTOP, so it keeps both its connections open and
moves nothing (a path that died without a word: no FIN, no RST), and it
stays stopped to the end; at the same moment a new relay (subflow) joins.
The relay stopped is the live one that moved the most bytes since the last
stall (``rchar`` in /proc/PID/io): the one carrying the echo, whichever
sockimux chose (stopping an idle one would test nothing).  It is stopped
just after a byte is written, so that byte is on its way when the path
dies, as happens to a path that dies under traffic (stopped between two
bytes, with no byte in flight, a stall may go unfelt if the next byte
takes another subflow).

Three kinds of run, ``--stall-seconds`` each, alternated ``--repeat`` times:

``stall``  sockimux with the stalls above;
``quiet``  sockimux, the same echo, no stall;
``socat``  the same echo through socat alone (latency.py's reference).

Reported, over all samples of a kind: echo times in ms (p50, p99, max) and
how many exceeded SLOW_MS (target: none with stalls, on loopback); the
stalls made, with the worst echo and the echoes over SLOW_MS sent after
each (until the next), and how often sockimux logged dropping a subflow
as stalled (both sides log each drop).
socat alone has one connection and nothing to stall, so these figures are
absolute, and the ratio reported is the baseline's: ``quiet`` over
``socat``, p50 and p99.  After each sockimux run the session must end as
in latency.py (A's STDIN closed: A's STDOUT ends, both exit 0), with the
stalled relays still stopped.
"""

from __future__ import annotations

import os
import re
import select
import signal
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from latency import Echo, percentile, socat_echo, sockimux_echo
from procs import Child

PERIOD = 0.020  # s between two bytes sent
STALL_EVERY = 2.0  # s between two stalls
WARMUP = 0.5  # s of echoes dropped at the start
SLOW_MS = 100.0  # the target: no echo slower than this
DRAIN = 30.0  # s after the last byte sent for all echoes to be back
DROPPED = re.compile(r"subflow \d+ stalled")
KINDS = ("stall", "quiet", "socat")


def describe(subflows: int, block: int) -> dict[str, str]:
    return {
        "stall": (f"bench <-> sockimux A.sock; {subflows} x socat -b{block} UNIX-CONNECT:A.sock "
                  f"UNIX-CONNECT:B.sock; sockimux B.sock <-> cat; every {STALL_EVERY:g} s the relay "
                  f"that moved most is stopped (SIGSTOP) and a new one joins"),
        "quiet": "the same, no stall",
        "socat": (f"bench <-> socat -b{block} STDIO UNIX-LISTEN:a.sock; one relay; "
                  f"socat -b{block} UNIX-LISTEN:b.sock EXEC:cat,pipes"),
    }


def _rchar(child: Child) -> int:
    """Bytes the relay has read so far (0 if /proc does not say)."""
    try:
        with open(f"/proc/{child.pid}/io") as f:
            for line in f:
                if line.startswith("rchar:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Staller:
    """Every STALL_EVERY, stops the relay that moved the most since the last stall and
    lets a new one join."""

    def __init__(self, echo: Echo) -> None:
        assert echo.add_relay is not None
        self.echo = echo
        self.add_relay = echo.add_relay
        self.stopped: set[int] = set()
        self.next_at = STALL_EVERY
        self.events: list[dict[str, Any]] = []
        self.seen = {r.pid: _rchar(r) for r in echo.relays}

    def __call__(self, elapsed: float) -> None:
        if elapsed < self.next_at:
            return
        self.next_at += STALL_EVERY
        live = [r for r in self.echo.relays if r.pid not in self.stopped and r.proc.poll() is None]
        if not live:
            return
        now = {r.pid: _rchar(r) for r in live}
        moved = {r.pid: now[r.pid] - self.seen.get(r.pid, 0) for r in live}
        victim = max(live, key=lambda r: moved[r.pid])  # the oldest, if none moved
        os.kill(victim.pid, signal.SIGSTOP)  # our child, not yet reaped (poll() above)
        self.stopped.add(victim.pid)
        joined = self.add_relay()
        self.seen = {**now, joined.pid: 0}
        self.events.append({"t_s": round(elapsed, 3), "stopped": victim.name, "joined": joined.name,
                            "moved_bytes": {r.name: moved[r.pid] for r in live}})


def _paced(echo: Echo, seconds: float, on_tick: Callable[[float], None] | None) -> list[tuple[float, int]]:
    """(seconds into the run when sent, echo time in ns) for one byte every PERIOD for
    ``seconds``, warm-up dropped; ``on_tick`` (seconds into the run) is called just after
    each byte is written."""
    try:
        return [s for s in _echoes(echo, seconds, on_tick) if s[0] >= WARMUP]
    except OSError as exc:
        raise echo.error(str(exc)) from None


def _echoes(echo: Echo, seconds: float, on_tick: Callable[[float], None] | None) -> list[tuple[float, int]]:
    clock = time.perf_counter_ns
    period = int(PERIOD * 1e9)
    total = int(seconds / PERIOD)
    pending: deque[int] = deque()  # when each byte not yet back was written
    samples: list[tuple[float, int]] = []
    sent = received = 0
    start = clock()
    give_up = start + total * period + int(DRAIN * 1e9)
    while received < total:
        now = clock()
        due = start + sent * period
        if sent < total and now >= due:
            pending.append(clock())
            os.write(echo.to_near, bytes((sent & 0xFF,)))
            sent += 1
            if on_tick is not None:
                on_tick((now - start) / 1e9)
            continue
        if now > give_up:
            raise echo.error(f"{total - received} echo(es) not back {DRAIN:g} s after the last byte sent")
        wait = (due if sent < total else give_up) - now
        if not select.select([echo.from_near], [], [], wait / 1e9)[0]:
            continue
        data = os.read(echo.from_near, 4096)
        t = clock()
        if not data:
            raise echo.error(f"echo ended (EOF) after {received} of {total} bytes")
        for byte in data:
            if not pending or byte != received & 0xFF:
                raise echo.error(f"echo {received} returned {byte}, expected {received & 0xFF}")
            written = pending.popleft()
            samples.append(((written - start) / 1e9, t - written))
            received += 1
    return samples


class Run:
    """One run of a kind: its driver, and what the report needs afterwards."""

    def __init__(self, kind: str, seconds: float) -> None:
        self.kind = kind
        self.seconds = seconds
        self.staller: Staller | None = None

    def drive(self, echo: Echo) -> list[tuple[float, int]]:
        if self.kind == "stall":
            self.staller = Staller(echo)
        return _paced(echo, self.seconds, self.staller)


def _after(samples: list[tuple[float, int]], start: float, end: float) -> dict[str, Any]:
    """The echoes of the bytes sent in [start, end): the worst, and how many were slow."""
    ms = [ns / 1e6 for t, ns in samples if start <= t < end]
    return {"worst_ms_after": round(max(ms, default=0.0), 1),
            "over_slow_ms_after": sum(1 for v in ms if v > SLOW_MS)}


def _stats(samples: list[tuple[float, int]]) -> dict[str, Any]:
    ms = sorted(ns / 1e6 for _, ns in samples)
    return {"echoes": len(ms), "p50_ms": percentile(ms, 0.5), "p99_ms": percentile(ms, 0.99),
            "max_ms": ms[-1], "over_slow_ms": sum(1 for v in ms if v > SLOW_MS)}


def measure(tmp: Path, subflows: int, repeat: int, block: int, seconds: float,
            progress: Any) -> dict[str, Any]:
    samples: dict[str, list[tuple[float, int]]] = {k: [] for k in KINDS}
    events: list[dict[str, Any]] = []
    dropped = 0
    for rep in range(repeat):
        for kind in KINDS:
            sub = tmp / f"stall-{rep}-{kind}"
            sub.mkdir()
            run = Run(kind, seconds)
            if kind == "socat":
                got = socat_echo(sub, block, "stall: socat reference", run.drive)
            else:
                got = sockimux_echo(sub, subflows, block, f"stall: sockimux, {kind}, {subflows} subflows",
                                    run.drive)
            samples[kind].extend(got)
            if run.staller is not None:
                events += [{"run": rep, **e, **_after(got, e["t_s"], e["t_s"] + STALL_EVERY)}
                           for e in run.staller.events]
                logs = [side.stderr_tail(1 << 20) for side in run.staller.echo.blame]
                dropped += sum(len(DROPPED.findall(text)) for text in logs)
            s = _stats(got)
            progress(f"stall {rep + 1}/{repeat} {kind:6} p50 {s['p50_ms']:.2f} ms p99 {s['p99_ms']:.2f} ms "
                     f"max {s['max_ms']:.1f} ms, {s['over_slow_ms']} over {SLOW_MS:g} ms")
    stats = {k: _stats(v) for k, v in samples.items()}
    return {
        "subflows": subflows, "period_ms": PERIOD * 1e3, "stall_every_s": STALL_EVERY,
        "seconds_per_run": seconds, "warmup_s": WARMUP, "runs_per_kind": repeat, "slow_ms": SLOW_MS,
        **stats,
        "stalls": len(events),
        "stalled_drops_logged": dropped,
        "target_met": stats["stall"]["over_slow_ms"] == 0,
        "ratio_quiet_p50": stats["quiet"]["p50_ms"] / stats["socat"]["p50_ms"],
        "ratio_quiet_p99": stats["quiet"]["p99_ms"] / stats["socat"]["p99_ms"],
        "stall_events": events,
    }
