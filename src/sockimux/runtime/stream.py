"""Which source and sink a descriptor gets: the one place that classifies
STDIN and STDOUT (pipe, regular file, terminal, socket).

Pipes are driven by the event loop (LoopInput, LoopOutput) on file
descriptions of our own, and regular files are read and written by the
loop too (FileInput, FileOutput).  Everything else gets a thread doing
plain blocking I/O (InputReader, OutputWriter): that works for every kind of file descriptor,
including terminals that asyncio cannot watch, and never sets O_NONBLOCK on
a file description shared with other processes (the shell's terminal).
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Callable
from typing import Protocol

from ..core import Extent
from .file_sink import FileOutput
from .file_source import FileInput
from .sink import LoopOutput, OutputWriter, SpliceTarget, StreamSink
from .source import InputReader, LoopInput, StreamSource


class StreamEnds(Protocol):
    """A stream that is not a pair of descriptors (the Python API's, api.py):
    it makes the runner's source and sink, given the runner's callbacks."""

    def source(self, on_data: Callable[[bytes | Extent], None],
               on_eof: Callable[[str | None], None]) -> StreamSource: ...

    def sink(self, on_written: Callable[[int], None], on_error: Callable[[str], None],
             on_closed: Callable[[], None]) -> StreamSink: ...


def open_source(loop: asyncio.AbstractEventLoop, fd: int,
                on_data: Callable[[bytes | Extent], None],
                on_eof: Callable[[str | None], None]) -> StreamSource:
    """The source for ``fd`` (which it then owns): bytes or Extents go to
    ``on_data``; ``on_eof(None)`` is the end, ``on_eof(message)`` a failure."""
    if loop_capable(fd):
        return LoopInput(loop, private_fd(fd, os.O_RDONLY), on_data, on_eof)
    if regular_file(fd):
        # Its bytes stay in the file until sent (Extents): sendfile() then
        # takes them from the page cache to the socket.
        return FileInput(loop, fd, on_data, on_eof, extents=hasattr(os, "sendfile"))
    return InputReader(loop, fd, on_data, on_eof)


def open_sink(loop: asyncio.AbstractEventLoop, fd: int, on_written: Callable[[int], None],
              on_error: Callable[[str], None], on_closed: Callable[[], None]) -> StreamSink:
    """The sink for ``fd`` (which it then owns); see sink.StreamSink."""
    if loop_capable(fd):
        return LoopOutput(loop, private_fd(fd, os.O_WRONLY), on_written, on_error, on_closed)
    if regular_file(fd):
        # Written by the loop; DATA bodies are spliced into it.
        return FileOutput(loop, fd, on_written, on_error, on_closed)
    return OutputWriter(loop, fd, on_written, on_error, on_closed)


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
    return stat.S_ISFIFO(mode) and not os.isatty(fd) and not named_fifo(fd)


def named_fifo(fd: int) -> bool:
    """A FIFO with a name in the file system (mkfifo), not a pipe.  Its own
    file description (private_fd) would be a new open of it, which waits for
    a writer that may be gone for good (its bytes still in it), and a reader
    opened after its writer left is never told of that end by epoll: so it
    is read by a thread, with plain blocking reads that see the end."""
    try:
        return not os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:")
    except OSError:
        return False


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


def splice_target(sink: StreamSink) -> SpliceTarget | None:
    """``sink`` if DATA bodies can be spliced into it."""
    if not hasattr(os, "splice"):
        return None
    if isinstance(sink, LoopOutput) or (isinstance(sink, FileOutput) and sink.spliceable):
        return sink
    return None
