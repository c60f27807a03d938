"""Keystrokes while a subflow silently stops (issue 15 target 3).

A real pair, ``cat`` behind B (an echo), three socat relays.  A byte is
written every 20 ms on a fixed schedule; twice, just after a byte is
written, the relay that moved the most since the start (or the last stop)
is stopped with SIGSTOP: its connections stay open and nothing moves, no
FIN, no RST, as a path that died under traffic.  The stall timeout is 20 s,
so only the probe timeout can explain an echo that comes back in time:
before it, the byte on the stopped relay (and the keystrokes after it,
which went to the same relay while its kernel buffers took them) came
back only once the subflow was dropped, 20 s later.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from collections import deque
from pathlib import Path

import pytest

from .harness import SOCKIMUX, kill, require, wait_for

STALL_TIMEOUT = 20.0
BOUND = STALL_TIMEOUT / 10  # every echo back within this: far above any probe timeout
PERIOD = 0.020
RELAYS = 3
STOP_AT = (1.0, 2.5)  # seconds into the paced echo
SECONDS = 4.0


def _rchar(pid: int) -> int:
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("rchar:"):
                return int(line.split()[1])
    raise AssertionError(f"no rchar in /proc/{pid}/io")


class EchoPair:
    def __init__(self, tmp: Path) -> None:
        self.socat = require("socat")
        self.cat = require("cat")
        self.a_sock, self.b_sock = str(tmp / "a.sock"), str(tmp / "b.sock")
        self.a_err, self.b_err = open(tmp / "a.err", "wb"), open(tmp / "b.err", "wb")
        args = ["-v", "--stall-timeout", str(STALL_TIMEOUT)]
        self.a = subprocess.Popen([SOCKIMUX, *args, self.a_sock], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=self.a_err)
        b_out_r, b_out_w = os.pipe()  # B's STDOUT -> cat
        cat_out_r, cat_out_w = os.pipe()  # cat -> B's STDIN
        self.b = subprocess.Popen([SOCKIMUX, *args, self.b_sock], stdin=cat_out_r, stdout=b_out_w,
                                  stderr=self.b_err)
        self.echo = subprocess.Popen([self.cat], stdin=b_out_r, stdout=cat_out_w)
        for fd in (b_out_r, b_out_w, cat_out_r, cat_out_w):
            os.close(fd)
        wait_for(lambda: os.path.exists(self.a_sock) and os.path.exists(self.b_sock), 10,
                 "both ends to listen")
        self.relays = [self.relay() for _ in range(RELAYS)]
        self.stopped: list[subprocess.Popen[bytes]] = []
        self.seen = {r.pid: 0 for r in self.relays}

    def relay(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen([self.socat, f"UNIX-CONNECT:{self.a_sock}", f"UNIX-CONNECT:{self.b_sock}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop_busiest(self) -> None:
        live = [r for r in self.relays if r not in self.stopped]
        now = {r.pid: _rchar(r.pid) for r in live}
        victim = max(live, key=lambda r: now[r.pid] - self.seen[r.pid])
        victim.send_signal(signal.SIGSTOP)
        self.stopped.append(victim)
        self.seen = now

    def paced_echo(self, seconds: float) -> list[float]:
        """One byte every PERIOD for ``seconds``, stopping the busiest relay at
        STOP_AT; the echo time of each byte.  Fails as soon as one is BOUND late."""
        assert self.a.stdin is not None and self.a.stdout is not None
        to_a, from_a = self.a.stdin.fileno(), self.a.stdout.fileno()
        total = int(seconds / PERIOD)
        stops = deque(STOP_AT)
        pending: deque[float] = deque()
        times: list[float] = []
        sent = 0
        start = time.monotonic()
        while len(times) < total:
            now = time.monotonic()
            if pending and now - pending[0] > BOUND:
                pytest.fail(f"echo {len(times)} not back after {BOUND:g} s ({len(times)} of {sent} back; "
                            f"stall timeout {STALL_TIMEOUT:g} s)\nA:\n{self.logs()}")
            due = start + sent * PERIOD
            if sent < total and now >= due:
                pending.append(time.monotonic())
                os.write(to_a, bytes((sent & 0xFF,)))
                sent += 1
                if stops and now - start >= stops[0]:
                    stops.popleft()
                    self.stop_busiest()
                continue
            wait = max(0.0, min(due - now if sent < total else BOUND, 0.05))
            if not select.select([from_a], [], [], wait)[0]:
                continue
            data = os.read(from_a, 4096)
            assert data, f"A's STDOUT ended after {len(times)} echoes\n{self.logs()}"
            t = time.monotonic()
            for byte in data:
                assert pending and byte == len(times) & 0xFF, f"echo {len(times)} returned {byte}"
                times.append(t - pending.popleft())
        return times

    def logs(self) -> str:
        self.a_err.flush()
        self.b_err.flush()
        return (Path(self.a_err.name).read_text(errors="replace") + "B:\n"
                + Path(self.b_err.name).read_text(errors="replace"))

    def finish(self) -> None:
        """Drop the stopped relays, close A's input: both ends exit 0."""
        assert self.a.stdin is not None and self.a.stdout is not None
        for r in self.stopped:
            kill(r)
        self.a.stdin.close()
        assert self.a.stdout.read() == b""
        assert self.a.wait(30) == 0, self.logs()
        assert self.b.wait(30) == 0, self.logs()

    def close(self) -> None:
        for p in (*self.relays, self.a, self.b, self.echo):
            kill(p)
        for f in (self.a_err, self.b_err):
            f.close()
        if self.a.stdout is not None:
            self.a.stdout.close()


def test_keystrokes_come_back_while_the_relay_carrying_them_is_stopped(tmp_path: Path) -> None:
    pair = EchoPair(tmp_path)
    try:
        pair.paced_echo(0.5)  # every relay joined, round trips measured
        times = pair.paced_echo(SECONDS)
        assert len(pair.stopped) == len(STOP_AT)
        logs = pair.logs()
        assert "stalled" not in logs, logs  # the stall timeout explains nothing here
        assert max(times) < BOUND
        pair.finish()
    finally:
        pair.close()
