"""A bug of ours ends the session, and the peer is told: the runner puts an
ABORT on every open subflow before it gives up, so the peer exits 5 instead
of waiting forever for the rest of our stream.

The runner runs here, in the test process, on a session whose method
raises (a stand-in for a bug); the peer is a real sockimux process joined
by a real socat subflow.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import uvloop

from sockimux.core import Session
from sockimux.interrupts import ProcessSignals
from sockimux.runtime.listener import Listener
from sockimux.runtime.runner import Runner

from ..e2e.harness import Peer, kill, random_file, require
from ..e2e.launch import subflow


class Bug(Exception):
    pass


class BuggySession(Session):
    """A session with a bug in one method, once the peer's data flows."""

    where = ""

    def received(self, sid: int, count: int, now: float) -> bool:
        result = super().received(sid, count, now)
        if self.where == "received" and self.receiver.delivered:
            raise Bug("a bug in received()")
        return result

    def output_written(self, count: int, now: float) -> None:
        super().output_written(count, now)
        if self.where == "output_written":
            raise Bug("a bug in output_written()")


LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "uvloop": uvloop.new_event_loop, "asyncio": asyncio.new_event_loop}


# received(): raised in a transport's callback (which would tear that very
# subflow down); output_written(): in a plain callback, via the loop's
# exception handler.
@pytest.mark.parametrize("where", ["received", "output_written"])
@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_an_internal_error_tells_the_peer(tmp_path: Path, where: str, loop_name: str) -> None:
    require("socat")
    b_in = random_file(tmp_path / "b.in", 4 << 20, seed=11)
    b = Peer(tmp_path, "b", b_in, "-v")
    listener = Listener(str(tmp_path / "a.sock"))
    in_fd = os.open(os.devnull, os.O_RDONLY)
    out_fd = os.open(tmp_path / "a.out", os.O_WRONLY | os.O_CREAT)
    relay = subflow(listener.path, b.socket)  # waits in the backlog until the runner accepts
    loop = LOOPS[loop_name]()

    async def run() -> None:
        session = BuggySession(os.urandom(16), loop.time())
        session.where = where
        await Runner(session, in_fd, out_fd).run(ProcessSignals(), listener)

    try:
        with pytest.raises(Bug):
            loop.run_until_complete(asyncio.wait_for(run(), 20))
        # Without the ABORT, B would wait for the rest of our stream forever.
        assert b.wait(10) == 5, b.stderr()
        assert "peer ended the session: internal error in the peer" in b.stderr()
    finally:
        loop.close()
        kill(relay)
        listener.close()
        os.close(in_fd)
        os.close(out_fd)
        b.close()
