"""What happened leaves the core as typed events (issue 12 item 2), and the
runtime's rendering of them (runtime/render.py) keeps the log wording.

Fake clock, in-memory link (link.py)."""

from __future__ import annotations

import logging

from sockimux.core import CloseCode, Outcome, Session, SessionConfig
from sockimux.core import events as ev
from sockimux.core import frames as F
from sockimux.core.reopen import Verdict, verdict
from sockimux.runtime.render import render

from .link import Endpoint, Link
from .test_hardening import raw_peer
from .test_session import finish, payload, third

KB = 1024


def of(link_ep: Endpoint, kind: type) -> list:  # type: ignore[type-arg]
    return [e for _, e in link_ep.events if isinstance(e, kind)]


def test_established_closed_by_the_connection_and_final_counters() -> None:
    link = Link.between(payload(500 * KB, 1), payload(300 * KB, 2), subflows=3, rate=(2e5, 1e6))
    killed = []

    def kill_the_busiest() -> None:  # of A's subflows that carried B's data, the one carrying the most
        subs = link.a.session.subflows
        pair = max(link.live_pairs(),
                   key=lambda p: (subs[p.x.sid].data_in > 0, subs[p.x.sid].in_flight))
        killed.append(pair)
        link.kill(pair)

    link.at(0.3, kill_the_busiest)
    finish(link)
    a = link.a
    joined = of(a, ev.SubflowEstablished)
    assert sorted(e.sid for e in joined) == [1, 2, 3]
    assert all(e.peer == link.b.session.instance and 0.0 < e.at < 0.3 for e in joined)
    assert [e.open for e in joined] == [1, 2, 3]
    closed = of(a, ev.SubflowClosed)[0]  # (the others close at the end, when B is done)
    assert closed.sid == killed[0].x.sid and closed.at == 0.3
    assert closed.by is ev.By.CONNECTION and closed.code is None and not closed.fatal
    assert closed.established and closed.open == 2 and closed.reason == "killed"
    assert closed.counters.data_out > 0 and closed.counters.data_in > 0
    # What it held is re-sent on the others, and counted there.
    assert closed.resending > 0
    total = a.session.sender.resent_bytes
    assert total >= closed.resending
    assert sum(s.resent for s in a.session.subflows.values()) == total
    (ended,) = of(a, ev.SessionEnded)
    assert ended.outcome is Outcome.DONE and ended.code is CloseCode.NORMAL
    assert ended.totals.sent == ended.totals.sent_acked == 500 * KB
    assert ended.totals.written == 300 * KB and ended.totals.established == 3
    assert ended.totals.resent == total


def test_refused_by_the_peer_is_fatal_to_reopen() -> None:
    """C, another process, dials A: A refuses it (by us), C is told (by the peer)."""
    link = Link.between(payload(300 * KB, 1), b"", subflows=1, rate=(2e5, 1e6))
    c = third(link)
    joined = []
    link.at(0.1, lambda: joined.append(link.join(link.a, c)))
    finish(link)
    pair = joined[0]
    assert pair is not None
    (ours,) = [e for e in of(link.a, ev.SubflowClosed) if e.sid == pair.x.sid]
    assert ours.by is ev.By.US and ours.code is CloseCode.FOREIGN_INSTANCE and ours.fatal
    assert not ours.established
    (theirs,) = [e for e in of(c, ev.SubflowClosed) if e.sid == pair.y.sid]
    assert theirs.by is ev.By.PEER and theirs.code is CloseCode.FOREIGN_INSTANCE and theirs.fatal
    (refused,) = [e for e in of(c, ev.SubflowRefused) if e.sid == pair.y.sid]
    assert refused.by is ev.By.PEER
    # The same classification as the re-open policy's, not a copy of it.
    for code in CloseCode:
        closed = ev.SubflowClosed(1, ev.By.US, code, "", True, ev.Counters(0, 0, 0, 0, None), 0, 0, 0.0)
        assert closed.fatal is (verdict(code) is Verdict.FATAL)


def test_session_end_codes_are_final_for_reopen() -> None:
    for outcome in Outcome:
        ended = ev.SessionEnded(outcome, "", ev.Totals(0, 0, 0, 0, 0, 0, 0))
        assert (verdict(ended.code) is Verdict.FINAL) is (outcome is not Outcome.DONE)
    s = Session(b"A" * 16, 0.0)
    sid = raw_peer(s)
    s.receive(sid, F.encode_reason(F.FrameType.ABORT, CloseCode.SHUTDOWN, "bye"), 0.1)
    (ended,) = [e for e in s.take_events() if isinstance(e, ev.SessionEnded)]
    assert ended.outcome is Outcome.PEER_ABORTED and ended.code is CloseCode.PEER_ABORTED


def test_keepalive_round_trip_in_the_counters() -> None:
    cfg = SessionConfig(stall_timeout=1.0)
    link = Link.between(b"", b"", subflows=1, latency=(0.01, 0.01), config=cfg)
    link.a.eof = link.b.eof = False
    link.run(until=3.0)
    link.kill(link.pairs[0])
    link.run(until=3.0)
    (closed,) = of(link.a, ev.SubflowClosed)
    assert closed.counters.rtt is not None and 0.015 < closed.counters.rtt < 0.1


def test_rendering_keeps_the_wording() -> None:
    counters = ev.Counters(0, 0, 0, 0, None)
    lines = {
        ev.SubflowEstablished(3, b"P" * 16, 1.0, 2): (logging.INFO, "subflow 3 joined (2 open)"),
        ev.SubflowClosed(3, ev.By.CONNECTION, None, "connection closed", True, counters, 10, 1, 2.0):
            (logging.INFO, "subflow 3 closed (connection closed); re-sending 10 bytes on other "
                           "subflows; 1 open"),
        ev.SubflowRefused(4, ev.By.US, CloseCode.NOT_SOCKIMUX, "not a sockimux peer (bad magic)"):
            (logging.WARNING, "subflow 4 refused: not a sockimux peer (bad magic)"),
        ev.SubflowRefused(4, ev.By.PEER, CloseCode.STALLED, "x"):
            (logging.WARNING, "subflow 4: peer refused it: x"),
        ev.SubflowStalled(5, "nothing heard for 2.5 s"):
            (logging.WARNING, "subflow 5 stalled (nothing heard for 2.5 s); dropping it"),
        ev.Alone(10.2, 7): (logging.WARNING, "no subflow for 10 s; waiting for one to join "
                                             "(7 bytes unacknowledged)"),
    }
    for event, line in lines.items():
        assert render(event) == [line]
    unestablished = ev.SubflowClosed(3, ev.By.US, CloseCode.NOT_SOCKIMUX, "r", False, counters, 0, 0, 0.0)
    assert render(unestablished) == []
