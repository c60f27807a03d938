"""Which hungry subflows new input (or new credit) wakes (scheduler.fed()).

Subflows whose rate is known are woken before those that have not shown
one: a subflow that just joined takes small first pieces, so while the
window binds, feeding it only cuts the stream into more, smaller frames
(issue 15 target 4: with 128 subflows sockimux opens itself, most of them
join during the transfer)."""

from __future__ import annotations

from sockimux.core import SessionConfig
from sockimux.core.handshake import OPEN
from sockimux.core.scheduler import Scheduler
from sockimux.core.sender import Outgoing, StreamSender
from sockimux.core.subflow import Subflow

from .test_many_subflows_cost import transfer
from .test_session import KB, finish


def scheduler_with(*rates: float) -> tuple[Scheduler, StreamSender]:
    """Open subflows 1, 2, ... with the given rates (0: not known yet), each
    made hungry in that order: each pulled once and found room but no data."""
    sender = StreamSender(1024 * KB)
    subflows = {i: Subflow(i, 0.0, b"", set(), state=OPEN) for i in range(1, len(rates) + 1)}
    sched = Scheduler(sender, subflows, SessionConfig(head_resend=False), lambda: None)
    for sid, rate in zip(subflows, rates, strict=True):
        subflows[sid].path.rate = rate
        out: list[Outgoing] = []
        sched.fill(subflows[sid], out, 0.0, None)
        assert out == []
    return sched, sender


def feed(sched: Scheduler, sender: StreamSender, count: int) -> list[int]:
    sender.push(b"x" * count)
    sender.on_ack(0, sender.end, False)
    sched.fed(count)
    return sorted(sched.take_ready())


def test_new_bytes_wake_a_subflow_of_known_rate_before_a_newcomer() -> None:
    sched, sender = scheduler_with(0.0, 50e6)  # the newcomer has waited longer
    assert feed(sched, sender, 64 * KB) == [2]
    # Only while one of known rate is hungry: then the newcomer, oldest first.
    sched, sender = scheduler_with(0.0, 0.0)
    assert feed(sched, sender, 16 * KB) == [1]


def test_among_subflows_of_known_rate_the_oldest_hungry_goes_first() -> None:
    sched, sender = scheduler_with(10e6, 0.0, 50e6)
    assert feed(sched, sender, 16 * KB) == [1]


def test_more_input_than_they_can_take_wakes_the_newcomers_too() -> None:
    # Each woken subflow takes its room of the count: a quarter second of
    # its rate (1 MB/s: 250,000 bytes), 256 KiB while its rate is unknown.
    for count, woken in ((200 * KB, [2]), (300 * KB, [1, 2]), (600 * KB, [1, 2, 3])):
        sched, sender = scheduler_with(0.0, 1e6, 0.0)
        assert feed(sched, sender, count) == woken, count


def test_a_keystroke_still_goes_to_the_subflow_the_peer_last_used() -> None:
    sched, sender = scheduler_with(50e6, 0.0)
    sched.freshest = 2
    assert feed(sched, sender, 1) == [2]


def test_a_window_bound_transfer_over_128_subflows_feeds_fewer_of_them() -> None:
    """The whole session, fake clock: 16 MiB through a 1 MiB window over
    128 subflows.  Waking the oldest hungry subflow whatever it had shown
    spread the stream over 71-74 of them (three seeds), each new one in
    small first pieces; now 38-56 carry it, and the copies of the head of
    the stream that their unmeasured rates set off (2-8 MB, against 5-12 MB)
    fall too."""
    for seed in (3, 4, 5):
        link = transfer(seed)
        finish(link, until=120.0)
        carrying = sum(1 for s in link.a.session.stats(link.now).subflows if s.data_out)
        assert carrying < 64, (seed, carrying)
