"""The re-open policy, on a fake clock: backoff, jitter, reset, fatal ends, the starting bound."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sockimux.core.errors import CloseCode, UsageError
from sockimux.core.reopen import (
    AddressStopped,
    EndReason,
    Failure,
    ReopenConfig,
    Reopener,
    ReopenEvent,
    Slot,
    SubflowBack,
    SubflowLost,
    Verdict,
    describe,
    fit_counts,
    verdict,
)

NOMINAL = [0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0, 30.0]


class NoJitter(random.Random):
    """random() is 0: every delay is its nominal value."""

    def random(self) -> float:
        return 0.0


class Clock:
    """Drives a Reopener the way the runtime will: start what is due, sleep until the deadline."""

    def __init__(self, policy: Reopener) -> None:
        self.policy = policy
        self.now = 0.0
        self.started: list[tuple[float, Slot]] = []

    def run_until(self, end: float) -> list[Slot]:
        """Start everything due up to ``end`` (advancing to each deadline); return what started."""
        out: list[Slot] = []
        while True:
            for slot in self.policy.start_due(self.now):
                out.append(slot)
                self.started.append((self.now, slot))
            deadline = self.policy.next_deadline()
            if deadline is None or deadline > end:
                self.now = max(self.now, end)
                return out
            assert deadline >= self.now, "a deadline in the past would spin the event loop"
            if deadline == self.now:  # start_due just ran at this time: nothing more is due
                raise AssertionError(f"deadline {deadline} is now but start_due started nothing")
            self.now = deadline

    def next_start(self) -> tuple[float, Slot]:
        """Advance to the next start, whenever it is."""
        deadline = self.policy.next_deadline()
        assert deadline is not None, "nothing will ever start"
        started = self.run_until(max(deadline, self.now))
        assert started, "the deadline came and nothing started"
        return self.now, started[0]


def one_address(config: ReopenConfig | None = None, rng: random.Random | None = None,
                count: int = 1) -> tuple[Reopener, Clock]:
    policy = Reopener(rng or NoJitter(), config)
    policy.add("EXEC:'ssh far'", count, 0.0)
    return policy, Clock(policy)


def fail_again(policy: Reopener, clock: Clock, slot: Slot) -> float:
    """End ``slot`` as could-not-connect now; return the delay until it is started again."""
    ended_at = clock.now
    policy.ended(slot, ended_at, Failure.CONNECT_FAILED, "Connection refused")
    started_at, again = clock.next_start()
    assert again == slot
    return started_at - ended_at


def test_backoff_doubles_from_under_a_second_and_is_capped() -> None:
    policy, clock = one_address()
    (slot,) = clock.run_until(0.0)
    delays = [fail_again(policy, clock, slot) for _ in NOMINAL]
    assert delays == pytest.approx(NOMINAL)


def test_jitter_takes_up_to_half_off_each_delay() -> None:
    rng = random.Random(7)
    firsts, capped = [], []
    for _ in range(200):
        policy, clock = one_address(rng=rng)
        (slot,) = clock.run_until(0.0)
        delays = [fail_again(policy, clock, slot) for _ in NOMINAL]
        for delay, nominal in zip(delays, NOMINAL, strict=True):
            assert nominal * 0.5 < delay <= nominal + 1e-9
        firsts.append(delays[0])
        capped.append(delays[-1])
    # The jitter really spreads retries over its range (not a constant factor).
    assert min(firsts) < 0.22 and max(firsts) > 0.38
    assert min(capped) < 16 and max(capped) > 29
    assert max(firsts) <= 0.4  # the first retry is well under a second


def test_a_long_lived_subflow_resets_the_backoff() -> None:
    policy, clock = one_address()
    (slot,) = clock.run_until(0.0)
    for _ in range(5):
        fail_again(policy, clock, slot)  # 0.4 ... 6.4: the next would be 12.8
    policy.established(slot, clock.now)
    clock.run_until(clock.now + 30.0)
    assert fail_again(policy, clock, slot) == pytest.approx(0.4)


def test_a_short_lived_subflow_does_not_reset_the_backoff() -> None:
    policy, clock = one_address()
    (slot,) = clock.run_until(0.0)
    for _ in range(5):
        fail_again(policy, clock, slot)
    policy.established(slot, clock.now)
    clock.run_until(clock.now + 29.0)  # a path cut every 29 s is not a healthy one
    assert fail_again(policy, clock, slot) == pytest.approx(12.8)


def test_a_subflow_lost_after_a_long_life_comes_back_at_once() -> None:
    policy, clock = one_address()
    (slot,) = clock.run_until(0.0)
    policy.established(slot, 0.5)
    clock.run_until(100.0)
    assert fail_again(policy, clock, slot) == pytest.approx(0.4)


FATAL = [CloseCode.NOT_SOCKIMUX, CloseCode.BAD_VERSION, CloseCode.FOREIGN_INSTANCE,
         CloseCode.SELF_CONNECT, CloseCode.AUTH_FAILED, Failure.CANNOT_RUN]
FINAL = [CloseCode.OUTPUT_CLOSED, CloseCode.PEER_ABORTED, CloseCode.SHUTDOWN]
TRANSIENT = [CloseCode.NORMAL, CloseCode.PROTOCOL_ERROR, CloseCode.FLOW_CONTROL, CloseCode.STALLED,
             CloseCode.HANDSHAKE_TIMEOUT, CloseCode.TOO_MANY_SUBFLOWS, Failure.CONNECT_FAILED,
             Failure.CONNECTION_LOST, Failure.EXITED]


def test_every_end_reason_is_classified_and_described() -> None:
    # A new close code must be placed in one of these lists on purpose.
    assert sorted(map(str, FATAL + FINAL + TRANSIENT)) == sorted(map(str, [*CloseCode, *Failure]))
    for reasons, expected in ((FATAL, Verdict.FATAL), (FINAL, Verdict.FINAL), (TRANSIENT, Verdict.TRANSIENT)):
        for reason in reasons:
            assert verdict(reason) is expected, reason
            assert describe(reason) and "\n" not in describe(reason)
    assert describe(Failure.EXITED, "status 255") == "command exited: status 255"


@pytest.mark.parametrize("reason", FATAL, ids=lambda r: r.name)
def test_a_fatal_refusal_stops_the_address_for_good(reason: EndReason) -> None:
    policy = Reopener(NoJitter())
    a = policy.add("TCP:far:7000", 3, 0.0)
    b = policy.add("UNIX-CONNECT:/tmp/b", 1, 0.0)
    clock = Clock(policy)
    clock.run_until(1.0)
    assert {slot for _, slot in clock.started} == {Slot(a, 0), Slot(a, 1), Slot(a, 2), Slot(b, 0)}
    policy.established(Slot(a, 1), 1.0)
    policy.ended(Slot(a, 0), 1.0, reason, "from the peer")
    events = policy.take_events()
    assert events == [AddressStopped(a, "TCP:far:7000", reason, "from the peer")]
    assert "cannot heal, not retrying it" in events[0].message
    # The other subflows of that address are not replaced either, whatever ends them.
    policy.ended(Slot(a, 1), 2.0, CloseCode.STALLED)
    policy.ended(Slot(a, 2), 2.0, Failure.CONNECT_FAILED)
    policy.ended(Slot(b, 0), 2.0, Failure.CONNECT_FAILED)
    clock.started.clear()
    clock.run_until(1000.0)
    assert [slot for _, slot in clock.started] == [Slot(b, 0)]  # only the other address goes on
    assert [type(e) for e in policy.take_events()] == [SubflowLost]  # b's loss; a says nothing more
    assert policy.stats(a).stopped == describe(reason, "from the peer")
    assert not policy.gave_up
    policy.ended(Slot(b, 0), 1000.0, CloseCode.AUTH_FAILED)
    assert policy.gave_up
    assert policy.next_deadline() is None and policy.start_due(10_000.0) == []


@pytest.mark.parametrize("reason", FINAL, ids=lambda r: r.name)
def test_when_the_session_ends_nothing_is_started_or_reported(reason: EndReason) -> None:
    policy = Reopener(NoJitter())
    policy.add("EXEC:a", 2, 0.0)
    policy.add("EXEC:b", 1, 0.0)
    clock = Clock(policy)
    clock.run_until(1.0)
    policy.ended(Slot(0, 0), 1.0, reason)
    policy.ended(Slot(0, 1), 1.0, CloseCode.NORMAL)
    assert policy.take_events() == []
    assert policy.next_deadline() is None and policy.start_due(1000.0) == []
    assert not policy.gave_up


@pytest.mark.parametrize("reason", TRANSIENT, ids=lambda r: r.name)
def test_a_transient_end_is_retried(reason: EndReason) -> None:
    policy, clock = one_address()
    (slot,) = clock.run_until(0.0)
    policy.ended(slot, 0.0, reason)
    assert clock.next_start() == (pytest.approx(0.4), slot)


def test_twenty_exec_addresses_start_at_most_eight_at_once_staggered() -> None:
    cfg = ReopenConfig()
    policy = Reopener(random.Random(1), cfg)
    for i in range(20):
        policy.add(f"EXEC:'ssh host{i}'", 1, 0.0)
    clock = Clock(policy)
    clock.run_until(10.0)
    # Nobody finished a handshake: exactly 8 started, 20 ms apart, then the policy waits.
    times = [t for t, _ in clock.started]
    assert len(times) == cfg.max_starting and policy.starting == 8
    assert times == pytest.approx([i * cfg.stagger for i in range(8)])
    assert [slot.address for _, slot in clock.started] == list(range(8))  # in the order given
    assert policy.next_deadline() is None
    # Each finished handshake (or failure) lets one more start, never more than 8 at once.
    opened = 0
    while len({slot.address for _, slot in clock.started}) < 20:
        oldest = next(slot for _, slot in clock.started if policy.stats(slot.address).starting)
        if opened % 3 == 2:
            policy.ended(oldest, clock.now, CloseCode.HANDSHAKE_TIMEOUT)
        else:
            policy.established(oldest, clock.now)
        opened += 1
        clock.run_until(clock.now + 0.05)
        assert policy.starting <= 8
    gaps = [b - a for (a, _), (b, _) in zip(clock.started, clock.started[1:], strict=False)]
    assert min(gaps) >= cfg.stagger - 1e-9
    assert {slot.address for _, slot in clock.started} == set(range(20))


def test_socket_addresses_are_not_staggered_only_bounded() -> None:
    """128 UNIX/TCP subflows (no process to start) open 8 at a time as fast as
    their hellos finish, not one per 20 ms (2.5 s for 128); an EXEC address
    beside them keeps its 20 ms between starts."""
    cfg = ReopenConfig()
    policy = Reopener(random.Random(3), cfg)
    policy.add("UNIX-CONNECT:/tmp/b.sock", 128, 0.0, paced=False)
    policy.add("EXEC:'ssh far'", 4, 0.0)
    clock = Clock(policy)
    clock.run_until(0.0)
    assert policy.starting == cfg.max_starting  # 8 at once, at time 0
    assert [slot.address for _, slot in clock.started].count(1) == 1  # one EXEC start so far
    opened: set[Slot] = set()
    while len(opened) < 128:
        # Every socket hello done 1 ms after it started: the next ones go at once.
        for _, slot in clock.started:
            if slot.address == 0 and slot not in opened:
                policy.established(slot, clock.now)
                opened.add(slot)
        clock.run_until(clock.now + 0.001)
    socket_times = [t for t, slot in clock.started if slot.address == 0]
    assert len(socket_times) == 128 and max(socket_times) < 0.02  # vs 2.54 s staggered
    exec_times = [t for t, slot in clock.started if slot.address == 1]
    gaps = [b - a for a, b in zip(exec_times, exec_times[1:], strict=False)]
    assert all(g >= cfg.stagger - 1e-9 for g in gaps)


def test_slots_due_together_start_round_robin_over_addresses() -> None:
    policy = Reopener(NoJitter(), ReopenConfig(stagger=0.0, max_starting=100))
    policy.add("EXEC:a", 3, 0.0)
    policy.add("EXEC:b", 2, 0.0)
    policy.add("EXEC:c", 1, 0.0)
    assert policy.start_due(0.0) == [Slot(0, 0), Slot(1, 0), Slot(2, 0), Slot(0, 1), Slot(1, 1), Slot(0, 2)]


def test_lost_and_back_are_reported_once_not_every_attempt() -> None:
    policy, clock = one_address(count=2)
    first, second = clock.run_until(0.1)
    policy.established(first, 0.1)
    policy.established(second, 0.1)
    assert policy.take_events() == []  # opened at the first attempt: the session logs the join
    clock.run_until(5.0)
    policy.ended(first, 5.0, Failure.EXITED, "status 255")
    (lost,) = policy.take_events()
    assert lost == SubflowLost(first, "EXEC:'ssh far' (1 of 2)", Failure.EXITED, "status 255",
                               was_open=True, retry_in=pytest.approx(0.4))
    assert lost.message == ("subflow EXEC:'ssh far' (1 of 2) lost (command exited: status 255); "
                            "re-opening it in 0.4 s")
    assert clock.next_start() == (pytest.approx(5.4), first)
    fail_again(policy, clock, first)
    fail_again(policy, clock, first)  # two more failures: nothing to say
    assert policy.take_events() == []
    policy.established(first, clock.now)
    (back,) = policy.take_events()
    assert isinstance(back, SubflowBack)
    assert (back.attempts, back.first) == (3, False)
    assert back.outage == pytest.approx(0.4 + 0.8 + 1.6)
    assert back.message == "subflow EXEC:'ssh far' (1 of 2) back after 3 attempts (2.8 s)"


def test_a_slot_that_never_opened_is_reported_on_its_first_failure_and_when_it_opens() -> None:
    policy, clock = one_address()
    (slot,) = clock.run_until(0.0)
    policy.ended(slot, 0.5, Failure.CONNECT_FAILED, "No such file or directory")
    (lost,) = policy.take_events()
    assert isinstance(lost, SubflowLost) and not lost.was_open
    assert lost.message == ("subflow EXEC:'ssh far' could not be opened (could not connect: "
                            "No such file or directory); retrying until it can")
    clock.now = 0.5
    assert clock.next_start() == (pytest.approx(0.9), slot)
    fail_again(policy, clock, slot)
    assert policy.take_events() == []
    policy.established(slot, clock.now)
    (back,) = policy.take_events()
    assert isinstance(back, SubflowBack) and back.first and back.attempts == 2
    assert back.outage == pytest.approx(0.4 + 0.8)
    assert back.message == "subflow EXEC:'ssh far' open after 2 attempts (1.2 s)"


def test_counters_per_address() -> None:
    policy, clock = one_address(count=2)
    first, second = clock.run_until(0.1)
    policy.established(first, 0.1)
    policy.ended(second, 0.1, Failure.CONNECT_FAILED, "Connection refused")
    clock.next_start()
    fail_again(policy, clock, second)
    stats = policy.stats(0)
    assert (stats.count, stats.open, stats.starting) == (2, 1, 1)
    assert (stats.attempts, stats.reopens, stats.established) == (4, 2, 1)
    assert stats.last_end == "could not connect: Connection refused"
    assert stats.stopped is None
    policy.ended(first, clock.now, CloseCode.STALLED, "no keepalive answer in 2.5 s")
    assert policy.stats(0).last_end == "stalled: no keepalive answer in 2.5 s"


def test_reports_about_slots_in_the_wrong_state_are_refused() -> None:
    policy, clock = one_address()
    slot = Slot(0, 0)
    with pytest.raises(UsageError, match="is waiting, not starting"):
        policy.established(slot, 0.0)
    clock.run_until(0.0)
    policy.established(slot, 0.0)
    with pytest.raises(UsageError, match="is open, not starting"):
        policy.established(slot, 0.0)
    policy.ended(slot, 1.0, CloseCode.NORMAL)
    with pytest.raises(UsageError, match="is waiting, not starting or open"):
        policy.ended(slot, 1.0, CloseCode.NORMAL)


def test_settings_are_checked() -> None:
    for bad in (dict(first_delay=0.0), dict(first_delay=60.0), dict(jitter=1.0), dict(max_starting=0),
                dict(factor=0.5), dict(stagger=-1.0)):
        with pytest.raises(UsageError, match="inconsistent re-open settings"):
            ReopenConfig(**bad)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="count"):
        Reopener(NoJitter()).add("EXEC:a", -1, 0.0)


def test_a_huge_number_of_failures_stays_at_the_cap() -> None:
    policy, clock = one_address()
    (slot,) = clock.run_until(0.0)
    st_ = policy._addresses[0].slots[0]  # skip thousands of real failures
    st_.failures = 5000
    assert fail_again(policy, clock, slot) == pytest.approx(30.0)


# -- any sequence of events keeps the invariants -----------------------------------------

ACTIONS = st.lists(st.tuples(st.sampled_from(["establish", "end", "wait"]), st.integers(0, 40),
                             st.sampled_from(FATAL + TRANSIENT + FINAL), st.floats(0.0, 40.0)),
                   max_size=60)


@given(ACTIONS, st.integers(0, 2**32 - 1))
def test_invariants_hold_for_any_sequence(actions: list[tuple[str, int, EndReason, float]],
                                          seed: int) -> None:
    cfg = ReopenConfig()
    policy = Reopener(random.Random(seed), cfg)
    for i, count in enumerate((3, 1, 5)):
        policy.add(f"EXEC:{i}", count, 0.0)
    clock = Clock(policy)
    starting: set[Slot] = set()
    opened: set[Slot] = set()
    ended_at: dict[Slot, float] = {}
    stopped: set[int] = set()
    events: list[ReopenEvent] = []
    over = False
    for kind, pick, reason, wait in actions:
        for slot in clock.run_until(clock.now + (wait if kind == "wait" else 0.0)):
            assert slot.address not in stopped and not over
            assert clock.now - ended_at.get(slot, -1e9) >= cfg.first_delay * (1 - cfg.jitter) - 1e-9
            starting.add(slot)
        assert policy.starting == len(starting) <= cfg.max_starting
        live = sorted(starting | opened)
        if kind == "wait" or not live:
            continue
        slot = live[pick % len(live)]
        if kind == "establish" and slot in starting:
            policy.established(slot, clock.now)
            starting.discard(slot)
            opened.add(slot)
        elif kind == "end":
            policy.ended(slot, clock.now, reason)
            starting.discard(slot)
            opened.discard(slot)
            ended_at[slot] = clock.now
            if verdict(reason) is Verdict.FATAL:
                stopped.add(slot.address)
            over = over or verdict(reason) is Verdict.FINAL
        events.extend(policy.take_events())
    stops = [e.address for e in events if isinstance(e, AddressStopped)]
    assert len(stops) == len(set(stops))  # each address is stopped at most once
    gaps = [b - a for (a, _), (b, _) in zip(clock.started, clock.started[1:], strict=False)]
    assert all(g >= cfg.stagger - 1e-9 for g in gaps)


@pytest.mark.parametrize("counts, most, fitted", [
    ([128], 4, [4]),
    ([3, 3], 1024, [3, 3]),
    ([64, 64], 16, [8, 8]),
    ([100, 10, 1], 20, [18, 1, 1]),
    ([100, 1, 1, 1], 4, [1, 1, 1, 1]),  # the floor of 1 each: never more than `most` in all
    ([100, 1, 1], 5, [3, 1, 1]),
    ([1, 1, 1], 2, [1, 1, 0]),  # more addresses than `most`: the last opens none
    ([4, 4, 4, 4, 4], 3, [1, 1, 1, 0, 0]),
])
def test_counts_beyond_max_subflows_are_shared_in_proportion(counts: list[int], most: int,
                                                             fitted: list[int]) -> None:
    """Slots past --max-subflows would be refused by our own session and
    retried for ever; every address keeps at least one while there are
    fewer addresses than --max-subflows."""
    assert fit_counts(counts, most) == fitted
    assert sum(fit_counts(counts, most)) == min(sum(counts), most)


def test_an_address_given_no_slot_is_never_started_and_counts_as_stopped() -> None:
    """More addresses than --max-subflows: the ones fit_counts gives none
    are never opened, and the policy gives up only when the others are
    stopped for good (not at once, not never)."""
    policy = Reopener(random.Random(1))
    first = policy.add("UNIX-CONNECT:/a", 1, 0.0)
    spare = policy.add("UNIX-CONNECT:/b", 0, 0.0)
    started = policy.start_due(0.0)
    assert [slot.address for slot in started] == [first]
    assert policy.stats(spare).count == 0 and policy.stats(spare).stopped
    assert not policy.gave_up
    policy.ended(started[0], 0.1, Failure.CANNOT_RUN)  # stops its address for good
    assert policy.gave_up
