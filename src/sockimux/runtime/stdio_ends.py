"""How the stream's ends end while a run goes on (Runner's methods, kept
here as one idea): STDIN's end, told to the peer with the exit status of
the command it came from when there is one; STDOUT's failure or close;
a signal that stops the session.  (How the run itself ends: teardown.py.)
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
from collections.abc import Awaitable, Callable

from ..core.session import Outcome, Session

log = logging.getLogger("sockimux")

BROKEN_PIPE = os.strerror(errno.EPIPE)  # the sinks' word for a reader gone


class StdioEnds:
    # Provided by Runner.
    session: Session
    loop: asyncio.AbstractEventLoop
    signal: int | None
    input_status: Callable[[], Awaitable[int | None]] | None
    _status_task: asyncio.Task[None] | None

    def kick(self) -> None:
        raise NotImplementedError  # (the runner's)

    def _stdin_eof(self, error: str | None) -> None:
        """STDIN ended (``error`` None) or failed.  A failure ends the session
        (exit 7, the peer told): taken for the end of the input, it would
        pass what was read so far off as the whole stream."""
        if error is None and self.input_status is not None:
            # (kept: the loop holds only a weak reference to a task)
            self._status_task = self.loop.create_task(self._input_ended(self.input_status()))
            return
        if error is None:
            self.session.stdin_eof(self.loop.time())
        else:
            self.session.abort(Outcome.INPUT_CHANGED, error, self.loop.time())
        self.kick()

    async def _input_ended(self, status: Awaitable[int | None]) -> None:
        """The end of the input waits for how its command ended (bounded by
        the caller), so the FIN can say it."""
        try:
            code = await status
        except Exception as exc:  # noqa: BLE001 (the end of the input must not be lost)
            log.debug("the input command's status is unknown: %s", exc)
            code = None
        if self.session.outcome is None:
            self.session.stdin_eof(self.loop.time(), code)
            self.kick()

    def output_failed(self, message: str) -> None:
        # A reader gone (EPIPE) closed it; anything else (a disk full) failed it.
        what = "STDOUT closed" if message == BROKEN_PIPE else "writing STDOUT failed"
        self.session.abort(Outcome.OUTPUT_CLOSED, f"{what} before the stream ended ({message})",
                           self.loop.time())
        self.kick()

    def _output_closed(self) -> None:
        self.session.output_closed(self.loop.time())
        self.kick()

    def interrupt(self, signo: int) -> None:
        """End the session: we were stopped by signal ``signo``."""
        if self.signal is None:
            self.signal = signo
        self.session.abort(Outcome.INTERRUPTED, f"interrupted by {signal.Signals(signo).name}",
                           self.loop.time())
        self.kick()
