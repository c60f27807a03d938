"""Stream sinks: where the peer's stream goes (STDOUT).

Every sink has the same small interface (StreamSink): ``await start()``,
``write(buffers)``, ``close()`` once the stream has ended; progress comes
back through ``on_written(n)`` (bytes now out of our hands), a failure
through ``on_error(message)``, the end through ``on_closed()``.
stream.open_sink picks the kind:

- LoopOutput: a pipe, written by the event loop; it is also the target of
  splice() (connection.py), which moves DATA bodies from a subflow's
  socket into the pipe without passing through our memory.
- FileOutput (file_sink.py): a regular file, written by the event loop (a
  write to the page cache is a copy, not a wait); DATA bodies are spliced
  into it through a pipe of its own.  Slow storage moves it to a thread.
- OutputWriter: anything else (terminals, sockets), a thread doing plain
  blocking writes.

A sink that DATA bodies may be spliced into is a SpliceTarget
(stream.splice_target() says which).
"""

from __future__ import annotations

import asyncio
import errno
import os
import select
import socket
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

from ..core import Parked
from ..core.receiver import Piece
from .holding import read_out, splice_out
from .pipes import SPLICE_FLAGS, grow_pipe
from .source import thread_poster, wait_until_ready

IOV_MAX = 1024
Buffers = list[bytes | bytearray | memoryview]


class StreamSink(Protocol):
    """Where the incoming stream goes."""

    async def start(self) -> None:
        """Get ready to write (what is written before is kept)."""

    def write(self, buffers: Buffers) -> None:
        """Queue ``buffers`` in order; on_written reports them once out."""

    def close(self) -> None:
        """The stream ended: close once everything queued is written."""


class OutputFailed(Exception):
    """STDOUT takes no more (the message says why): the session is over."""


class SpliceTarget(Protocol):
    """A sink that DATA bodies can be spliced into from a subflow's socket."""

    @property
    def idle(self) -> bool:
        """Bytes spliced in now come next in the stream (nothing handed to
        the sink is still waiting)."""

    def splice_from(self, fd: int, count: int) -> int:
        """Splice up to ``count`` bytes from ``fd`` (a socket) into the output:
        the bytes moved, which then count as written.  BlockingIOError when
        nothing moved now; OutputFailed when the output failed (the bytes
        may be lost: the session is over); another OSError from the socket's
        side (EINVAL: these descriptors cannot be spliced)."""

    def write(self, buffers: Sequence[Piece]) -> None:
        """As StreamSink.write, and Parked pieces (runtime/holding.py) among
        the buffers are moved from their pipes in their turn."""


def write_all(fd: int, buffers: Buffers) -> int:
    """Write every byte of ``buffers`` to ``fd`` (blocking, even when another
    process sharing its file description made it non-blocking); the count."""
    views = [memoryview(b) for b in buffers]
    total = sum(len(v) for v in views)
    while views:
        try:
            n = os.writev(fd, views[:IOV_MAX])
        except BlockingIOError:
            wait_until_ready(fd, select.POLLOUT)
            continue
        while n and views:
            if n >= len(views[0]):
                n -= len(views[0])
                views.pop(0)
            else:
                views[0] = views[0][n:]
                n = 0
    return total


class Output:
    """What every sink is given: the loop, the descriptor it then owns, and
    whom to tell of bytes written, of a failure, and of the close."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int,
                 on_written: Callable[[int], None], on_error: Callable[[str], None],
                 on_closed: Callable[[], None]) -> None:
        self._loop = loop
        self._fd = fd
        self._on_written = on_written
        self._on_error = on_error
        self._on_closed = on_closed


class OutputWriter(Output):
    """Writes buffers to ``fd`` in a thread, reporting progress to the loop.

    ``on_written(n)`` follows each write, ``on_error(message)`` ends it on
    failure (EPIPE when the consumer went away), ``on_closed()`` follows
    ``close()`` once everything queued has been written and the fd closed.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int,
                 on_written: Callable[[int], None], on_error: Callable[[str], None],
                 on_closed: Callable[[], None]) -> None:
        super().__init__(loop, fd, on_written, on_error, on_closed)
        self._queue: deque[bytes | bytearray | memoryview] = deque()
        self._closing = False
        # A socket of our own (--stream TCP:...) whose reading side another
        # descriptor still holds: closing ours would not end the stream.
        self.half_close = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="stdout", daemon=True)

    async def start(self) -> None:
        self.spawn()

    def spawn(self) -> None:
        """Start the thread (from synchronous code)."""
        self._thread.start()

    def write(self, buffers: list[bytes | bytearray | memoryview]) -> None:
        with self._cond:
            self._queue.extend(buffers)
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()

    def _run(self) -> None:
        call = thread_poster(self._loop)
        queue = self._queue
        while True:
            with self._cond:
                while not queue and not self._closing:
                    self._cond.wait()
                if not queue:
                    break
                batch = [queue.popleft() for _ in range(min(len(queue), IOV_MAX))]
            try:
                total = write_all(self._fd, batch)
            except OSError as exc:
                call(self._on_error, exc.strerror or str(exc))
                return
            if not call(self._on_written, total):
                return
        try:
            if self.half_close:
                sock = socket.socket(fileno=self._fd)
                try:
                    sock.shutdown(socket.SHUT_WR)
                finally:
                    sock.detach()
            os.close(self._fd)
        except OSError as exc:
            call(self._on_error, exc.strerror or str(exc))
            return
        call(self._on_closed)


class _OutputProtocol(asyncio.Protocol):
    def __init__(self, owner: LoopOutput) -> None:
        self.owner = owner

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        self.owner.drained()

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.lost(exc)


class LoopOutput(Output):
    """STDOUT written by the event loop (pipes).  Bytes count as
    written once the kernel has taken them."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int,
                 on_written: Callable[[int], None], on_error: Callable[[str], None],
                 on_closed: Callable[[], None]) -> None:
        super().__init__(loop, fd, on_written, on_error, on_closed)
        self._transport: asyncio.WriteTransport | None = None
        self._early: list[Piece] = []
        self._handed = 0
        self._reported = 0
        self._closing = False
        self._done = False
        self._reader_gone = False
        # A parked piece the pipe could not take whole, and all after it:
        # moved on when the pipe has room (_watch_fd, a duplicate of ours,
        # is what the loop watches: the transport's descriptor is its own).
        self._waiting: list[Piece] = []
        self._watch_fd = -1

    async def start(self) -> None:
        grow_pipe(self._fd)
        try:  # (taken now, while descriptors are to be had; without it, see _watch)
            self._watch_fd = os.dup(self._fd)
        except OSError:
            self._watch_fd = -1
        file = os.fdopen(self._fd, "wb", buffering=0, closefd=True)
        transport, _ = await self._loop.connect_write_pipe(lambda: _OutputProtocol(self), file)
        # Resume (and so report) as soon as the buffer is empty again.
        transport.set_write_buffer_limits(high=0, low=0)
        self._transport = transport
        if self._early:
            self.write(self._early)
            self._early = []
        if self._closing:
            transport.close()

    def write(self, buffers: Sequence[Piece]) -> None:
        if self._reader_gone and not self._done:
            self._done = True
            self._on_error("Broken pipe")
        if self._done:
            return
        if self._transport is None:
            self._early.extend(buffers)
            return
        if self._waiting:
            self._waiting.extend(buffers)
            return
        for buf in buffers:
            if buf.__class__ is Parked:
                self._write(buffers)
                return
        self._handed += sum(map(len, buffers))
        transport = self._transport
        transport.writelines(buffers)  # type: ignore[arg-type]
        # report(), inline (a call less per keystroke written)
        written = self._handed - transport.get_write_buffer_size()
        if written > self._reported:
            count, self._reported = written - self._reported, written
            self._on_written(count)

    def _write(self, buffers: Sequence[Piece]) -> None:
        """Bytes to the transport, each parked piece spliced in its turn: once
        the transport has written everything before it."""
        transport = self._transport
        assert transport is not None
        start = 0
        for i, buf in enumerate(buffers):
            if buf.__class__ is not Parked:
                continue
            if i > start:
                self._hand(buffers[start:i])
            start = i + 1
            if transport.get_write_buffer_size() or not self._move(buf):
                if self._done:
                    return
                if transport.get_write_buffer_size():
                    self._waiting = list(buffers[i:])
                    return  # on when the transport has written what it holds (drained())
                if self._watch_fd >= 0:
                    self._waiting = list(buffers[i:])
                    self._loop.add_writer(self._watch_fd, self._resume)
                    return  # on when the pipe has room
                try:  # (nothing to watch the pipe with: the transport waits instead)
                    self._hand([read_out(buf)])
                except OSError as exc:
                    self._done = True
                    self._on_error(exc.strerror or str(exc))
                    return
        if start < len(buffers):
            self._hand(buffers[start:] if start else buffers)
        self.report()

    def _hand(self, buffers: Sequence[Piece]) -> None:
        assert self._transport is not None
        self._handed += sum(map(len, buffers))
        self._transport.writelines(buffers)  # type: ignore[arg-type]

    def _move(self, piece: Parked) -> bool:
        """Splice ``piece`` to the pipe: True once all of it went."""
        try:
            moved = splice_out(piece, self._fd)
        except BlockingIOError:
            return False
        except BrokenPipeError:
            self._done = True
            self._on_error("Broken pipe")
            return False
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                self._done = True
                self._on_error(exc.strerror or str(exc))
                return False
            try:
                self._hand([read_out(piece)])  # (this pipe cannot be spliced into)
            except OSError as exc:
                self._done = True
                self._on_error(exc.strerror or str(exc))
                return False
            return True
        self._on_written(moved)
        return not piece.length

    def _resume(self) -> None:
        """The pipe has room again, or the transport wrote all it held."""
        if self._watch_fd >= 0:
            self._loop.remove_writer(self._watch_fd)
        waiting, self._waiting = self._waiting, []
        if waiting and not self._done:
            self._write(waiting)

    @property
    def fd(self) -> int:
        return self._fd

    def splice_from(self, fd: int, count: int) -> int:
        try:
            return os.splice(fd, self._fd, count, flags=SPLICE_FLAGS)
        except BrokenPipeError:
            raise OutputFailed("Broken pipe") from None

    @property
    def idle(self) -> bool:
        """Open, and everything handed to us is in the pipe: bytes written to
        ``fd`` directly now come next in the stream."""
        transport = self._transport
        return (transport is not None and not self._closing and not self._done
                and not self._reader_gone and not self._waiting
                and transport.get_write_buffer_size() == 0)

    def report(self) -> None:
        """Report what the kernel took, at once (the runner's flush counts on
        it: a write the pipe takes whole is acknowledged in the same pass)."""
        if self._transport is None:
            return
        written = self._handed - self._transport.get_write_buffer_size()
        if written > self._reported:
            count, self._reported = written - self._reported, written
            self._on_written(count)

    def drained(self) -> None:
        """The transport wrote all it held."""
        self.report()
        if self._waiting:
            self._resume()

    def close(self) -> None:
        self._closing = True
        if self._watch_fd >= 0:
            self._loop.remove_writer(self._watch_fd)
            os.close(self._watch_fd)
            self._watch_fd = -1
        if self._reader_gone:
            self._loop.call_soon(self._on_closed)
        elif self._transport is not None:
            self._transport.close()

    def lost(self, exc: Exception | None) -> None:
        if self._done or self._reader_gone:
            return
        if exc is not None:
            self._done = True
            self._on_error(getattr(exc, "strerror", None) or str(exc))
        elif self._closing:
            self._done = True
            self.report()
            self._loop.call_soon(self._on_closed)
        else:
            # The reader went away.  That is only an error if we still have
            # something to write, as with a blocking write's EPIPE.
            self._reader_gone = True
