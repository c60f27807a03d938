"""A regular file as the stream's sink (STDOUT redirected to a file).

See FileOutput; sink.py holds the other sinks and what they share.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import time
from collections.abc import Callable, Sequence

from ..core import Parked
from ..core.receiver import Piece
from .holding import read_out, splice_out
from .pipes import PIPE_SIZE, SPLICE_FLAGS, new_pipe
from .sink import Output, OutputFailed, OutputWriter, write_all

SLOW_WRITE = 0.05  # seconds: a file write slower than this moves writes to a thread

class FileOutput(Output):
    """STDOUT that is a regular file, written by the event loop itself.

    A write to a regular file is a copy into the page cache: on the loop it
    costs no thread hand-off (two per write: a wake-up of the writer, and
    its report back).  DATA bodies that continue the stream are spliced from
    the socket into a pipe of ours and at once from it into the file
    (splice_from): one copy in the kernel instead of two, one through our
    memory.  Should the storage prove slow (a write or splice taking over
    SLOW_WRITE seconds), writes move to a thread (OutputWriter) for the
    rest of the stream, so that slow storage cannot hold up the subflows.
    Without the pipe (a file opened to append, which splice() refuses, or
    no descriptors to spare) bodies are read and written as usual.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int,
                 on_written: Callable[[int], None], on_error: Callable[[str], None],
                 on_closed: Callable[[], None]) -> None:
        super().__init__(loop, fd, on_written, on_error, on_closed)
        self.worker: OutputWriter | None = None  # set once writes moved to a thread
        self._closing = False
        self._done = False  # failed: nothing more is written
        self._pipe = self._make_pipe() if hasattr(os, "splice") else None

    def _make_pipe(self) -> tuple[int, int] | None:
        try:
            if fcntl.fcntl(self._fd, fcntl.F_GETFL) & os.O_APPEND:
                return None  # splice() refuses files opened to append (EINVAL)
            return new_pipe(PIPE_SIZE)  # a bigger pipe: fewer splices per body
        except OSError:
            return None

    @property
    def spliceable(self) -> bool:
        return self._pipe is not None

    async def start(self) -> None:
        pass  # the file is written as soon as there is something to write

    @property
    def idle(self) -> bool:
        return (self._pipe is not None and self.worker is None and not self._closing
                and not self._done)

    def write(self, buffers: Sequence[Piece]) -> None:
        if self._done:
            return
        if self.worker is not None:
            try:  # (parked pieces, from before the move to a thread, read out here)
                self.worker.write([read_out(b) if isinstance(b, Parked) else b for b in buffers])
            except OSError as exc:
                self._fail(exc.strerror or str(exc))
            return
        started = time.monotonic()
        try:
            count = start = 0
            for i, buf in enumerate(buffers):
                if isinstance(buf, Parked):  # spliced from its pipe in its turn
                    if i > start:
                        count += write_all(self._fd, buffers[start:i])  # type: ignore[arg-type]
                    start = i + 1
                    count += self._take_parked(buf)
            if start < len(buffers):
                count += write_all(self._fd, buffers[start:])  # type: ignore[arg-type]
        except OSError as exc:
            self._fail(exc.strerror or str(exc))
            return
        self._loop.call_soon(self._on_written, count)
        self._pace(started)

    def _take_parked(self, piece: Parked) -> int:
        """Move a parked piece into the file: by splice, or else read and written."""
        count = piece.length
        while piece.length:
            try:
                splice_out(piece, self._fd)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                write_all(self._fd, [read_out(piece)])  # (a file system splice cannot write)
        return count

    def splice_from(self, fd: int, count: int) -> int:
        assert self._pipe is not None
        moved = os.splice(fd, self._pipe[1], count, flags=SPLICE_FLAGS)
        if moved:
            started = time.monotonic()
            self._drain(moved)
            self._pace(started)
        return moved

    def _drain(self, count: int) -> None:
        """Move the ``count`` bytes in our pipe into the file."""
        assert self._pipe is not None
        read_end = self._pipe[0]
        try:
            while count:
                try:
                    count -= os.splice(read_end, self._fd, count, flags=SPLICE_FLAGS)
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        raise
                    # This file cannot be spliced into (its file system):
                    # these bytes go by write(), and bodies are read from now on.
                    while count:
                        data = os.read(read_end, count)  # never empty: the pipe holds them
                        count -= write_all(self._fd, [data]) or count
                    self._close_pipe()
        except OSError as exc:
            self._done = True
            self._close_pipe()
            raise OutputFailed(exc.strerror or str(exc)) from None

    def _pace(self, started: float) -> None:
        """After a write that took over SLOW_WRITE, the rest goes by a thread."""
        if time.monotonic() - started > SLOW_WRITE and self.worker is None and not self._done:
            self._close_pipe()
            self.worker = OutputWriter(self._loop, self._fd, self._on_written, self._on_error,
                                       self._on_closed)
            self.worker.spawn()

    def _fail(self, message: str) -> None:
        self._done = True
        self._close_pipe()
        self._loop.call_soon(self._on_error, message)

    def _close_pipe(self) -> None:
        if self._pipe is not None:
            for end in self._pipe:
                os.close(end)
            self._pipe = None

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._close_pipe()
        if self.worker is not None:
            self.worker.close()
            return
        if self._done:
            return
        try:
            os.close(self._fd)
        except OSError as exc:
            self._fail(exc.strerror or str(exc))
            return
        self._loop.call_soon(self._on_closed)
