"""The asyncio driver: connects the sans-I/O session to sockets, STDIO and the clock.

All protocol decisions are the session's.  This module only moves bytes:
connections in and out, STDIN to the session, the session's output to
STDOUT, and it calls ``handle_timer`` when the session's deadline comes.
After any event it runs one coalesced ``_flush`` that pulls what the session
wants written and acts on its events.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import struct
from typing import Any, cast

from ..core.session import CloseSubflow, Log, Outcome, Session
from .listener import Listener
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

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}
# Data is handed to a subflow only while its transport holds less than
# WRITE_HIGH bytes, one full-size DATA frame at a time: what the kernel
# cannot take yet stays with the session, free to go to whichever subflow
# drains first.
WRITE_HIGH = 128 * 1024
WRITE_LOW = 32 * 1024
CLOSE_GRACE = 2.0  # seconds to let final frames drain before we exit
HANGUP_GRACE = 5.0  # seconds a session may take to finish after SIGHUP


class SubflowConnection(asyncio.BufferedProtocol):
    """One accepted connection: reads straight into the session's buffers and
    forwards loss to the runner."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.sid = 0
        self.transport: asyncio.Transport | None = None
        self.full = False  # the transport holds WRITE_HIGH bytes or more

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        refusal = self.runner.check_peer(self.transport)
        if refusal:
            log.warning("%s", refusal)
            self.transport.abort()
            return
        self.transport.set_write_buffer_limits(high=WRITE_HIGH, low=WRITE_LOW)
        self.sid = self.runner.subflow_opened(self)

    def pause_writing(self) -> None:
        self.full = True

    def resume_writing(self) -> None:
        self.full = False
        self.runner.subflow_writable(self.sid)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.runner.session.receive_buffer(self.sid)

    def buffer_updated(self, nbytes: int) -> None:
        if self.sid:
            self.runner.subflow_data(self.sid, nbytes)

    def eof_received(self) -> bool:
        self.runner.subflow_lost(self.sid, "closed by the other end")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.runner.subflow_lost(self.sid, f"error: {exc}" if exc else "connection closed")


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
            self.reader = FileInput(self.loop, in_fd, self._stdin_data, self._stdin_eof)
        else:
            self.reader = InputReader(self.loop, in_fd, self._stdin_data, self._stdin_eof)
        if loop_capable(out_fd):
            out_fd = private_fd(out_fd, os.O_WRONLY)
            self.writer = LoopOutput(self.loop, out_fd, self._output_written, self._output_error,
                                     self._output_closed)
        else:
            self.writer = OutputWriter(self.loop, out_fd, self._output_written, self._output_error,
                                       self._output_closed)
        self.signal: int | None = None
        self._output_pending = 0  # bytes handed to the writer, not yet written
        self._output_closing = False
        self._flush_scheduled = False
        self._writable: set[int] = set()  # subflows whose transport drained since the last flush
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._hangup_timer: asyncio.TimerHandle | None = None
        self._finished = self.loop.create_future()

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

    def subflow_writable(self, sid: int) -> None:
        self._writable.add(sid)
        self._kick()

    def subflow_lost(self, sid: int, reason: str) -> None:
        conn = self.connections.pop(sid, None)
        if conn is None:
            return
        self.session.subflow_lost(sid, self.loop.time(), reason)
        if conn.transport is not None:
            conn.transport.close()
        self._kick()

    def _stdin_data(self, data: bytes) -> None:
        if self.session.outcome is None:
            self.session.write_stdin(data, self.loop.time())
            self._kick()

    def _stdin_eof(self, error: str | None) -> None:
        if error:
            log.warning("reading STDIN failed (%s); treating it as ended", error)
        self.session.stdin_eof(self.loop.time())
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
        session = self.session
        now = self.loop.time()
        limit = session.config.chunk
        ready = session.take_ready()
        if self._writable:
            ready = [*self._writable.difference(ready), *ready]
            self._writable.clear()
        for sid in ready:
            conn = self.connections.get(sid)
            if conn is None or conn.transport is None:
                continue
            while True:
                buffers = session.pull(sid, now, 0 if conn.full else limit)
                if not buffers:
                    break
                conn.transport.writelines(buffers)  # may pause_writing(): conn.full
                if conn.full or conn.transport.is_closing():
                    break
        for event in session.take_events():
            if isinstance(event, Log):
                log.log(_LEVELS[event.level], "%s", event.message)
            elif isinstance(event, CloseSubflow):
                self._close_subflow(event)
        if session.outcome is not None:
            self._finish()
            return
        output = session.take_output()
        if output:
            self._output_pending += sum(len(b) for b in output)
            self.writer.write(output)
        if session.output_eof and self._output_pending == 0 and not self._output_closing:
            self._output_closing = True
            self.writer.close()
        self.reader.set_room(session.stdin_room)
        self._arm_timer()

    def _close_subflow(self, event: CloseSubflow) -> None:
        conn = self.connections.pop(event.sid, None)
        if conn is None or conn.transport is None:
            return
        if event.flush:
            if event.final:
                conn.transport.writelines(event.final)
            conn.transport.close()
        else:
            conn.transport.abort()

    def _arm_timer(self) -> None:
        deadline = self.session.next_deadline()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = None if deadline is None else self.loop.call_at(deadline, self._on_timer)

    def _on_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # A bug in a callback: end the session with one clear line, not a traceback.
        exc = context.get("exception")
        if not self._finished.done():
            self._finished.set_exception(exc if isinstance(exc, BaseException)
                                         else RuntimeError(str(context.get("message"))))

    def _finish(self) -> None:
        if not self._finished.done():
            self._finished.set_result(None)

    # -- lifecycle ---------------------------------------------------------------

    async def run(self) -> Outcome:
        loop = self.loop
        loop.set_exception_handler(self._on_exception)
        server = await loop.create_unix_server(lambda: SubflowConnection(self), sock=self.listener.sock)
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
        try:
            await self._finished
        finally:
            server.close()
            self.listener.remove()
            for timer in (self._timer, self._hangup_timer):
                if timer is not None:
                    timer.cancel()
            await self._drain_and_close()
        outcome = self.session.outcome
        assert outcome is not None
        return outcome

    async def _drain_and_close(self) -> None:
        """Write every subflow's last frames (final ACKs, ABORT), then half-close
        and wait for the peer to close too, so neither side's last frames meet
        a connection already torn down."""
        now = self.loop.time()
        for sid, conn in list(self.connections.items()):
            transport = conn.transport
            if transport is None or transport.is_closing():
                continue
            buffers = self.session.pull(sid, now)
            if buffers:
                transport.writelines(buffers)
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
