"""Pull scheduling: how much each subflow may take, from what it delivers.

Theory of operation
-------------------
Subflows are not fed round-robin.  Each one *pulls* the next piece of the
stream when it has room, so a fast subflow simply comes back for more
more often.  "Room" is a per-subflow in-flight allowance: DATA bytes sent on
it that the peer has not yet reported as received on it.

The allowance follows what the subflow actually delivers: the peer reports
per-subflow received bytes in every ACK, from which we estimate the
subflow's delivery rate.  The cap is that rate times a target queueing time
(plus a floor), so a slow subflow never holds more than a fraction of a
second of the stream.  This is what keeps a 1 Mbit/s link from sitting on
data that three 30 Mbit/s links could have delivered long before it
(the linger-time idea of BLEST and Linux MPTCP's scheduler), and what keeps
control frames (ACK, PING) from queueing for seconds behind our own data.
"""

from __future__ import annotations

from dataclasses import dataclass

MIN_CAP = 64 * 1024  # always allow this much in flight, so a subflow can show its rate
INITIAL_CAP = 256 * 1024
MAX_CAP = 8 * 1024 * 1024
TARGET_QUEUE_TIME = 0.25  # seconds of the subflow's rate we are willing to queue on it
SAMPLE_MIN_INTERVAL = 0.02  # seconds; shorter samples are too noisy to use


@dataclass
class PathEstimate:
    """Delivery-rate and round-trip estimate of one subflow."""

    rate: float = 0.0  # bytes per second delivered to the peer
    srtt: float | None = None  # smoothed PING/PONG round trip, seconds
    _sample_at: float | None = None
    _sample_base: int = 0

    def on_delivered(self, total: int, now: float, saturated: bool) -> None:
        """The peer reports ``total`` DATA bytes received on this subflow."""
        if self._sample_at is None:
            self._sample_at, self._sample_base = now, total
            return
        elapsed = now - self._sample_at
        if elapsed < SAMPLE_MIN_INTERVAL:
            return
        sample = (total - self._sample_base) / elapsed
        self._sample_at, self._sample_base = now, total
        # Rise at once (a short sample cannot overstate a rate by much); fall
        # slowly, and only on samples taken while we kept the subflow busy, so
        # an idle moment does not look like a slow link.
        if sample > self.rate:
            self.rate = sample
        elif saturated:
            self.rate = 0.75 * self.rate + 0.25 * sample

    def on_rtt(self, sample: float) -> None:
        self.srtt = sample if self.srtt is None else 0.875 * self.srtt + 0.125 * sample

    def cap(self) -> int:
        """Bytes this subflow may have in flight."""
        if self.rate <= 0:
            return INITIAL_CAP
        return int(min(MAX_CAP, max(MIN_CAP, self.rate * TARGET_QUEUE_TIME)))
