"""Stream sources: where the session's outgoing stream comes from (STDIN).

Every source has the same small interface (StreamSource): ``await start()``,
then ``set_room(n)`` whenever the session's room for input changes; bytes
(or Extents of a regular file) come back through ``on_data``, the end or a
failure through ``on_eof``.  stream.open_source picks the kind:

- LoopInput: a pipe, driven by the event loop on a file description of our
  own: no thread hand-off, which is most of a keystroke's latency.
- FileInput: a regular file, read by the loop itself (a file never waits
  for a peer); it hands out Extents that stay in the file until sent, and
  sends them itself (sendfile, or pread when that cannot be used).
- InputReader: anything else (terminals, sockets), a thread doing plain
  blocking reads: that never sets O_NONBLOCK on a file description shared
  with other processes (the shell's terminal).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import select
import threading
import time
from collections.abc import Callable
from typing import Protocol

from ..core import Extent

READ_SIZE = 256 * 1024
PIPE_READ_MIN = 64 * 1024  # a STDIN pipe's first read, and after every short one
PIPE_READ_MAX = 1024 * 1024  # a STDIN pipe's reads while they come back full (a grown pipe)
FILE_READ_SIZE = 1024 * 1024  # reads of a regular file on the event loop (2 full DATA frames)
SLOW_READ = 0.05  # seconds: a file read slower than this moves reads to a thread


F_GETPIPE_SZ = 1032  # fcntl commands, Linux
F_SETPIPE_SZ = 1031
PIPE_SIZE = 1 << 20  # what an unprivileged process may ask for (/proc/sys/fs/pipe-max-size)


def grow_pipe(fd: int) -> None:
    """Make a pipe hold up to 1 MiB, if the kernel lets us.  STDOUT: with the
    default 64 KiB, a pipe is mostly full, so few bodies could be spliced
    into it and each write wakes the consumer for little.  STDIN: a writer
    that keeps it full (``cat file |``) fills 1 MiB between our reads, and a
    read takes it in one piece instead of 64 KiB ones."""
    try:
        if fcntl.fcntl(fd, F_GETPIPE_SZ) < PIPE_SIZE:
            fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass  # not Linux, or over the user's pipe-buffer allowance: keep its size


class StreamSource(Protocol):
    """Where the outgoing stream comes from."""

    async def start(self) -> None:
        """Begin reading (within the room given so far)."""

    def set_room(self, room: int) -> None:
        """How many bytes the session will take now; called after every change."""


def thread_poster(loop: asyncio.AbstractEventLoop) -> Callable[..., bool]:
    """call_soon_threadsafe that reports, instead of raising, a loop already closed
    (the process is exiting; the thread just stops)."""

    def post(callback: Callable[..., object], *args: object) -> bool:
        try:
            loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:
            return False
        return True

    return post


def wait_until_ready(fd: int, event: int) -> None:
    """Block the calling thread until ``fd`` is ready for ``event``
    (``select.POLLIN`` or ``POLLOUT``), hung up or failed (the next read or
    write says which).  For a descriptor whose file description another
    process made non-blocking (a parent's terminal or socket, shared with
    us and left as found): EAGAIN there means "not yet", not a failure, and
    the thread waits as a blocking call would have."""
    poller = select.poll()
    poller.register(fd, event)
    poller.poll()


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

    async def start(self) -> None:
        self.spawn()

    def spawn(self) -> None:
        """Start the thread (from synchronous code)."""
        self._thread.start()

    def set_room(self, room: int) -> None:
        """How many bytes the session will take now (updated by the loop)."""
        with self._cond:
            if room != self._room:
                self._room = room
                if room > 0:
                    self._cond.notify()

    def _run(self) -> None:
        call = thread_poster(self._loop)
        while True:
            with self._cond:
                while self._room <= 0:
                    self._cond.wait()
                size = min(READ_SIZE, self._room)
                self._room -= size
            try:
                data = os.read(self._fd, size)
            except BlockingIOError:  # O_NONBLOCK, set by whoever shares the description
                wait_until_ready(self._fd, select.POLLIN)
                with self._cond:
                    self._room += size
                continue
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
    bytes: it stays in the file until sent, by send() (sendfile) or by
    read_extent() (pread).  A file found shorter than the position already
    read, or than an Extent still to be sent, was truncated, which
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
        self.sendfile = extents and hasattr(os, "sendfile")  # Extents go by sendfile()

    async def start(self) -> None:
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
            self.worker.spawn()
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

    # -- sending Extents ---------------------------------------------------------

    def send(self, sock_fd: int, extent: Extent) -> int:
        """sendfile() as much of ``extent`` as the socket takes now; -1 if the
        file no longer holds it (the session is then ended by on_eof)."""
        if not self.sendfile:
            return 0
        try:
            sent = os.sendfile(sock_fd, self.fd, extent.position, extent.length)
        except BlockingIOError:
            return 0
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                self.sendfile = False  # this file cannot be sent so: read it from now on
            return 0  # or the socket failed: the transport will say so when given the rest
        if sent == 0:
            self._shrank(extent)
            return -1
        return sent

    def holds(self, extent: Extent) -> bool:
        """Whether the file still holds ``extent`` (if not, the session is ended)."""
        try:
            size = os.fstat(self.fd).st_size
        except OSError:
            size = 0
        if size < extent.position + extent.length:
            self._shrank(extent)
            return False
        return True

    def read_extent(self, extent: Extent) -> bytes | None:
        """The bytes of ``extent``, read from the file; None if it no longer
        holds them (the session is then ended)."""
        parts = []
        position, left = extent.position, extent.length
        while left:
            try:
                data = os.pread(self.fd, left, position)
            except OSError as exc:
                self._on_eof(f"reading STDIN failed at file offset {position}: "
                             f"{exc.strerror or exc}")
                return None
            if not data:
                self._shrank(extent)
                return None
            parts.append(data)
            position += len(data)
            left -= len(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _shrank(self, extent: Extent) -> None:
        self._on_eof(f"STDIN (a regular file) no longer holds the bytes at file offset "
                     f"{extent.position} that were still to be sent: it was truncated")


class LoopInput:
    """STDIN read by the event loop (pipes): no thread hand-off, which is most
    of a keystroke's latency.

    Reads start at PIPE_READ_MIN and double while they come back full, up to
    PIPE_READ_MAX: a pipe kept full (``cat file |``) comes in pieces of up to
    1 MiB (each at most a DATA body: fewer, larger bodies, and fewer events on
    both sides), while keystrokes, each a short read, keep small reads.  A
    short read starts again from PIPE_READ_MIN.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int,
                 on_data: Callable[[bytes], None], on_eof: Callable[[str | None], None]) -> None:
        self._loop = loop
        self._fd = fd
        self.on_data = on_data
        self._on_eof = on_eof
        self._started = False
        self._room = 0
        self._watching = False
        self._ended = False
        self._size = PIPE_READ_MIN

    async def start(self) -> None:
        os.set_blocking(self._fd, False)  # our own file description (stream.py)
        grow_pipe(self._fd)
        self._started = True
        self.set_room(self._room)

    def set_room(self, room: int) -> None:
        self._room = room
        if not self._started or self._ended:
            return
        if room > 0 and not self._watching:
            self._loop.add_reader(self._fd, self._read)
            self._watching = True
        elif room <= 0 and self._watching:
            self._loop.remove_reader(self._fd)
            self._watching = False

    def _read(self) -> None:
        size = self._size
        try:
            data = os.read(self._fd, size)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.ended(read_failure(self._fd, exc))
            return
        if not data:
            self.ended(None)
            return
        self._size = min(2 * size, PIPE_READ_MAX) if len(data) == size else PIPE_READ_MIN
        self.on_data(data)

    def ended(self, error: str | None) -> None:
        if not self._ended:
            self._ended = True
            if self._watching:
                self._loop.remove_reader(self._fd)
                self._watching = False
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._on_eof(error)


