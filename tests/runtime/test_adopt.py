"""Connections enter the session in one place, whoever made them: here one
end of a socket.socketpair() (no listener at all) becomes a subflow, as a
dialer's or an EXEC child's connection will.  The runner runs in the test
process, on uvloop and on plain asyncio; the peer is a real sockimux
process, and socat joins the other end of the pair to the peer's socket.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import uvloop

from sockimux.core import Outcome, Session
from sockimux.runtime.runner import Runner

from ..e2e.harness import Peer, kill, random_file, require, sha256_file, wait_for

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "uvloop": uvloop.new_event_loop, "asyncio": asyncio.new_event_loop}


class Adopted:
    """Hands one connected socket to the runner (runner.Attached)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    async def attach(self, runner: Runner) -> None:
        await runner.adopt(self.sock)

    def detach(self) -> None:
        pass


def copier(read_end: int, path: Path) -> threading.Thread:
    """A thread copying the pipe ``read_end`` to ``path`` until its end."""

    def run() -> None:
        with open(path, "wb") as f:
            while data := os.read(read_end, 1 << 20):
                f.write(data)
        os.close(read_end)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


# STDOUT a pipe: bodies are spliced from the socketpair into it; a file:
# they are read and written by a thread.
@pytest.mark.parametrize("stdout", ["pipe", "file"])
@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_one_end_of_a_socketpair_carries_the_stream(tmp_path: Path, loop_name: str,
                                                    stdout: str) -> None:
    socat = require("socat")
    a_in = random_file(tmp_path / "a.in", 6 << 20, seed=21)
    b_in = random_file(tmp_path / "b.in", 5 << 20, seed=22)
    b = Peer(tmp_path, "b", b_in)
    wait_for(lambda: os.path.exists(b.socket), 10, "the peer listening")
    ours, theirs = socket.socketpair()
    relay = subprocess.Popen([socat, f"FD:{theirs.fileno()}", f"UNIX-CONNECT:{b.socket}"],
                             pass_fds=[theirs.fileno()], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    theirs.close()
    in_fd = os.open(a_in, os.O_RDONLY)
    thread = None
    if stdout == "pipe":
        read_end, out_fd = os.pipe()
        thread = copier(read_end, tmp_path / "a.out")
    else:
        out_fd = os.open(tmp_path / "a.out", os.O_WRONLY | os.O_CREAT)
    loop = LOOPS[loop_name]()

    async def run() -> Outcome:
        session = Session(os.urandom(16), loop.time())
        return await Runner(session, in_fd, out_fd).run(Adopted(ours))

    try:
        assert loop.run_until_complete(asyncio.wait_for(run(), 60)) is Outcome.DONE
        assert b.wait(20) == 0, b.stderr()
        if thread is not None:
            thread.join(10)
        assert sha256_file(tmp_path / "a.out") == sha256_file(b_in)
        assert sha256_file(b.out) == sha256_file(a_in)
    finally:
        loop.close()
        kill(relay)
        b.close()


def test_the_runtime_needs_no_uvloop() -> None:
    """Every runtime module (and the CLI's signal handling) imports with uvloop
    unimportable: only the CLI chooses uvloop, and falls back to asyncio."""
    script = ("import sys, pkgutil, importlib; sys.modules['uvloop'] = None\n"
              "import sockimux.runtime as r\n"
              "for m in pkgutil.iter_modules(r.__path__):\n"
              "    importlib.import_module('sockimux.runtime.' + m.name)\n"
              "import sockimux.interrupts\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("loop", LOOPS)
def test_a_unix_subflow_gets_the_larger_send_buffer(loop: str) -> None:
    """A UNIX stream socket queues at most its sender's send buffer, which
    bounds every splice and sendfile on it: a UNIX subflow asks for
    UNIX_SEND_BUFFER, which the kernel grants up to net.core.wmem_max (and
    doubles), instead of the default."""
    from sockimux.runtime.connection import UNIX_SEND_BUFFER

    wmem_max = int(Path("/proc/sys/net/core/wmem_max").read_text())
    ours, theirs = socket.socketpair()
    default = theirs.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)

    async def main() -> int:
        runner = Runner(Session(os.urandom(16), 0.0), os.open(os.devnull, os.O_RDONLY),
                        os.open(os.devnull, os.O_WRONLY))
        await runner.adopt(ours)
        return ours.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)

    event_loop = LOOPS[loop]()
    try:
        granted = event_loop.run_until_complete(main())
    finally:
        event_loop.close()
        theirs.close()
    assert granted == 2 * min(UNIX_SEND_BUFFER, wmem_max), (granted, wmem_max)
    assert granted > default or wmem_max * 2 <= default
