"""The one driving contract: after each input, one ``Session.step()``.

Theory of operation
-------------------
Whoever drives a session (the asyncio runtime, the fake-clock link of the
tests, the fuzzer) feeds it inputs (bytes read, a connection opened or
lost, STDIN, STDOUT written, the timer) and then calls ``step(now,
transports, drained)`` once.  The step hands out what each subflow may write
now, through ``transports``, and returns everything else as a :class:`Step`:
the events (subflows to close among them), the bytes for STDOUT and whether
STDOUT ends, how much STDIN it takes, and when to call ``handle_timer``.

The transport's room is part of the contract, so that every driver
schedules alike: data is handed to a subflow one pull of at most ``chunk``
payload bytes at a time, and only while its transport is *writable*: it
holds under ``WRITE_HIGH`` bytes it could not send yet (after a write took
it past that, until it drained below ``WRITE_LOW``).  What a transport
cannot take stays with the session, free to go to whichever subflow drains
first.  A transport that is not writable takes nothing more, control frames
included: what we owe the peer waits in the session as bounded state (one
ACK, one PONG) until it drains; the driver then names it in ``drained``.

The writes go through ``transports.write`` during the step, not in the
returned value, because the rule needs the transport's state after each
write: a write the kernel takes at once leaves it writable, and the subflow
may then take more in the same step.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, NamedTuple, Protocol

from .events import CloseSubflow, Event, Outcome
from .receiver import Piece
from .sender import Outgoing

if TYPE_CHECKING:
    from .session import Session

WRITE_HIGH = 128 * 1024  # a transport holding this many unsent bytes is not writable...
WRITE_LOW = 32 * 1024  # ...until it holds less than this


class Transports(Protocol):
    """The subflows' connections, as the session sees them during a step."""

    def writable(self, sid: int) -> bool:
        """Whether subflow ``sid``'s transport takes bytes now: it is open, not
        closing, and not held back by its backlog (see WRITE_HIGH)."""

    def write(self, sid: int, buffers: list[Outgoing]) -> None:
        """Write ``buffers`` on subflow ``sid``, in order (what the transport
        cannot send at once it keeps: its backlog)."""


class Step(NamedTuple):
    """What the driver must do after a step.  (A NamedTuple: one is made per
    event, and a frozen dataclass costs several times as much to make.)"""

    events: list[Event]  # in order; act on each CloseSubflow, render or count the rest
    output: list[Piece]  # for STDOUT; report with output_written()
    output_eof: bool  # close STDOUT once everything taken has been written
    stdin_room: int  # bytes of STDIN to take now (0: stop reading)
    deadline: float | None  # when to call handle_timer() (None: no timer)
    outcome: Outcome | None  # set: the session is over (output is then left untaken)

    @property
    def closes(self) -> list[CloseSubflow]:
        return [e for e in self.events if isinstance(e, CloseSubflow)]


def step(session: Session, now: float, transports: Transports, drained: Iterable[int] = ()) -> Step:
    """Session.step(): see there."""
    ready = session.scheduler.take_ready()
    if drained:
        ready = [*set(drained).difference(ready), *ready]
    limit = session.config.chunk
    pull = session.pull
    for sid in ready:
        if not transports.writable(sid):
            continue
        while True:
            buffers = pull(sid, now, limit)
            if not buffers:
                break
            transports.write(sid, buffers)  # may leave it not writable
            # Under a whole pull's worth: it took all it may now (no more data,
            # or its allowance used up), and another pull would find nothing.
            if sum(map(len, buffers)) < limit or not transports.writable(sid):
                break
    # (The session's take_events(), take_output(), output_eof and stdin_room
    # inlined: one step per event, and each is a call.)
    events, session._events = session._events, []
    outcome = session.outcome
    output = session._output
    if output and outcome is None:
        session._output = []
    else:
        output = []
    sender = session.sender
    room = 0 if outcome is not None or sender.eof else sender.buffer_limit - (sender.end - sender.acked)
    rx = session.receiver
    eof = rx.fin is not None and rx.delivered == rx.fin  # rx.eof
    # tuple.__new__: a NamedTuple's own constructor is a Python function.
    return tuple.__new__(Step, (events, output, eof, room if room > 0 else 0,
                                session.next_deadline(), outcome))
