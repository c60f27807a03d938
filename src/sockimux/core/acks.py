"""When the stream we receive is acknowledged, and on which subflow.

Theory of operation
-------------------
An ACK carries the stream state (bytes written to STDOUT, the credit limit,
whether our output is closed) and the count of DATA bytes received on the
subflow it travels on.  The per-subflow part is each Subflow's rule
(subflow.py: after ``ack_every`` bytes or ``ack_delay``); this module holds
the stream-level rule: the peer's sender retains everything until we
acknowledge having *written* it, so written bytes must be reported

* at once when the peer asked for it (a DATA frame flagged DATA_ACK_NOW:
  its sender is about to wait for it);
* when the credit could move by a quarter of the window (flow.py);
* otherwise within ``ack_delay`` of the first unreported byte written;

each time on the open subflow with the least queued (not a quiet one,
subflow.py), as one ACK anywhere
tells the peer the stream's state.  The very last ACK (FIN_DONE: our output
is closed) goes on every open subflow, so one lost subflow cannot leave the
peer waiting for it.
"""

from __future__ import annotations

from . import frames
from .config import SessionConfig
from .handshake import OPEN
from .receiver import StreamReceiver
from .scheduler import Scheduler
from .subflow import Subflow


class AckPolicy:
    def __init__(self, receiver: StreamReceiver, subflows: dict[int, Subflow],
                 scheduler: Scheduler, config: SessionConfig) -> None:
        self.receiver = receiver
        self.subflows = subflows
        self.scheduler = scheduler
        self.config = config
        self._acked_written = 0  # receiver.written as of the last ACK we sent
        self._written_at: float | None = None  # when written first moved past that
        self._asked = 0  # the peer asked for an ACK once written reaches this (DATA_ACK_NOW)
        self._fin_done_announced = False
        self.fin_done_sent = False  # an ACK with FIN_DONE was handed to a subflow

    def frame(self, sub: Subflow, now: float) -> bytes:
        """The ACK to send on ``sub`` now."""
        rx = self.receiver
        limit = rx.credit.advertise(rx.written)
        sub.acked(now)
        if rx.written >= self._acked_written:
            self._acked_written = rx.written
            self._written_at = None
        if rx.done:
            self.fin_done_sent = True
        return frames.encode_ack(rx.written, limit, sub.data_in, rx.done)

    def piggyback(self, sub: Subflow, now: float) -> bool:
        """DATA is going out on ``sub``: should an ACK go with it?  Yes if one
        has waited half of ``ack_delay`` (the subflow's DATA unreported, or
        the stream written further than we said): the ACK rides along instead
        of a timer pass of its own, which in an interactive session, DATA
        both ways every few milliseconds, is every pass the timer would make."""
        half = self.config.ack_delay / 2
        since = sub.unreported_since
        if since is not None and now >= since + half:
            return True
        written_at = self._written_at
        return written_at is not None and now >= written_at + half

    def on_best_subflow(self) -> None:
        """Owe a stream-level ACK on the open subflow with the least queued.
        The one the peer's data last arrived on, if none of our data waits on
        it, is such a one (shown alive, nothing queued): no pass over all the
        subflows then (on a receiver of 128 subflows, that pass per ACK was a
        sixth of its CPU)."""
        fresh = self.scheduler.freshest
        best = self.subflows.get(fresh) if fresh is not None else None
        if (best is not None and best.state is OPEN and not best.quiet
                and best.data_out == best.peer_in):
            best.owe_ack()
            self.scheduler.ready(best.id)
            self._written_at = None
            return
        best = None
        for sub in self.subflows.values():
            # A quiet subflow (subflow.py) may have stopped: not it, if any other is open.
            if sub.state is OPEN and (
                best is None or (best.quiet and not sub.quiet) or (best.quiet == sub.quiet and
                    sub.in_flight * best.path.cap() < best.in_flight * sub.path.cap())
            ):
                best = sub
        if best is not None:
            best.owe_ack()
            self.scheduler.ready(best.id)
            self._written_at = None

    def fin_done(self) -> None:
        """Our output is closed after the last byte: the last ACK, on every subflow."""
        if not self._fin_done_announced:
            self._fin_done_announced = True
            self.scheduler.ready_all()
            for sub in self.subflows.values():
                if sub.state is OPEN:
                    sub.owe_ack()

    def asked(self, end: int) -> None:
        """The peer waits for an ACK of the stream up to ``end`` (a DATA frame
        flagged DATA_ACK_NOW): send one as soon as that much is written."""
        if end > self._asked:
            self._asked = end
        if self.receiver.written >= self._asked > self._acked_written:
            self.on_best_subflow()  # e.g. a copy of bytes already written

    def written(self, now: float) -> None:
        """More of the stream was written out."""
        rx = self.receiver
        if self._asked > self._acked_written and rx.written >= self._asked:
            self.on_best_subflow()
            return
        if rx.written > self._acked_written and self._written_at is None:
            self._written_at = now
        if rx.credit.update_due(rx.written):
            self.on_best_subflow()

    def deadline(self) -> float | None:
        if self._written_at is not None:
            for sub in self.subflows.values():  # (a loop, not any(): no generator per event)
                if sub.state is OPEN:
                    return self._written_at + self.config.ack_delay
        return None

    def on_timer(self, now: float) -> None:
        if self._written_at is not None and now >= self._written_at + self.config.ack_delay:
            self.on_best_subflow()
