"""Both processes stopped at once (SIGSTOP, as a debugger or a paused
container does): on resume no healthy subflow is dropped as stalled.
A single stopped side still has its subflows dropped by the other."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from .harness import Peer, feed, kill, random_file, require, sha256_file, socat_subflow, wait_for

MB = 1 << 20
STALL = ("--stall-timeout", "1")
PAUSE = 3.0  # seconds: three stall timeouts


class PacedPair:
    """A and B sending paced streams both ways over ``subflows`` socat subflows."""

    def __init__(self, tmp: Path, seconds: float, subflows: int) -> None:
        require("socat")
        self.a_in = random_file(tmp / "a.in", 8 * MB, seed=1)
        self.b_in = random_file(tmp / "b.in", 4 * MB, seed=2)
        self.a = Peer(tmp, "a", None, "-v", *STALL, stdin_pipe=True)
        self.b = Peer(tmp, "b", None, "-v", *STALL, stdin_pipe=True)
        feed(self.a.proc, self.a_in.read_bytes(), seconds)
        feed(self.b.proc, self.b_in.read_bytes(), seconds)
        self.relays = [socat_subflow(self.a, self.b) for _ in range(subflows)]
        wait_for(lambda: self.b.out.stat().st_size > MB and self.a.out.stat().st_size > MB // 2,
                 20, "data to flow both ways")

    def check(self) -> None:
        assert self.a.wait(60) == 0, self.a.stderr()
        assert self.b.wait(60) == 0, self.b.stderr()
        assert sha256_file(self.b.out) == sha256_file(self.a_in), "A->B differs"
        assert sha256_file(self.a.out) == sha256_file(self.b_in), "B->A differs"

    def close(self) -> None:
        for r in self.relays:
            kill(r)
        self.a.close()
        self.b.close()


def test_both_ends_stopped_at_once_keep_their_subflows(tmp_path: Path) -> None:
    """Both sockimux processes (not the socats) stopped for three stall
    timeouts.  Each used to drop every subflow on resume, its timers run
    before it read what had arrived for it."""
    t = PacedPair(tmp_path, seconds=5.0, subflows=3)
    try:
        for p in (t.a, t.b):
            p.proc.send_signal(signal.SIGSTOP)
        time.sleep(PAUSE)
        for p in (t.a, t.b):
            p.proc.send_signal(signal.SIGCONT)
        t.check()
        logs = t.a.stderr() + t.b.stderr()
        assert "stalled" not in logs, logs
        assert "not counted against any subflow" in logs  # the pause was seen as one
        assert logs.count("joined (") == 6, logs  # and no subflow was replaced
    finally:
        t.close()


def test_one_end_stopped_has_its_subflows_dropped_by_the_other(tmp_path: Path) -> None:
    """Only B stopped: A, running, drops the subflows as before (B does not
    answer), B learns it when it resumes, and new subflows finish the job."""
    t = PacedPair(tmp_path, seconds=5.0, subflows=3)
    try:
        t.b.proc.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        wait_for(lambda: t.a.stderr().count("stalled") == 3, 10, "A to drop the 3 subflows")
        assert time.monotonic() - stopped < 2.5
        t.b.proc.send_signal(signal.SIGCONT)
        t.relays += [socat_subflow(t.a, t.b) for _ in range(2)]
        t.check()
    finally:
        t.b.proc.send_signal(signal.SIGCONT)
        t.close()
