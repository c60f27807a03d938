"""A subflow's delivery-rate estimate (core/estimate.py): how soon it is known."""

from __future__ import annotations

import pytest

from sockimux.core import estimate
from sockimux.core.estimate import PathEstimate


def deliver(est: PathEstimate, rate: float, rtt: float, until: float,
            step: float = 0.001) -> float | None:
    """Send at ``rate`` bytes/s, ``step`` by ``step``, each send acknowledged
    ``rtt`` later; the time the estimate first has a rate, or None."""
    sent: list[tuple[int, float]] = []
    total = 0
    now = 0.0
    while now < until:
        total += int(rate * step)
        est.on_sent(total, now)
        sent.append((total, now))
        while sent and sent[0][1] + rtt <= now + 1e-12:
            est.on_delivered(sent.pop(0)[0], now, saturated=True)
        if est.rate > 0:
            return now
        now = round(now + step, 9)
    return None


def test_a_short_round_trip_gives_the_rate_within_a_few_round_trips() -> None:
    """On loopback (a round trip of half a millisecond) the rate is known
    within SAMPLE_SHORTEST of the first ACK, not after a fixed 50 ms: until
    then the subflow has only INITIAL_CAP in flight and small pieces, which
    with 128 subflows joining made most of the stream's frames."""
    est = PathEstimate()
    known = deliver(est, 100e6, 0.001, 0.1)
    assert known is not None and known <= 0.001 + estimate.SAMPLE_SHORTEST + 0.0015
    assert est.rate == pytest.approx(100e6, rel=0.05)
    assert est.cap() > estimate.INITIAL_CAP


@pytest.mark.parametrize("rtt", [0.02, 0.3])
def test_a_long_round_trip_still_waits_the_whole_interval(rtt: float) -> None:
    """A round trip of 20 ms (4 of them: 80 ms) or 300 ms: the first rate
    comes no sooner than SAMPLE_MIN_INTERVAL after the first ACK."""
    est = PathEstimate()
    known = deliver(est, 1e6, rtt, 2.0)
    assert known is not None and known >= rtt + estimate.SAMPLE_MIN_INTERVAL - 1e-9
