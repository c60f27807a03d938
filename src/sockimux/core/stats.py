"""One immutable snapshot of what a session is doing, on request.

Theory of operation
-------------------
The counters live where the work is done, as plain integers bumped on the
way (subflow.py: DATA bytes each way, re-sends, head-of-line and probe copies;
estimate.py: the rate and round trip; sender.py and receiver.py: the
stream offsets).  Nothing here runs per frame: :func:`snapshot` reads them
once, when someone asks (``Session.stats(now)``: the runtime's ``--stats``,
SIGUSR1, ``--stats-file``), into frozen dataclasses that can be kept,
compared or turned into JSON (``as_dict``; the fields are documented in
docs/STATS.md).  A subflow that closes adds its final counters to the
session's :class:`ClosedTotals`, so the session's totals never go down.

The addresses we open ourselves (``--connect``, the ssh mode's subflows)
are the re-open policy's (reopen.py), not the session's: the session knows
subflows, not where they were dialed.  The policy gives its own immutable
:class:`AddressStats` per address (``Reopener.snapshot(now)``), and whoever
holds both (the runtime's ``Runner.stats()``) passes them in to
``Session.stats(now, addresses)``: one snapshot, one clock.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .handshake import SubflowState

if TYPE_CHECKING:
    from .session import Session
    from .subflow import Subflow


@dataclass
class ClosedTotals:
    """The final counters of the subflows that closed, summed (mutable: the session's)."""

    subflows: int = 0  # closed after completing their handshake
    data_out: int = 0
    data_in: int = 0
    resent: int = 0
    head_copies: int = 0
    probe_copies: int = 0

    def add(self, sub: Subflow) -> None:
        self.subflows += sub.state is not SubflowState.HANDSHAKE
        self.data_out += sub.data_out
        self.data_in += sub.data_in
        self.resent += sub.resent
        self.head_copies += sub.head_copies
        self.probe_copies += sub.probe_copies


@dataclass(frozen=True)
class SubflowStats:
    id: int
    state: str  # "handshake", "auth", "open" (closed subflows are in the session's totals)
    label: str  # where the runtime says it came from or went to ("" if it did not say)
    age: float  # seconds since the connection was made
    data_out: int  # DATA frame bytes (header + payload) we sent on it
    data_in: int  # DATA frame bytes we received on it
    rate_out: float  # bytes per second the peer reports receiving (the send-side estimate)
    rate_in: float  # bytes per second of DATA arriving (over about the last second)
    rtt: float | None  # smoothed round trip, seconds: keepalive PINGs and DATA to its ACK
    in_flight: int  # DATA bytes sent, not yet reported received
    resent: int  # stream bytes it carried again because another subflow was lost
    head_copies: int  # stream bytes it carried as copies of bytes a slower one held up (head, backlog end)
    probe_copies: int  # stream bytes it carried as copies of what a quiet subflow held
    quiet: bool  # no progress for a probe timeout: it takes no new stream bytes
    pto: float  # its probe timeout now, seconds


@dataclass(frozen=True)
class AddressStats:
    """One address we open ourselves, as the re-open policy (reopen.py) sees it."""

    label: str  # the address, as given (without count=)
    count: int  # subflows kept open to it (count=N)
    open: int  # of them, up now (hello exchange done, not ended since)
    starting: int  # started, hello not done yet
    waiting: int  # ended or failed, waiting for their next attempt
    attempts: int  # starts, first ones included
    reopens: int  # starts of a subflow after its first (each retry, whether it worked or not)
    established: int  # times one of its subflows completed its hello exchange
    lost: int  # times one of its subflows ended after it was up
    last_end: str | None  # why its last subflow ended (or failed to open), as in the -v log
    next_attempt_in: float | None  # seconds until the next waiting one is started (None: none waits)
    stopped: str | None  # why it was stopped for good, if it was: never retried again


@dataclass(frozen=True)
class SessionStats:
    at: float  # the ``now`` of the snapshot (the runtime's monotonic clock)
    outcome: str | None  # None while the session runs
    open: int  # subflows open (handshake complete)
    established: int  # subflows that completed their handshake, ever
    closed: int  # of them, closed since
    alone_for: float  # seconds the stream has had no open subflow now (0: it has one)
    alone_total: float  # seconds without an open subflow, over the whole session
    # Our stream (STDIN to the peer), in stream bytes.
    input: int  # taken from STDIN
    input_ended: bool
    sent: int  # sent at least once
    acked: int  # the peer has written (acknowledged)
    resent: int  # carried again because a subflow was lost or stalled (all subflows)
    head_copies: int  # carried again as copies of held-up bytes (head, backlog end; all subflows)
    probe_copies: int  # carried again as copies of what a quiet subflow held (all subflows)
    # The peer's stream (to STDOUT), in stream bytes.
    received: int  # delivered in order
    written: int  # written to STDOUT (what we acknowledge)
    duplicates: int  # arrived more than once and dropped
    # DATA frame bytes (header + payload) over all subflows, closed ones included.
    data_out: int
    data_in: int
    subflows: tuple[SubflowStats, ...]
    # The addresses we open ourselves, in the order given (empty when we only listen).
    addresses: tuple[AddressStats, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """Plain types only, for json.dumps."""
        return dataclasses.asdict(self)


# The receive rate is taken over intervals of at least this (subflow.py).
RATE_INTERVAL = 0.5


def _rate_in(sub: Subflow, now: float) -> float:
    """The receive rate: the last interval's; when the current interval has
    run past two, what came in it; 0 once nothing came for two."""
    if now - sub.last_data_in >= 2 * RATE_INTERVAL:
        return 0.0
    span = now - sub.in_mark_at
    if span >= 2 * RATE_INTERVAL:
        return (sub.data_in - sub.in_mark) / span
    return sub.rate_in


def _subflow(session: Session, sub: Subflow, now: float) -> SubflowStats:
    return SubflowStats(sub.id, sub.state.value, sub.label, now - sub.opened_at, sub.data_out,
                        sub.data_in, sub.path.rate, _rate_in(sub, now), sub.path.srtt,
                        sub.in_flight, sub.resent, sub.head_copies, sub.probe_copies, sub.quiet,
                        sub.path.pto(session.config.ack_delay))


def snapshot(session: Session, now: float,
             addresses: tuple[AddressStats, ...] = ()) -> SessionStats:
    """Session.stats(): see there."""
    subs = tuple(_subflow(session, s, now) for s in session.subflows.values())
    closed = session.closed_totals
    tx, rx = session.sender, session.receiver
    alone_for = 0.0 if session._alone_since is None else max(0.0, now - session._alone_since)
    outcome = session.outcome.value if session.outcome is not None else None
    return SessionStats(
        at=now, outcome=outcome,
        open=sum(1 for s in subs if s.state == SubflowState.OPEN.value),
        established=session.subflows_joined, closed=closed.subflows,
        alone_for=alone_for, alone_total=session.alone_total + alone_for,
        input=tx.end, input_ended=tx.eof, sent=tx.next_new, acked=tx.acked,
        resent=closed.resent + sum(s.resent for s in subs),
        head_copies=closed.head_copies + sum(s.head_copies for s in subs),
        probe_copies=closed.probe_copies + sum(s.probe_copies for s in subs),
        received=rx.delivered, written=rx.written, duplicates=rx.duplicate_bytes,
        data_out=closed.data_out + sum(s.data_out for s in subs),
        data_in=closed.data_in + sum(s.data_in for s in subs),
        subflows=subs, addresses=addresses)
