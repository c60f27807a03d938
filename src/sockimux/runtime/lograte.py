"""Rate limit for log lines a stranger (or a misbehaving peer) can cause by the
thousand: connections refused, subflows dropped as stalled; and for those a
count=N makes N of at once (subflows not opened, lost, back).

Anyone who can reach the socket can open connections by the thousand, and
each refusal is a warning; when sockimux is ssh's ProxyCommand those land on
the user's terminal.  At the default verbosity the first ``burst`` lines of
a kind in a ``period`` are logged, the rest counted, and one summary line
per period says how many were left out and the last of them.  With -v (or
more) every line is logged: the user asked for every subflow's story.

Warnings about running short of resources (out of descriptors, of kernel
memory) are limited by the same mechanism, at any verbosity: a record
tagged with a kind (``extra={KIND: "accept"}``) is logged at most once per
``RESOURCE_PERIOD`` for its kind, and nothing sums up the rest (the next
line, if the shortage lasts, says it again).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

DIALED_BURST = 8  # lines per period of each kind about our own --connect subflows
# (what a line of the kind looks like, how the summary names the kind, and
# the lines of it logged per period: None for the limiter's burst)
KINDS: list[tuple[re.Pattern[str], str, int | None]] = [
    # Refusals, whoever decided them: the session (a REFUSE we send, or one
    # we received) or the runtime (SO_PEERCRED).
    (re.compile(r"subflow \d+ refused: |subflow \d+: peer refused it: |^refused a connection"),
     "connections refused", None),
    (re.compile(r"^subflow \d+ stalled \("), "subflows dropped as stalled", None),
    # The addresses we open ourselves (dialer.py), one line per subflow of
    # a count=N: a peer restarting, or refusing most of them, is N lines.
    # Twice four subflows lost and back are still told one by one.
    (re.compile(r"^subflow .* could not be opened \("), "subflows not opened", DIALED_BURST),
    (re.compile(r"^subflow .* lost \(.*; re-opening it in "), "subflows lost", DIALED_BURST),
    (re.compile(r"^subflow .* (?:open|back) after \d+ attempts? \("), "subflows back",
     DIALED_BURST),
]
SUMMARY = "lograte_summary"  # attribute marking our own summary records
KIND = "lograte_kind"  # attribute naming the resource kind of a record (see above)
RESOURCE_PERIOD = 10.0  # seconds: at most one warning of a resource kind in this long


class _Kind:
    def __init__(self, name: str, burst: int, period: float, summarize: bool = True) -> None:
        self.name = name
        self.burst = burst  # lines logged per period
        self.period = period
        self.summarize = summarize  # sum up what was left out (else: drop it)
        self.start = float("-inf")  # start of the current period
        self.logged = 0  # lines logged in it
        self.suppressed = 0  # lines left out in it
        self.flooding = False  # the previous period left some out: log none, only summaries
        self.last = ""
        self.scheduled = False


class RefusalLimiter(logging.Filter):
    """A filter for the ``sockimux`` logger.  ``clock()`` is the time in
    seconds; ``schedule(delay, callback)`` runs ``callback`` later (the event
    loop's call_later), so a summary is written even if the flood stops.

    ``closed()`` says the event loop behind those is closed: then the filter
    limits nothing, and the next install() takes it off the logger.  The
    logger is shared by every session of a process: a Python program using
    the API may close a loop under a session that never ended (so never
    uninstalled its filter), and that filter, scheduling on the closed
    loop, raised in the next session's logging: an internal error there."""

    def __init__(self, logger: logging.Logger, clock: Callable[[], float],
                 schedule: Callable[[float, Callable[[], None]], Any] | None = None,
                 burst: int = 5, period: float = 10.0,
                 closed: Callable[[], bool] | None = None) -> None:
        super().__init__()
        self.logger = logger
        self.clock = clock
        self.schedule = schedule
        self.closed = closed
        self.burst = burst
        self.period = period
        self.kinds = [(pattern, _Kind(name, most or burst, period)) for pattern, name, most in KINDS]
        self.resources: dict[str, _Kind] = {}  # tagged kinds, by tag

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, SUMMARY, False):
            return True
        if self.closed is not None and self.closed():
            return True  # (not removed here: the logger is iterating its filters)
        tag = getattr(record, KIND, None)
        if tag is not None:
            kind = self.resources.get(tag)
            if kind is None:
                kind = self.resources[tag] = _Kind(tag, 1, RESOURCE_PERIOD, summarize=False)
        else:
            if self.logger.isEnabledFor(logging.INFO):
                return True
            message = record.getMessage()
            found = next((k for pattern, k in self.kinds if pattern.search(message)), None)
            if found is None:
                return True
            kind = found
        self._roll(kind, self.clock())
        if kind.logged < (0 if kind.flooding else kind.burst):
            kind.logged += 1
            return True
        if not kind.summarize:
            return False
        kind.suppressed += 1
        kind.last = record.getMessage()
        if self.schedule is not None and not kind.scheduled:
            kind.scheduled = True
            self.schedule(max(0.0, kind.start + kind.period - self.clock()), lambda: self._due(kind))
        return False

    def _due(self, kind: _Kind) -> None:
        kind.scheduled = False
        self._roll(kind, self.clock())

    def _roll(self, kind: _Kind, now: float) -> None:
        """Close the kind's current period if it is over (summing it up), open the next."""
        if now < kind.start + kind.period:
            return
        self._summarize(kind)
        if now >= kind.start + 2 * kind.period:
            kind.flooding = False  # a quiet period in between: log the first few again
        kind.start = now
        kind.logged = 0

    def _summarize(self, kind: _Kind) -> None:
        kind.flooding = kind.suppressed > 0
        if not kind.suppressed:
            return
        span = min(kind.period, max(0.0, self.clock() - kind.start))
        record = self.logger.makeRecord(
            self.logger.name, logging.WARNING, __file__, 0,
            "%d more %s in the last %.0f s (the last: %s)",
            (kind.suppressed, kind.name, span, kind.last), None)
        setattr(record, SUMMARY, True)
        kind.suppressed = 0
        self.logger.handle(record)

    def flush(self) -> None:
        """Write the summaries of what was left out, if anything (at exit)."""
        for _pattern, kind in self.kinds:
            self._summarize(kind)


def install(logger: logging.Logger, clock: Callable[[], float],
            schedule: Callable[[float, Callable[[], None]], Any] | None,
            closed: Callable[[], bool] | None = None) -> RefusalLimiter:
    for stale in [f for f in logger.filters if isinstance(f, RefusalLimiter)
                  and f.closed is not None and f.closed()]:
        logger.removeFilter(stale)  # a session whose loop was closed before it ended
    limiter = RefusalLimiter(logger, clock, schedule, closed=closed)
    logger.addFilter(limiter)
    return limiter


def uninstall(logger: logging.Logger, limiter: RefusalLimiter) -> None:
    limiter.flush()
    logger.removeFilter(limiter)
