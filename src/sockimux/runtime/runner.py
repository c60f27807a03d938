"""The asyncio driver: connects the sans-I/O session to sockets, STDIO and the clock.

All protocol decisions are the session's.  This module only moves bytes:
connections in and out, STDIN to the session, the session's output to
STDOUT, and it calls ``handle_timer`` when the session's deadline comes.
After any event it runs one coalesced ``_flush``: one ``Session.step()``
(core/driver.py), which writes on each subflow what it may take, and the
step's events (rendered as log lines by render.py), output and deadline.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import socket
import struct
from typing import Any, cast

from ..core import frames
from ..core.driver import WRITE_HIGH, WRITE_LOW
from ..core.errors import CloseCode
from ..core.frames import FrameType
from ..core.sender import Extent, Outgoing
from ..core.session import CloseSubflow, Outcome, Session
from . import lograte
from .listener import BACKLOG, Listener
from .render import render
from .stdio import (
    FileInput,
    InputReader,
    LoopInput,
    LoopOutput,
    OutputWriter,
    loop_capable,
    private_fd,
    regular_file,
)

log = logging.getLogger("sockimux")
PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid

CLOSE_GRACE = 2.0  # seconds to let final frames drain before we exit
HANGUP_GRACE = 5.0  # seconds a session may take to finish after SIGHUP
# Errors of a system short of resources (descriptors, kernel memory): they
# cost one connection, or one optimisation, never the session.
RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
RESOURCE_WARNING_EVERY = 10.0  # seconds between warnings about such errors
INTERNAL_ERROR = "internal error in the peer"  # what the peer is told of ours


class SubflowConnection(asyncio.BufferedProtocol):
    """One accepted connection: reads straight into the session's buffers and
    forwards loss to the runner.

    While a DATA body moves straight to STDOUT (see Runner.move_direct),
    the transport's reading is paused and the runner splices from a
    duplicate of the socket's descriptor, watched by the loop.  The same
    duplicate takes Extents of a regular-file STDIN by sendfile() (send())."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.sid = 0
        self.transport: asyncio.Transport | None = None
        self.full = False  # the transport holds WRITE_HIGH bytes or more
        self.direct_fd = -1  # our duplicate of the socket, for splice and sendfile
        self.moving = False  # a body is being moved directly: the transport does not read

    def _direct_fd(self) -> int:
        """Our duplicate of the socket, or -1: then this subflow does without
        splice and sendfile (out of descriptors, it is tried again later)."""
        if self.direct_fd < 0:
            assert self.transport is not None
            sock = self.transport.get_extra_info("socket")
            if sock is None:
                return -1
            try:
                self.direct_fd = os.dup(sock.fileno())
            except OSError as exc:
                self.runner.resource_warning("dup", f"subflow {self.sid}: sending and receiving "
                                             f"without sendfile/splice ({exc.strerror})")
                return -1
        return self.direct_fd

    # -- sending ------------------------------------------------------------------

    def send(self, buffers: list[Outgoing]) -> None:
        """Write ``buffers`` in order.  An Extent of the input file goes by
        sendfile() as far as the socket takes it at once, when nothing is
        queued before it; the rest of it is read and queued as usual."""
        transport = self.transport
        if transport is None:
            return
        runner = self.runner
        start = 0
        for i, buf in enumerate(buffers):
            if not isinstance(buf, Extent):
                continue
            if not runner.input_holds(buf):  # the session is over: not even its header goes
                return
            if i > start:
                transport.writelines(cast(list[bytes], buffers[start:i]))
            start = i + 1
            sent = 0
            if (runner.sendfile and transport.get_write_buffer_size() == 0
                    and not transport.is_closing() and self._direct_fd() >= 0):
                sent = runner.send_input(self.direct_fd, buf)
            if 0 <= sent < len(buf):
                data = runner.read_input(buf.cut(sent, len(buf)))
                if data is not None:
                    transport.write(data)
                    sent = len(buf)
                else:
                    sent = -1
            if sent < 0:  # the input file shrank: the session is over
                transport.abort()
                return
        if start < len(buffers):
            transport.writelines(cast(list[bytes], buffers[start:]))

    # -- receiving bodies straight to STDOUT --------------------------------------------

    def start_direct(self) -> bool:
        transport = self.transport
        if transport is None or transport.is_closing() or self._direct_fd() < 0:
            return False
        try:  # epoll may be out of room (ENOSPC, ENOMEM): then this body is read as usual
            self.runner.loop.add_reader(self.direct_fd, self.runner.move_direct, self, True)
        except OSError as exc:
            self.runner.resource_warning("poll", f"splice to STDOUT: {exc.strerror}")
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
        if self.direct_fd >= 0:
            os.close(self.direct_fd)
            self.direct_fd = -1

    # The transport's callbacks hand a bug of ours to the runner themselves:
    # raised to the transport, it would tear this connection down before the
    # runner could tell the peer on it that the session is over.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        try:
            refusal = self.runner.check_peer(self.transport)
            if refusal:
                log.warning("%s", refusal)
                self.transport.abort()
                return
            self.transport.set_write_buffer_limits(high=WRITE_HIGH, low=WRITE_LOW)
            self.sid = self.runner.subflow_opened(self)
        except Exception as exc:
            self.runner.internal_error(exc)

    def pause_writing(self) -> None:
        self.full = True

    def resume_writing(self) -> None:
        self.full = False
        try:
            self.runner.subflow_writable(self.sid)
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
            except Exception as exc:
                self.runner.internal_error(exc)

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


class Runner:
    def __init__(self, session: Session, listener: Listener, in_fd: int, out_fd: int,
                 allowed_uids: frozenset[int] | None = None) -> None:
        self.session = session
        self.allowed_uids = allowed_uids  # None: any user may connect
        self.listener = listener
        self.loop = asyncio.get_running_loop()
        self.connections: dict[int, SubflowConnection] = {}
        self.reader: InputReader | LoopInput | FileInput
        self.writer: OutputWriter | LoopOutput
        if loop_capable(in_fd):
            in_fd = private_fd(in_fd, os.O_RDONLY)
            self.reader = LoopInput(self.loop, in_fd, self._stdin_data, self._stdin_eof)
        elif regular_file(in_fd):
            # Its bytes stay in the file until sent (Extents): sendfile() then
            # takes them from the page cache to the socket.
            self.reader = FileInput(self.loop, in_fd, self._stdin_data, self._stdin_eof,
                                    extents=hasattr(os, "sendfile"))
        else:
            self.reader = InputReader(self.loop, in_fd, self._stdin_data, self._stdin_eof)
        if loop_capable(out_fd):
            out_fd = private_fd(out_fd, os.O_WRONLY)
            self.writer = LoopOutput(self.loop, out_fd, self._output_written, self._output_error,
                                     self._output_closed)
        else:
            self.writer = OutputWriter(self.loop, out_fd, self._output_written, self._output_error,
                                       self._output_closed)
        # DATA bodies that continue the stream go from the socket to a STDOUT
        # pipe by splice(), never through our memory.
        self.direct = isinstance(self.writer, LoopOutput) and hasattr(os, "splice")
        self.sendfile = hasattr(os, "sendfile")  # Extents of STDIN go by sendfile()
        self.signal: int | None = None
        self._output_pending = 0  # bytes handed to the writer, not yet written
        self._output_closing = False
        self._flush_scheduled = False
        self._writable: set[int] = set()  # subflows whose transport drained since the last flush
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._hangup_timer: asyncio.TimerHandle | None = None
        self._resource_warned_at: dict[str, float] = {}
        self._failed = False  # an internal error: the session is over
        self._finished = self.loop.create_future()
        self._lograte = lograte.install(log, self.loop.time, self.loop.call_later)

    # -- events in ---------------------------------------------------------------

    def check_peer(self, transport: asyncio.Transport) -> str | None:
        """Why a new connection must be refused (its user is not allowed), or None."""
        if self.allowed_uids is None:
            return None
        sock = transport.get_extra_info("socket")
        try:
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, PEERCRED.size)
        except (OSError, AttributeError) as exc:
            return f"refused a connection: cannot tell its user ({exc})"
        pid, uid, _gid = PEERCRED.unpack(creds)
        if uid in self.allowed_uids:
            return None
        return (f"refused a connection from uid {uid} (pid {pid}): only uids "
                f"{', '.join(map(str, sorted(self.allowed_uids)))} may connect (see --allow-uid)")

    def subflow_opened(self, conn: SubflowConnection) -> int:
        sid = self.session.open_subflow(self.loop.time(), os.urandom(16))
        self.connections[sid] = conn
        self._kick()
        return sid

    def subflow_data(self, sid: int, count: int) -> None:
        if self.session.received(sid, count, self.loop.time()):
            self._kick()
            if self.direct and self.session.divert(sid):
                self._start_direct(sid)

    def _start_direct(self, sid: int) -> None:
        writer = self.writer
        assert isinstance(writer, LoopOutput)
        self._write_output()  # what comes before the body
        conn = self.connections.get(sid)
        if conn is None or not writer.idle or not conn.start_direct():
            self.session.undivert(sid)
            return
        self.move_direct(conn, False)

    def move_direct(self, conn: SubflowConnection, woken: bool) -> None:
        """Splice the diverted body of ``conn`` to STDOUT while the socket has
        bytes of it and the pipe has room.  ``woken``: the socket was reported
        readable, so a splice that moves nothing means the pipe is full: the
        rest of the body is then read as usual, so that the subflow's later
        frames (ACKs for our own stream among them) never wait for STDOUT."""
        session, writer, sid = self.session, self.writer, conn.sid
        assert isinstance(writer, LoopOutput)
        while True:
            room = session.direct_room(sid)
            if not room or not writer.idle:
                if room:
                    session.undivert(sid)
                conn.stop_direct()
                self._kick()
                return
            try:
                moved = os.splice(conn.direct_fd, writer.fd, room,
                                  flags=os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK)
            except BlockingIOError:
                if woken:
                    session.undivert(sid)
                    conn.stop_direct()
                    self._kick()
                return  # wait until the socket is readable
            except BrokenPipeError:
                conn.stop_direct()
                self._output_error("Broken pipe")
                return
            except OSError as exc:
                conn.stop_direct()
                if exc.errno == errno.EINVAL or exc.errno in RESOURCE_ERRORS:
                    if exc.errno == errno.EINVAL:  # these descriptors cannot be spliced
                        self.direct = False
                    else:  # this body is read as usual
                        self.resource_warning("splice", f"splice to STDOUT: {exc.strerror}")
                    session.undivert(sid)
                    self._kick()
                else:
                    self.subflow_lost(sid, f"error: {exc}")
                return
            if moved == 0:
                conn.stop_direct()
                self.subflow_lost(sid, "closed by the other end")
                return
            session.moved_direct(sid, moved, self.loop.time())
            self._kick()
            woken = False

    def subflow_writable(self, sid: int) -> None:
        self._writable.add(sid)
        self._kick()

    def subflow_lost(self, sid: int, reason: str) -> None:
        conn = self.connections.pop(sid, None)
        if conn is None:
            return
        conn.forget_direct()
        self.session.subflow_lost(sid, self.loop.time(), reason)
        if conn.transport is not None:
            conn.transport.close()
        self._kick()

    def send_input(self, sock_fd: int, extent: Extent) -> int:
        """sendfile() as much of ``extent`` as the socket takes now; -1 if the
        input file no longer holds it (the session is then aborted)."""
        assert isinstance(self.reader, FileInput)
        if not self.sendfile:
            return 0
        try:
            sent = os.sendfile(sock_fd, self.reader.fd, extent.position, extent.length)
        except BlockingIOError:
            return 0
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                self.sendfile = False  # this file cannot be sent so: read it from now on
            return 0  # or the socket failed: the transport will say so when given the rest
        if sent == 0:
            self._input_shrank(extent)
            return -1
        return sent

    def input_holds(self, extent: Extent) -> bool:
        """Whether the input file still holds ``extent`` (if not, the session is aborted)."""
        assert isinstance(self.reader, FileInput)
        try:
            size = os.fstat(self.reader.fd).st_size
        except OSError:
            size = 0
        if size < extent.position + extent.length:
            self._input_shrank(extent)
            return False
        return True

    def read_input(self, extent: Extent) -> bytes | None:
        """The bytes of ``extent``, read from the input file; None if it no longer
        holds them (the session is then aborted)."""
        assert isinstance(self.reader, FileInput)
        parts = []
        position, left = extent.position, extent.length
        while left:
            try:
                data = os.pread(self.reader.fd, left, position)
            except OSError as exc:
                self.session.abort(Outcome.INPUT_CHANGED, f"reading STDIN failed at file offset "
                                   f"{position}: {exc.strerror or exc}", self.loop.time())
                self._kick()
                return None
            if not data:
                self._input_shrank(extent)
                return None
            parts.append(data)
            position += len(data)
            left -= len(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _input_shrank(self, extent: Extent) -> None:
        self.session.abort(Outcome.INPUT_CHANGED,
                           f"STDIN (a regular file) no longer holds the bytes at file offset "
                           f"{extent.position} that were still to be sent: it was truncated",
                           self.loop.time())
        self._kick()

    def _stdin_data(self, data: bytes | Extent) -> None:
        if self.session.outcome is None:
            self.session.write_stdin(data, self.loop.time())
            self._kick()

    def _stdin_eof(self, error: str | None) -> None:
        """STDIN ended (``error`` None) or failed.  A failure ends the session
        (exit 7, the peer told): taken for the end of the input, it would
        pass what was read so far off as the whole stream."""
        if error is None:
            self.session.stdin_eof(self.loop.time())
        else:
            self.session.abort(Outcome.INPUT_CHANGED, error, self.loop.time())
        self._kick()

    def _output_written(self, count: int) -> None:
        self._output_pending -= count
        self.session.output_written(count, self.loop.time())
        self._kick()

    def _output_error(self, message: str) -> None:
        self.session.abort(Outcome.OUTPUT_CLOSED, f"STDOUT closed before the stream ended ({message})",
                           self.loop.time())
        self._kick()

    def _output_closed(self) -> None:
        self.session.output_closed(self.loop.time())
        self._kick()

    def _on_hangup(self) -> None:
        # SIGHUP says whoever holds our STDIO hung up (ssh sends it to its
        # ProxyCommand once it is done).  The session may well be complete but
        # for the last frames in flight: let it finish, within a grace period.
        if self._hangup_timer is None and self.signal is None:
            log.info("SIGHUP: finishing the session (at most %g s)", HANGUP_GRACE)
            self._hangup_timer = self.loop.call_later(HANGUP_GRACE, self._on_signal, signal.SIGHUP)

    def _on_signal(self, signo: int) -> None:
        if self.signal is None:
            self.signal = signo
        self.session.abort(Outcome.INTERRUPTED, f"interrupted by {signal.Signals(signo).name}",
                           self.loop.time())
        self._kick()

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.session.handle_timer(self.loop.time())
        self._flush()

    # -- acting on the session ---------------------------------------------------

    def _kick(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._failed:
            return  # run() takes the last frames; the error is the one line we print
        drained, self._writable = self._writable, set()
        step = self.session.step(self.loop.time(), self, drained)
        for event in step.events:
            if isinstance(event, CloseSubflow):
                self._close_subflow(event)
            for level, message in render(event):
                log.log(level, "%s", message)
        if step.outcome is not None:
            self._finish()
            return
        self._write_output(step.output)
        if step.output_eof and self._output_pending == 0 and not self._output_closing:
            self._output_closing = True
            self.writer.close()
        self.reader.set_room(step.stdin_room)
        self._arm_timer(step.deadline)

    # The subflows' transports, as Session.step() sees them (core/driver.py).

    def writable(self, sid: int) -> bool:
        conn = self.connections.get(sid)
        # A full transport (pause_writing()) takes nothing more until
        # resume_writing() names it in the next step's `drained`.
        return (conn is not None and conn.transport is not None and not conn.full
                and not conn.transport.is_closing())

    def write(self, sid: int, buffers: list[Outgoing]) -> None:
        self.connections[sid].send(buffers)  # may pause_writing(): conn.full

    def _write_output(self, output: list[bytes | bytearray | memoryview] | None = None) -> None:
        if output is None:
            output = self.session.take_output()
        if output:
            self._output_pending += sum(len(b) for b in output)
            self.writer.write(output)

    def _close_subflow(self, event: CloseSubflow) -> None:
        conn = self.connections.pop(event.sid, None)
        if conn is None:
            return
        if conn.transport is None:
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
        self._timer = None if deadline is None else self.loop.call_at(deadline, self._on_timer)

    def resource_warning(self, kind: str, message: str) -> None:
        """One line about running short of resources, at most one of each
        ``kind`` every RESOURCE_WARNING_EVERY seconds."""
        now = self.loop.time()
        if now >= self._resource_warned_at.get(kind, float("-inf")) + RESOURCE_WARNING_EVERY:
            self._resource_warned_at[kind] = now
            log.warning("%s", message)

    def _on_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in RESOURCE_ERRORS and "socket" in context:
            # asyncio could not accept a connection (out of descriptors): it
            # tries again in a moment; the session goes on without it.
            self.resource_warning("accept", f"cannot accept a connection: {exc.strerror}")
            return
        # A bug in a callback: end the session with one clear line, not a traceback.
        self.internal_error(exc if isinstance(exc, BaseException)
                            else RuntimeError(str(context.get("message"))))

    def internal_error(self, exc: BaseException) -> None:
        """A bug: run() tells the peer, then raises ``exc``."""
        self._failed = True
        if not self._finished.done():
            self._finished.set_exception(exc)

    def _finish(self) -> None:
        if not self._finished.done():
            self._finished.set_result(None)

    # -- lifecycle ---------------------------------------------------------------

    async def run(self) -> Outcome:
        loop = self.loop
        loop.set_exception_handler(self._on_exception)
        # The server listens again on the socket: with our backlog, not its default of 100.
        server = await loop.create_unix_server(lambda: SubflowConnection(self), sock=self.listener.sock,
                                               backlog=BACKLOG)
        failed = True  # until the session ends as sessions do: then an internal error
        try:
            for signo in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signo, self._on_signal, signo)
            loop.add_signal_handler(signal.SIGHUP, self._on_hangup)
            # The CLI blocked these until now; any that arrived are delivered here.
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
            for part in (self.reader, self.writer):
                started = part.start()
                if started is not None:
                    await started
            self._kick()
            await self._finished
            failed = False
        finally:
            server.close()
            self.listener.remove()
            for timer in (self._timer, self._hangup_timer):
                if timer is not None:
                    timer.cancel()
            if failed:
                self._failed = True
                self._abort_on_internal_error()
            try:
                await self._drain_and_close(failed)
            finally:
                lograte.uninstall(log, self._lograte)
        outcome = self.session.outcome
        assert outcome is not None
        return outcome

    def _abort_on_internal_error(self) -> None:
        # However we fail, the peer must learn that the session is over, or
        # it would wait for the rest of our stream forever.
        try:
            self.session.abort(Outcome.INTERRUPTED, INTERNAL_ERROR, self.loop.time())
        except Exception:
            log.debug("the session could not abort", exc_info=True)  # _drain_and_close sends ABORT

    async def _drain_and_close(self, failed: bool = False) -> None:
        """Write every subflow's last frames (final ACKs, ABORT), then half-close
        and wait for the peer to close too, so neither side's last frames meet
        a connection already torn down.  ``failed``: after an internal error,
        whatever the session can no longer give is an ABORT of our own."""
        now = self.loop.time()
        error: Exception | None = None  # a bug met here: raised once every subflow is done
        for sid, conn in list(self.connections.items()):
            transport = conn.transport
            try:
                conn.stop_direct()  # the transport reads again, to see the peer close
                if transport is None or transport.is_closing():
                    continue
                conn.send(self.session.pull(sid, now))
            except Exception as exc:
                if error is None and not failed:
                    error = exc
                log.debug("final frames of subflow %d", sid, exc_info=True)
                if transport is None or transport.is_closing():
                    continue
                transport.write(frames.encode_reason(FrameType.ABORT, CloseCode.SHUTDOWN,
                                                     INTERNAL_ERROR))
            if transport.is_closing():
                continue
            if transport.can_write_eof():
                transport.write_eof()
            else:
                transport.close()
        deadline = self.loop.time() + CLOSE_GRACE
        while self.connections and self.loop.time() < deadline:
            await asyncio.sleep(0.01)
        for conn in self.connections.values():
            if conn.transport is not None:
                conn.transport.abort()
        if error is not None:
            raise error
