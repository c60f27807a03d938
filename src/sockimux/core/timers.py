"""When the session must be woken, and what is due then.

Theory of operation
-------------------
Every timer rule of the session is a deadline: each subflow's (subflow.py:
handshake timeout, probe timeout, stall, keepalive, delayed ACK, PONG owed), the stream's
delayed ACK (acks.py), and, with no subflow open, the "no subflow" warning
and the alone timeout.  ``next_deadline()`` is the earliest; the runtime
calls ``handle_timer(now)`` when it has come.

So that asking after every event costs the same with 1 or 1,000 subflows,
each subflow's deadline is cached and recomputed only when the subflow
marked itself (subflow.py: every change to what its deadline depends on
marks it).  A timer that comes far later than the deadline it was set for
means the process was not running meanwhile: that time is not counted
against any subflow (see _resumed).

These are methods of Session, kept here as one idea of their own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import CloseCode
from .events import Alone, Outcome, TimerLate
from .parts import SessionParts
from .subflow import Subflow


class Liveness(SessionParts):
    # Provided by Session.
    _alone_since: float | None
    _alone_warned_at: float
    _deadlines: dict[int, float]
    _dirty: set[int]
    _due: float | None

    if TYPE_CHECKING:  # Session's own
        def _refuse(self, sub: Subflow, code: CloseCode, reason: str, now: float) -> None: ...
        def _stalled(self, sub: Subflow, why: str, now: float) -> None: ...
        def _end(self, outcome: Outcome, reason: str) -> None: ...


    def next_deadline(self, rescan: bool = False) -> float | None:
        """When to call handle_timer() next (None: no timer needed).

        Only the deadlines of subflows that marked themselves since the last
        call are recomputed (``rescan``: all of them).  The link tests check
        after every step that a rescan never finds an earlier deadline."""
        deadlines = self._deadlines
        cfg = self.config
        if rescan or self._dirty:
            subflows = self.subflows
            for sid in (subflows.keys() if rescan else self._dirty):
                sub = subflows.get(sid)
                if sub is not None:
                    deadlines[sid] = sub.deadline(cfg)
            self._dirty.clear()
        # (Comparisons, not a list and min(): this runs after every event.)
        due = min(deadlines.values()) if deadlines else None
        ack = self.acks.deadline()
        if ack is not None and (due is None or ack < due):
            due = ack
        if self._alone_since is not None and self.outcome is None:
            warn = self._alone_warned_at + cfg.alone_warning
            if due is None or warn < due:
                due = warn
            if cfg.alone_timeout is not None:
                end = self._alone_since + cfg.alone_timeout
                if end < due:
                    due = end
        self._due = due
        return due

    def handle_timer(self, now: float) -> None:
        # Every test below is `now >= start + interval`, the very sum that
        # next_deadline() returns, so the timer due at a deadline always fires
        # (`now - start >= interval` can miss it by one rounding).
        cfg = self.config
        scheduler = self.scheduler
        due, self._due = self._due, None
        if due is not None and now - due > cfg.keepalive:
            self._resumed(now, now - due)
        for sub in list(self.subflows.values()):
            was_quiet = sub.quiet
            close = sub.on_timer(now, cfg)
            if close is None:
                if sub.quiet and not was_quiet:
                    scheduler.quiet(sub)  # copy what it holds; no new bytes for it
                # Pulled if it now owes a frame (an ACK, a keepalive, a PONG);
                # the others have nothing new to write (with 128 subflows a
                # pull of each per timer pass was 40% of all pulls).
                elif sub.out or sub.ack_due or sub.pong_owed is not None:
                    scheduler.ready(sub.id)
                continue
            code, why = close
            if code is CloseCode.STALLED:
                self._stalled(sub, why, now)
            else:
                self._refuse(sub, code, why, now)
        self.acks.on_timer(now)
        if self._alone_since is not None and self.outcome is None:
            alone = now - self._alone_since
            if cfg.alone_timeout is not None and now >= self._alone_since + cfg.alone_timeout:
                self._end(Outcome.NO_SUBFLOWS, f"no subflow for {alone:.0f} s")
            elif now >= self._alone_warned_at + cfg.alone_warning:
                self._alone_warned_at = now
                self._events.append(Alone(alone, self.sender.end - self.sender.acked))

    def _resumed(self, now: float, late: float) -> None:
        """The timer came ``late`` seconds after the deadline next_deadline()
        gave: the process was not running meanwhile (stopped, as by SIGSTOP, a
        debugger or a paused container, or its loop blocked).  Then nothing
        could be read either, and what arrived meanwhile is still waiting to
        be (uvloop runs due timers before it polls for I/O): judged now, every
        subflow would look dead, on both ends if both were paused.  So that
        time is not counted against any subflow: their clocks move on by it,
        and by a keepalive interval more, so that each is judged only after
        what arrived has been read and a keepalive (sent now: last_sent does
        not move) has had time to be answered.  While the process runs, a
        timer fires within milliseconds of its deadline, so one this late
        means exactly that; a little late (a busy loop), it judges as ever.  A
        peer that did not stop goes on judging our subflows by its own clock,
        and drops them if we stayed away too long."""
        shift = late + self.config.keepalive
        for sub in self.subflows.values():
            sub.resume(shift, now)
        if self._alone_since is not None:
            self._alone_since = min(self._alone_since + shift, now)
            self._alone_warned_at = min(self._alone_warned_at + shift, now)
        self._events.append(TimerLate(late))
