"""DATA bodies moved by splice() from a subflow's socket, around our memory.

The session diverts a body none of whose bytes has been read (core/direct.py)
to one of two places:

- ToOutput: the body continues the stream: straight to STDOUT, a pipe or a
  regular file (the sink's splice_from()).
- ToPipe: the body is ahead of the stream, or STDOUT cannot take it now:
  into a holding pipe of ours (runtime/holding.py), from which the sink
  takes it in its turn.

Meanwhile the transport's reading is paused and BodyMover splices from a
duplicate of the socket's descriptor, watched by the loop; when a body is
done, the next frame's header is read from that duplicate too, and if its
body is diverted as well the splicing goes straight on (_next_header()).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from .holding import HoldingPipe, HoldingPipes
from .sink import OutputFailed, SpliceTarget, StreamSink
from .stream import splice_target

if TYPE_CHECKING:
    from .connection import SubflowConnection
    from .runner import Runner

# Errors of a system short of resources (descriptors, kernel memory): they
# cost one connection, or one optimisation, never the session.
RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class Diversion(Protocol):
    """Where a diverted body goes, and how its moves are reported."""

    @property
    def idle(self) -> bool:
        """Bytes spliced in now are taken in order."""

    def room(self) -> int:
        """How much of the body may be moved now (0: the rest is read as usual)."""

    def splice_from(self, fd: int, count: int) -> int:
        """As SpliceTarget.splice_from."""

    def moved(self, count: int, now: float) -> None:
        """Report ``count`` bytes moved to the session."""

    def done(self) -> None:
        """No more of this body goes this way."""


class ToOutput:
    """A body that continues the stream, to STDOUT."""

    __slots__ = ("_conn", "_sink")

    def __init__(self, conn: SubflowConnection, sink: SpliceTarget) -> None:
        self._conn = conn
        self._sink = sink

    @property
    def idle(self) -> bool:
        return self._sink.idle

    def room(self) -> int:
        return self._conn.runner.session.direct_room(self._conn.sid)

    def splice_from(self, fd: int, count: int) -> int:
        return self._sink.splice_from(fd, count)

    def moved(self, count: int, now: float) -> None:
        self._conn.runner.session.moved_direct(self._conn.sid, count, now)

    def done(self) -> None:
        pass


class ToPipe:
    """A body ahead of the stream, parked in a holding pipe."""

    __slots__ = ("_conn", "_pipe")

    def __init__(self, conn: SubflowConnection, pipe: HoldingPipe) -> None:
        self._conn = conn
        self._pipe = pipe

    idle = True

    def room(self) -> int:
        return self._conn.runner.session.park_room(self._conn.sid)

    def splice_from(self, fd: int, count: int) -> int:
        return self._pipe.splice_from(fd, count)

    def moved(self, count: int, now: float) -> None:
        self._conn.runner.session.parked(self._conn.sid, count, self._pipe, now)

    def done(self) -> None:
        self._pipe.filled()


class Diverter:
    """A runner's choice of bodies to move around our memory: none unless
    its sink can be spliced into; then a body that continues the stream
    goes straight to it, and one ahead of the stream (or one the sink
    cannot take now) into a holding pipe."""

    def __init__(self, sink: StreamSink, warn: Callable[[str], None]) -> None:
        self.target = splice_target(sink)
        self.on = self.target is not None  # (off for good once splice() refused our descriptors)
        self.holding = HoldingPipes(warn) if self.on else None

    def offer(self, runner: Runner, sid: int) -> None:
        """Frames were read on subflow ``sid``: its next DATA body, if the
        session lets it, is moved around our memory (BodyMover)."""
        session = runner.session
        target = self.target
        # (STDOUT busy: a body that continues the stream is parked, as if ahead.)
        if target is not None and target.idle and (length := session.divert(sid)):
            conn = runner.connections.get(sid)
            if conn is None:
                session.undivert(sid)
            else:
                conn.bodies.divert(ToOutput(conn, target), length)  # (it kicks)
        elif self.holding is not None and (body := session.park(sid)):
            conn = runner.connections.get(sid)
            pipe = self.holding.take(*body) if conn is not None else None
            if conn is None or pipe is None:
                session.undivert(sid)
            else:
                conn.bodies.divert(ToPipe(conn, pipe), body[1])

    def close(self) -> None:
        if self.holding is not None:
            self.holding.close()


class BodyMover:
    """One connection's diverted bodies: see the module's comment."""

    def __init__(self, conn: SubflowConnection) -> None:
        self.conn = conn
        self.moving = False  # a body is being moved: the transport does not read
        self.left = 0  # bytes of the diverted body not moved yet
        self.chaining = False  # _next_header() is handing the runner a header it read
        self.chained = False  # ...and the session diverted that frame's body
        self._to: Diversion | None = None

    def divert(self, to: Diversion, length: int) -> None:
        """The session diverted the DATA body now arriving (``length`` bytes):
        splice it ``to`` its place, or give it back (undivert) to be read as usual."""
        conn = self.conn
        session = conn.runner.session
        if isinstance(to, ToOutput):
            conn.runner.write_output()  # what comes before the body
        if self.chaining:  # its header was read by _next_header(): move() goes on with it
            if to.idle:
                self._switch(to)
                self.chained, self.left = True, length
            else:
                to.done()
                session.undivert(conn.sid)
            return
        if not to.idle or not self._start():
            to.done()
            session.undivert(conn.sid)
            return
        self._switch(to)
        self.left = length
        self.move(False)

    def _switch(self, to: Diversion | None) -> None:
        if self._to is not None:
            self._to.done()
        self._to = to

    def _next_header(self) -> bool:
        """A diverted body has all been moved: read the next frame's header
        here, the transport still paused.  True if the session diverted that
        frame's body too (then move() splices it at once: no resume and pause
        of the transport, no epoll changes, between two bodies).  False
        otherwise (the header not here yet, another kind of frame, an error
        or the end of the connection, which the transport then reads and
        reports as usual)."""
        conn = self.conn
        runner = conn.runner
        try:
            count = os.readv(conn.direct_fd, [runner.session.receive_buffer(conn.sid)])
        except OSError:
            return False
        if not count:
            return False
        self.chaining, self.chained = True, False
        try:
            runner.subflow_data(conn.sid, count)  # divert() sets chained
        finally:
            self.chaining = False
        return self.chained and self.moving and runner.connections.get(conn.sid) is conn

    def move(self, woken: bool) -> None:
        """Splice the diverted body while the socket has bytes of it and its
        place has room.  ``woken``: the socket was reported readable, so a
        splice that moves nothing means the place is full: the rest of the
        body is then read as usual, so that the subflow's later frames (ACKs
        for our own stream among them) never wait for STDOUT."""
        conn = self.conn
        runner = conn.runner
        session, sid = runner.session, conn.sid
        while True:
            to = self._to
            if to is None:
                return
            if not to.idle and self._to_pipe():
                woken = False
                continue  # STDOUT is busy: the rest waits in a pipe for its turn
            room = to.room()
            if not room or not to.idle:
                if room:
                    session.undivert(sid)
                elif not self.left and to.idle and self._next_header():
                    woken = False
                    continue  # the next body, straight on
                self.stop()
                runner.kick()
                return
            try:
                moved = to.splice_from(conn.direct_fd, room)
            except BlockingIOError:
                if woken and self._to_pipe():
                    woken = False
                    continue  # its place is full: the rest waits in a (another) pipe
                if woken:
                    session.undivert(sid)
                    self.stop()
                    runner.kick()
                return  # wait until the socket is readable
            except OutputFailed as exc:
                self.stop()
                runner.output_failed(str(exc))
                return
            except OSError as exc:
                self.stop()
                if exc.errno == errno.EINVAL or exc.errno in RESOURCE_ERRORS:
                    if exc.errno == errno.EINVAL:  # these descriptors cannot be spliced
                        runner.diverter.on = False
                    else:  # this body is read as usual
                        runner.resource_warning("splice", f"splice from a subflow: {exc.strerror}")
                    session.undivert(sid)
                    runner.kick()
                else:
                    runner.subflow_lost(sid, f"error: {exc}")
                return
            if moved == 0:
                self.stop()
                runner.subflow_lost(sid, "closed by the other end")
                return
            to.moved(moved, runner.loop.time())
            self.left -= moved
            runner.kick()
            woken = False

    def _to_pipe(self) -> bool:
        """The body's place takes nothing now (STDOUT busy or full, or its
        holding pipe full): the rest goes into a holding pipe instead, if
        one will take it, so that the subflow's later frames need not wait
        and the bytes still need not enter our memory.  False: the caller
        gives the rest back to be read as usual."""
        conn = self.conn
        holding = conn.runner.diverter.holding
        if holding is None or not self.left:
            return False
        session, sid = conn.runner.session, conn.sid
        room = session.park_room(sid)  # (0: it took the rest back itself)
        if not room:
            return False
        pipe = holding.take(session.diverted_at(sid), room)
        if pipe is None:
            return False
        self._switch(ToPipe(conn, pipe))
        return True

    def _start(self) -> bool:
        conn = self.conn
        transport = conn.transport
        if transport is None or transport.is_closing() or conn.direct_source() < 0:
            return False
        runner = conn.runner
        try:  # epoll may be out of room (ENOSPC, ENOMEM): then this body is read as usual
            runner.loop.add_reader(conn.direct_fd, self.move, True)
        except OSError as exc:
            runner.resource_warning("poll", f"splice from a subflow: {exc.strerror}")
            return False
        transport.pause_reading()
        self.moving = True
        return True

    def stop(self) -> None:
        self._switch(None)
        if self.moving:
            self.moving = False
            conn = self.conn
            conn.runner.loop.remove_reader(conn.direct_fd)
            if conn.transport is not None and not conn.transport.is_closing():
                conn.transport.resume_reading()
