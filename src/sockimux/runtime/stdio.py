"""STDIN and STDOUT, whatever they are (pipe, file, terminal, socket).

Pipes are driven by the event loop (LoopInput, LoopOutput) on file
descriptions of our own, and a regular STDIN is read by the loop too
(FileInput).  Everything else gets a thread doing plain blocking I/O
(InputReader, OutputWriter): that works for every kind of file descriptor,
including terminals that asyncio cannot watch, and never sets O_NONBLOCK on
a file description shared with other processes (the shell's terminal).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import stat
import threading
import time
from collections import deque
from collections.abc import Callable

from ..core import Extent

READ_SIZE = 256 * 1024
FILE_READ_SIZE = 1024 * 1024  # reads of a regular file on the event loop (2 full DATA frames)
SLOW_READ = 0.05  # seconds: a file read slower than this moves reads to a thread
IOV_MAX = 1024


def _poster(loop: asyncio.AbstractEventLoop) -> Callable[..., bool]:
    """call_soon_threadsafe that reports, instead of raising, a loop already closed
    (the process is exiting; the thread just stops)."""

    def post(callback: Callable[..., object], *args: object) -> bool:
        try:
            loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:
            return False
        return True

    return post


def read_failure(fd: int, exc: OSError) -> str | None:
    """What a failed read of STDIN means: None for an input that merely ends
    (a terminal a background job may not read: the CLI ignores SIGTTIN, so
    such a read fails with EIO; or a STDIN not open for reading), else the
    failure.  Any other error must not pass for the end of the input: the
    peer would take what came before for the whole stream."""
    if exc.errno == errno.EBADF or (exc.errno == errno.EIO and os.isatty(fd)):
        return None
    return f"reading STDIN failed: {exc.strerror or exc}"


def shrunk(size: int, position: int) -> str:
    return (f"STDIN (a regular file) no longer holds the bytes at file offsets {size} to "
            f"{position}, already read: it was truncated to {size} bytes")


def truncation(fd: int, sized: bool) -> str | None:
    """Why the end of the regular file ``fd``, just found by a read, is not the
    end of the input: it is now shorter than the position already read (it
    was truncated).  ``sized``: the file once reported a size (files of /proc
    report 0 and are read to their end)."""
    try:
        size = os.fstat(fd).st_size
        position = os.lseek(fd, 0, os.SEEK_CUR)
    except OSError as exc:
        return f"reading STDIN failed: {exc.strerror or exc}"
    if size < position and (size > 0 or sized):
        return shrunk(size, position)
    return None


class InputReader:
    """Reads ``fd`` in a thread while the session has room, handing bytes to the loop.

    ``on_eof(None)`` reports the end of the input, ``on_eof(message)`` its
    failure (see read_failure; ``at_end``, if given, tells whether an end
    found by a read is a failure).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int,
                 on_data: Callable[[bytes], None], on_eof: Callable[[str | None], None],
                 at_end: Callable[[], str | None] | None = None) -> None:
        self._loop = loop
        self._fd = fd
        self._on_data = on_data
        self._on_eof = on_eof
        self._at_end = at_end
        self._room = 0
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="stdin", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def set_room(self, room: int) -> None:
        """How many bytes the session will take now (updated by the loop)."""
        with self._cond:
            if room != self._room:
                self._room = room
                if room > 0:
                    self._cond.notify()

    def _run(self) -> None:
        call = _poster(self._loop)
        while True:
            with self._cond:
                while self._room <= 0:
                    self._cond.wait()
                size = min(READ_SIZE, self._room)
                self._room -= size
            try:
                data = os.read(self._fd, size)
            except OSError as exc:
                call(self._on_eof, read_failure(self._fd, exc))
                return
            if not data:
                call(self._on_eof, None if self._at_end is None else self._at_end())
                return
            if not call(self._on_data, data):
                return
            if len(data) < size:
                with self._cond:
                    self._room += size - len(data)


class FileInput:
    """STDIN that is a regular file, read by the event loop itself.

    A regular file never waits for a peer, only for storage, and from the
    page cache a read is just a copy: on the loop it costs no thread hand-off
    (four thousand per GiB, a fifth of the sending side's CPU).  Should the
    storage prove slow (a read taking over SLOW_READ seconds), the reads move
    to a thread for the rest of the file, so a slow disk cannot hold up the
    subflows.  With ``extents``, once the first read proved fast, the rest
    of the file is handed out as Extents (position and length) instead of
    bytes: it stays in the file until sent.  Same interface as InputReader:
    a file found shorter than the position already read was truncated, which
    ``on_eof`` reports as a failure, never as the end of the input.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int,
                 on_data: Callable[[bytes | Extent], None], on_eof: Callable[[str | None], None],
                 extents: bool = False) -> None:
        self._loop = loop
        self.fd = fd
        self._on_data = on_data
        self._on_eof = on_eof
        self._room = 0
        self._scheduled = False
        self._ended = False
        self.worker: InputReader | None = None  # set once reads moved to a thread
        self._extents = extents  # once the storage proved fast, hand out Extents, not bytes
        self.position: int | None = None  # the file position of the next Extent, in that mode
        self._sized = False  # the file reported a size: one below what we read means truncation

    def start(self) -> None:
        with contextlib.suppress(OSError):
            self._sized = os.fstat(self.fd).st_size > 0
        self.set_room(self._room)

    def _end(self, error: str | None) -> None:
        self._ended = True
        self._on_eof(error)

    def _at_end(self) -> str | None:
        return truncation(self.fd, self._sized)

    def set_room(self, room: int) -> None:
        if self.worker is not None:
            self.worker.set_room(room)
            return
        self._room = room
        if room > 0 and not self._scheduled and not self._ended:
            self._scheduled = True
            self._loop.call_soon(self._read)

    def _read(self) -> None:
        self._scheduled = False
        if self._ended or self.worker is not None or self._room <= 0:
            return
        if self.position is not None:
            self._extend(self.position)
            return
        started = time.monotonic()
        asked = min(self._room, FILE_READ_SIZE)
        try:
            data = os.read(self.fd, asked)
        except OSError as exc:
            self._end(read_failure(self.fd, exc))
            return
        if not data:
            self._end(self._at_end())
            return
        self._room -= len(data)
        if time.monotonic() - started > SLOW_READ:
            # Delivered below before the thread reads on: the order holds.
            self.worker = InputReader(self._loop, self.fd, self._on_data, self._on_eof,
                                      at_end=self._at_end)
            self.worker.start()
        elif self._extents and len(data) == asked:
            # A short read found the end, whatever the file's size says (files
            # of /sys report 4096 bytes): only a file that gave all we asked
            # is handed out by its size, as Extents.
            with contextlib.suppress(OSError):  # then bytes it stays
                self.position = os.lseek(self.fd, 0, os.SEEK_CUR)
        self._on_data(data)  # the runner answers with set_room(), which reads on

    def _extend(self, position: int) -> None:
        """Hand out the next bytes of the file as an Extent: the file holds them
        until they are sent.  The file position moves on as a read would."""
        try:
            size = os.fstat(self.fd).st_size
        except OSError as exc:
            self._end(f"reading STDIN failed: {exc.strerror or exc}")
            return
        self._sized = self._sized or size > 0
        if size < position and self._sized:
            # Bytes already handed out are gone: whatever is sent of them
            # fails, and the file's end here is not the end of the input.
            self._end(shrunk(size, position))
            return
        count = min(self._room, size - position)
        if count <= 0:
            # Only a read tells the end (a file may grow, or not know its
            # size, as in /proc): read once, and hand out Extents again only
            # if that finds more.
            self.position = None
            self._read()
            return
        self.position = position + count
        with contextlib.suppress(OSError):
            os.lseek(self.fd, self.position, os.SEEK_SET)
        self._room -= count
        self._on_data(Extent(position, count))


class OutputWriter:
    """Writes buffers to ``fd`` in a thread, reporting progress to the loop.

    ``on_written(n)`` follows each write, ``on_error(message)`` ends it on
    failure (EPIPE when the consumer went away), ``on_closed()`` follows
    ``close()`` once everything queued has been written and the fd closed.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int,
                 on_written: Callable[[int], None], on_error: Callable[[str], None],
                 on_closed: Callable[[], None]) -> None:
        self._loop = loop
        self._fd = fd
        self._on_written = on_written
        self._on_error = on_error
        self._on_closed = on_closed
        self._queue: deque[bytes | bytearray | memoryview] = deque()
        self._closing = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="stdout", daemon=True)

    def start(self) -> None:
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
        call = _poster(self._loop)
        queue = self._queue
        while True:
            with self._cond:
                while not queue and not self._closing:
                    self._cond.wait()
                if not queue:
                    break
                batch = [queue.popleft() for _ in range(min(len(queue), IOV_MAX))]
            total = sum(len(b) for b in batch)
            try:
                self._write_all(batch)
            except OSError as exc:
                call(self._on_error, exc.strerror or str(exc))
                return
            if not call(self._on_written, total):
                return
        try:
            os.close(self._fd)
        except OSError as exc:
            call(self._on_error, exc.strerror or str(exc))
            return
        call(self._on_closed)

    def _write_all(self, batch: list[bytes | bytearray | memoryview]) -> None:
        views = [memoryview(b) for b in batch]
        while views:
            n = os.writev(self._fd, views)
            while n and views:
                if n >= len(views[0]):
                    n -= len(views[0])
                    views.pop(0)
                else:
                    views[0] = views[0][n:]
                    n = 0


def loop_capable(fd: int) -> bool:
    """Whether the event loop can drive ``fd`` itself: a pipe.  Not a terminal
    (shared with the shell), a regular file (never "ready"), nor a socket:
    STDIN and STDOUT are often one socket (socat EXEC), which cannot be
    non-blocking for one and blocking for the other, and asyncio's write
    transports read a socket to notice its closing, stealing input."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) and not os.isatty(fd)


def regular_file(fd: int) -> bool:
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        return False


def private_fd(fd: int, flags: int) -> int:
    """A descriptor for the same pipe on a file description of our own, so that
    making it non-blocking cannot affect another process that shares ``fd``."""
    if stat.S_ISFIFO(os.fstat(fd).st_mode):
        try:
            new = os.open(f"/proc/self/fd/{fd}", flags)
        except OSError:
            return fd
        os.close(fd)
        return new
    return fd


class _InputProtocol(asyncio.Protocol):
    def __init__(self, owner: LoopInput) -> None:
        self.owner = owner

    def data_received(self, data: bytes) -> None:
        self.owner.on_data(data)

    def eof_received(self) -> bool:
        self.owner.ended(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.ended(f"reading STDIN failed: {getattr(exc, 'strerror', None) or exc}"
                         if exc else None)


class LoopInput:
    """STDIN read by the event loop (pipes): no thread hand-off,
    which is most of a keystroke's latency.  Same interface as InputReader."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int,
                 on_data: Callable[[bytes], None], on_eof: Callable[[str | None], None]) -> None:
        self._loop = loop
        self._fd = fd
        self.on_data = on_data
        self._on_eof = on_eof
        self._transport: asyncio.ReadTransport | None = None
        self._room = 0
        self._paused = False
        self._ended = False

    async def start(self) -> None:
        file = os.fdopen(self._fd, "rb", buffering=0, closefd=True)
        transport, _ = await self._loop.connect_read_pipe(lambda: _InputProtocol(self), file)
        self._transport = transport
        self.set_room(self._room)

    def set_room(self, room: int) -> None:
        self._room = room
        transport = self._transport
        if transport is None or self._ended:
            return
        if room <= 0 and not self._paused:
            self._paused = True
            transport.pause_reading()
        elif room > 0 and self._paused:
            self._paused = False
            transport.resume_reading()

    def ended(self, error: str | None) -> None:
        if not self._ended:
            self._ended = True
            self._on_eof(error)


class _OutputProtocol(asyncio.Protocol):
    def __init__(self, owner: LoopOutput) -> None:
        self.owner = owner

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        self.owner.report()

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.lost(exc)


F_GETPIPE_SZ = 1032  # fcntl commands, Linux
F_SETPIPE_SZ = 1031
PIPE_SIZE = 1 << 20  # what an unprivileged process may ask for (/proc/sys/fs/pipe-max-size)


def _grow_pipe(fd: int) -> None:
    """Make the STDOUT pipe hold up to 1 MiB, if the kernel lets us: with the
    default 64 KiB, a pipe is mostly full, so few bodies could be spliced
    into it and each write wakes the consumer for little."""
    try:
        if fcntl.fcntl(fd, F_GETPIPE_SZ) < PIPE_SIZE:
            fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass  # not Linux, or over the user's pipe-buffer allowance: keep its size


class LoopOutput:
    """STDOUT written by the event loop (pipes).  Bytes count as
    written once the kernel has taken them.  Same interface as OutputWriter."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int,
                 on_written: Callable[[int], None], on_error: Callable[[str], None],
                 on_closed: Callable[[], None]) -> None:
        self._loop = loop
        self._fd = fd
        self._on_written = on_written
        self._on_error = on_error
        self._on_closed = on_closed
        self._transport: asyncio.WriteTransport | None = None
        self._early: list[bytes | bytearray | memoryview] = []
        self._handed = 0
        self._reported = 0
        self._closing = False
        self._done = False
        self._reader_gone = False

    async def start(self) -> None:
        _grow_pipe(self._fd)
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

    def write(self, buffers: list[bytes | bytearray | memoryview]) -> None:
        if self._reader_gone and not self._done:
            self._done = True
            self._on_error("Broken pipe")
        if self._done:
            return
        if self._transport is None:
            self._early.extend(buffers)
            return
        self._handed += sum(len(b) for b in buffers)
        self._transport.writelines(buffers)
        self.report()

    @property
    def fd(self) -> int:
        return self._fd

    @property
    def idle(self) -> bool:
        """Open, and everything handed to us is in the pipe: bytes written to
        ``fd`` directly now come next in the stream."""
        transport = self._transport
        return (transport is not None and not self._closing and not self._done
                and not self._reader_gone and transport.get_write_buffer_size() == 0)

    def report(self) -> None:
        if self._transport is None:
            return
        written = self._handed - self._transport.get_write_buffer_size()
        if written > self._reported:
            count, self._reported = written - self._reported, written
            self._loop.call_soon(self._on_written, count)

    def close(self) -> None:
        self._closing = True
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
