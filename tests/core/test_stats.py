"""The stats snapshot (core/stats.py) against known fake-clock schedules.

Every number checked here follows from the schedule: what a frozen subflow
carried is exactly what is re-sent once it is killed, and exactly what the
far side never received; time without a subflow is the fake clock's.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from sockimux.core import Session, SessionConfig
from sockimux.core.errors import CloseCode
from sockimux.core.reopen import Failure, Reopener, Slot
from sockimux.core.stats import AddressStats, SessionStats

from .link import Link
from .test_reopen import Clock, NoJitter
from .test_session import finish, payload

# No head-of-line or probe copies (they would carry the frozen subflow's bytes
# too), no stall within the test, no keepalive PING: every RTT sample is DATA's.
QUIET = SessionConfig(head_resend=False, probe=False, stall_timeout=60.0)  # keepalive: every 15 s


def by_label(stats: SessionStats, label: str) -> dict[str, object]:
    (sub,) = [s for s in stats.subflows if s.label == label]
    return dataclasses.asdict(sub)


def test_a_killed_subflow_is_resent_and_counted_exactly() -> None:
    data = payload(600_000)
    link = Link.between(data, b"", subflows=2, latency=(0.01, 0.01), rate=(4e6, 4e6), config=QUIET)
    frozen, kept = link.pairs
    a, b = link.a.session, link.b.session
    a.label(frozen.x.sid, "frozen")
    a.label(kept.x.sid, "kept")
    b.label(frozen.y.sid, "frozen")
    link.freeze(frozen, forward=True, backward=False)  # A's DATA on it never arrives
    link.run(until=1.0, stop=lambda: False)

    before = a.stats(link.now)
    carried = sum(end - start for start, end in a.subflows[frozen.x.sid].ranges)
    lost = by_label(before, "frozen")
    assert lost["data_out"] > carried > 0  # DATA frame bytes: headers on top of the payload
    assert by_label(b.stats(link.now), "frozen")["data_in"] == 0
    assert before.acked < len(data) and before.resent == 0 and before.closed == 0
    assert before.open == 2 and before.established == 2

    link.kill(frozen)
    after = a.stats(link.now)
    assert after.data_out == before.data_out  # the closed subflow's counters stay in the totals
    assert after.open == 1 and after.closed == 1 and [s.label for s in after.subflows] == ["kept"]

    finish(link)
    end_a, end_b = a.stats(link.now), b.stats(link.now)
    assert end_a.outcome == end_b.outcome == "done"
    assert end_a.input == end_a.sent == end_a.acked == len(data) and end_a.input_ended
    assert end_a.resent == carried  # exactly what the frozen subflow held, re-sent once
    assert end_a.head_copies == 0
    assert end_b.received == end_b.written == len(data) and end_b.duplicates == 0
    # Every DATA byte A sent arrived at B, but for those frozen on the killed subflow.
    assert end_a.data_out == end_b.data_in + lost["data_out"]
    assert end_b.data_out == 0 and end_a.data_in == 0
    json.loads(json.dumps(end_a.as_dict()))  # plain types only


def test_round_trip_and_rates_are_measured_while_data_flows() -> None:
    data = payload(2_000_000)
    link = Link.between(data, b"", subflows=1, latency=(0.02, 0.02), rate=(2e6, 2e6), config=QUIET)
    link.run(until=0.6, stop=lambda: False)
    (out,) = link.a.session.stats(link.now).subflows
    (into,) = link.b.session.stats(link.now).subflows
    # Only DATA and its ACKs have crossed (no keepalive yet): the round trip
    # is theirs, at least the two latencies, plus what queued behind data.
    assert out.rtt is not None and 0.04 <= out.rtt < 0.5
    assert into.rtt is None  # B sent no DATA
    assert 1e6 < out.rate_out <= 3e6 and 1e6 < into.rate_in <= 2.2e6
    assert out.in_flight > 0 and out.age == pytest.approx(0.6)
    link.run(until=1.0, stop=lambda: False)
    link.freeze(link.pairs[0])  # nothing arrives any more: the receive rate falls to 0
    (quiet,) = link.b.session.stats(link.now + 1.0).subflows
    assert quiet.rate_in == 0.0 and quiet.data_in > into.data_in


def test_time_without_a_subflow() -> None:
    link = Link.between(payload(100_000), b"", subflows=1, latency=(0.01, 0.01), config=QUIET)
    link.a.eof = False
    link.run(until=1.0, stop=lambda: False)
    joined = link.a.session.stats(link.now)
    assert joined.alone_for == 0.0 and 0.0 < joined.alone_total < 0.1  # the first handshake
    link.kill(link.pairs[0])
    link.run(until=2.5, stop=lambda: False)
    alone = link.a.session.stats(2.5)
    assert alone.alone_for == pytest.approx(1.5) and alone.open == 0
    assert alone.alone_total == pytest.approx(joined.alone_total + 1.5)
    link.join()
    link.run(until=4.0, stop=lambda: False)
    back = link.a.session.stats(link.now)
    assert back.alone_for == 0.0 and back.established == 2 and back.closed == 1
    assert 1.5 < back.alone_total - joined.alone_total < 1.6  # the wait and the second handshake


def test_the_snapshot_is_immutable() -> None:
    link = Link.between(b"x", b"", subflows=1, config=QUIET)
    snap = link.a.session.stats(0.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.acked = 5  # type: ignore[misc]
    assert isinstance(snap.subflows, tuple)


def _counts(stats: AddressStats) -> tuple[int, ...]:
    return (stats.open, stats.starting, stats.waiting, stats.attempts, stats.reopens,
            stats.established, stats.lost)


def test_reopens_per_address_against_a_known_schedule() -> None:
    """Two addresses we open ourselves: one subflow of UNIX (count=2) is
    killed twice and comes back each time; the ssh one is refused twice,
    opens, then is refused for good.  Every count, reason and delay follows
    from the schedule (no jitter), and the session's snapshot carries them."""
    policy = Reopener(NoJitter())
    policy.add("UNIX-CONNECT:/run/b.sock", 2, 0.0)
    policy.add("ssh far", 1, 0.0)
    clock = Clock(policy)
    session = Session(b"A" * 16, 0.0)
    unix0, unix1, ssh = Slot(0, 0), Slot(0, 1), Slot(1, 0)
    assert clock.run_until(0.1) == [unix0, ssh, unix1]  # round-robin over the addresses
    policy.established(unix0, 0.1)
    policy.established(unix1, 0.1)
    policy.ended(ssh, 0.1, Failure.CONNECT_FAILED, "Connection refused")
    first = session.stats(0.1, policy.snapshot(0.1))
    u, s = first.addresses
    assert (u.label, u.count, s.label, s.count) == ("UNIX-CONNECT:/run/b.sock", 2, "ssh far", 1)
    assert _counts(u) == (2, 0, 0, 2, 0, 2, 0) and u.last_end is None and u.next_attempt_in is None
    assert _counts(s) == (0, 0, 1, 1, 0, 0, 0)
    assert s.last_end == "could not connect: Connection refused"
    assert s.next_attempt_in == pytest.approx(0.4) and s.stopped is None

    # The first kill: lost once, re-opened 0.4 s later.
    clock.run_until(1.0)  # the ssh slot's retry at 0.5: refused again at 1.0
    policy.ended(ssh, 1.0, Failure.CONNECT_FAILED, "Connection refused")
    policy.ended(unix0, 1.0, Failure.EXITED, "killed by SIGKILL")
    lost = session.stats(1.0, policy.snapshot(1.0)).addresses[0]
    assert _counts(lost) == (1, 0, 1, 2, 0, 2, 1)
    assert lost.last_end == "command exited: killed by SIGKILL"
    assert lost.next_attempt_in == pytest.approx(0.4)
    assert clock.run_until(1.4) == [unix0]
    policy.established(unix0, 1.5)
    # The second kill, before it was up 30 s: the delay doubles.
    policy.ended(unix0, 2.0, Failure.EXITED, "killed by SIGKILL")
    assert session.stats(2.0, policy.snapshot(2.0)).addresses[0].next_attempt_in == pytest.approx(0.8)
    assert clock.run_until(2.8) == [ssh, unix0]  # ssh's third try was due at 1.8
    policy.established(unix0, 2.9)
    policy.established(ssh, 2.9)
    both = session.stats(3.0, policy.snapshot(3.0))
    u, s = both.addresses
    assert _counts(u) == (2, 0, 0, 4, 2, 4, 2) and u.next_attempt_in is None
    assert u.last_end == "command exited: killed by SIGKILL" and u.stopped is None
    assert _counts(s) == (1, 0, 0, 3, 2, 1, 0)
    assert s.last_end == "could not connect: Connection refused"

    # A refusal that cannot heal stops the address: never retried.
    policy.ended(ssh, 4.0, CloseCode.AUTH_FAILED, "from the peer")
    stopped = session.stats(4.0, policy.snapshot(4.0)).addresses[1]
    assert _counts(stopped) == (0, 0, 0, 3, 2, 1, 1) and stopped.next_attempt_in is None
    assert stopped.last_end == stopped.stopped == "authentication failed: from the peer"
    assert clock.run_until(60.0) == []
    record = json.loads(json.dumps(session.stats(60.0, policy.snapshot(60.0)).as_dict()))
    assert [a["reopens"] for a in record["addresses"]] == [2, 2]
    assert record["addresses"][1]["stopped"] == "authentication failed: from the peer"
    assert Session(b"B" * 16, 0.0).stats(0.0).addresses == ()  # nothing dialed: none
