"""Per-subflow protocol state.

A subflow is one connection between the two processes.  Its life::

    HANDSHAKE --(HELLO ok, no key)------------------> OPEN --(lost/refused/stalled)--> CLOSED
        \\--(HELLO ok, key)--> AUTH --(valid AUTH)--/
         \\------------------------\\---(refused, timeout, lost)------------------------/

``ACCEPTS`` is the table of which frames each state takes; any other frame
is a protocol error that closes just this subflow.  In HANDSHAKE only a HELLO
may arrive (it is not a framed message, see frames.py).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .frames import FrameReader, FrameType, Hello
from .scheduler import PathEstimate
from .sender import Outgoing


class SubflowState(enum.Enum):
    HANDSHAKE = "handshake"
    AUTH = "auth"  # hellos exchanged, waiting for the peer's proof of the shared key
    OPEN = "open"
    CLOSED = "closed"


ACCEPTS: dict[SubflowState, frozenset[FrameType]] = {
    SubflowState.HANDSHAKE: frozenset(),
    SubflowState.AUTH: frozenset({FrameType.AUTH, FrameType.REFUSE}),
    SubflowState.OPEN: frozenset(FrameType) - {FrameType.AUTH},
    SubflowState.CLOSED: frozenset(),
}


@dataclass(eq=False)
class Subflow:
    id: int
    opened_at: float
    nonce: bytes
    state: SubflowState = SubflowState.HANDSHAKE
    reader: FrameReader = field(default_factory=FrameReader)
    hello: Hello | None = None  # the hello we sent
    peer: Hello | None = None  # the hello we received
    out: list[Outgoing] = field(default_factory=list)  # frames waiting for pull()
    last_heard: float = 0.0  # any bytes arrived
    last_sent: float = 0.0  # any bytes handed out for writing
    last_data_in: float = float("-inf")  # a DATA frame, or part of a frame, arrived
    last_progress: float = 0.0  # peer_in last advanced (or in-flight went from 0 to >0)
    # DATA frame bytes (header + payload) counted on both sides of the subflow.
    data_out: int = 0  # sent by us
    peer_in: int = 0  # the peer says it received this many of ours
    data_in: int = 0  # received by us
    data_in_reported: int = 0  # data_in as of our last ACK on this subflow
    unreported_since: float | None = None  # first DATA since that ACK
    acked_at: float = float("-inf")  # when we last sent an ACK on this subflow
    ack_due: bool = False  # send an ACK on the next pull
    ranges: list[tuple[int, int]] = field(default_factory=list)  # stream ranges sent, maybe unacked
    carries_fin: bool = False
    ping_token: int = 0
    ping_sent_at: float | None = None
    # A PING is answered by state, not by a queued frame: however many PINGs
    # a peer sends without reading, we owe it one PONG (the newest token).
    pong_owed: int | None = None
    pong_owed_since: float | None = None  # when the oldest unanswered PING arrived
    held: int = 0  # reader.held as of the last read (counted in Session._partial)
    path: PathEstimate = field(default_factory=PathEstimate)

    @property
    def in_flight(self) -> int:
        return self.data_out - self.peer_in

    def __repr__(self) -> str:
        return f"<Subflow {self.id} {self.state.value} in_flight={self.in_flight}>"
