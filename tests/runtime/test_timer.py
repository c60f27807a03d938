"""The runner calls the session's handle_timer() once its deadline has come,
never before (issue 15 targets 2 and 4).

uvloop's clock (loop.time()) and its timers have a resolution of one
millisecond, and a timer's delay is rounded to the nearest one: a timer
armed at the deadline itself could fire up to half a millisecond before
it, the session then found nothing due, gave the same deadline again, and
the runner fired again at once, over and over until the clock ticked: each
time a pass over every subflow (with 4 subflows and a keystroke every
300 us, a third of the runner's passes were such timers).
"""

from __future__ import annotations

import asyncio
import os
import signal

import uvloop

from sockimux.core import Session
from sockimux.runtime.runner import Runner

# Deadlines a fraction of a millisecond past a tick of uvloop's clock.
OFFSETS = [0.0004, 0.0104, 0.0207, 0.0031, 0.0449]


class Watched(Session):
    """A session with one extra deadline at a time, recording every
    handle_timer() call that comes before it."""

    wake_at: float | None = None
    early: list[float]
    handled: asyncio.Event

    def next_deadline(self, rescan: bool = False) -> float | None:
        due = super().next_deadline(rescan)
        if self.wake_at is None:
            return due
        return self.wake_at if due is None else min(due, self.wake_at)

    def handle_timer(self, now: float) -> None:
        if self.wake_at is not None:
            if now < self.wake_at:
                self.early.append(self.wake_at - now)
            else:
                self.wake_at = None
                self.handled.set()
        super().handle_timer(now)


def test_the_session_timer_never_fires_before_its_deadline() -> None:
    loop = uvloop.new_event_loop()
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()

    async def run() -> list[float]:
        session = Watched(os.urandom(16), loop.time())
        session.early = []
        session.handled = asyncio.Event()
        runner = Runner(session, in_r, out_w)
        task = asyncio.ensure_future(runner.run())
        await asyncio.sleep(0.05)
        for offset in OFFSETS * 4:
            await asyncio.sleep(0)  # a fresh tick of the clock to start from
            session.handled.clear()
            session.wake_at = loop.time() + offset
            runner.kick()
            await asyncio.wait_for(session.handled.wait(), 5)
        runner.interrupt(signal.SIGTERM)
        await asyncio.wait_for(task, 10)
        return session.early

    try:
        early = loop.run_until_complete(run())
    finally:
        loop.close()
        for fd in (in_w, out_r):
            os.close(fd)
    assert early == [], f"{len(early)} calls before the deadline, by up to {max(early) * 1e3:.2f} ms"
