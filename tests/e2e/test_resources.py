"""Short of file descriptors: a resource error costs one subflow, or one
optimisation (sendfile, splice), never the session."""

from __future__ import annotations

from pathlib import Path

import pytest

from .harness import kill, random_file, require, sha256_file, wait_for
from .launch import Piped, fd_limit, subflow

MB = 1 << 20
# By default the subflows are capped to what the descriptor limit leaves
# room for; asked for more, sockimux meets the limit itself.
MORE_THAN_FIT = ("--max-subflows", "60")


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_more_subflows_than_descriptors(tmp_path: Path, loop: str) -> None:
    """Both sides may hold 40 descriptors, and 60 subflows connect.  A's STDIN
    is a regular file (sent by sendfile() from a duplicate of each socket) and
    B's STDOUT a pipe (spliced into from such duplicates).  Duplicates that
    cannot be made leave those subflows with plain writes; connections that
    cannot be accepted are closed (uvloop) or wait (asyncio, which reports
    it to the loop's exception handler: that used to end the session as an
    internal error).  The dup in sendfile's path used to kill A with an
    internal error (exit 1) and leave B waiting forever."""
    require("socat")
    a_in = random_file(tmp_path / "a.in", 32 * MB, seed=24)
    asyncio_loop = loop == "asyncio"
    with open(a_in, "rb") as f:
        a = Piped(tmp_path, "a", "-v", *MORE_THAN_FIT, stdin=f.fileno(), asyncio_loop=asyncio_loop,
                  preexec_fn=fd_limit(40))
    # B's output is read only once the limit was met: the stream (more than
    # the window) cannot end before the relays have tried to connect.
    b = Piped(tmp_path, "b", "-v", *MORE_THAN_FIT, asyncio_loop=asyncio_loop,
              preexec_fn=fd_limit(40), held=True)
    relays = [subflow(a.socket, b.socket) for _ in range(60)]
    try:
        wait_for(lambda: "Too many open files" in a.stderr() + b.stderr(), 30,
                 "a side to meet its descriptor limit")
        b.release()
        assert a.wait(60) == 0, a.stderr()
        assert b.wait(60) == 0, b.stderr()
        assert sha256_file(b.out) == sha256_file(a_in)
        both = a.stderr() + b.stderr()
        assert "internal error" not in both and "Traceback" not in both
    finally:
        for r in relays:
            kill(r)
        a.close()
        b.close()


SPAWN_SHORT_OF_DESCRIPTORS = """
import asyncio, os, resource, sys
import uvloop
from sockimux import cli

async def main(room):
    lowest_free = os.dup(0)
    os.close(lowest_free)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free + room, hard))
    try:
        process = await asyncio.create_subprocess_exec("true")
    except OSError as e:
        print("spawn failed:", e.strerror)
    else:
        await process.wait()

cli._setup_logging(0, False)  # as sockimux runs: its hooks in place
uvloop.run(main(int(sys.argv[1])))
"""


def test_a_spawn_short_of_descriptors_prints_no_traceback() -> None:
    """An EXEC subflow or an ssh of `sockimux ssh` started with almost no
    descriptor left: uvloop's process handle, left half made, raises from its
    destructor, and Python printed that as "Exception ignored in ...
    Traceback ..." on our STDERR (seen with `ulimit -n 32` and `sockimux ssh
    -n 16`).  The session survives it; the user must not see a traceback.
    Which room makes the spawn fail there depends on uvloop: each is tried."""
    import subprocess
    import sys

    failed = 0
    for room in range(1, 8):
        run = subprocess.run([sys.executable, "-c", SPAWN_SHORT_OF_DESCRIPTORS, str(room)],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run
        failed += "spawn failed: Too many open files" in run.stdout
        for never in ("Traceback", "Exception ignored", "RuntimeError"):
            assert never not in run.stderr, (room, run.stderr)
    assert failed, "no room tried made the spawn fail: the case is not the one meant"


@pytest.mark.parametrize("limit", [12, 16, 23])
def test_an_open_file_limit_too_low_for_any_subflow_is_refused_at_start(tmp_path: Path,
                                                                       limit: int) -> None:
    """At 16 descriptors, all of them were taken before any subflow (STDIO
    and its copies, the event loop's): each side waited forever, A retrying
    a connect that failed with EMFILE, B's accepts failing unseen.  Now
    either side says so in one line and exits 3 at once.  At 12 the
    launcher's own shell (its read of /proc for the ^C guard) printed a
    line of its own before ours; 11 is as low as the shell can run it."""
    import subprocess

    from .harness import SOCKIMUX

    for args in ([str(tmp_path / "a.sock")], ["--connect", f"UNIX-CONNECT:{tmp_path / 'b.sock'}"]):
        run = subprocess.run([SOCKIMUX, *args], stdin=subprocess.DEVNULL, capture_output=True,
                             text=True, timeout=30, preexec_fn=fd_limit(limit))
        assert run.returncode == 3, run
        lines = run.stderr.splitlines()
        assert len(lines) == 1, run.stderr
        assert f"open file limit ({limit}) is too low" in lines[0], run.stderr
        assert "ulimit -n" in lines[0]


def test_a_count_beyond_what_the_descriptors_allow_is_opened_as_far_as_they_do(
        tmp_path: Path) -> None:
    """count=128 under an open file limit of 40 (room for 4 subflows): A
    opens 4 and says so in one line.  It opened all 128, its own session
    refused 124 of them and retried each for ever, a line per subflow."""
    import subprocess

    from .harness import SOCKIMUX

    a_in = random_file(tmp_path / "a.in", 16 * MB, seed=41)
    b = Piped(tmp_path, "b", preexec_fn=fd_limit(64))
    try:
        with open(a_in, "rb") as stdin:
            a = subprocess.run([SOCKIMUX, "--connect", f"UNIX-CONNECT:{b.socket},count=128"],
                               stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, timeout=60, preexec_fn=fd_limit(40))
        assert a.returncode == 0, a.stderr
        assert b.wait(60) == 0, b.stderr()
        assert sha256_file(b.out) == sha256_file(a_in)
        lines = a.stderr.splitlines()
        assert len(lines) == 1 and lines[0].endswith(
            "--connect asks for 128 subflows, more than --max-subflows (4, by default what the "
            "open file limit leaves room for): opening 4"), a.stderr
        assert b.stderr() == ""
    finally:
        b.close()


def test_more_addresses_than_max_subflows_open_no_subflow_beyond_it(tmp_path: Path) -> None:
    """Three --connect addresses and --max-subflows 2: the first two get a
    subflow each and the third none, said in one line.  Each address used
    to keep at least one, so the third was opened, refused by A's own
    session ("already 2 subflows") and re-opened for as long as the session
    lasted: a line on each end at every attempt (5 each in 8 s)."""
    import subprocess
    import time

    from .harness import SOCKIMUX

    data = random_file(tmp_path / "a.in", 4 * MB, seed=43).read_bytes()
    b = Piped(tmp_path, "b")
    a: subprocess.Popen[bytes] | None = None
    try:
        address = f"UNIX-CONNECT:{b.socket}"
        a = subprocess.Popen([SOCKIMUX, "--max-subflows", "2", "--connect", address,
                              "--connect", address, "--connect", address],
                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=False)
        assert a.stdin is not None and a.stderr is not None
        a.stdin.write(data)
        a.stdin.flush()
        time.sleep(3)  # re-opens at 0.2, 0.6, 1.4 s... would each have said so by now
        a.stdin.close()
        assert a.wait(60) == 0
        said = a.stderr.read().decode()
        assert b.wait(60) == 0, b.stderr()
        assert b.out.read_bytes() == data
        lines = said.splitlines()
        assert len(lines) == 1 and lines[0].endswith(
            "--connect asks for 3 subflows, more than --max-subflows (2, by default what the "
            "open file limit leaves room for): opening 2, none to the last 1 of the 3 "
            "addresses"), said
        assert b.stderr() == ""
    finally:
        if a is not None and a.poll() is None:
            kill(a)
        b.close()
