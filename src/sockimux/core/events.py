"""What leaves the core as data: what to close, what happened, how it ended.

``Session.take_events()`` returns these in the order they happened.  One is
a command, :class:`CloseSubflow` (close that connection, after writing its
last frames); the others are facts, for the runtime to render as log lines
(runtime/render.py holds the wording), to count, or to act on (the subflows
we open are re-opened by reopen.py from :class:`SubflowClosed`'s code and
``fatal``).  Nothing here is text the core composed: the numbers, codes and
reasons are kept as they are.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .errors import CloseCode
from .reopen import Failure, Verdict, verdict
from .sender import Outgoing


class Outcome(enum.Enum):
    DONE = "done"  # both streams delivered and acknowledged
    OUTPUT_CLOSED = "output closed"  # our STDOUT went away before the stream ended
    PEER_ABORTED = "peer aborted"
    NO_SUBFLOWS = "no subflows"  # alone_timeout expired
    INTERRUPTED = "interrupted"  # the runtime shut us down (signal)
    INPUT_CHANGED = "input changed"  # STDIN failed: a regular file lost bytes, or a read error


class By(enum.Enum):
    """Who closed a subflow."""

    US = "us"  # we refused it, it stalled, or its handshake timed out
    PEER = "the peer"  # the peer refused it (a REFUSE frame)
    CONNECTION = "the connection"  # the runtime saw the connection end (EOF, error)


@dataclass(frozen=True)
class CloseSubflow:
    """Close this subflow's connection, after writing ``final`` if ``flush``."""

    sid: int
    code: CloseCode
    reason: str
    final: list[Outgoing]
    flush: bool


@dataclass(frozen=True)
class Counters:
    """A subflow's final counters."""

    data_out: int  # DATA frame bytes (header + payload) we sent on it
    data_in: int  # DATA frame bytes we received on it
    resent: int  # stream bytes it carried again because another subflow was lost
    head_copies: int  # stream bytes it carried as copies of bytes a slower one held up (head, backlog end)
    rtt: float | None  # smoothed round trip (PING to PONG, DATA to its ACK), seconds


@dataclass(frozen=True)
class SubflowEstablished:
    sid: int
    peer: bytes  # the peer's instance id
    at: float
    open: int  # open subflows, this one included


@dataclass(frozen=True)
class SubflowResumed:
    """The first subflow after a time without any: the stream resumes."""

    sid: int
    after: float  # seconds without a subflow


@dataclass(frozen=True)
class SubflowRefused:
    sid: int
    by: By  # US or PEER
    code: CloseCode
    reason: str


@dataclass(frozen=True)
class SubflowStalled:
    sid: int
    why: str


@dataclass(frozen=True)
class SubflowClosed:
    sid: int
    by: By
    code: CloseCode | None  # None: the connection ended without one
    reason: str
    established: bool  # it had completed its handshake
    counters: Counters
    resending: int  # stream bytes it held, now queued for the others
    open: int  # open subflows left
    at: float

    @property
    def fatal(self) -> bool:
        """Re-opening it would only meet the same refusal (reopen.py's verdict)."""
        return verdict(self.code if self.code is not None else Failure.CONNECTION_LOST) is Verdict.FATAL


@dataclass(frozen=True)
class PeerBound:
    """A first subflow tells the peer's instance (until the peer refuses us)."""

    instance: bytes


@dataclass(frozen=True)
class PeerUnbound:
    """The peer refused (or lost) every subflow before accepting one: the next may differ."""

    instance: bytes | None


@dataclass(frozen=True)
class Alone:
    """No subflow for a while (repeated every ``alone_warning`` seconds)."""

    seconds: float
    unacknowledged: int


@dataclass(frozen=True)
class SmallWindow:
    """A subflow had room but the window held the data back, and it is small."""

    whose: str  # "peer" (its credit) or "ours" (our send buffer)
    window: int


@dataclass(frozen=True)
class TimerLate:
    """The process was not running for ``late`` seconds: not counted against subflows."""

    late: float


@dataclass(frozen=True)
class InputEnded:
    size: int


@dataclass(frozen=True)
class Totals:
    sent_acked: int
    sent: int
    resent: int  # re-sent for lost subflows
    head_copies: int
    written: int  # of the peer's stream
    direct: int  # of them moved straight to STDOUT
    established: int  # subflows
    parked: int = 0  # of them held in the runtime's pipes until their turn


@dataclass(frozen=True)
class SessionEnded:
    outcome: Outcome
    reason: str
    totals: Totals

    @property
    def code(self) -> CloseCode:
        """The close code our subflows end with (reopen.py: FINAL unless DONE)."""
        return _OUTCOME_CODE[self.outcome]


_OUTCOME_CODE = {
    Outcome.DONE: CloseCode.NORMAL,
    Outcome.OUTPUT_CLOSED: CloseCode.OUTPUT_CLOSED,
    Outcome.PEER_ABORTED: CloseCode.PEER_ABORTED,
    Outcome.NO_SUBFLOWS: CloseCode.SHUTDOWN,
    Outcome.INTERRUPTED: CloseCode.SHUTDOWN,
    Outcome.INPUT_CHANGED: CloseCode.SHUTDOWN,
}

Event = (CloseSubflow | SubflowEstablished | SubflowResumed | SubflowRefused | SubflowStalled
         | SubflowClosed | PeerBound | PeerUnbound | Alone | SmallWindow | TimerLate | InputEnded
         | SessionEnded)
