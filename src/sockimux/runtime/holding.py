"""Pipes that hold DATA bodies which arrived ahead of their turn.

With several subflows most DATA bodies arrive before the stream reaches
them.  Read into our memory, each would be copied twice (socket to us, us to
STDOUT).  Parked instead (core/direct.py), a body is spliced from its socket
into a pipe of ours, which takes the kernel's pages by reference, and in its
turn from that pipe to STDOUT (another pipe: by reference again; a regular
file: one copy into the page cache).

A pipe is a queue: the sink takes its pieces out in the order they went
in, so a pipe may hold several bodies only in the order of their stream
offsets.  Bodies mostly arrive in that order, so a body goes behind the
pipe whose last body ends nearest below it (if it has room), else into an
empty pipe: a few pipes hold many bodies.  A pipe takes one body at a time
(``filling``, from the first splice until the body is all in or given
back).  The pool is bounded (MAX_PIPES, and a share of the descriptors the
system gives us): when no pipe will do, a body is read as usual.  Every
pipe is closed with the pool.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
from collections.abc import Callable
from typing import cast

from ..core import Parked
from .pipes import SPLICE_FLAGS, new_pipe

MAX_PIPES = 32  # pipes at once; bodies that find none are read into memory as before
# ...and a pipe's two descriptors per this many of the open file limit, at
# most: the subflows' connections need them more.
DESCRIPTORS_PER_PIPE = 32
# Each pipe's capacity.  A body (at most 512 KiB) spliced from a UNIX socket
# takes a slot per page; the kernel charges a user's pipes by their slots
# (fs.pipe-user-pages-soft, 64 MiB by default), so not more than this.
CAPACITY = 512 * 1024


class HoldingPipe:
    """One pipe of the pool; the token of the Parked pieces it holds."""

    __slots__ = ("read_end", "write_end", "held", "filling", "end", "_pool")

    def __init__(self, pool: HoldingPipes, read_end: int, write_end: int) -> None:
        self._pool = pool
        self.read_end = read_end
        self.write_end = write_end
        self.held = 0  # bytes in the pipe
        self.filling = False  # a body is being spliced in
        self.end = 0  # the stream offset where the last body put in ends (at most)

    # What the splice receiver needs of a target (runtime/splicing.py).
    idle = True

    def splice_from(self, fd: int, count: int) -> int:
        """Splice up to ``count`` bytes from the socket ``fd`` into the pipe."""
        moved = os.splice(fd, self.write_end, count, flags=SPLICE_FLAGS)
        self.held += moved
        return moved

    def filled(self) -> None:
        """No more of the body comes into this pipe."""
        self.filling = False
        self._pool.give(self)

    def taken(self, count: int) -> None:
        """The sink took ``count`` bytes out of the pipe."""
        self.held -= count
        if not self.held and not self.filling:
            self._pool.give(self)

    def __repr__(self) -> str:
        return f"HoldingPipe({self.read_end}, {self.held})"


class HoldingPipes:
    """The pool.  ``warn(message)`` is told once when the system has no
    descriptors for a pipe (bodies are then read as usual)."""

    def __init__(self, warn: Callable[[str], None]) -> None:
        self._warn = warn
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.most = MAX_PIPES if limit == resource.RLIM_INFINITY else min(
            MAX_PIPES, limit // DESCRIPTORS_PER_PIPE)
        self._free: list[HoldingPipe] = []  # empty
        self._open: list[HoldingPipe] = []  # holding bodies, taking more behind them
        self._all: list[HoldingPipe] = []
        self._closed = False

    def take(self, offset: int, length: int) -> HoldingPipe | None:
        """A pipe to put the body at stream ``offset`` (``length`` bytes) in;
        None if none will do now."""
        best: HoldingPipe | None = None
        for pipe in self._open:
            if pipe.end <= offset and pipe.held + length <= CAPACITY and (
                    best is None or pipe.end > best.end):
                best = pipe
        if best is not None:
            self._open.remove(best)
            pipe = best
        elif self._free:
            pipe = self._free.pop()
        elif self._closed or len(self._all) >= self.most:
            return None
        else:
            try:  # (a user over the pipe quota gets a smaller pipe)
                read_end, write_end = new_pipe(CAPACITY)
            except OSError as exc:
                if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOMEM):
                    raise
                self._warn(f"holding bodies in memory: no pipe ({exc.strerror})")
                return None
            pipe = HoldingPipe(self, read_end, write_end)
            self._all.append(pipe)
        pipe.filling = True
        pipe.end = offset + length
        return pipe

    def give(self, pipe: HoldingPipe) -> None:
        """``pipe`` takes a body again: behind what it holds, or (empty) any."""
        if self._closed:
            return
        if pipe in self._open:
            self._open.remove(pipe)
        if pipe.held:
            self._open.append(pipe)
        else:
            self._free.append(pipe)

    def close(self) -> None:
        """Close every pipe (the session is over: what they hold is not needed)."""
        self._closed = True
        for pipe in self._all:
            for fd in (pipe.read_end, pipe.write_end):
                with contextlib.suppress(OSError):
                    os.close(fd)
            pipe.read_end = pipe.write_end = -1  # (never a number the system reuses)
        self._all.clear()
        self._free.clear()
        self._open.clear()


def splice_out(piece: Parked, fd: int) -> int:
    """Splice what is left of ``piece`` from its pipe to ``fd``, as far as
    ``fd`` takes it now; the count (``piece`` keeps what is left).
    BlockingIOError if ``fd`` took nothing; OSError if it failed."""
    pipe = cast(HoldingPipe, piece.token)
    if pipe.read_end < 0:
        raise OSError(errno.EBADF, "the holding pipes are closed")
    total = 0
    while piece.length:
        try:
            moved = os.splice(pipe.read_end, fd, piece.length, flags=SPLICE_FLAGS)
        except BlockingIOError:
            if total:
                break
            raise
        if not moved:  # (the pipe holds them: never)
            raise OSError(errno.EIO, "a holding pipe came up short")
        piece.length -= moved
        pipe.taken(moved)
        total += moved
    return total


def read_out(piece: Parked) -> bytes:
    """What is left of ``piece``, read from its pipe into memory (for an
    output that cannot be spliced into)."""
    pipe = cast(HoldingPipe, piece.token)
    if pipe.read_end < 0:
        raise OSError(errno.EBADF, "the holding pipes are closed")
    parts = []
    while piece.length:
        data = os.read(pipe.read_end, piece.length)
        if not data:
            raise OSError(errno.EIO, "a holding pipe came up short")
        piece.length -= len(data)
        pipe.taken(len(data))
        parts.append(data)
    return b"".join(parts)
