"""What one subflow delivers: its rate, its round trip, and the in-flight cap.

Theory of operation
-------------------
The scheduler (scheduler.py) lets each subflow *pull* the stream while it
has room; "room" is this module's in-flight allowance: DATA bytes sent on
the subflow that the peer has not yet reported as received on it.

The allowance follows what the subflow actually delivers: the peer reports
per-subflow received bytes in every ACK, from which we estimate the
subflow's delivery rate.  The cap is that rate times a target queueing time
(plus a floor), so a slow subflow never holds more than a fraction of a
second of the stream.  This is what keeps a 1 Mbit/s link from sitting on
data that three 30 Mbit/s links could have delivered long before it
(the linger-time idea of BLEST and Linux MPTCP's scheduler), and what keeps
control frames (ACK, PING) from queueing for seconds behind our own data.

The round trip is measured by our keepalive PINGs (PING to its PONG) and,
while data flows, from each DATA frame's write to the ACK that covers it;
it is reported in the stats (stats.py) and in each subflow's final counters
(events.SubflowClosed), and with its deviation it sets the subflow's probe
timeout (``pto``; subflow.py, "quiet").
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

MIN_CAP = 64 * 1024  # always allow this much in flight, so a subflow can show its rate
INITIAL_CAP = 256 * 1024
MAX_CAP = 8 * 1024 * 1024
TARGET_QUEUE_TIME = 0.25  # seconds of the subflow's rate we are willing to queue on it
SAMPLE_MIN_INTERVAL = 0.05  # seconds: the longest a rate sample needs to span...
SAMPLE_RTTS = 4  # ...and on a path with a measured round trip, this many round trips...
SAMPLE_SHORTEST = 0.005  # ...but never less than this (a loaded machine's scheduling jitter)
PTO_MIN = 0.025  # seconds: the shortest probe timeout (a loopback path, a delayed ACK)
PTO_GRANULARITY = 0.005  # seconds: the least allowance for jitter in the probe timeout
PTO_INITIAL = 0.2  # seconds: the probe timeout before any round trip was measured


@dataclass
class PathEstimate:
    """Delivery-rate and round-trip estimate of one subflow.

    The peer reports, in ACKs, how many DATA bytes it has received on this
    subflow.  ACKs travel behind the peer's own data, so they can arrive
    bunched ("ACK compression"); a rate computed from ACK arrival times alone
    would then be far too high, the cap would grow, our queue would grow, and
    the peer's ACKs would be delayed further still.  So, as BBR does, a
    sample divides the bytes delivered by the longer of two intervals: the
    one over which their ACKs arrived and the one over which they were sent.
    """

    rate: float = 0.0  # bytes per second delivered to the peer
    srtt: float | None = None  # smoothed round trip (PING to PONG, DATA to ACK), seconds
    rttvar: float = 0.0  # smoothed mean deviation of the round-trip samples, seconds
    _sent: deque[tuple[int, float]] = field(default_factory=deque)  # (bytes out, time)
    _last_send: tuple[int, float] = (0, 0.0)  # newest (bytes out, time) known delivered
    _sample: tuple[int, float, float] | None = None  # (delivered, ack time, send time) at start

    def on_sent(self, total: int, now: float) -> None:
        """We have now written ``total`` DATA bytes on this subflow."""
        self._sent.append((total, now))

    def _send_time(self, total: int) -> tuple[float, bool]:
        """When the ``total``-th byte was written (the newest record at or below
        it), and whether that record is newly known delivered."""
        sent = self._sent
        fresh = False
        while sent and sent[0][0] <= total:
            self._last_send = sent.popleft()
            fresh = True
        return self._last_send[1], fresh

    def on_delivered(self, total: int, now: float, saturated: bool) -> None:
        """The peer reports ``total`` DATA bytes received on this subflow."""
        sent_at, fresh = self._send_time(total)
        if fresh:
            # A round trip measured while data flows: the last DATA frame this
            # ACK covers, from its write to the ACK, queueing behind our own
            # data (and the peer's ACK spacing) included: what a keystroke
            # typed now would wait, which an idle keepalive does not see.
            self.on_rtt(now - sent_at)
        if self._sample is None:
            self._sample = (total, now, sent_at)
            return
        base, acked_at, base_sent_at = self._sample
        elapsed = max(now - acked_at, sent_at - base_sent_at)
        if elapsed < self._sample_interval():
            return
        sample = (total - base) / elapsed
        self._sample = (total, now, sent_at)
        # Rise at once, fall slowly, and only on samples taken while we kept
        # the subflow busy, so an idle moment does not look like a slow link.
        if sample > self.rate:
            self.rate = sample
        elif saturated:
            self.rate = 0.75 * self.rate + 0.25 * sample

    def _sample_interval(self) -> float:
        """The least time a rate sample spans: a few round trips, as a
        delivery-rate estimate needs (fewer, and ACKs that left the peer
        together would count as a rate), at most SAMPLE_MIN_INTERVAL.

        Until its rate is known a subflow is sent small pieces (scheduler.py)
        and allowed only INITIAL_CAP in flight.  With 128 subflows joining a
        fast transfer, a fixed 50 ms before the first rate made most of the
        stream go in those pieces; on loopback a round trip is a fraction of
        a millisecond."""
        srtt = self.srtt
        if srtt is None:
            return SAMPLE_MIN_INTERVAL
        interval = SAMPLE_RTTS * srtt
        return (SAMPLE_MIN_INTERVAL if interval > SAMPLE_MIN_INTERVAL
                else SAMPLE_SHORTEST if interval < SAMPLE_SHORTEST else interval)

    def on_rtt(self, sample: float) -> None:
        # As TCP's (RFC 6298): the deviation is what keeps the probe timeout
        # (subflow.py) clear of a loaded machine's jitter.
        if self.srtt is None:
            self.srtt = sample
            self.rttvar = sample / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - sample)
            self.srtt = 0.875 * self.srtt + 0.125 * sample

    def pto(self, ack_delay: float) -> float:
        """The probe timeout: how long DATA in flight may go without any
        sign of progress before the subflow counts as quiet (subflow.py).

        QUIC's (RFC 9002) rather than TCP's tail-loss probe's ``2 * srtt``:
        our DATA-to-ACK samples already include the peer's delayed ACK (a
        lone keystroke is acknowledged ``ack_delay`` after it arrived), so
        ``2 * srtt + ack_delay`` would count that delay three times, and
        the probe must come within tens of milliseconds on a fast path.
        ``ack_delay`` is ours, the same setting as the peer's by default."""
        if self.srtt is None:
            return PTO_INITIAL
        # (Comparisons, not max(): asked after nearly every event.)
        spread = 4 * self.rttvar
        pto = self.srtt + (spread if spread > PTO_GRANULARITY else PTO_GRANULARITY) + ack_delay
        return pto if pto > PTO_MIN else PTO_MIN

    def cap(self) -> int:
        """Bytes this subflow may have in flight."""
        if self.rate <= 0:
            return INITIAL_CAP
        cap = self.rate * TARGET_QUEUE_TIME  # (comparisons, not min()/max(): once per pull)
        return int(MAX_CAP if cap > MAX_CAP else MIN_CAP if cap < MIN_CAP else cap)
