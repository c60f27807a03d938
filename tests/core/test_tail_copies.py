"""The end of a transfer over subflows of unequal speed: once the last byte
is sent, a subflow gone idle takes a copy of the last bytes of the one that
will be the last to deliver what it holds, and the FIN with them, so that
all end together (scheduler._tail()).

Each subflow holds about a quarter of a second of its rate (estimate.py);
before, the fast ones ended their share early and the stream waited for
the last backlog to drain, 60-90 ms lost on netlab's 40/20/10/5 (a point
of its 95% target) and 0.15-0.3 s on 30/30/30/1."""

from __future__ import annotations

import pytest

from sockimux.core import Session, SessionConfig

from .link import Endpoint, Link
from .test_session import KB, finish, payload

SIZE = 16 * 1024 * KB
LINKS = (5e6, 2.5e6, 1.25e6, 0.625e6)  # netlab's 40/20/10/5 Mbit/s
SLOW_FOURTH = (3.75e6, 3.75e6, 3.75e6, 125e3)  # ...and its 30/30/30/1


def run(rates: tuple[float, ...], seed: int, latency: float = 0.02,
        copies: bool = True) -> tuple[float, float, Link]:
    """SIZE bytes from A over subflows of the given rates: the time from
    the first byte written at B to the last, and from the last byte sent
    by A to the last written at B."""
    cfg = SessionConfig(head_resend=copies)
    link = Link(Endpoint("A", Session(b"A" * 16, 0.0, cfg), payload(SIZE, seed)),
                Endpoint("B", Session(b"B" * 16, 0.0, cfg), b""), seed=seed)
    for rate in rates:
        link.join(latency=latency, rate=rate)
    assert link.run(until=60.0, stop=lambda: len(link.b.output) >= 1)
    first = link.now
    assert link.run(until=60.0, stop=lambda: link.a.session.sender.next_new >= SIZE)
    sent = link.now
    assert link.run(until=60.0, stop=lambda: link.b.output_closed)
    done = link.now
    finish(link)  # (intact, in order: the link checks every step)
    return done - first, done - sent, link


@pytest.mark.parametrize("seed", range(3))
def test_unequal_links_end_together(seed: int) -> None:
    ideal = SIZE / sum(LINKS)
    took, _, link = run(LINKS, seed)
    assert took < 1.015 * ideal, (took, ideal)  # (1.003-1.012 in seeds 0-5)
    copied = link.a.session.scheduler.tail_copies
    assert 0 < copied < SIZE // 50  # a share of the last backlog, each byte once
    without, _, _ = run(LINKS, seed, copies=False)  # (no head-of-line copies either)
    assert without > 1.02 * ideal, (without, ideal)  # what the copies save (1.023-1.066)


@pytest.mark.parametrize("seed", range(3))
def test_the_slow_links_backlog_goes_on_the_fast_ones_with_the_fin(seed: int) -> None:
    _, tail, _ = run(SLOW_FOURTH, seed)
    _, tail_without, _ = run(SLOW_FOURTH, seed, copies=False)
    assert tail < 0.25 < tail_without, (tail, tail_without)  # (0.15-0.22 s against 0.77-0.80 s)


def test_equal_fast_subflows_copy_nothing() -> None:
    """Loopback-like subflows end within milliseconds of each other: a copy
    would gain nothing and cost the bytes (TAIL_MIN_GAIN)."""
    _, _, link = run((50e6,) * 4, 0, latency=0.0005)
    assert link.a.session.scheduler.tail_copies == 0
