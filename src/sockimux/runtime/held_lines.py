"""Warning lines held a moment before they are logged.

A peer that has finished closes every subflow and stops listening, and our
own session learns that it is over from the peer's last ACK.  That ACK and
the ends of the subflows arrive together, in whatever order the loop sees
their sockets: the dialer would tell of subflows "lost" and re-opened in
vain (the socket is gone) just before the session ends as it should.  So
its lines about subflows lost (or not opened) wait SETTLE seconds: if the
session ended well meanwhile they were no news (logged at debug level
only); otherwise they go out in order, at once when the dialer logs
anything else or the session ends otherwise.
"""

from __future__ import annotations

import asyncio
import logging

SETTLE = 0.1  # seconds a line waits: far more than the peer's last frames take to follow


class HeldLines:
    def __init__(self, log: logging.Logger, delay: float = SETTLE) -> None:
        self._log = log
        self._delay = delay
        self._lines: list[str] = []
        self._timer: asyncio.TimerHandle | None = None

    def add(self, loop: asyncio.AbstractEventLoop, line: str) -> None:
        """A warning, logged in ``delay`` seconds unless drop() comes first."""
        self._lines.append(line)
        if self._timer is None:
            self._timer = loop.call_later(self._delay, self.flush)

    def flush(self) -> None:
        """Log every line held, in order, now."""
        self._cancel()
        lines, self._lines = self._lines, []
        for line in lines:
            self._log.warning("%s", line)

    def drop(self, why: str) -> None:
        """The lines were no news (``why``): debug level only."""
        self._cancel()
        lines, self._lines = self._lines, []
        for line in lines:
            self._log.debug("%s (%s)", line, why)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
