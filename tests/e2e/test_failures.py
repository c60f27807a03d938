"""Subflows die, freeze or all vanish mid-transfer: not one byte lost, repeated or reordered."""

from __future__ import annotations

import contextlib
import os
import random
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import IO

import pytest

from .harness import (
    Peer,
    Relay,
    feed,
    kill,
    random_file,
    replace_relays,
    require,
    sha256_file,
    socat_subflow,
    wait_for,
)

MB = 1 << 20


class Transfer:
    """Two peers sending paced random payloads both ways."""

    def __init__(self, tmp: Path, size: int, seconds: float, seed: int,
                 stdout_pipe: int | None = None) -> None:
        require("socat")
        self.a_in = random_file(tmp / "a.in", size, seed=seed)
        self.b_in = random_file(tmp / "b.in", size // 2, seed=seed + 1)
        self.a = Peer(tmp, "a", None, "-v", stdin_pipe=True, stdout_pipe=stdout_pipe)
        self.b = Peer(tmp, "b", None, "-v", stdin_pipe=True, stdout_pipe=stdout_pipe)
        self.feeders = [feed(self.a.proc, self.a_in.read_bytes(), seconds),
                        feed(self.b.proc, self.b_in.read_bytes(), seconds)]
        self.relays: list[subprocess.Popen[bytes]] = []

    def add(self, count: int = 1) -> None:
        self.relays += [socat_subflow(self.a, self.b) for _ in range(count)]

    def live(self) -> list[subprocess.Popen[bytes]]:
        return [r for r in self.relays if r.poll() is None]

    def check(self, timeout: float = 60) -> None:
        assert self.a.wait(timeout) == 0, self.a.stderr()
        assert self.b.wait(timeout) == 0, self.b.stderr()
        assert sha256_file(self.b.out) == sha256_file(self.a_in), "A->B differs"
        assert sha256_file(self.a.out) == sha256_file(self.b_in), "B->A differs"
        assert "Traceback" not in self.a.stderr() + self.b.stderr()

    def close(self) -> None:
        for r in self.relays:
            kill(r)
        self.a.close()
        self.b.close()


@pytest.mark.parametrize("seed", range(20))
def test_random_subflow_kills(tmp_path: Path, seed: int) -> None:
    """Kill socat subflows at random moments, add new ones at random; both streams
    arrive intact.  STDOUT is a file, or a pipe (odd seeds; bodies that continue
    the stream are then spliced to it) of 1 MiB or the default 64 KiB."""
    rng = random.Random(seed)
    pipe = None if seed % 2 == 0 else (1 << 20 if seed % 4 == 1 else 0)
    t = Transfer(tmp_path, size=6 * MB, seconds=1.5, seed=seed, stdout_pipe=pipe)
    try:
        t.add(rng.randint(2, 6))
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(0.02, 0.25))
            live = t.live()
            if live and rng.random() < 0.6:
                kill(rng.choice(live))
            if len(t.live()) == 0 or rng.random() < 0.4:
                t.add(rng.randint(1, 2))
        if not t.live():
            t.add()
        t.check()
    except BaseException:
        print(f"random kill schedule failed with seed={seed}")
        raise
    finally:
        t.close()


def test_frozen_subflow_is_dropped_and_its_data_resent(tmp_path: Path) -> None:
    """A subflow that stops forwarding without closing is detected and its data re-sent.

    The input is paced over 6 s, so both sides are still busy when their
    stall timers run out: with head-of-line copies on the other subflows, a
    shorter transfer can finish before one side has noticed."""
    t = Transfer(tmp_path, size=8 * MB, seconds=6.0, seed=100)
    relay = Relay(t.a, t.b)
    try:
        t.add(2)
        wait_for(lambda: t.b.out.stat().st_size > MB, 20, "data to flow")
        frozen_at = time.monotonic()
        relay.freeze()
        wait_for(lambda: "stalled" in t.a.stderr() and "stalled" in t.b.stderr(), 10,
                 "both sides to detect the stall")
        detected = time.monotonic() - frozen_at
        assert detected < 3.0, f"stall detected after {detected:.1f} s"
        t.check()
    finally:
        relay.close()
        t.close()


def test_all_subflows_killed_then_rejoin(tmp_path: Path) -> None:
    """Make after break: zero subflows for 2 s, then new ones; the stream resumes exactly."""
    t = Transfer(tmp_path, size=8 * MB, seconds=1.5, seed=200)
    try:
        t.add(4)
        wait_for(lambda: t.b.out.stat().st_size > MB, 20, "data to flow")
        for r in t.live():
            kill(r)
        time.sleep(2.0)
        assert t.a.proc.poll() is None and t.b.proc.poll() is None
        t.add(3)
        t.check()
        # Both sides waited with no subflow and resumed (whether bytes were in
        # flight at the kill, and so re-sent, depends on timing).
        assert "resuming" in t.a.stderr() and "resuming" in t.b.stderr()
    finally:
        t.close()


def test_all_but_one_killed(tmp_path: Path) -> None:
    t = Transfer(tmp_path, size=8 * MB, seconds=1.0, seed=300)
    try:
        t.add(6)
        wait_for(lambda: t.b.out.stat().st_size > MB, 20, "data to flow")
        for r in t.live()[1:]:
            kill(r)
        t.check()
    finally:
        t.close()


MOVED = re.compile(r"received (\d+) written \((\d+) of them moved straight to STDOUT, "
                   r"(\d+) held in pipes until their turn\)")


@pytest.mark.parametrize("subflows", [1, 4])
def test_a_stdout_file_takes_spliced_bodies_exactly_while_subflows_die(tmp_path: Path,
                                                                       subflows: int) -> None:
    """STDOUT a regular file: DATA bodies that continue the stream are spliced
    into it (socket, a pipe of sockimux's own, the file), the rest written by
    the event loop.  Subflows killed mid-transfer, often mid-body, lose,
    repeat or reorder nothing."""
    t = Transfer(tmp_path, size=32 * MB, seconds=2.5, seed=500 + subflows)
    try:
        t.add(subflows)
        for _ in range(3):
            wait_for(lambda: t.b.out.stat().st_size > MB, 20, "data to flow")
            time.sleep(0.4)
            kill(t.live()[0])
            t.add()
        t.check()
        found = MOVED.search(t.b.stderr())
        assert found, t.b.stderr()
        written, moved, parked = map(int, found.groups())
        assert written == 32 * MB and moved + parked > 0, t.b.stderr()
        if subflows == 1:
            assert moved > 0, t.b.stderr()
    finally:
        t.close()


@pytest.mark.parametrize("subflows", [1, 4])
def test_a_file_on_stdin_is_resent_from_the_file_when_subflows_die(tmp_path: Path,
                                                                  subflows: int) -> None:
    """A regular file on STDIN stays in the file until sent (sendfile; what
    the socket does not take at once is held until it is writable): bytes
    lost with a killed subflow, held ones among them, are re-sent from the
    file.  B's STDOUT is read at 16 MB/s so the kills land mid-transfer."""
    require("socat")
    a_in = random_file(tmp_path / "a.in", 48 * MB, seed=400)
    a = Peer(tmp_path, "a", a_in, "-v")
    b = Peer(tmp_path, "b", None, "-v", stdout_pipe=1 << 20, stdout_rate=16e6)
    relays = [socat_subflow(a, b) for _ in range(subflows)]
    try:
        replace_relays(a, b, relays, 3, written=MB, pause=0.4)
        assert a.wait(60) == 0, a.stderr()
        assert b.wait(60) == 0, b.stderr()
        assert sha256_file(b.out) == sha256_file(a_in)
        resent = re.search(r"re-sent (\d+) for lost subflows", a.stderr())
        assert resent and int(resent.group(1)) > 0, a.stderr()
    finally:
        for r in relays:
            kill(r)
        a.close(), b.close()


@pytest.mark.parametrize("subflows", [1, 4])
def test_a_pipe_on_stdin_in_bulk_is_resent_from_its_spool_when_subflows_die(
        tmp_path: Path, subflows: int) -> None:
    """A pipe on STDIN kept full (``cat file |``) is spooled: its pages are
    kept in pipes of A's own until acknowledged and sent by splice().  Bytes
    lost with a killed subflow, held ones among them, are re-sent from the
    spool: B's output is exact.  B's STDOUT is read at 16 MB/s so the kills
    land mid-transfer."""
    require("socat")
    a_in = random_file(tmp_path / "a.in", 48 * MB, seed=410)
    a = Peer(tmp_path, "a", None, "-vv", stdin_pipe=True)
    b = Peer(tmp_path, "b", None, "-v", stdout_pipe=1 << 20, stdout_rate=16e6)
    assert a.proc.stdin is not None
    writer = threading.Thread(target=_write_and_close, args=(a.proc.stdin, a_in.read_bytes()),
                              daemon=True)
    writer.start()
    relays = [socat_subflow(a, b) for _ in range(subflows)]
    try:
        for _ in range(3):
            wait_for(lambda: b.out.stat().st_size > MB, 20, "data to flow")
            time.sleep(0.4)
            kill(relays.pop(0))
            relays.append(socat_subflow(a, b))
        assert a.wait(60) == 0, a.stderr()
        assert b.wait(60) == 0, b.stderr()
        assert sha256_file(b.out) == sha256_file(a_in)
        assert "STDIN in bulk: spooled" in a.stderr()
        resent = re.search(r"re-sent (\d+) for lost subflows", a.stderr())
        assert resent and int(resent.group(1)) > 0, a.stderr()
        assert "Traceback" not in a.stderr()
    finally:
        for r in relays:
            kill(r)
        a.close(), b.close()


def _write_and_close(pipe: IO[bytes], data: bytes) -> None:
    with contextlib.suppress(OSError):  # (A gone: the test says why)
        pipe.write(data)
        pipe.close()


def test_a_file_on_stdin_truncated_before_it_is_sent_exits_7(tmp_path: Path) -> None:
    """The bytes of a regular file on STDIN are read when sent: if the file
    lost them meanwhile, the session ends with one clear line and exit 7
    (never with other bytes in their place)."""
    require("socat")
    a_in = random_file(tmp_path / "a.in", 64 * MB, seed=500)
    a = Peer(tmp_path, "a", a_in)
    b = Peer(tmp_path, "b", None)
    try:
        time.sleep(0.5)  # A has taken its window's worth of the file (as extents)
        os.truncate(a_in, 1 * MB)
        relay = socat_subflow(a, b)
        assert a.wait(30) == 7, a.stderr()
        assert "STDIN (a regular file) no longer holds the bytes" in a.stderr()
        assert "Traceback" not in a.stderr()
        assert b.wait(30) == 5, b.stderr()  # the peer was told: it ends as aborted
        assert b.out.read_bytes() == a_in.read_bytes()[: len(b.out.read_bytes())]
        kill(relay)
    finally:
        a.close(), b.close()


def test_no_subflow_timeout_exits_6(tmp_path: Path) -> None:
    require("socat")
    a = Peer(tmp_path, "a", None, "--no-subflow-timeout", "1")
    try:
        start = time.monotonic()
        assert a.wait(10) == 6
        assert time.monotonic() - start < 5
        assert "no subflow" in a.stderr()
    finally:
        a.close()
