"""DATA bodies that arrive ahead of their turn wait in pipes of sockimux's own
(runtime/holding.py), not in its memory, and reach STDOUT in their turn:
exact, while subflows die, whether STDOUT keeps up or not."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .harness import Peer, kill, random_file, replace_relays, require, sha256_file, socat_subflow

MB = 1 << 20

TOTALS = re.compile(r"received (\d+) written \((\d+) of them moved straight to STDOUT, "
                    r"(\d+) held in pipes until their turn\)")


def exact(a: Peer, b: Peer, a_in: Path, size: int) -> tuple[int, int]:
    """Both ends exit 0 with B's output the input exactly; the bytes B
    moved straight to STDOUT and those it held in pipes (its -vv summary)."""
    assert a.wait(60) == 0, a.stderr()
    assert b.wait(60) == 0, b.stderr()
    assert sha256_file(b.out) == sha256_file(a_in)
    found = TOTALS.search(b.stderr())
    assert found, b.stderr()
    written, moved, held = map(int, found.groups())
    assert written == size, b.stderr()
    return moved, held


@pytest.mark.parametrize("stdout", ["pipe", "slow pipe", "file"])
def test_bodies_ahead_of_their_turn_wait_in_pipes_while_subflows_die(tmp_path: Path,
                                                                     stdout: str) -> None:
    """Four subflows, so most bodies arrive ahead of their turn; one subflow
    killed three times mid-stream (bodies cut in the middle, re-sent on the
    others).  A "slow pipe" is read at 16 MB/s: pieces wait for its room
    (and for what the event loop's own writes hold) before they are spliced.
    The output is the input exactly, and the summary says bodies were held."""
    require("socat")
    size = 48 * MB
    a_in = random_file(tmp_path / "a.in", size, seed=900 + len(stdout))
    a = Peer(tmp_path, "a", a_in, "-v")
    if stdout == "file":
        b = Peer(tmp_path, "b", None, "-vv")
    else:
        b = Peer(tmp_path, "b", None, "-vv", stdout_pipe=1 << 20,
                 stdout_rate=16e6 if stdout == "slow pipe" else None)
    relays = [socat_subflow(a, b) for _ in range(4)]
    try:
        replace_relays(a, b, relays, 3, written=2 * MB, pause=0.3)
        moved, held = exact(a, b, a_in, size)
        assert held > 0 and moved + held <= size, b.stderr()
        assert "Traceback" not in a.stderr() + b.stderr()
    finally:
        for r in relays:
            kill(r)
        a.close(), b.close()


def test_128_subflows_sockimux_opens_itself_park_without_refusals(tmp_path: Path) -> None:
    """128 subflows A opens itself (no relays), 256 MB, STDOUT a pipe: up to
    one body per subflow waits in a pipe at once, and none may count as
    memory held (core test: test_parked_bodies_do_not_count_as_memory_held;
    the stale counts once made B refuse subflows as flow control violations,
    seen in a bench run with a slower sender, not reproduced by this test's
    timing).  No subflow is refused or lost, and the stream is exact."""
    size = 256 * MB
    a_in = random_file(tmp_path / "a.in", size, seed=128)
    b = Peer(tmp_path, "b", None, "-vv", stdout_pipe=1 << 20)
    a = Peer(tmp_path, "a", a_in, "-v", "--connect", f"UNIX-CONNECT:{b.socket},count=128")
    try:
        assert a.wait(120) == 0, a.stderr()
        assert b.wait(60) == 0, b.stderr()
        assert sha256_file(b.out) == sha256_file(a_in)
        refusals = re.findall(r"subflow \S+ refused: .*", b.stderr())
        assert not refusals and " lost (" not in a.stderr(), refusals[:3]
        found = TOTALS.search(b.stderr())
        assert found and int(found.group(3)) > size // 4, b.stderr()[-2000:]
    finally:
        a.close(), b.close()


def test_a_busy_stdout_pipe_parks_what_would_continue_the_stream(tmp_path: Path) -> None:
    """One subflow, so every body continues the stream; STDOUT a pipe read
    at 16 MB/s, so it is often full.  A body that finds it full (or still
    writing) waits in a holding pipe for its turn instead of being read
    into memory (before, only bodies ahead of the stream were parked: none
    with one subflow), and the stream is exact."""
    require("socat")
    size = 32 * MB
    a_in = random_file(tmp_path / "a.in", size, seed=16)
    a = Peer(tmp_path, "a", a_in, "-v")
    b = Peer(tmp_path, "b", None, "-vv", stdout_pipe=1 << 20, stdout_rate=16e6)
    relay = socat_subflow(a, b)
    try:
        moved, held = exact(a, b, a_in, size)
        assert held > size // 4, b.stderr()
    finally:
        kill(relay)
        a.close(), b.close()
