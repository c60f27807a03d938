"""The one driving contract, Session.step() (issue 12 item 3): the transport's
room decides how much each subflow is handed, the same for every driver."""

from __future__ import annotations

import random

from sockimux.core import Session, SessionConfig
from sockimux.core import frames as F
from sockimux.core.driver import WRITE_HIGH
from sockimux.core.sender import Outgoing

from .test_hardening import raw_peer

KB = 1024


class Transports:
    """Transports whose backlog only grows (nothing is sent), full past WRITE_HIGH."""

    def __init__(self) -> None:
        self.backlog: dict[int, int] = {}
        self.writes: list[tuple[int, int]] = []  # (sid, bytes)

    def writable(self, sid: int) -> bool:
        return self.backlog.get(sid, 0) <= WRITE_HIGH

    def write(self, sid: int, buffers: list[Outgoing]) -> None:
        n = sum(len(b) for b in buffers)
        self.backlog[sid] = self.backlog.get(sid, 0) + n
        self.writes.append((sid, n))


def granted(s: Session, sid: int, limit: int) -> None:
    """The test, as the peer, grants credit with an ACK on ``sid``."""
    s.receive(sid, F.encode_ack(0, limit, 0, False), 0.1)


def test_data_goes_one_pull_at_a_time_while_the_transport_has_room() -> None:
    cfg = SessionConfig(chunk=64 * KB)
    s = Session(b"A" * 16, 0.0, cfg)
    sid = raw_peer(s)
    granted(s, sid, 8 << 20)
    s.write_stdin(random.Random(1).randbytes(4 << 20), 0.1)
    t = Transports()
    step = s.step(0.1, t)
    assert step.outcome is None and step.deadline is not None
    # Stopped by the transport, not by the cap (256 KiB before any rate is known)
    # nor the input: once past WRITE_HIGH, nothing more, control frames included.
    assert WRITE_HIGH < t.backlog[sid] <= WRITE_HIGH + cfg.chunk + 64 * 16
    assert all(n <= cfg.chunk + 64 * 16 for _, n in t.writes)
    assert len(t.writes) > 1
    before = len(t.writes)
    granted(s, sid, 9 << 20)  # an ACK: an event, but the transport is still full
    s.step(0.2, t)
    assert len(t.writes) == before
    # It drained: named in `drained`, it is pulled although the session did not ready it.
    t.backlog[sid] = 0
    s.step(0.3, t, drained=[sid])
    assert len(t.writes) > before


def test_a_full_transport_owes_its_pong_until_it_drains() -> None:
    s = Session(b"A" * 16, 0.0)
    sid = raw_peer(s)
    t = Transports()
    t.backlog[sid] = WRITE_HIGH + 1
    s.receive(sid, F.encode_control(F.FrameType.PING, 7), 0.1)
    s.step(0.1, t)
    assert t.writes == [] and s.subflows[sid].pong_owed == 7
    t.backlog[sid] = 0
    s.step(0.2, t, drained={sid})
    assert t.writes and s.subflows[sid].pong_owed is None


def test_a_frame_that_gives_the_subflow_nothing_to_write_does_not_ready_it() -> None:
    """A keystroke's DATA frame (its ACK may wait) leaves nothing to write on
    its subflow, so the step after it pulls nothing (issue 15 target 2): such
    pulls were most of a keystroke's step.  A frame that does give it
    something to write (a PING's PONG, the peer's ACK freeing room) still
    readies it."""
    s = Session(b"A" * 16, 0.0)
    sid = raw_peer(s)
    s.take_ready()
    s.receive(sid, F.data_header(0, 1) + b"x", 0.1)
    assert b"".join(bytes(b) for b in s.take_output()) == b"x"
    assert not s.subflows[sid].ack_due
    assert s.take_ready() == []
    t = Transports()
    s.step(0.1, t)
    assert t.writes == []
    s.receive(sid, F.encode_control(F.FrameType.PING, 3), 0.2)
    assert s.take_ready() == [sid]
    s.pull(sid, 0.2)
    granted(s, sid, 1 << 20)  # room: the peer's ACK moved its credit
    s.write_stdin(b"y", 0.3)
    s.step(0.3, t)
    assert t.writes and t.writes[0][0] == sid
    s.receive(sid, F.encode_ack(0, 1 << 20, F.HEADER_SIZE + 1, False), 0.4)  # it delivered our DATA
    assert s.take_ready() == [sid]


def test_a_subflow_handed_less_than_a_pull_is_not_pulled_again() -> None:
    """A keystroke goes out in one pull: what it returned was under a whole
    pull's worth, so a second pull in the same step would find nothing (issue
    15 target 2).  Bulk data still goes one pull after another while the
    transport has room."""
    cfg = SessionConfig(chunk=64 * KB)
    s = Session(b"A" * 16, 0.0, cfg)
    sid = raw_peer(s)
    granted(s, sid, 8 << 20)
    s.step(0.1, Transports())
    pulls: list[int] = []
    pull = s.pull

    def counted(sid: int, now: float, limit: int | None = None) -> list[Outgoing]:
        pulls.append(sid)
        return pull(sid, now, limit)

    s.pull = counted  # type: ignore[method-assign]
    t = Transports()
    s.write_stdin(b"k", 0.2)
    s.step(0.2, t)
    assert pulls == [sid] and t.writes == [(sid, F.HEADER_SIZE + 1)]
    pulls.clear()
    s.write_stdin(bytes(200 * KB), 0.3)
    t.writable = lambda sid: True  # type: ignore[method-assign]  # a transport that keeps up
    s.step(0.3, t)
    # 64 + 64 + 64 + 8 KiB (within its allowance of 256 KiB): the last, under a
    # pull's worth, ends it.
    assert len(pulls) == 4 and sum(n for _, n in t.writes) > 200 * KB
