"""Lines held a moment before they are logged (runtime/held_lines.py): a
real event loop, with the delay short enough to wait for."""

from __future__ import annotations

import asyncio
import logging

import pytest

from sockimux.runtime.held_lines import HeldLines


@pytest.fixture
def logged(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="test.held")
    return caplog


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records]


def test_held_lines_go_out_in_order_after_the_delay(logged: pytest.LogCaptureFixture) -> None:
    async def main() -> list[tuple[str, str]]:
        held = HeldLines(logging.getLogger("test.held"), delay=0.02)
        loop = asyncio.get_running_loop()
        held.add(loop, "one")
        held.add(loop, "two")
        assert lines(logged) == []  # not yet
        await asyncio.sleep(0.05)
        return lines(logged)

    assert asyncio.run(main()) == [("WARNING", "one"), ("WARNING", "two")]


def test_dropped_lines_are_debug_only_and_never_logged_later(logged: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        held = HeldLines(logging.getLogger("test.held"), delay=0.02)
        held.add(asyncio.get_running_loop(), "subflow x lost (closed by the other end)")
        held.drop("the session was over")
        await asyncio.sleep(0.05)

    asyncio.run(main())
    assert lines(logged) == [("DEBUG", "subflow x lost (closed by the other end) "
                                       "(the session was over)")]


def test_flush_logs_at_once_and_cancels_the_timer(logged: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        held = HeldLines(logging.getLogger("test.held"), delay=10.0)
        held.add(asyncio.get_running_loop(), "one")
        held.flush()
        assert lines(logged) == [("WARNING", "one")]
        held.flush()  # nothing twice

    asyncio.run(main())
    assert lines(logged) == [("WARNING", "one")]
