"""The session: one stream in each direction, carried by any number of subflows.

Theory of operation
-------------------
This is a sans-I/O state machine.  The runtime feeds it events, each with
the current time ``now`` (seconds, any monotonic origin):

* ``open_subflow`` / ``receive_buffer`` + ``received`` / ``subflow_lost``: a
  connection appeared, delivered bytes (read into the buffer the session
  named), or went away;
* ``divert`` / ``direct_room`` / ``moved_direct`` (direct.py): a DATA body
  that continues the stream, moved by the runtime from its connection
  straight to STDOUT (when STDOUT is a pipe, by splice), never entering our
  memory;
* ``write_stdin`` / ``stdin_eof``: bytes (and the end) of our input;
* ``output_written`` / ``output_closed``: what the runtime wrote to STDOUT;
* ``handle_timer`` at ``next_deadline()``.

and after each input (or batch of inputs) the driver calls ``step(now,
transports, drained)`` once (driver.py): it writes on each subflow whose
transport has room what that subflow may take now, and returns the rest of
what the session wants done: the events (events.py: subflows to close,
what happened), the in-order bytes for STDOUT and whether STDOUT ends, the
STDIN room, the next deadline, and the outcome once the session is over.
The calls it is made of (``take_ready``, ``pull``, ``take_events``,
``take_output``, ``next_deadline``) remain for tests that drive one part.

The session is the coordinator: the sender and the receiver hold the two
streams (sender.py, receiver.py), each Subflow its own counters and rules
(subflow.py, its handshake in handshake.py), the scheduler who writes what
(scheduler.py), the ACK policy when the stream we receive is acknowledged
(acks.py).  Here: the subflows' bytes in, the local stream and the pulls;
as Session's methods kept apart, one idea each: frame dispatch and the
peer's binding (dispatch.py), bodies moved straight to STDOUT (direct.py),
timers (timers.py), closing subflows and the end of the session
(closing.py).

Reliability rests on three rules.  The sender retains every byte until the
peer acknowledges having *written* it.  Every subflow records the stream
ranges it carried, and when it dies or stalls those ranges are queued to be
re-sent on the others.  The receiver keeps exactly-once, in-order delivery
whatever arrives twice or out of order.  So a subflow may vanish at any
moment, all of them may vanish for a while, and the stream still resumes
exactly where it stopped once a subflow (from the same peer process) joins.
"""

from __future__ import annotations

from collections.abc import Iterable

from . import driver, frames, handshake
from . import events as ev
from .acks import AckPolicy
from .closing import Closing
from .config import SessionConfig
from .direct import DirectOutput
from .dispatch import FrameDispatch
from .driver import Step, Transports
from .errors import CloseCode, ProtocolError
from .events import CloseSubflow, Event, Outcome
from .frames import FrameType
from .handshake import ACCEPTS, AUTH, CLOSED, HANDSHAKE, OPEN, SubflowState
from .reader import SCRATCH_SIZE, FrameReader, ScratchPool
from .receiver import Piece, StreamReceiver
from .scheduler import MIN_PIECE, Scheduler
from .sender import Extent, Outgoing, StreamSender
from .stats import AddressStats, ClosedTotals, SessionStats, snapshot
from .subflow import Subflow
from .timers import Liveness

__all__ = ["MIN_PIECE", "SMALL_WINDOW", "CloseSubflow", "Event", "Outcome", "Session",
           "SessionConfig"]

# Below this a window costs throughput even on loopback (docs/PERFORMANCE.md,
# "The window"): say so when it is what holds the data back.
SMALL_WINDOW = 4 * 1024 * 1024


class Session(FrameDispatch, DirectOutput, Liveness, Closing):
    def __init__(self, instance: bytes, now: float, config: SessionConfig | None = None) -> None:
        self.instance = instance
        self.config = config or SessionConfig()
        self.sender = StreamSender(self.config.window)
        self.receiver = StreamReceiver(self.config.window)
        self.subflows: dict[int, Subflow] = {}
        self.scheduler = Scheduler(self.sender, self.subflows, self.config, self._note_small_window)
        self.acks = AckPolicy(self.receiver, self.subflows, self.scheduler, self.config)
        self.peer_instance: bytes | None = None
        self.peer_status: int | None = None  # the peer's FIN said how its input command ended
        self.peer_confirmed = False  # the peer accepted one of our subflows (any frame but REFUSE)
        self.outcome: Outcome | None = None
        self.outcome_reason = ""
        self.subflows_joined = 0
        self._next_id = 1
        self._events: list[Event] = []
        self._output: list[Piece] = []
        self._window_noted = False  # the "window limits throughput" line was logged
        self._partial = 0  # sum of the subflows' `held`: memory set aside for incomplete frames
        self._alone_since: float | None = now
        self.alone_total = 0.0  # seconds without an open subflow, before the current stretch
        self.closed_totals = ClosedTotals()  # the closed subflows' final counters (stats.py)
        self._alone_warned_at = now
        # Each subflow's next deadline, recomputed only for the subflows
        # that marked themselves (subflow.py), so that next_deadline() after
        # every event does not cost a pass over all subflows.
        self._deadlines: dict[int, float] = {}
        self._dirty: set[int] = set()
        self._due: float | None = None  # what next_deadline() last returned (see handle_timer)
        # The subflows' readers read small frames into buffers lent from
        # this pool, each to one reader at a time (see reader.ScratchPool).
        self._scratch = ScratchPool()
        self._discard: bytearray | None = None  # where bytes for a closed subflow are read

    @property
    def head_resent(self) -> int:
        """Bytes re-sent as copies of the head of the stream (statistics)."""
        return self.scheduler.head_copies

    def stats(self, now: float, addresses: tuple[AddressStats, ...] = ()) -> SessionStats:
        """One immutable snapshot of the counters (stats.py), with ``addresses``
        (Reopener.snapshot at the same ``now``) as is: call it when someone looks."""
        return snapshot(self, now, addresses)

    def label(self, sid: int, text: str) -> None:
        """Name subflow ``sid`` in the stats (the runtime knows its address)."""
        sub = self.subflows.get(sid)
        if sub is not None:
            sub.label = text

    # -- subflows ------------------------------------------------------------

    def open_subflow(self, now: float, nonce: bytes) -> int:
        """A connection was made.  Returns its id; pull() yields our HELLO first."""
        sid = self._next_id
        self._next_id += 1
        sub = Subflow(sid, opened_at=now, nonce=nonce, marks=self._dirty, last_heard=now,
                      last_sent=now, reader=FrameReader(self._scratch))
        sub.hello = handshake.our_hello(self.instance, nonce, self.config.psk)
        sub.queue(frames.encode_hello(sub.hello))
        self.subflows[sid] = sub
        self.scheduler.ready(sid)
        pending = sum(1 for s in self.subflows.values() if s.state is not SubflowState.OPEN)
        if len(self.subflows) > self.config.max_subflows:
            self._refuse(sub, CloseCode.TOO_MANY_SUBFLOWS,
                         f"already {self.config.max_subflows} subflows", now)
        elif pending > self.config.max_handshakes:
            self._refuse(sub, CloseCode.TOO_MANY_SUBFLOWS,
                         f"already {self.config.max_handshakes} connections in handshake", now)
        return sid

    def receive_buffer(self, sid: int) -> memoryview:
        """Where to read subflow ``sid``'s next bytes; report them with received().

        The buffer is this subflow's until then: reads on several subflows
        may be in progress at once, and a read given up (nothing came) needs
        no report; the next call for that subflow asks again."""
        sub = self.subflows.get(sid)
        if sub is None:  # a connection on its way out: what it reads is discarded
            if self._discard is None:
                self._discard = bytearray(SCRATCH_SIZE)
            return memoryview(self._discard)
        return sub.reader.get_buffer()

    def received(self, sid: int, count: int, now: float) -> bool:
        """``count`` bytes were read into the buffer receive_buffer(sid) returned.

        Returns False when nothing came of them yet (part of a large body
        arrived): no need to pull or re-arm the timer then."""
        sub = self.subflows.get(sid)
        if sub is None or sub.state is CLOSED:
            return False
        sub.last_heard = now  # (sub.heard(now), inline: once per read)
        self._dirty.add(sid)
        reader = sub.reader
        if not reader.buffer_updated(count):
            sub.partial(now)  # part of a frame arrived
            return False
        state, peer_in = sub.state, sub.peer_in  # (as they were before these frames)
        try:
            if sub.state is HANDSHAKE:
                hello = reader.take_hello()
                if hello is None:
                    return True
                self._on_hello(sub, hello, now)
            while sub.state is OPEN or sub.state is AUTH:
                frame = reader.next_frame(ACCEPTS[sub.state], sub.state)
                if frame is None:
                    break
                self._on_frame(sub, frame, now)
            if reader.buffered:
                sub.partial(now)  # part of a frame (a DATA body, on a slow path) arrived
        except ProtocolError as exc:
            self._refuse(sub, exc.code, str(exc), now)
        finally:
            reader.release()
        if sub.id in self.subflows:  # not refused just now
            if reader.held != sub.held:  # (unchanged, the sum cannot have crossed the limit)
                self._count_partial(sub, now)
            # Pull it only if these frames gave it something to write: owed
            # frames, an ACK, a PONG, or room (the peer's ACK moved what it
            # has in flight), or moved its handshake.  Most frames on a
            # keystroke's path (a DATA frame whose ACK may wait) give it
            # nothing, and a pull that finds nothing is most of such a step.
            if (sub.out or sub.ack_due or sub.pong_owed is not None
                    or state is not sub.state or peer_in != sub.peer_in):
                self.scheduler.ready(sid)
        return True

    def _count_partial(self, sub: Subflow, now: float) -> None:
        """Bound the memory set aside for frames not complete yet, over all
        subflows.  An honest peer has at most its credit in flight (a window;
        twice that with copies of bytes a slower subflow holds up, section
        8), but each reader may set aside up to a 1 MiB body: without this,
        a peer could make us hold max_subflows MiB by leaving one large
        frame half-sent on each subflow."""
        held = sub.reader.held
        self._partial += held - sub.held
        sub.held = held
        limit = 2 * self.config.window + 2 * frames.MAX_DATA
        if self._partial > limit:
            self._refuse(sub, CloseCode.FLOW_CONTROL,
                         f"incomplete frames on all subflows would hold {self._partial} bytes, "
                         f"more than {limit}", now)

    def receive(self, sid: int, data: bytes | bytearray | memoryview, now: float) -> None:
        """Bytes read from subflow ``sid`` (copied in, as a read would have put them)."""
        view = memoryview(data).cast("B")
        while view:
            buf = self.receive_buffer(sid)
            n = min(len(buf), len(view))
            buf[:n] = view[:n]
            del buf
            view = view[n:]
            self.received(sid, n, now)

    def subflow_lost(self, sid: int, now: float, reason: str = "connection closed") -> None:
        """The runtime saw the connection end (EOF or error)."""
        sub = self.subflows.get(sid)
        if sub is not None:
            self._close(sub, CloseCode.NORMAL, reason, now, notify=False, by=ev.By.CONNECTION)

    # -- the local stream ------------------------------------------------------

    @property
    def stdin_room(self) -> int:
        """Bytes of STDIN the session will take now (0: stop reading)."""
        return 0 if self.outcome else self.sender.room

    def write_stdin(self, data: bytes | Extent, now: float) -> None:
        self.sender.push(data)
        self.scheduler.fed(len(data))

    def stdin_eof(self, now: float, status: int | None = None) -> None:
        """STDIN ended; ``status``: the exit status of the command whose output
        it was (-N: killed by signal N), told to the peer with the FIN."""
        self.sender.close(status)
        self.scheduler.ready_all()
        self._events.append(ev.InputEnded(self.sender.end))

    def take_output(self) -> list[Piece]:
        """In-order bytes for STDOUT; report them with output_written() once written."""
        out, self._output = self._output, []
        return out

    @property
    def output_eof(self) -> bool:
        """The peer's stream is complete: close STDOUT after writing what was taken."""
        return self.receiver.eof

    def output_written(self, count: int, now: float) -> None:
        self.receiver.on_written(count)
        self.acks.written(now)

    def output_closed(self, now: float) -> None:
        """STDOUT was closed after the last byte of the peer's stream."""
        self.receiver.output_closed = True
        self.acks.fin_done()
        self._check_done()

    def abort(self, outcome: Outcome, reason: str, now: float) -> None:
        """End the session from this side; tell the peer on every subflow."""
        if self.outcome is not None:
            return
        code = CloseCode.OUTPUT_CLOSED if outcome is Outcome.OUTPUT_CLOSED else CloseCode.SHUTDOWN
        for sub in self.subflows.values():
            if sub.state is SubflowState.OPEN:
                sub.queue(frames.encode_reason(FrameType.ABORT, code, reason))
        self._end(outcome, reason)

    # -- driving ---------------------------------------------------------------

    def step(self, now: float, transports: Transports, drained: Iterable[int] = ()) -> Step:
        """Call once after each input (or batch of inputs): hand every subflow
        that may write what it may write now, and say what else to do.

        Pulls the subflows that may have something to write (take_ready(),
        plus ``drained``: those whose transport became writable again since
        the last step), each one pull of at most ``config.chunk`` payload
        bytes at a time while ``transports.writable(sid)``, writing each
        with ``transports.write(sid, buffers)``.  Returns a Step: the events
        (close each CloseSubflow's connection, after writing its ``final``
        buffers if ``flush``; render the others), the bytes for STDOUT
        (report them with output_written() once written; close STDOUT once
        ``output_eof`` and all is written, then call output_closed()), the
        STDIN room, the next deadline for handle_timer(), and the outcome
        (set: the session is over; write the last frames pull() gives and
        close every subflow).  See driver.py."""
        return driver.step(self, now, transports, drained)

    # -- output to subflows -------------------------------------------------

    def pull(self, sid: int, now: float, limit: int | None = None) -> list[Outgoing]:
        """Buffers to write on subflow ``sid`` now (header and payload separate).

        Write all of them, in order.  The data part is bounded by the subflow's
        in-flight allowance and by ``limit`` (payload bytes; 0: control frames
        only, for a transport that has enough queued), so call again
        after the peer acknowledges (any receive()) or after your transport
        drains."""
        sub = self.subflows.get(sid)
        if sub is None:
            return []
        # (Nothing owed, as on the keystroke path: no call.)
        out = sub.take_owed() if sub.out or sub.pong_owed is not None else []
        if sub.state is OPEN:
            acked = sub.ack_due
            if acked:
                out.append(self.acks.frame(sub, now))
                if self.acks.fin_done_sent:
                    self._check_done()
            if self.outcome is None and limit != 0:
                before = len(out)
                self.scheduler.fill(sub, out, now, limit)
                if not acked and len(out) > before and self.acks.piggyback(sub, now):
                    out.insert(before, self.acks.frame(sub, now))
                    if self.acks.fin_done_sent:
                        self._check_done()
        if out:  # (sub.sent(now), inline: once per frame written)
            sub.last_sent = now
            self._dirty.add(sid)
        return out

    def take_ready(self) -> list[int]:
        """Subflows to pull() now: those that may have something to write."""
        return self.scheduler.take_ready()

    def take_events(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def _note_small_window(self) -> None:
        """Once per session: a subflow had room, but the window (our send
        buffer, or the peer's credit) held the data back, and that window is
        small enough that it, not the path, limits throughput."""
        if self._window_noted:
            return
        sender = self.sender
        if sender.next_new >= sender.credit:
            window, whose = sender.credit - sender.acked, "peer"
        else:
            window, whose = self.config.window, "ours"
        if 0 < window < SMALL_WINDOW:  # (no credit at all yet: no ACK has come)
            self._window_noted = True
            self._events.append(ev.SmallWindow(whose, window))
