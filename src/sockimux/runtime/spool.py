"""A spool for a STDIN pipe in bulk: its pages kept by reference in pipes of
our own, and sent with splice(), never copied by us.

Read from a pipe, every byte is copied twice: into our memory (read) and
from it into the socket (write).  While a pipe STDIN is kept full, LoopInput
(source.py) splices its bytes into pipes of the spool instead (*chunks*:
splice between pipes moves page references, no copy) and hands them out as
Extents whose position is their stream offset.  send() tee()s the chunk
holding an Extent into an out pipe (references again), drops what
comes before the Extent, and splices the rest into the socket, which on
Linux takes the pages by reference too.  The chunk keeps its pages for
re-sends until the peer has acknowledged them (release()): the spool holds
at most the send buffer limit and two chunks more, in pipes of 1 MiB.

Should anything here be missing (no splice or tee, out of descriptors, a
pipe that cannot grow), the input goes on as bytes: one -v line at most,
never an error.
"""

from __future__ import annotations

import bisect
import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import resource
import struct
import termios
from collections.abc import Callable
from typing import cast

from ..core import Extent
from .pipes import PIPE_SIZE, SPLICE_NONBLOCK, new_pipe

log = logging.getLogger("sockimux")

CHUNK = PIPE_SIZE  # a chunk pipe's size (what an unprivileged process may ask for)
FILL_MIN = 64 * 1024  # a chunk with less room left than this is full
MAX_OUTS = 8  # sockets with an out pipe of their own (Spool._out)
MAX_CHUNKS = 32  # chunks held at once: a window of about 30 MiB
# Descriptors a spool may hold: its chunks, out pipes, and /dev/null.  Under
# an open file limit of FD_LIMIT_MIN it is not made: those go to subflows.
SPOOL_FDS = 2 * MAX_CHUNKS + 2 * (MAX_OUTS + 1) + 1
FD_LIMIT_MIN = 1024

Tee = Callable[[int, int, int, int], int]


def _tee() -> Tee | None:
    """libc's tee(2), which Python's os module does not offer."""
    try:
        call = ctypes.CDLL(None, use_errno=True).tee
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint]
    call.restype = ctypes.c_ssize_t
    return cast(Tee, call)


def pending(fd: int) -> int:
    """How many bytes the pipe ``fd`` holds."""
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]  # type: ignore[no-any-return]


class Out:
    """A pipe that send() tee()s chunks into: it holds the stream's bytes from
    ``at``, ``left`` of them (the rest of a chunk, after what was sent)."""

    __slots__ = ("r", "w", "at", "left")

    def __init__(self, r: int, w: int) -> None:
        self.r, self.w = r, w
        self.at = self.left = 0


class Chunk:
    __slots__ = ("start", "end", "r", "w")

    def __init__(self, start: int, r: int, w: int) -> None:
        self.start = self.end = start  # the stream offsets it holds
        self.r, self.w = r, w


class Spool:
    """The chunks of a STDIN pipe in bulk; see the module's comment.  It is an
    ExtentSource (source.py): send(), holds(), read_extent()."""

    _tee: Tee | None = None

    def __init__(self, out: tuple[int, int], null: int, on_error: Callable[[str], None]) -> None:
        self._shared = Out(*out)  # where read_extent(), and send() to a socket without its own, tee()
        self._outs: dict[int, Out] = {}  # a socket's own, by its descriptor: see _out()
        self._null = null
        self._on_error = on_error
        self.sendfile = True
        self._chunks: list[Chunk] = []
        self._starts: list[int] = []
        self._free: list[tuple[int, int]] = []  # emptied chunk pipes, for the next ones

    @classmethod
    def create(cls, on_error: Callable[[str], None]) -> Spool | None:
        """A new spool, or None (logged at -v) when this system cannot have one;
        ``on_error(message)``: reading it back failed (the session ends)."""
        if not hasattr(os, "splice"):
            log.info("STDIN: no splice here: a pipe is read as bytes")
            return None
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if limit != resource.RLIM_INFINITY and limit < FD_LIMIT_MIN:
            log.info("STDIN: open file limit %d: a pipe is read as bytes (a spool would "
                     "take up to %d descriptors)", limit, SPOOL_FDS)
            return None
        if cls._tee is None:
            cls._tee = _tee()
            if cls._tee is None:
                log.info("STDIN: no tee in libc: a pipe is read as bytes")
                return None
        try:
            null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
            try:
                out = new_pipe(CHUNK, exact=True)
            except OSError:
                os.close(null)
                raise
        except OSError as exc:
            log.info("STDIN: no spool for a pipe in bulk (%s): it is read as bytes",
                     exc.strerror or exc)
            return None
        return cls(out, null, on_error)

    def fill(self, pipe_fd: int, position: int, count: int) -> int:
        """Splice up to ``count`` bytes of ``pipe_fd`` (stream offset
        ``position`` on) into the last chunk, or a new one: how many, 0 at
        the pipe's end; -1 when the spool holds MAX_CHUNKS (a window larger
        than that: these bytes are read).  BlockingIOError: the pipe is empty."""
        chunk = self._chunks[-1] if self._chunks else None
        if chunk is None or chunk.end - chunk.start > CHUNK - FILL_MIN or chunk.end != position:
            # (A fill of a few bytes would pass for the end of the burst.)
            if len(self._chunks) >= MAX_CHUNKS:
                return -1
            chunk = self._new_chunk(position)
        count = min(count, CHUNK - (chunk.end - chunk.start))
        try:
            moved = os.splice(pipe_fd, chunk.w, count, flags=SPLICE_NONBLOCK)
        except BlockingIOError:
            if chunk.end == chunk.start or not pending(pipe_fd):
                raise
            # STDIN has bytes, so the chunk's slots are full (of partial pages).
            if len(self._chunks) >= MAX_CHUNKS:
                return -1
            chunk = self._new_chunk(position)
            moved = os.splice(pipe_fd, chunk.w, count, flags=SPLICE_NONBLOCK)
        chunk.end += moved
        return moved

    def _new_chunk(self, position: int) -> Chunk:
        r, w = self._free.pop() if self._free else new_pipe(CHUNK, exact=True)
        chunk = Chunk(position, r, w)
        self._chunks.append(chunk)
        self._starts.append(position)
        return chunk

    def release(self, acked: int) -> None:
        """Empty the chunks the peer has acknowledged whole."""
        chunks = self._chunks
        while len(chunks) > 1 and chunks[0].end <= acked:
            chunk = chunks.pop(0)
            self._starts.pop(0)
            self._drain(chunk.r, chunk.end - chunk.start)
            self._free.append((chunk.r, chunk.w))

    def _drain(self, r: int, count: int) -> None:
        while count > 0:
            try:
                moved = os.splice(r, self._null, count, flags=SPLICE_NONBLOCK)
            except BlockingIOError:
                return
            if not moved:
                return
            count -= moved

    def close(self) -> None:
        for chunk in self._chunks:
            os.close(chunk.r)
            os.close(chunk.w)
        for r, w in self._free:
            os.close(r)
            os.close(w)
        for out in (self._shared, *(o for o in self._outs.values() if o is not self._shared)):
            os.close(out.r)
            os.close(out.w)
        self._outs = {}
        os.close(self._null)
        self._chunks, self._starts, self._free = [], [], []

    # -- sending Extents -----------------------------------------------------------

    def _out(self, sock_fd: int) -> Out:
        """The out pipe for the socket ``sock_fd``: its own, up to MAX_OUTS of
        them.  Its next piece mostly continues its last one (what the socket
        did not take at once, held), which is then at its head already,
        where one shared by subflows would have been filled by another's
        piece meanwhile.  (A descriptor reused by another socket finds bytes
        of the stream at their offsets all the same.)"""
        out = self._outs.get(sock_fd)
        if out is None:
            out = self._shared
            if len(self._outs) < MAX_OUTS:
                with contextlib.suppress(OSError):  # (then it shares one, for good)
                    out = Out(*new_pipe(CHUNK, exact=True))
                self._outs[sock_fd] = out
        return out

    def _stage(self, out: Out, position: int, length: int) -> int:
        """Have the bytes at ``position`` at the head of ``out``: how many of
        them, up to ``length`` (within one chunk).  ``out`` keeps the rest of
        the chunk after what is sent: pieces in stream order need no tee()
        of their own."""
        if position != out.at or not out.left:
            self._drain(out.r, out.left)
            i = bisect.bisect_right(self._starts, position) - 1
            chunk = self._chunks[i]
            skip, rest = position - chunk.start, chunk.end - position
            tee = Spool._tee
            assert tee is not None
            out.at, out.left = position, 0
            teed = tee(chunk.r, out.w, skip + rest, SPLICE_NONBLOCK)
            if teed != skip + rest:
                self._drain(out.r, max(teed, 0))
                raise OSError(ctypes.get_errno() or errno.EIO, "tee of the STDIN spool failed")
            self._drain(out.r, skip)
            out.left = rest
        return min(length, out.left)

    def send(self, sock_fd: int, extent: Extent) -> int:
        """splice() as much of ``extent`` into the socket as it takes now."""
        out = self._out(sock_fd)
        sent, position, left = 0, extent.position, extent.length
        while left:
            count = 0
            try:
                count = self._stage(out, position, left)
                moved = os.splice(out.r, sock_fd, count, flags=SPLICE_NONBLOCK)
            except BlockingIOError:
                moved = 0
            except OSError as exc:
                if exc.errno in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                    self.sendfile = False  # this socket takes no splice: read from now on
                moved = 0  # or the socket failed (the transport will say so), or tee did
            out.at += moved
            out.left -= moved
            sent += moved
            if moved < count or not moved:
                break
            position += moved
            left -= moved
        return sent

    def holds(self, extent: Extent) -> bool:
        """Always: the spool keeps every byte not yet acknowledged."""
        return True

    def read_extent(self, extent: Extent) -> bytes | None:
        """The bytes of ``extent`` (small ones go with their headers, and where
        nothing can be spliced); None if that failed (the session is ended)."""
        parts = []
        out = self._shared
        position, left = extent.position, extent.length
        try:
            while left:
                count = self._stage(out, position, left)
                data = os.read(out.r, count)
                out.at += len(data)
                out.left -= len(data)
                parts.append(data)
                position += len(data)
                left -= len(data)
        except OSError as exc:
            self._on_error(f"reading STDIN's spool at offset {position} failed: "
                           f"{exc.strerror or exc}")
            return None
        return parts[0] if len(parts) == 1 else b"".join(parts)
