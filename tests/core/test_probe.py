"""The probe timeout (subflow.py, "quiet"; scheduler.py, probe copies), with a fake clock.

A subflow that stops without a word (a relay stopped: no FIN, no RST) keeps
what it was given until the stall timeout drops it.  With the probe, DATA
in flight with no sign of progress for a probe timeout makes it *quiet*:
what it holds is copied to another subflow at once, it takes no new bytes
until it progresses again, and a subflow that was only slow costs a few
duplicate bytes.  Keystrokes here are bytes appended to an endpoint's
input on a fixed schedule; the echo is the far endpoint appending to its
own input whatever it wrote out, as ``cat`` would.
"""

from __future__ import annotations

import pytest

from sockimux.core import CloseCode, Session, SessionConfig, estimate, scheduler

from .link import Endpoint, Link, Pair
from .test_session import check_clean, finish, payload

KB = 1024
PERIOD = 0.020  # s between two keystrokes
CFG = SessionConfig()  # the defaults: stall timeout 2.5 s


class Echo(Endpoint):
    """Whatever is written out is taken as input again (``cat``)."""

    def take_output(self, now: float, output: list[bytes | bytearray | memoryview] | None = None) -> bool:
        got = super().take_output(now, output)
        if len(self.output) > len(self.data):
            self.data = bytes(self.output)
        return got


class Typist(Endpoint):
    """Records when each byte of its output came back."""

    def __init__(self, name: str, session: Session) -> None:
        super().__init__(name, session, b"", eof=False)
        self.sent_at: list[float] = []
        self.back_at: list[float] = []

    def type(self, now: float) -> None:
        self.data += bytes((len(self.data) & 0xFF,))
        self.sent_at.append(now)

    def take_output(self, now: float, output: list[bytes | bytearray | memoryview] | None = None) -> bool:
        got = super().take_output(now, output)
        self.back_at += [now] * (len(self.output) - len(self.back_at))
        return got

    def echo_times(self) -> list[float]:
        return [back - sent for sent, back in zip(self.sent_at, self.back_at, strict=False)]


def echo_link(subflows: int, latency: float = 0.0005, seed: int = 1) -> tuple[Link, Typist, Echo]:
    a = Typist("A", Session(b"A" * 16, 0.0, CFG))
    b = Echo("B", Session(b"B" * 16, 0.0, CFG), b"", eof=False)
    link = Link(a, b, seed=seed)
    for _ in range(subflows):
        link.join(latency=latency, rate=50e6)
    return link, a, b


START = 0.1  # the first keystroke


def tick(i: int) -> float:
    """When keystroke ``i`` is typed."""
    return START + i * PERIOD


def type_every(link: Link, a: Typist, stop: float) -> None:
    i = 0
    while tick(i) < stop:
        link.at(tick(i), lambda: a.type(link.now))
        i += 1


def carrier(link: Link, offset: int) -> Pair:
    """The live pair whose A end carried stream byte ``offset`` last."""
    s = link.a.session
    for pair in reversed(link.live_pairs()):
        sub = s.subflows.get(pair.x.sid)
        if sub is not None and any(start <= offset < end for start, end in sub.ranges):
            return pair
    raise AssertionError(f"no subflow carries byte {offset}\n{link.describe()}")


def freeze_after_keystroke(link: Link, a: Typist, at: float) -> list[Pair]:
    """At ``at`` (just after a keystroke), freeze both directions of the subflow that took it."""
    frozen: list[Pair] = []

    def freeze() -> None:
        pair = carrier(link, len(a.data) - 1)
        link.freeze(pair)
        frozen.append(pair)

    link.at(at + 1e-6, freeze, disruptive=True)
    return frozen


def frozen_echo(seconds: float) -> tuple[Link, Typist, Pair]:
    """An echo over 3 subflows for ``seconds``; at tick 45 the subflow that
    just took a keystroke freezes both ways: the link, A, and that pair."""
    link, a, _ = echo_link(3)
    type_every(link, a, seconds)
    frozen = freeze_after_keystroke(link, a, tick(45))
    link.run(until=tick(45) + 2e-6, stop=lambda: False)
    (pair,) = frozen
    return link, a, pair


def test_a_keystroke_on_a_subflow_that_goes_silent_is_copied_within_the_probe_timeout() -> None:
    """Echo a byte every 20 ms over 3 subflows; 1 s in, the subflow that
    just took a byte stops both ways (a stopped relay).  Before the probe,
    that byte and every later one waited for the stall timeout (2.5 s).
    Now it goes again on another subflow within A's probe timeout, the
    reply within B's, and every echo is back in well under the stall
    timeout, each byte exactly once (the link checks the streams)."""
    link, a, pair = frozen_echo(2.0)
    sub = link.a.session.subflows[pair.x.sid]
    far = link.b.session.subflows[pair.y.sid]
    link.run(until=2.3, stop=lambda: False)
    times = a.echo_times()
    assert len(times) == len(a.sent_at)
    worst = max(times)
    assert worst < CFG.stall_timeout / 10, worst
    assert not pair.x.closed_at and not pair.y.closed_at  # not dropped before the stall timeout
    # What explains it: a probe timeout of tens of ms, from the round trip
    # measured on the keystrokes, at A's end for the byte (or at B's for a
    # reply caught there), once: a reply goes on the subflow the byte's
    # copy arrived on, not on the stopped one.
    pto = max(sub.path.pto(CFG.ack_delay), far.path.pto(CFG.ack_delay))
    assert sub.path.srtt is not None and pto < 0.1, pto
    assert worst < pto + 0.01, (worst, pto)
    assert sub.quiet and sub.probe_copies == 0
    assert link.a.session.stats(link.now).probe_copies >= 1  # the byte went again elsewhere
    check_clean(link)


def test_a_quiet_subflow_takes_no_new_bytes_until_it_progresses() -> None:
    """While quiet, the frozen subflow's count of DATA sent does not move
    (new keystrokes go to the others); once thawed (it was only slow: 0.5 s,
    well under the stall timeout) the peer's ACK shows progress, it is no
    longer quiet, and when the others stop it carries the keystrokes again;
    nothing is dropped, and every byte is delivered once: the copies that
    arrive second are dropped by B."""
    link, a, pair = frozen_echo(3.0)
    sub = link.a.session.subflows[pair.x.sid]
    link.run(until=tick(45) + 0.1, stop=lambda: False)  # over any probe timeout here
    out_when_quiet = sub.data_out
    link.run(until=1.5, stop=lambda: False)
    assert sub.data_out == out_when_quiet
    assert sub.quiet
    assert len(a.sent_at) > 20  # keystrokes went on meanwhile, and came back:
    assert max(a.echo_times()) < CFG.stall_timeout / 10
    link.thaw(pair)
    link.run(until=1.6, stop=lambda: False)
    assert not sub.quiet
    for other in link.live_pairs():  # now only it can carry the keystrokes
        if other is not pair:
            link.freeze(other)
    link.run(until=3.2, stop=lambda: False)
    assert sub.data_out > out_when_quiet  # keystrokes again
    assert not link.a.closes and not link.b.closes  # nothing dropped (the others: not yet)
    assert len(a.echo_times()) == len(a.sent_at)
    assert max(a.echo_times()) < CFG.stall_timeout / 10
    assert link.b.session.receiver.duplicate_bytes > 0  # the original, after its copy
    check_clean(link)


def test_probe_copies_are_bounded_per_quiet_episode_in_bulk() -> None:
    """8 MiB from A over 2 subflows of 20 MB/s; one stops both ways 0.1 s in,
    holding far more than scheduler.PROBE_COPY_LIMIT.  It goes quiet within a probe
    timeout and takes no more; at most scheduler.PROBE_COPY_LIMIT of what it holds is
    copied (the rest waits for the stall timeout and is re-sent then, as
    before), and the transfer completes exactly."""
    cfg = SessionConfig()
    link = Link(Endpoint("A", Session(b"A" * 16, 0.0, cfg), payload(8192 * KB, 1)),
                Endpoint("B", Session(b"B" * 16, 0.0, cfg), b""), seed=3)
    x = link.join(latency=0.002, rate=20e6)
    link.join(latency=0.002, rate=20e6)
    assert x is not None
    link.run(until=0.1, stop=lambda: False)
    link.freeze(x)
    sub = link.a.session.subflows[x.x.sid]
    held = sum(end - start for start, end in sub.ranges if end > link.a.session.sender.acked)
    assert held > scheduler.PROBE_COPY_LIMIT
    link.run(until=0.1 + sub.path.pto(cfg.ack_delay) + 0.01, stop=lambda: False)
    assert sub.quiet
    out_when_quiet = sub.data_out
    link.run(until=0.1 + cfg.stall_timeout - 0.1, stop=lambda: False)
    assert sub.data_out == out_when_quiet
    stats = link.a.session.stats(link.now)
    assert 0 < stats.probe_copies <= scheduler.PROBE_COPY_LIMIT
    assert stats.resent == 0  # not dropped yet
    finish(link)
    assert link.a.session.stats(link.now).probe_copies == stats.probe_copies  # one episode


def test_the_probe_timeout_follows_the_round_trip() -> None:
    est = estimate.PathEstimate()
    assert est.pto(0.02) > 0.1  # nothing measured yet: cautious
    for _ in range(50):
        est.on_rtt(0.0001)  # keepalive PINGs on loopback
    # The peer may still hold an ACK for ack_delay:
    assert est.pto(0.02) == pytest.approx(max(estimate.PTO_MIN, 0.0001 + estimate.PTO_GRANULARITY + 0.02))
    for _ in range(50):
        est.on_rtt(0.300)
    assert est.srtt is not None and 0.29 < est.srtt <= 0.3
    assert est.srtt + estimate.PTO_GRANULARITY + 0.02 <= est.pto(0.02) < 0.4
    est.on_rtt(0.6)  # a jump: the deviation widens the timeout at once
    assert est.pto(0.02) > 0.300 + 4 * 0.075


def test_a_healthy_distant_subflow_never_goes_quiet() -> None:
    """Keystrokes over 2 subflows with a 150 ms round trip: every byte is
    acknowledged after about srtt, never later than the probe timeout,
    so no copy is ever made and nothing is dropped."""
    link, a, b = echo_link(2, latency=0.075)
    type_every(link, a, 4.0)
    link.run(until=4.5, stop=lambda: False)
    for ep in (link.a, link.b):
        stats = ep.session.stats(link.now)
        assert stats.probe_copies == 0, stats
        assert all(s.rtt is not None and s.rtt > 0.15 for s in stats.subflows)
        assert all(0.15 < s.pto < 0.5 and not s.quiet for s in stats.subflows)
    assert max(a.echo_times()) < 0.25
    assert not link.a.closes and not link.b.closes
    check_clean(link)


def test_a_frozen_subflow_is_still_dropped_at_the_stall_timeout() -> None:
    """Quiet is not dead: the stall rules still drop it, as before."""
    link, a, b = echo_link(3)
    type_every(link, a, 4.0)
    frozen = freeze_after_keystroke(link, a, tick(45))
    link.run(until=tick(45) + CFG.stall_timeout + 0.1, stop=lambda: False)
    (pair,) = frozen
    assert not pair.alive
    assert link.a.close_codes() == [CloseCode.STALLED]
    link.run(until=4.5, stop=lambda: False)
    assert len(a.echo_times()) == len(a.sent_at)
    assert max(a.echo_times()) < CFG.stall_timeout / 10
    check_clean(link)



def test_a_subflow_back_from_quiet_carries_no_copies_of_its_own_bytes() -> None:
    """Bulk over 2 subflows, B's output written 256 KiB a second (so B's
    ACKs do not acknowledge the stream far).  Y stops both ways: quiet, what it holds is
    copied to X (64 KiB).  Then only B's ACKs on X are held back for 0.2 s:
    X goes quiet too, its copies queued with nowhere to go (Y is quiet).
    When X's ACKs arrive it is back, and it must not carry copies of what it
    carried itself, queued when it seemed quiet."""
    cfg = SessionConfig()
    link = Link(Endpoint("A", Session(b"A" * 16, 0.0, cfg), payload(8192 * KB, 1)),
                Endpoint("B", Session(b"B" * 16, 0.0, cfg), b"", consumer=(1.0, 256 * KB)), seed=5)
    x = link.join(latency=0.002, rate=10e6)
    y = link.join(latency=0.002, rate=10e6)
    assert x is not None and y is not None
    sx, sy = (link.a.session.subflows[p.x.sid] for p in (x, y))
    link.run(until=0.1, stop=lambda: False)
    link.freeze(y)
    link.run(until=0.3, stop=lambda: False)
    assert sy.quiet and not sx.quiet
    assert sx.probe_copies == scheduler.PROBE_COPY_LIMIT  # Y's, on X
    link.freeze(x, forward=False)  # B's ACKs on X held back
    link.run(until=0.5, stop=lambda: False)
    assert sx.quiet
    link.thaw(x)
    link.run(until=0.55, stop=lambda: False)
    assert not sx.quiet
    assert sx.probe_copies == scheduler.PROBE_COPY_LIMIT
    finish(link)
    assert link.a.session.stats(link.now).probe_copies == scheduler.PROBE_COPY_LIMIT
