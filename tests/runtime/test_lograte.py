"""The refusal rate limit, with a fake clock and a fake scheduler."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable

import pytest
import uvloop

from sockimux.runtime import lograte
from sockimux.runtime.lograte import RefusalLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.timers: list[tuple[float, Callable[[], None]]] = []

    def __call__(self) -> float:
        return self.now

    def schedule(self, delay: float, callback: Callable[[], None]) -> None:
        self.timers.append((self.now + delay, callback))

    def advance(self, to: float) -> None:
        self.now = to
        due = [t for t in self.timers if t[0] <= to]
        self.timers = [t for t in self.timers if t[0] > to]
        for _when, callback in sorted(due, key=lambda t: t[0]):
            callback()


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def setup() -> tuple[logging.Logger, Clock, Lines, RefusalLimiter]:
    logger = logging.getLogger("sockimux.test_lograte")
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
    for f in list(logger.filters):
        logger.removeFilter(f)
    lines = Lines()
    logger.addHandler(lines)
    clock = Clock()
    limiter = RefusalLimiter(logger, clock, clock.schedule, burst=5, period=10.0)
    logger.addFilter(limiter)
    return logger, clock, lines, limiter


def test_a_burst_is_logged_as_a_few_lines_and_a_summary(
        setup: tuple[logging.Logger, Clock, Lines, RefusalLimiter]) -> None:
    logger, clock, lines, _limiter = setup
    for i in range(2000):
        clock.now = 1000.0 + i * 0.001
        logger.warning("subflow %d refused: not a sockimux peer (bad magic)", i + 1)
    logger.warning("session over: something else")  # not a refusal: never held back
    assert len(lines.lines) == 6
    assert lines.lines[:5] == [f"subflow {i} refused: not a sockimux peer (bad magic)" for i in range(1, 6)]
    clock.advance(1009.9)
    assert len(lines.lines) == 6, "the summary came before the period was over"
    clock.advance(1010.0)
    assert lines.lines[6] == ("1995 more connections refused in the last 10 s "
                              "(the last: subflow 2000 refused: not a sockimux peer (bad magic))")


def test_a_steady_flood_gets_one_summary_per_period_and_a_quiet_period_resets(
        setup: tuple[logging.Logger, Clock, Lines, RefusalLimiter]) -> None:
    logger, clock, lines, limiter = setup
    for i in range(3500):  # 100 refusals a second for 35 s
        clock.advance(1000.0 + i / 100)
        logger.warning("refused a connection from uid 1 (pid 2): only uids 0 may connect")
    summaries = [line for line in lines.lines if line.endswith(" may connect)")]
    assert len(lines.lines) == 5 + len(summaries)
    assert len(summaries) == 3  # at 10, 20, 30 s
    limiter.flush()  # at exit: what the last period left out
    assert re.match(r"\d+ more connections refused in the last 5 s", lines.lines[-1]), lines.lines[-1]
    counted = sum(int(line.split()[0]) for line in lines.lines[5:])
    assert counted + 5 == 3500
    clock.advance(1060.0)  # a quiet period: the first few are logged again
    logger.warning("subflow 9 refused: handshake not completed within 10 s")
    assert lines.lines[-1] == "subflow 9 refused: handshake not completed within 10 s"


def test_verbose_logs_every_refusal(setup: tuple[logging.Logger, Clock, Lines, RefusalLimiter]) -> None:
    logger, clock, lines, _limiter = setup
    logger.setLevel(logging.INFO)
    for i in range(50):
        logger.warning("subflow %d refused: not a sockimux peer (bad magic)", i)
    assert len(lines.lines) == 50 and clock.timers == []


def test_kinds_are_limited_apart(setup: tuple[logging.Logger, Clock, Lines, RefusalLimiter]) -> None:
    """Stalled subflows (a peer can make many) have their own budget and summary."""
    logger, clock, lines, _limiter = setup
    for i in range(20):
        logger.warning("subflow %d stalled (nothing heard for 2.5 s); dropping it", i)
        logger.warning("subflow %d refused: not a sockimux peer (bad magic)", 100 + i)
    assert len(lines.lines) == 10
    clock.advance(1010.0)
    assert sorted(lines.lines[10:]) == [
        "15 more connections refused in the last 10 s "
        "(the last: subflow 119 refused: not a sockimux peer (bad magic))",
        "15 more subflows dropped as stalled in the last 10 s "
        "(the last: subflow 19 stalled (nothing heard for 2.5 s); dropping it)"]


@pytest.mark.parametrize("level", [logging.WARNING, logging.DEBUG])
def test_resource_warnings_are_one_per_kind_every_period_at_any_verbosity(
        setup: tuple[logging.Logger, Clock, Lines, RefusalLimiter], level: int) -> None:
    """Running short of descriptors can fail every accept or dup: one line of
    each kind per RESOURCE_PERIOD, with or without -v, and no summary."""
    logger, clock, lines, limiter = setup
    logger.setLevel(level)
    for i in range(2500):  # 100 a second for 25 s, of two kinds
        clock.advance(1000.0 + i / 100)
        logger.warning("cannot accept a connection: Too many open files",
                       extra={lograte.KIND: "accept"})
        logger.warning("subflow %d: sending and receiving without sendfile/splice "
                       "(Too many open files)", i, extra={lograte.KIND: "dup"})
    limiter.flush()
    accepts = [line for line in lines.lines if line.startswith("cannot accept")]
    assert accepts == ["cannot accept a connection: Too many open files"] * 3  # at 0, 10, 20 s
    assert [line for line in lines.lines if line not in accepts] == [
        f"subflow {i}: sending and receiving without sendfile/splice (Too many open files)"
        for i in (0, 1000, 2000)]
    assert clock.timers == []


@pytest.mark.parametrize("line, kind", [
    ("subflow UNIX-CONNECT:b.sock ({n} of 128) could not be opened (too many subflows (one end "
     "is at its --max-subflows): already 4 subflows); retrying until it can", "subflows not opened"),
    ("subflow TCP:10.0.0.2:7000 ({n} of 128) lost (closed by the other end); re-opening it in "
     "0.3 s", "subflows lost"),
    ("subflow TCP:10.0.0.2:7000 ({n} of 128) back after 3 attempts (2.1 s)", "subflows back"),
    ("subflow EXEC:'socat STDIO UNIX-CONNECT:a' ({n} of 128) open after 1 attempt (0.0 s)",
     "subflows back"),
])
def test_a_count_of_subflows_failing_at_once_is_a_few_lines(
        setup: tuple[logging.Logger, Clock, Lines, RefusalLimiter], line: str, kind: str) -> None:
    """--connect ADDR,count=128 to a peer that takes 4 (or restarts): a
    line per subflow was 124 lines at once."""
    logger, clock, lines, _ = setup
    for n in range(5, 129):
        logger.warning("%s", line.format(n=n))
    clock.advance(clock.now + 10.0)
    assert len(lines.lines) == lograte.DIALED_BURST + 1, lines.lines
    assert lines.lines[-1].startswith(f"{124 - lograte.DIALED_BURST} more {kind} in the last "
                                      "10 s (the last: ")
    assert "(128 of 128)" in lines.lines[-1]


@pytest.mark.parametrize("make_loop", [asyncio.new_event_loop, uvloop.new_event_loop])
def test_a_limiter_whose_loop_closed_steps_aside(make_loop: Callable[[], asyncio.AbstractEventLoop],
                                                 setup: tuple[logging.Logger, Clock, Lines,
                                                              RefusalLimiter]) -> None:
    """The logger is the process's: an API program that closes a loop under
    a session that never ended leaves that session's filter on it.  Past
    its burst it scheduled a summary on the closed loop, which raised
    RuntimeError into whatever logged: a later session's dialer, as an
    internal error there.  Now it lets lines pass, and the next install()
    takes it off the logger."""
    logger, _, lines, live = setup
    loop = make_loop()
    logger.removeFilter(live)
    stale = lograte.install(logger, loop.time, loop.call_later, loop.is_closed)  # the older one
    logger.addFilter(live)
    loop.close()
    for n in range(12):
        logger.warning("subflow UNIX-CONNECT:b.sock (%d of 12) lost (connection closed); "
                       "re-opening it in 0.3 s", n + 1)
    assert len(lines.lines) == lograte.DIALED_BURST  # the live limiter's count, nothing raised
    assert stale in logger.filters
    lograte.uninstall(logger, lograte.install(logger, lambda: 0.0, None))
    assert stale not in logger.filters and live in logger.filters
