"""Rate limit for log lines a stranger can cause: connections refused.

Anyone who can reach the socket can open connections by the thousand, and
each refusal is a warning; when sockimux is ssh's ProxyCommand those land on
the user's terminal.  At the default verbosity the first ``burst`` refusals
in a ``period`` are logged, the rest counted, and one summary line per
period says how many were left out and the last reason.  With -v (or more)
every refusal is logged: the user asked for every subflow's story.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

# Refusals of a connection, whoever decided them: the session (a REFUSE we
# send, or one we received) or the runtime (SO_PEERCRED).
REFUSAL = re.compile(r"subflow \d+ refused: |subflow \d+: peer refused it: |^refused a connection")
SUMMARY = "lograte_summary"  # attribute marking our own summary records


class RefusalLimiter(logging.Filter):
    """A filter for the ``sockimux`` logger.  ``clock()`` is the time in
    seconds; ``schedule(delay, callback)`` runs ``callback`` later (the event
    loop's call_later), so a summary is written even if the flood stops."""

    def __init__(self, logger: logging.Logger, clock: Callable[[], float],
                 schedule: Callable[[float, Callable[[], None]], Any] | None = None,
                 burst: int = 5, period: float = 10.0) -> None:
        super().__init__()
        self.logger = logger
        self.clock = clock
        self.schedule = schedule
        self.burst = burst
        self.period = period
        self.start = float("-inf")  # start of the current period
        self.logged = 0  # refusals logged in it
        self.suppressed = 0  # refusals left out in it
        self.flooding = False  # the previous period left some out: log none, only summaries
        self.last = ""
        self._scheduled = False

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, SUMMARY, False) or self.logger.isEnabledFor(logging.INFO):
            return True
        message = record.getMessage()
        if not REFUSAL.search(message):
            return True
        self._roll(self.clock())
        if self.logged < (0 if self.flooding else self.burst):
            self.logged += 1
            return True
        self.suppressed += 1
        self.last = message
        if self.schedule is not None and not self._scheduled:
            self._scheduled = True
            self.schedule(max(0.0, self.start + self.period - self.clock()), self._due)
        return False

    def _due(self) -> None:
        self._scheduled = False
        self._roll(self.clock())

    def _roll(self, now: float) -> None:
        """Close the current period if it is over (summing it up), open the next."""
        if now < self.start + self.period:
            return
        self.flush()
        if now >= self.start + 2 * self.period:
            self.flooding = False  # a quiet period in between: log the first few again
        self.start = now
        self.logged = 0

    def flush(self) -> None:
        """Write the summary of what was left out, if anything (also at exit)."""
        self.flooding = self.suppressed > 0
        if not self.suppressed:
            return
        span = min(self.period, max(0.0, self.clock() - self.start))
        record = self.logger.makeRecord(
            self.logger.name, logging.WARNING, __file__, 0,
            "%d more connections refused in the last %.0f s (the last: %s)",
            (self.suppressed, span, self.last), None)
        setattr(record, SUMMARY, True)
        self.suppressed = 0
        self.logger.handle(record)


def install(logger: logging.Logger, clock: Callable[[], float],
            schedule: Callable[[float, Callable[[], None]], Any] | None) -> RefusalLimiter:
    limiter = RefusalLimiter(logger, clock, schedule)
    logger.addFilter(limiter)
    return limiter


def uninstall(logger: logging.Logger, limiter: RefusalLimiter) -> None:
    limiter.flush()
    logger.removeFilter(limiter)
