"""The asyncio driver: connects the sans-I/O session to its connections,
its stream (source and sink) and the clock.

All protocol decisions are the session's.  The runner only moves bytes:
connections enter through connection() (a protocol factory, for servers)
or adopt() (a socket already connected), whoever made them (joining.py);
the source's bytes go to the session, the session's output to the sink,
and it calls ``handle_timer`` when the session's deadline comes.  After any event it
runs one coalesced ``_flush``: one ``Session.step()`` (core/driver.py),
which writes on each subflow what it may take, and the step's events
(rendered as log lines by render.py), output and deadline.

What works beside the session while it runs (listeners, and the CLI's
signal handling) is Attached: attach(runner) at the start of run(),
detach() as soon as the session is over, before the last frames drain
(teardown.py: how a run ends).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol, cast

from ..core import driver, frames
from ..core.receiver import Piece
from ..core.sender import Extent, Outgoing
from ..core.session import CloseSubflow, Outcome, Session
from ..core.stats import AddressStats, SessionStats
from . import lograte
from .connection import SubflowConnection
from .file_source import FileInput
from .joining import Joining
from .render import render
from .sink import StreamSink
from .source import ExtentSource, LoopInput, StreamSource
from .splicing import Diverter
from .stdio_ends import StdioEnds
from .stream import StreamEnds, open_sink, open_source
from .teardown import Teardown

log = logging.getLogger("sockimux")

# uvloop's clock and timers count whole milliseconds and round a timer's
# delay to the nearest one: armed at the deadline itself, the timer could
# fire up to half a millisecond early, find nothing due, be armed again at
# the same deadline and fire again at once, until the clock ticked past it
# (hundreds of passes over every subflow per second).  Armed this much
# later, it fires at or after the deadline.
TIMER_SLACK = 0.001
# A read (from a subflow or STDIN) under this many bytes is a keystroke's:
# the step it calls for runs at once, in the read's own callback (a loop pass
# less per hop: 12% less CPU per echo).  Larger reads, and a frame header read
# alone (in a bulk transfer the reader asks for one after each large body),
# come in bursts and share one step per loop pass.
SMALL_READ = 8192


class Attached(Protocol):
    """Something that works beside the session while it runs: a listener
    handing connections in, the CLI's signal handling."""

    async def attach(self, runner: Runner) -> None:
        """Start (connections go to runner.connection() or runner.adopt())."""

    def detach(self) -> None:
        """The session is over: stop (no more connections)."""


class Runner(Joining, StdioEnds, Teardown):
    def __init__(self, session: Session, in_fd: int = -1, out_fd: int = -1,
                 ends: StreamEnds | None = None) -> None:
        self.session = session
        self.loop = asyncio.get_running_loop()
        self.connections: dict[int, SubflowConnection] = {}
        self.source: StreamSource
        self.sink: StreamSink
        if ends is None:
            self.source = open_source(self.loop, in_fd, self._stdin_data, self._stdin_eof)
            self.sink = open_sink(self.loop, out_fd, self._output_written,
                                  self.output_failed, self._output_closed)
        else:
            self.source = ends.source(self._stdin_data, self._stdin_eof)
            self.sink = ends.sink(self._output_written, self.output_failed, self._output_closed)
        # A STDIN pipe read by the loop needs the session's room only when it
        # changes (most steps on the keystroke path leave it as it was); the
        # other sources act on every call (a regular file schedules its next
        # read, the API's source hands bytes on, the thread's counts down).
        self._room_on_change = isinstance(self.source, LoopInput)
        self._room = -1  # what the source was last given
        # A regular-file STDIN hands out Extents, which connections send from it;
        # a pipe in bulk too, from its spool while it holds any (spool.py).
        self.file_source: ExtentSource | None = (
            self.source if isinstance(self.source, FileInput) else None)
        if isinstance(self.source, LoopInput):
            self.source.spool_with(self._spool_keeps, self._extents_from,
                                   lambda: any(c.splices() for c in self.connections.values()))
        # DATA bodies go around our memory when STDOUT is a pipe or a file:
        # by splice() to it, or into a pipe of ours until their turn.
        self.diverter = Diverter(self.sink, lambda message: self.resource_warning("pipe", message))
        # (Parked pieces, from those pipes, only ever go to such a sink.)
        target = self.diverter.target
        self._write_out: Callable[[list[Piece]], None] = (
            target.write if target is not None else cast(Callable[[list[Piece]], None], self.sink.write))
        self.signal: int | None = None  # the signal that interrupted the session
        self._output_pending = 0  # bytes handed to the sink, not yet written
        self._output_closing = False
        self._flush_scheduled = False
        self._writable: set[int] = set()  # subflows whose transport drained since the last flush
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._failed = False  # an internal error: the session is over
        self._finished = self.loop.create_future()
        self._all_closed: asyncio.Future[None] | None = None  # _drain_and_close waits on it
        # _drain_and_close has written every subflow's last frames and its end
        # (write_eof): what arrives meanwhile (a PING) must not make a step write.
        self._ended = False
        self._lograte = lograte.install(log, self.loop.time, self.loop.call_later,
                                        self.loop.is_closed)
        # The addresses we open ourselves, per the dialer's re-open policy
        # (set by Dialer.attach): joined with the session's counters in stats().
        self.address_stats: Callable[[float], tuple[AddressStats, ...]] | None = None
        # When our input is a command's output: how that command ended, awaited
        # at the end of the input and told to the peer with the FIN.
        self.input_status: Callable[[], Awaitable[int | None]] | None = None
        self._status_task: asyncio.Task[None] | None = None

    def stats(self) -> SessionStats:
        """The one stats snapshot (--stats, --stats-file, SIGUSR1, --progress,
        Stream.stats()): the session's, with the dialer's addresses, now."""
        now = self.loop.time()
        addresses = self.address_stats(now) if self.address_stats is not None else ()
        return self.session.stats(now, addresses)

    # -- events in ---------------------------------------------------------------

    def subflow_data(self, sid: int, count: int) -> None:
        now = self.loop.time()
        if self.session.received(sid, count, now):
            if self.diverter.on:
                self.diverter.offer(self, sid)
            if not self._flush_scheduled:  # kick(), inline
                self._flush_scheduled = True
                if frames.HEADER_SIZE < count < SMALL_READ:
                    self._flush(now)  # a keystroke's frame: its step now, not a loop pass later
                else:  # bulk reads (bodies, a header alone) share a step per loop pass
                    self.loop.call_soon(self._flush)

    def subflow_writable(self, sid: int) -> None:
        self._writable.add(sid)
        self.kick()

    def subflow_drained(self, sid: int) -> None:
        """What the connection held has all gone to the socket (sending.py):
        as subflow_writable, but its step at once, in the loop's callback."""
        self._writable.add(sid)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._flush()

    def subflow_lost(self, sid: int, reason: str) -> None:
        if sid not in self.session.subflows:
            # The session closed it first (its end arrived with the frames that
            # made the session refuse it): _close_subflow, in the flush already
            # scheduled, closes it and tells its watch why.
            return
        conn = self.connections.pop(sid, None)
        if conn is None:
            return
        self._connection_gone()
        conn.forget_direct()
        self.session.subflow_lost(sid, self.loop.time(), reason)
        if conn.transport is not None:
            conn.transport.close()
        conn.report_end(None, reason)
        self.kick()

    def _stdin_data(self, data: bytes | Extent) -> None:
        if self.session.outcome is None:
            now = self.loop.time()
            self.session.write_stdin(data, now)
            if not self._flush_scheduled:  # kick(), inline
                self._flush_scheduled = True
                if len(data) < SMALL_READ:  # a keystroke: sent now, not a loop pass later
                    self._flush(now)
                else:
                    self.loop.call_soon(self._flush)

    def _extents_from(self, source: ExtentSource | None) -> None:
        self.file_source = source

    def _spool_keeps(self) -> int:
        """The stream offset below which a STDIN spool may let bytes go:
        acknowledged, and none of them held by a connection to send still.
        (An acknowledged range can be held: a head-of-line copy whose
        original arrived first; its frame's header is out, so its bytes
        must follow, whatever the peer then does with them.)"""
        keep = self.session.sender.acked
        for conn in self.connections.values():
            for buf in conn.held:
                if isinstance(buf, Extent) and buf.position < keep:
                    keep = buf.position
        return keep

    def _output_written(self, count: int) -> None:
        self._output_pending -= count
        self.session.output_written(count, self.loop.time())
        if not self._flush_scheduled:  # kick(), inline (inside _flush it is scheduled still)
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        now = self.loop.time()
        self.session.handle_timer(now)
        self._flush(now)

    # -- what the process tells us (the CLI's signal and exception handlers) ----------

    def resource_warning(self, kind: str, message: str) -> None:
        """One line about running short of resources, at most one of each
        ``kind`` every lograte.RESOURCE_PERIOD seconds."""
        log.warning("%s", message, extra={lograte.KIND: kind})

    # -- acting on the session ---------------------------------------------------

    def kick(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self, now: float | None = None) -> None:
        """One step.  ``now``: the loop's time, from the callback that runs
        the step inline (a keystroke's: one clock read per event); None for
        a flush scheduled with call_soon."""
        if self._failed:
            self._flush_scheduled = False
            return  # run() takes the last frames; the error is the one line we print
        # The peer's bytes first: on the keystroke path they are what someone
        # is waiting for.  A sink that takes them at once reports them written
        # at once (its kick is a no-op while this flush is still scheduled),
        # so the step below acknowledges them without another pass.
        session = self.session
        if session._output and session.outcome is None:  # (take_output(), write_output(): inline)
            output, session._output = session._output, []
            self._output_pending += sum(map(len, output))
            self._write_out(output)
        self._flush_scheduled = False
        drained: set[int] | tuple[()] = ()
        if self._writable:  # (no new set per step while no transport drained)
            drained, self._writable = self._writable, set()
        # Session.step() is driver.step(): called directly, one call less per event.
        step = driver.step(session, self.loop.time() if now is None else now, self, drained)
        for event in step.events:
            if isinstance(event, CloseSubflow):
                self._close_subflow(event)
            for level, message in render(event):
                log.log(level, "%s", message)
        if step.outcome is not None:
            self._finish()
            return
        if step.output:
            self.write_output(step.output)
        if step.output_eof and self._output_pending == 0 and not self._output_closing:
            self._output_closing = True
            self.sink.close()
        room = step.stdin_room
        if room != self._room or not self._room_on_change:
            self._room = room
            self.source.set_room(room)
        if step.deadline != self._timer_at:  # (mostly unchanged: no call then)
            self._arm_timer(step.deadline)

    # The subflows' transports, as Session.step() sees them (core/driver.py).

    def writable(self, sid: int) -> bool:
        conn = self.connections.get(sid)
        # A full transport (pause_writing()) takes nothing more until
        # resume_writing() names it in the next step's `drained`.
        return (conn is not None and conn.transport is not None and not conn.full
                and not conn.transport.is_closing() and not self._ended)

    def write(self, sid: int, buffers: list[Outgoing]) -> None:
        conn = self.connections[sid]
        transport = conn.transport
        if self.file_source is None and transport is not None:
            # Every buffer is bytes (only a regular-file STDIN hands out
            # Extents): straight to the transport, one call less per frame.
            transport.writelines(buffers)  # type: ignore[arg-type]
        else:
            conn.send(buffers)  # may pause_writing(): conn.full

    def write_output(self, output: list[Piece] | None = None) -> None:
        if output is None:
            output = self.session.take_output()
        if output:
            self._output_pending += sum(map(len, output))
            self._write_out(output)

    def _close_subflow(self, event: CloseSubflow) -> None:
        conn = self.connections.pop(event.sid, None)
        if conn is None:
            return
        self._connection_gone()
        conn.report_end(event.code, event.reason)
        if conn.transport is None or conn.transport.is_closing():  # nothing more to write on it
            conn.forget_direct()
            return
        if event.flush:
            conn.send(event.final)
            conn.forget_direct()
            conn.transport.close()
        else:
            conn.forget_direct()
            conn.transport.abort()

    def _arm_timer(self, deadline: float | None) -> None:
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = (None if deadline is None
                       else self.loop.call_at(deadline + TIMER_SLACK, self._on_timer))

    # -- lifecycle ---------------------------------------------------------------

    async def run(self, *attached: Attached) -> Outcome:
        """Run the session to its end, with ``attached`` beside it."""
        failed = True  # until the session ends as sessions do: then an internal error
        started: list[Attached] = []
        try:
            for part in attached:
                await part.attach(self)
                started.append(part)
            # A connection may join while these start: the source keeps the
            # room it is given until then, the sink what it is handed.
            await self.source.start()
            await self.sink.start()
            self.kick()
            await self._finished
            failed = False
        finally:
            for part in reversed(started):
                part.detach()
            if self._timer is not None:
                self._timer.cancel()
            if failed:
                self._failed = True
                self._abort_on_internal_error()
            try:
                await self._drain_and_close(failed)
            finally:
                self.diverter.close()
                lograte.uninstall(log, self._lograte)
        outcome = self.session.outcome
        assert outcome is not None
        return outcome
