"""The process does not run for a while (SIGSTOP, a debugger, a paused
container or machine): that time is not counted against any subflow.

On resume uvloop runs the timers that came due before it polls for I/O, so
the session's timer sees every subflow silent for the whole pause, while
what the peer sent meanwhile waits to be read.  Fake clock only: the pause
is the clock jumping with nobody called, then the timer first, as uvloop
does, then the bytes that arrived meanwhile.
"""

from __future__ import annotations

import pytest

from sockimux.core import CloseCode, CloseSubflow, Session, SessionConfig
from sockimux.core import frames as F
from sockimux.core.frames import Hello

from .link import Link
from .test_session import check_clean, finish, payload

KB = 1024
CFG = SessionConfig(stall_timeout=1.0)


def pause_both(link: Link, seconds: float) -> None:
    """Neither session runs for ``seconds``; the pipes go on delivering into
    their (kernel) buffers.  On resume each session's timer fires first."""
    link.now += seconds
    for ep in (link.a, link.b):
        due = ep.session.next_deadline()
        assert due is not None and due < link.now
        ep.session.handle_timer(link.now)


@pytest.mark.parametrize("pause", [1.5, 3.0, 60.0])
def test_both_ends_paused_keep_their_subflows(pause: float) -> None:
    link = Link.between(payload(3000 * KB, 1), payload(1000 * KB, 2), subflows=3, config=CFG,
                        latency=(0.005, 0.02), rate=(5e5, 1e6))
    link.run(until=1.0)
    assert link.a.session.sender.acked > 0 and link.a.outcome is None
    pause_both(link, pause)
    finish(link)
    for ep in (link.a, link.b):
        stalled = [ev for _, ev in ep.closes if ev.code is CloseCode.STALLED]
        assert not stalled, f"{ep.name} dropped healthy subflows after the pause: {stalled}"
        assert any("not counted against any subflow" in log.message for _, log in ep.logs)
    assert all(p.x.ep.gone or p.alive for p in link.pairs)
    check_clean(link)


def open_subflow(s: Session, now: float) -> int:
    sid = s.open_subflow(now, bytes(16))
    s.pull(sid, now)
    s.receive(sid, F.encode_hello(Hello(b"P" * 16)), now)
    s.pull(sid, now)
    s.take_events()
    return sid


def stalled(s: Session) -> list[CloseSubflow]:
    return [ev for ev in s.take_events()
            if isinstance(ev, CloseSubflow) and ev.code is CloseCode.STALLED]


def test_a_late_timer_defers_judgement_it_does_not_skip_it() -> None:
    """After a pause nothing is judged at once; a subflow that then stays
    silent is dropped a keepalive and a stall timeout after the resume."""
    s = Session(b"A" * 16, 0.0, CFG)
    open_subflow(s, 0.0)
    due = s.next_deadline()
    assert due is not None and due <= CFG.keepalive
    resumed = due + 5.0
    s.handle_timer(resumed)
    assert not stalled(s)
    now = resumed
    while not (dropped := stalled(s)):
        for sid in s.take_ready():
            s.pull(sid, now)
        d = s.next_deadline()
        assert d is not None and d > now
        now = d
        s.handle_timer(now)
    assert resumed + CFG.stall_timeout <= now <= resumed + CFG.keepalive + CFG.stall_timeout + 1e-9
    assert "nothing heard" in dropped[0].reason


def test_a_timer_a_little_late_judges_as_before() -> None:
    """Late by less than a keepalive interval (a busy loop): a subflow silent
    for the stall timeout is dropped then."""
    s = Session(b"A" * 16, 0.0, CFG)
    open_subflow(s, 0.0)
    now = 0.0
    while True:
        for sid in s.take_ready():
            s.pull(sid, now)
        d = s.next_deadline()
        assert d is not None
        now = d + CFG.keepalive * 0.9
        s.handle_timer(now)
        if stalled(s):
            break
    assert now < CFG.stall_timeout + CFG.keepalive
