"""What an accepted or would-be peer can make a session do: owe, wait, bind.

Fake clock, in-memory link (link.py): no sleeps."""

from __future__ import annotations

import random

from sockimux.core import CloseCode, CloseSubflow, Outcome, Session, SessionConfig
from sockimux.core import frames as F
from sockimux.core.frames import FrameReader, FrameType, Hello

from .link import Endpoint, Link

KB = 1024


def payload(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def raw_peer(session: Session, now: float = 0.0, instance: bytes = b"P" * 16) -> int:
    """A subflow whose other end is the test, which has sent a valid hello."""
    sid = session.open_subflow(now, bytes(16))
    session.pull(sid, now)
    session.receive(sid, F.encode_hello(Hello(instance)), now)
    session.pull(sid, now)
    session.take_events()
    return sid


def frames_in(buffers: list[bytes | memoryview]) -> list[F.Frame]:
    reader = FrameReader()
    data = b"".join(bytes(b) for b in buffers)
    out: list[F.Frame] = []
    while data:
        buf = reader.get_buffer()
        n = min(len(buf), len(data))
        buf[:n] = data[:n]
        del buf
        data = data[n:]
        reader.buffer_updated(n)
        while (f := reader.next_frame()) is not None:
            out.append(F.Frame(f.type, f.value, f.flags, bytes(f.body)))
        reader.release()
    return out


# -- what a peer can make us owe (issue 11 item 6) ---------------------------------------


def test_a_ping_flood_is_owed_one_pong() -> None:
    """However many PINGs arrive between two pulls, one PONG (the newest token) is owed."""
    s = Session(b"A" * 16, 0.0)
    sid = raw_peer(s)
    s.receive(sid, b"".join(F.encode_control(FrameType.PING, t) for t in range(1, 10_001)), 0.1)
    owed = frames_in(s.pull(sid, 0.1))
    assert [(f.type, f.value) for f in owed if f.type is FrameType.PONG] == [(FrameType.PONG, 10_000)]
    assert len(owed) <= 2  # the PONG, and maybe an ACK
    assert s.subflows[sid].out == []


def test_a_peer_that_pings_but_never_reads_is_dropped() -> None:
    """The runtime pulls nothing while a subflow's transport is full: a PONG still
    owed after a stall timeout drops the subflow; a PONG handed out does not."""
    cfg = SessionConfig(stall_timeout=2.5)
    s = Session(b"A" * 16, 0.0, cfg)
    deaf, polite = raw_peer(s), raw_peer(s)
    for t in range(1, 30):
        now = t * 0.1
        for sid in (deaf, polite):
            s.receive(sid, F.encode_control(FrameType.PING, t), now)
        s.pull(polite, now)  # the deaf one's transport is full: never pulled
        deadline = s.next_deadline()
        assert deadline is not None
        if deadline <= now:
            s.handle_timer(now)
    closes = [e for e in s.take_events() if isinstance(e, CloseSubflow)]
    assert [(e.sid, e.code) for e in closes] == [(deaf, CloseCode.STALLED)]
    assert polite in s.subflows


# -- a small window (issue 11 item 8) ---------------------------------------------------


def small_send_buffer_run(sender_window: int, size: int = 4096 * KB) -> Link:
    """``size`` bytes from A (window ``sender_window``: its send buffer) to B (default
    16 MiB window) over one fast subflow of 0.2 ms latency."""
    a = Endpoint("A", Session(b"A" * 16, 0.0, SessionConfig(window=sender_window)), payload(size, 1))
    b = Endpoint("B", Session(b"B" * 16, 0.0, SessionConfig()), b"")
    link = Link(a, b, seed=3)
    link.join(latency=0.0002, rate=1e9)
    link.run(until=60.0)
    assert a.outcome is Outcome.DONE and b.outcome is Outcome.DONE, link.describe()
    assert bytes(b.output) == a.data
    return link


def test_a_small_send_buffer_does_not_wait_out_the_delayed_ack() -> None:
    """A 64 KiB send buffer against a receiver with a large window: the receiver's
    delayed-ACK timer (ack_delay) must not pace the transfer, one timer per buffer."""
    size = 4096 * KB
    link = small_send_buffer_run(64 * KB, size)
    buffers = size // (64 * KB)
    ack_delay = SessionConfig().ack_delay
    assert link.now < buffers * ack_delay / 4, (
        f"{size} bytes took {link.now:.3f} s: about ack_delay ({ack_delay} s) per 64 KiB buffer")


def window_notes(link: Link) -> list[str]:
    return [log.message for ep in (link.a, link.b) for _, log in ep.logs
            if "limits throughput" in log.message]


def test_a_small_window_is_noted_once_at_verbose_level() -> None:
    small = small_send_buffer_run(64 * KB, 1024 * KB)
    notes = window_notes(small)
    assert len(notes) == 1 and notes[0].startswith("our --window (the send buffer) of 64 KiB"), notes
    assert [log.level for _, log in small.a.logs if "limits throughput" in log.message] == ["info"]
    assert window_notes(small_send_buffer_run(16 * 1024 * KB, 1024 * KB)) == []
    # The peer's window: its credit is what runs out.
    a = Endpoint("A", Session(b"A" * 16, 0.0), payload(1024 * KB, 1))
    b = Endpoint("B", Session(b"B" * 16, 0.0, SessionConfig(window=64 * KB)), b"")
    link = Link(a, b, seed=4)
    link.join(latency=0.0002, rate=1e9)
    link.run(until=60.0)
    assert a.outcome is Outcome.DONE
    notes = window_notes(link)
    assert len(notes) == 1 and notes[0].startswith("the peer's --window of 64 KiB"), notes


# -- a tentative peer (issue 11 item 9) --------------------------------------------------


def test_a_refused_first_subflow_binds_no_peer() -> None:
    """B2 joins A, which is bound to a dead B: A refuses it, and B2 must not take
    A as its peer; A2 (A restarted) then joins B2, and both streams go through."""
    rng = random.Random(9)
    a = Endpoint("A", Session(rng.randbytes(16), 0.0), b"", eof=False)
    b = Endpoint("B", Session(rng.randbytes(16), 0.0), b"", eof=False)
    link = Link(a, b, seed=9)
    first = link.join()
    link.run(until=0.3)
    assert first is not None and a.session.peer_instance == b.session.instance
    link.kill(first)
    b.gone = True  # B died
    b2 = link.add(Endpoint("B2", Session(rng.randbytes(16), 0.3), payload(200 * KB, 2)))
    refused = link.join(a, b2)
    link.run(until=1.0)
    assert refused is not None
    assert [ev.code for t, ev in b2.closes] == [CloseCode.FOREIGN_INSTANCE]
    assert b2.session.peer_instance is None, "B2 took as its peer an instance that refused it"
    a.gone = True  # A is restarted as A2
    a2 = link.add(Endpoint("A2", Session(rng.randbytes(16), 1.0), payload(300 * KB, 1)))
    link.join(a2, b2)
    link.run(until=60.0, stop=lambda: a2.outcome is not None and b2.outcome is not None)
    assert a2.outcome is Outcome.DONE and b2.outcome is Outcome.DONE, link.describe()
    assert bytes(b2.output) == a2.data and bytes(a2.output) == b2.data
    assert b2.session.peer_instance == a2.session.instance and b2.session.peer_confirmed


def test_a_peer_that_accepted_stays_bound_when_its_subflow_is_lost() -> None:
    """Once the peer said anything but REFUSE on a subflow, losing every subflow
    keeps the binding (the stream state depends on it)."""
    link = Link.between(payload(100 * KB, 1), b"", subflows=1)
    a = link.a
    a.eof = False
    link.run(until=0.2)
    for pair in link.live_pairs():
        link.kill(pair)
    assert a.session.peer_confirmed and a.session.peer_instance == link.b.session.instance


def test_a_lost_tentative_subflow_unbinds() -> None:
    """A subflow lost before the peer sent a frame leaves the session with no peer."""
    s = Session(b"A" * 16, 0.0)
    sid = raw_peer(s, instance=b"P" * 16)
    assert s.peer_instance == b"P" * 16 and not s.peer_confirmed
    s.subflow_lost(sid, 0.1)
    assert s.peer_instance is None
    other = raw_peer(s, 0.2, instance=b"Q" * 16)
    s.receive(other, F.encode_ack(0, 1000, 0, False), 0.3)
    assert s.peer_instance == b"Q" * 16 and s.peer_confirmed
    s.subflow_lost(other, 0.4)
    assert s.peer_instance == b"Q" * 16


def test_frames_left_half_sent_on_many_subflows_are_bounded() -> None:
    """Each reader may set aside a whole 1 MiB body once an eighth of it is in;
    over all subflows that stays within twice the window (plus 2 MiB), and the
    subflow that would go past it is refused (FLOW_CONTROL)."""
    window = 1024 * KB
    s = Session(b"A" * 16, 0.0, SessionConfig(window=window))
    half = F.data_header(0, F.MAX_DATA) + bytes(F.MAX_DATA // 8 + 1)
    first = raw_peer(s)
    s.receive(first, F.encode_control(FrameType.PING, 1), 0.0)
    codes = []
    for _ in range(20):
        sid = raw_peer(s)
        s.receive(sid, half, 0.1)
        codes += [e.code for e in s.take_events() if isinstance(e, CloseSubflow)]
        held = sum(sub.reader.held for sub in s.subflows.values())
        assert held <= 2 * window + 2 * F.MAX_DATA
    assert len(codes) == 20 - 4 and set(codes) == {CloseCode.FLOW_CONTROL}
    # Closing subflows gives their share back: new half frames fit again.
    for sid in [sid for sid in s.subflows if sid != first]:
        s.subflow_lost(sid, 0.2)
    sid = raw_peer(s, 0.3)
    s.receive(sid, half, 0.3)
    assert sid in s.subflows
