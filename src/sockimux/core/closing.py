"""The end of a subflow, and of the session.

A subflow closes when the peer or its connection ends it, or when we
refuse it (a protocol error, a limit) or find it stalled: what it carried
and the peer has not acknowledged is queued again for the others, a FIN
it carried is sent again, and a peer that never confirmed one of ours is
unbound once none is left.  The session ends once: both streams delivered
(and our last ACK sent), or an abort, a failure, a timeout.

These are methods of Session, kept here as one idea of their own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import events as ev
from . import frames
from .errors import CloseCode
from .events import CloseSubflow, Outcome
from .frames import FrameType
from .handshake import SubflowState
from .parts import SessionParts
from .stats import ClosedTotals
from .subflow import Subflow


class Closing(SessionParts):
    # Provided by Session.
    peer_instance: bytes | None
    peer_status: int | None
    peer_confirmed: bool
    outcome_reason: str
    subflows_joined: int
    closed_totals: ClosedTotals
    _partial: int
    _deadlines: dict[int, float]
    _alone_since: float | None
    _alone_warned_at: float

    if TYPE_CHECKING:  # Session's own
        @property
        def head_resent(self) -> int: ...

    def _check_done(self) -> None:
        # Our last ACK (FIN_DONE) must have gone out on a subflow first: ending
        # with none open would leave the peer waiting for it forever.
        if self.outcome is not None:
            return
        if self.receiver.done and self.acks.fin_done_sent:
            if self.sender.done:
                self._end(Outcome.DONE, "both streams delivered")
            elif self.peer_status is not None:
                # As ssh ends when the remote command exits: the peer's stream
                # came from a command that has exited (its FIN says how), so
                # nothing there reads ours any more; what is left of it is not sent.
                self._end(Outcome.DONE, "the peer's command exited and its output is written")
        elif self.sender.done and self.sender.status is not None:
            # Our side of the same: our input's command has exited and the peer
            # has written all of its output; it ends now, and nothing reads its stream.
            self._end(Outcome.DONE, "our command exited and its output is delivered")

    def _stalled(self, sub: Subflow, why: str, now: float) -> None:
        self._events.append(ev.SubflowStalled(sub.id, why))
        self._close(sub, CloseCode.STALLED, why, now, flush=False)

    def _refuse(self, sub: Subflow, code: CloseCode, reason: str, now: float) -> None:
        self._events.append(ev.SubflowRefused(sub.id, ev.By.US, code, reason))
        sub.queue(frames.encode_reason(FrameType.REFUSE, code, reason))
        self._close(sub, code, reason, now)

    def _close(self, sub: Subflow, code: CloseCode, reason: str, now: float,
               notify: bool = True, flush: bool = True, by: ev.By = ev.By.US) -> None:
        was_open = sub.state is SubflowState.OPEN
        sub.close()
        self._partial -= sub.held
        sub.held = 0
        del self.subflows[sub.id]
        self._deadlines.pop(sub.id, None)
        self.scheduler.forget(sub.id)
        resend = 0
        for start, end in sub.ranges:
            before = self.sender.resent_bytes
            self.sender.requeue(start, end)
            resend += self.sender.resent_bytes - before
        sub.ranges.clear()
        self.scheduler.ready_all()  # re-sends (or a lost FIN) for the others to take
        if sub.carries_fin and not self.sender.fin_done:
            self.sender.fin_in_flight = False
        if notify:
            self._events.append(CloseSubflow(sub.id, code, reason, sub.out, flush))
            sub.out = []
        if was_open and not self.peer_confirmed and self._live_count() == 0:
            # Refused (or lost) before the peer said a word: it may be bound to
            # another instance, so we take no peer yet.  Nothing of either
            # stream moved: we had no credit (it comes in the peer's ACK) and
            # any DATA from the peer would have confirmed it.
            assert self.sender.credit == 0 and self.receiver.delivered == 0
            self._events.append(ev.PeerUnbound(self.peer_instance))
            self.peer_instance = None
        if was_open:
            # The ACK that freed the peer's sender may have died with this
            # subflow: repeat our state at once on the best one left.
            self.acks.on_best_subflow()
        self.closed_totals.add(sub)
        counters = ev.Counters(sub.data_out, sub.data_in, sub.resent, sub.head_copies, sub.path.srtt)
        self._events.append(ev.SubflowClosed(sub.id, by, code if notify else None, reason, was_open,
                                             counters, resend, self._live_count(), now))
        if self._live_count() == 0 and self._alone_since is None:
            self._alone_since = now
            self._alone_warned_at = now

    def _live_count(self) -> int:
        return sum(1 for s in self.subflows.values() if s.state is SubflowState.OPEN)

    def _end(self, outcome: Outcome, reason: str) -> None:
        if self.outcome is None:
            self.outcome = outcome
            self.outcome_reason = reason
            tx, rx = self.sender, self.receiver
            totals = ev.Totals(tx.acked, tx.end, tx.resent_bytes, self.head_resent, rx.written,
                               rx.direct_bytes, self.subflows_joined, rx.parked_total)
            self._events.append(ev.SessionEnded(outcome, reason, totals))
