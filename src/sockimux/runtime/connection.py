"""One subflow's connection: any connected stream socket (accepted on a
UNIX listener today; dialed over TCP or a socketpair to a child next).

SubflowConnection is the asyncio protocol: it reads straight into the
session's buffers (BufferedProtocol) and hands the session's frames to the
transport.  It also owns the two paths around our memory:

- sendfile(): an Extent of a regular-file STDIN goes from the page cache
  to the socket (send(), sending.py).
- splice(): a DATA body that continues the stream moves from the socket to
  STDOUT, a pipe or a regular file (divert_body(), move(); the sink's
  splice_from() does the moving).  Meanwhile the transport's reading
  is paused and we splice from a duplicate of the socket's descriptor,
  watched by the loop; when a body is done, the next frame's header is
  read from that duplicate too, and if its body is diverted as well the
  splicing goes straight on (_next_header()).

What happens to the session is the runner's: the connection calls back
subflow_opened, subflow_data, subflow_writable and subflow_lost.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, cast

from ..core.driver import WRITE_HIGH, WRITE_LOW
from ..core.errors import CloseCode
from ..core.sender import Outgoing
from ..core.subflow import SubflowState
from .sending import Sending
from .sink import OutputFailed, SpliceTarget

if TYPE_CHECKING:
    from .runner import Runner

log = logging.getLogger("sockimux")

# Errors of a system short of resources (descriptors, kernel memory): they
# cost one connection, or one optimisation, never the session.
RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

# Whoever hands connections in may refuse one before it joins the session:
# given the connection's socket, the reason to refuse it (logged), or None.
Admission = Callable[[socket.socket], "str | None"]


class SubflowWatch(Protocol):
    """Whoever opened a connection (a dialer) learns what became of it: it
    re-opens the subflow when it ends, unless the close code says it cannot heal."""

    # The stats name the subflow by this: the address it was opened to and,
    # with count=N, which of its N ("2 of 4"), as the dialer's log and table do.
    label: str

    def established(self) -> None:
        """The hello exchange is done: the subflow is open in the session."""

    def ended(self, code: CloseCode | None, reason: str) -> None:
        """The connection is gone; ``code`` is the session's close code (a
        refusal, a stall), None when the connection itself ended (EOF, error)."""


class SubflowConnection(Sending, asyncio.BufferedProtocol):
    """One connection, from connection_made on: see the module's comment."""

    def __init__(self, runner: Runner, admit: Admission | None = None,
                 watch: SubflowWatch | None = None) -> None:
        self.runner = runner
        self.admit = admit
        self.watch = watch
        self.reported_open = False  # watch.established() was called
        self.sid = 0
        self.transport: asyncio.Transport | None = None
        self.full = False  # the session may hand it nothing more (sending.py)
        self.paused = False  # the transport holds WRITE_HIGH bytes or more
        self.held: list[Outgoing] = []  # waiting for the socket, to go by sendfile()
        self.holding = False  # the loop watches direct_fd for writing (held)
        self.direct_fd = -1  # our duplicate of the socket, for splice and sendfile
        self.sends_direct = False  # direct_fd is the socket itself (not a channel's read pipe)
        self.moving = False  # a body is being moved directly: the transport does not read
        self.left = 0  # bytes of the diverted body not moved yet
        self.chaining = False  # _next_header() is handing the runner a header it read
        self.chained = False  # ...and the session diverted that frame's body

    def _direct_fd(self) -> int:
        """Our duplicate of the socket, or -1: then this subflow does without
        splice and sendfile (out of descriptors, it is tried again later).
        A channel of two pipes (an ssh channel, remote/pipepair.py) gives its
        read pipe: bodies are spliced from it, and nothing is sent by
        sendfile() (``sends_direct`` stays False)."""
        if self.direct_fd < 0:
            assert self.transport is not None
            sock = self.transport.get_extra_info("socket")
            source = sock if sock is not None else self.transport.get_extra_info("read_pipe")
            if source is None:
                return -1
            try:
                self.direct_fd = os.dup(source.fileno())
                self.sends_direct = sock is not None
            except OSError as exc:
                self.runner.resource_warning("dup", f"subflow {self.sid}: sending and receiving "
                                             f"without sendfile/splice ({exc.strerror})")
                return -1
        return self.direct_fd

    # -- receiving bodies straight to STDOUT --------------------------------------------

    def divert_body(self, sink: SpliceTarget, length: int) -> None:
        """The session diverted the DATA body now arriving (``length`` bytes):
        splice it into ``sink``, or give it back (undivert) to be read as usual."""
        self.runner.write_output()  # what comes before the body
        if self.chaining:  # its header was read by _next_header(): move() goes on with it
            if sink.idle:
                self.chained, self.left = True, length
            else:
                self.runner.session.undivert(self.sid)
            return
        if not sink.idle or not self._start_direct(sink):
            self.runner.session.undivert(self.sid)
            return
        self.left = length
        self.move(sink, False)

    def _next_header(self) -> bool:
        """A diverted body has all gone to STDOUT: read the next frame's header
        here, the transport still paused.  True if the session diverted that
        frame's body too (then move() splices it at once: no resume and pause
        of the transport, no epoll changes, between two bodies).  False
        otherwise (the header not here yet, another kind of frame, an error
        or the end of the connection, which the transport then reads and
        reports as usual)."""
        runner = self.runner
        try:
            count = os.readv(self.direct_fd, [runner.session.receive_buffer(self.sid)])
        except OSError:
            return False
        if not count:
            return False
        self.chaining, self.chained = True, False
        try:
            runner.subflow_data(self.sid, count)  # divert_body() sets chained
        finally:
            self.chaining = False
        return self.chained and self.moving and runner.connections.get(self.sid) is self

    def move(self, sink: SpliceTarget, woken: bool) -> None:
        """Splice the diverted body to ``sink`` while the socket has bytes of
        it and the pipe has room.  ``woken``: the socket was reported
        readable, so a splice that moves nothing means the pipe is full: the
        rest of the body is then read as usual, so that the subflow's later
        frames (ACKs for our own stream among them) never wait for STDOUT."""
        runner = self.runner
        session, sid = runner.session, self.sid
        while True:
            room = session.direct_room(sid)
            if not room or not sink.idle:
                if room:
                    session.undivert(sid)
                elif not self.left and sink.idle and self._next_header():
                    woken = False
                    continue  # the next body, straight on
                self.stop_direct()
                runner.kick()
                return
            try:
                moved = sink.splice_from(self.direct_fd, room)
            except BlockingIOError:
                if woken:
                    session.undivert(sid)
                    self.stop_direct()
                    runner.kick()
                return  # wait until the socket is readable
            except OutputFailed as exc:
                self.stop_direct()
                runner.output_failed(str(exc))
                return
            except OSError as exc:
                self.stop_direct()
                if exc.errno == errno.EINVAL or exc.errno in RESOURCE_ERRORS:
                    if exc.errno == errno.EINVAL:  # these descriptors cannot be spliced
                        runner.direct = False
                    else:  # this body is read as usual
                        runner.resource_warning("splice", f"splice to STDOUT: {exc.strerror}")
                    session.undivert(sid)
                    runner.kick()
                else:
                    runner.subflow_lost(sid, f"error: {exc}")
                return
            if moved == 0:
                self.stop_direct()
                runner.subflow_lost(sid, "closed by the other end")
                return
            session.moved_direct(sid, moved, runner.loop.time())
            self.left -= moved
            runner.kick()
            woken = False

    def _start_direct(self, sink: SpliceTarget) -> bool:
        transport = self.transport
        if transport is None or transport.is_closing() or self._direct_fd() < 0:
            return False
        runner = self.runner
        try:  # epoll may be out of room (ENOSPC, ENOMEM): then this body is read as usual
            runner.loop.add_reader(self.direct_fd, self.move, sink, True)
        except OSError as exc:
            runner.resource_warning("poll", f"splice to STDOUT: {exc.strerror}")
            return False
        transport.pause_reading()
        self.moving = True
        return True

    def stop_direct(self) -> None:
        if self.moving:
            self.moving = False
            self.runner.loop.remove_reader(self.direct_fd)
            if self.transport is not None and not self.transport.is_closing():
                self.transport.resume_reading()

    def forget_direct(self) -> None:
        self.stop_direct()
        self.unhold()
        if self.direct_fd >= 0:
            os.close(self.direct_fd)
            self.direct_fd = -1

    # The transport's callbacks hand a bug of ours to the runner themselves:
    # raised to the transport, it would tear this connection down before the
    # runner could tell the peer on it that the session is over.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        try:
            if self.admit is not None:
                refusal = self.admit(self.transport.get_extra_info("socket"))
                if refusal:
                    log.warning("%s", refusal)
                    self.transport.abort()
                    return
            self.transport.set_write_buffer_limits(high=WRITE_HIGH, low=WRITE_LOW)
            self.sid = self.runner.subflow_opened(self)
        except Exception as exc:
            self.runner.internal_error(exc)

    def get_buffer(self, sizehint: int) -> memoryview:
        try:
            return self.runner.session.receive_buffer(self.sid)
        except Exception as exc:
            self.runner.internal_error(exc)
            self.sid = 0  # what is read now is dropped
            return memoryview(bytearray(max(sizehint, 1)))

    def buffer_updated(self, nbytes: int) -> None:
        if self.sid:
            try:
                self.runner.subflow_data(self.sid, nbytes)
                if self.watch is not None and not self.reported_open:
                    self._check_established()
            except Exception as exc:
                self.runner.internal_error(exc)

    def _check_established(self) -> None:
        # The hello exchange completes only while bytes are received: this is
        # the one place a watched subflow can become open.
        sub = self.runner.session.subflows.get(self.sid)
        if sub is not None and sub.state is SubflowState.OPEN and self.watch is not None:
            self.reported_open = True
            self.watch.established()

    def eof_received(self) -> bool:
        try:
            self.runner.subflow_lost(self.sid, "closed by the other end")
        except Exception as exc:
            self.runner.internal_error(exc)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self.forget_direct()
            self.runner.subflow_lost(self.sid, f"error: {exc}" if exc else "connection closed")
        except Exception as error:
            self.runner.internal_error(error)

    def report_end(self, code: CloseCode | None, reason: str) -> None:
        """The runner saw this subflow end: tell the watch, once."""
        if self.watch is not None:
            watch, self.watch = self.watch, None
            watch.ended(code, reason)
