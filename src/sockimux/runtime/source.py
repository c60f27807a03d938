"""Stream sources: where the session's outgoing stream comes from (STDIN).

Every source has the same small interface (StreamSource): ``await start()``,
then ``set_room(n)`` whenever the session's room for input changes; bytes
(or Extents of a regular file) come back through ``on_data``, the end or a
failure through ``on_eof``.  stream.open_source picks the kind:

- LoopInput: a pipe, driven by the event loop on a file description of our
  own: no thread hand-off, which is most of a keystroke's latency.  In
  bulk its bytes go to a spool (spool.py) and out as Extents, as a file's,
  by splice() instead of sendfile().
- FileInput (file_source.py): a regular file, read by the loop itself (a
  file never waits for a peer); it hands out Extents that stay in the file
  until sent, and sends them itself (sendfile, or pread when that cannot be
  used).
- InputReader: anything else (terminals, sockets), a thread doing plain
  blocking reads: that never sets O_NONBLOCK on a file description shared
  with other processes (the shell's terminal).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import select
import threading
from collections.abc import Callable
from typing import Any, Protocol

from ..core import Extent
from .pipes import grow_pipe
from .spool import Spool, pending

log = logging.getLogger("sockimux")

READ_SIZE = 256 * 1024
PIPE_READ_MIN = 64 * 1024  # a STDIN pipe's first read, and after every short one
PIPE_READ_MAX = 1024 * 1024  # a STDIN pipe's reads while they come back full (a grown pipe)
SPOOL_FROM = 256 * 1024  # a full read of a STDIN pipe this large: bulk, spooled from then on


class StreamSource(Protocol):
    """Where the outgoing stream comes from."""

    async def start(self) -> None:
        """Begin reading (within the room given so far)."""

    def set_room(self, room: int) -> None:
        """How many bytes the session will take now; called after every change."""


class ExtentSource(Protocol):
    """What holds the Extents a source handed out (FileInput, Spool), for the
    connections that send them (connection.py)."""

    sendfile: bool  # Extents may go by send()

    def send(self, sock_fd: int, extent: Extent) -> int:
        """sendfile() what the socket takes of ``extent`` now: how much; -1: it is gone."""

    def holds(self, extent: Extent) -> bool:
        """Whether ``extent`` can still be sent (if not, the session is ended)."""

    def read_extent(self, extent: Extent) -> bytes | None:
        """The bytes of ``extent``; None if they are gone (the session is ended)."""


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


class Input:
    """What every reader of STDIN has: the loop, the descriptor, where the
    bytes go (``on_data``), where its end goes (``on_eof(None)``: the end of
    the input; ``on_eof(message)``: its failure, see read_failure), and the
    room the session gives it (set_room())."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int,
                 on_data: Callable[[Any], None], on_eof: Callable[[str | None], None]) -> None:
        self._loop = loop
        self._fd = fd
        self._on_data = on_data
        self._on_eof = on_eof
        self._room = 0


class InputReader(Input):
    """Reads ``fd`` in a thread while the session has room, handing bytes to the loop.

    ``at_end``, if given, tells whether an end found by a read is a failure.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int,
                 on_data: Callable[[bytes], None], on_eof: Callable[[str | None], None],
                 at_end: Callable[[], str | None] | None = None) -> None:
        super().__init__(loop, fd, on_data, on_eof)
        self._at_end = at_end
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


class LoopInput(Input):
    """STDIN read by the event loop (pipes): no thread hand-off, which is most
    of a keystroke's latency.

    Reads start at PIPE_READ_MIN and double while they come back full, up to
    PIPE_READ_MAX: a pipe kept full (``cat file |``) comes in pieces of up to
    1 MiB (each at most a DATA body: fewer, larger bodies, and fewer events on
    both sides), while keystrokes, each a short read, keep small reads.  A
    short read starts again from PIPE_READ_MIN.

    Once a read of SPOOL_FROM bytes or more comes back full, and the runner
    gave spool_with(), the pipe is in bulk: its bytes are spliced into a
    spool (spool.py: pipes of our own, holding the pages by reference) and
    handed out as Extents whose position is their stream offset, until the
    pipe holds less than PIPE_READ_MIN before a splice (FIONREAD), or a
    splice brings less: the burst is over, and reads start again.
    Keystrokes never get there, nor the first one after a burst: they go as
    bytes, with the same system calls as ever.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int,
                 on_data: Callable[[bytes | Extent], None],
                 on_eof: Callable[[str | None], None]) -> None:
        super().__init__(loop, fd, on_data, on_eof)
        self._started = False
        self._watching = False
        self._ended = False
        self._size = PIPE_READ_MIN
        self.offset = 0  # the stream offset of the next byte read
        self.spool: Spool | None = None
        self._spooling = False  # in bulk: the next bytes go to the spool
        self._acked: Callable[[], int] = lambda: 0
        self._spoolable = False  # bulk may be spooled (spool_with(), and no failure since)
        self._spooled = 0  # the stream offset after the last byte spooled
        self._announce: Callable[[ExtentSource | None], None] = lambda source: None
        self._worth: Callable[[], bool] = lambda: False
        self._announced = False  # the spool is the runner's ExtentSource

    def spool_with(self, acked: Callable[[], int],
                   announce: Callable[[ExtentSource | None], None],
                   worth: Callable[[], bool]) -> None:
        """Spool bulk input (see the class's comment) when ``worth()`` (some
        subflow is a socket: a channel of pipes takes the spool's bytes read
        back, which costs more calls than reading STDIN).  ``acked()``: the
        offset below which the spool may let bytes go (the peer has them,
        and no connection holds any of them to send still);
        ``announce(spool)`` before the first Extent of a burst is handed out,
        ``announce(None)`` once every Extent is acknowledged (sending needs no
        spool then: the keystroke path stays as short as ever)."""
        self._acked, self._announce, self._worth = acked, announce, worth
        self._spoolable = True

    async def start(self) -> None:
        os.set_blocking(self._fd, False)  # our own file description (stream.py)
        grow_pipe(self._fd)
        self._started = True
        self.set_room(self._room)

    def set_room(self, room: int) -> None:
        self._room = room
        if self.spool is not None:  # (after every step: lets go of what was acknowledged)
            self.spool.release(self._acked())
            self._release()
        if not self._started or self._ended:
            return
        if room > 0 and not self._watching:
            self._loop.add_reader(self._fd, self._read)
            self._watching = True
        elif room <= 0 and self._watching:
            self._loop.remove_reader(self._fd)
            self._watching = False

    def _read(self) -> None:
        if self._spooling:
            self._splice()
            return
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
        self.offset += len(data)
        if len(data) == size:
            self._size = min(2 * size, PIPE_READ_MAX)
            if size >= SPOOL_FROM and self._spoolable and self._worth():
                self._spooling = self._spool_ready()
        else:
            self._size = PIPE_READ_MIN
        self._on_data(data)

    def _spool_ready(self) -> bool:
        if self.spool is None:
            self.spool = Spool.create(self._on_eof)
            if self.spool is None:
                self._spoolable = False  # (Spool.create said why, once)
                return False
        return True

    def _splice(self) -> None:
        spool = self.spool
        assert spool is not None
        start = self.offset
        try:
            bulk = pending(self._fd) >= PIPE_READ_MIN
        except OSError:
            bulk = False
        if not bulk:
            # The burst is over (or the input's end, or a keystroke after
            # it): these bytes are read, as every keystroke is.
            self._spooling, self._size = False, PIPE_READ_MIN
            self._read()
            return
        try:
            moved = spool.fill(self._fd, start, PIPE_READ_MAX)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            # The spool's failure (out of descriptors, a pipe that cannot
            # grow...), or STDIN's, which a read then reports as it always did.
            log.info("STDIN: spooling stopped (%s): the pipe is read as bytes",
                     exc.strerror or exc)
            self._spooling = self._spoolable = False
            self._read()
            return
        if moved <= 0:
            if moved:  # the spool is full: these bytes are read (then spooled again)
                self._spooling = False
                self._read()
            else:
                self.ended(None)
            return
        self.offset = self._spooled = start + moved
        if moved < PIPE_READ_MIN:  # the burst is over
            self._spooling, self._size = False, PIPE_READ_MIN
        if not self._announced:
            self._announced = True
            log.debug("STDIN in bulk: spooled from stream offset %d", start)
            self._announce(spool)
        self._on_data(Extent(start, moved))

    def _release(self) -> None:
        """Once a burst is over and every byte of it acknowledged, sending
        needs the spool no more: it goes (its memory with it), and the next
        burst makes another."""
        if self._spooling or self._acked() < self._spooled:
            return
        spool = self.spool
        assert spool is not None
        if self._announced:
            self._announced = False
            self._announce(None)
        spool.close()
        self.spool = None

    def ended(self, error: str | None) -> None:
        if not self._ended:
            self._ended = True
            self._spooling = False
            if self._watching:
                self._loop.remove_reader(self._fd)
                self._watching = False
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._on_eof(error)
