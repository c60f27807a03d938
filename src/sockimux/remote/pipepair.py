"""One asyncio transport over a read pipe and a write pipe: how a channel
that sshd gave as two pipes enters the session like a socket would.

The runtime adopts a connection as ``loop.connect_accepted_socket(protocol
factory, sock)``; an ssh channel on Linux's OpenSSH is a pipe for each
direction instead (see :mod:`.handoff`).  :func:`connect_pipe_pair` gives
the same protocol the same transport interface over both pipes, with no
relay and no copy beyond the one asyncio's pipe transports already make:

* reading: the read pipe, watched by the loop (``pause_reading``/
  ``resume_reading``), read straight into a :class:`asyncio.BufferedProtocol`'s
  ``get_buffer`` (no copy, and never more than it asked for: a DATA body
  the runtime then splices from the pipe is still all in it), or into bytes
  for a plain protocol's ``data_received``;
* writing: the write pipe, written with ``writev()`` (asyncio's pipe
  transport joined a frame's header and body into one new bytes object
  first), what it does not take queued as views of the caller's bytes;
  flow control as a transport's (``pause_writing``/``resume_writing``,
  ``set_write_buffer_limits``); ``write_eof`` closes the write pipe, the
  pipe's EOF;
* ``get_extra_info("socket")`` is None: there is no socket to dup for
  sendfile; ``get_extra_info("read_pipe")`` is the read pipe, which the
  runtime splices bodies from;
* ``connection_made`` before any data, ``eof_received`` from the read
  pipe, ``connection_lost`` once: at the first error (the other pipe is
  then aborted: a channel half gone is gone), or when both pipes have
  ended cleanly (so ``close()`` writes out what is buffered first).
"""

from __future__ import annotations

import asyncio
import collections
import errno
import io
import os
from collections.abc import Callable, Iterable
from typing import Any

from ..runtime.pipes import grow_pipe

READ_SIZE = 256 << 10  # one read for a plain protocol (as asyncio's pipe transport)
IOV_MAX = 1024  # buffers per writev()


class _PipeEnd:
    """One of the channel's pipes, non-blocking, watched by the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, pair: PipePairTransport,
                 file: io.FileIO) -> None:
        self._loop = loop
        self._pair = pair
        self._file = file
        self._fd = file.fileno()
        os.set_blocking(self._fd, False)
        # sshd leaves a channel's pipes at 64 KiB: a 512 KiB frame then takes
        # eight wake-ups of ours and of sshd; at 1 MiB, one.
        grow_pipe(self._fd)
        self._closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._file if name == "pipe" else default

    def is_closing(self) -> bool:
        return self._closing


class _PipeReader(_PipeEnd):
    """The read pipe, read by the loop straight into the protocol's buffer."""

    def __init__(self, loop: asyncio.AbstractEventLoop, pair: PipePairTransport,
                 file: io.FileIO) -> None:
        super().__init__(loop, pair, file)
        self._reading = False

    def is_reading(self) -> bool:
        return self._reading

    def pause_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def resume_reading(self) -> None:
        if not self._reading and not self._closing:
            self._reading = True
            self._loop.add_reader(self._fd, self._read)

    def close(self, exc: Exception | None = None) -> None:
        """Stop reading; the pair hears of it (connection_lost) in a later loop pass."""
        if not self._closing:
            self._closing = True
            self.pause_reading()
            self._loop.call_soon(self._gone, exc)

    def _gone(self, exc: Exception | None) -> None:
        self._file.close()
        self._pair._lost("read", exc)

    def _read(self) -> None:
        protocol = self._pair._protocol
        data = b""
        try:
            if isinstance(protocol, asyncio.BufferedProtocol):
                count = os.readv(self._fd, [protocol.get_buffer(-1)])
            else:
                data = os.read(self._fd, READ_SIZE)
                count = len(data)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.close(exc)
            return
        if not count:  # the writer closed it: EOF, then the read side is gone
            self.pause_reading()
            self._loop.call_soon(self._pair._eof)
            self.close()
        elif data:
            protocol.data_received(data)
        else:
            protocol.buffer_updated(count)


class _PipeWriter(_PipeEnd):
    """The write pipe: buffers written at once with writev(), as many as the
    pipe takes, the rest queued (views of immutable bytes, not copies) until
    it is writable; the protocol paused above the high-water mark."""

    def __init__(self, loop: asyncio.AbstractEventLoop, pair: PipePairTransport,
                 file: io.FileIO) -> None:
        super().__init__(loop, pair, file)
        self._queue: collections.deque[memoryview] = collections.deque()
        self._size = 0  # bytes queued
        self._high, self._low = 64 << 10, 16 << 10
        self._paused = False  # the protocol was told pause_writing()
        self._gone_called = False
        # A pipe whose reader went away reports an error even while we write
        # nothing: watched for reading, as asyncio's pipe transport does.
        self._loop.add_reader(self._fd, self._reader_gone)

    def get_write_buffer_size(self) -> int:
        return self._size

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high = 64 << 10 if high is None else high
        self._low = self._high // 4 if low is None else low
        if not 0 <= self._low <= self._high:
            raise ValueError(f"high ({self._high}) must be >= low ({self._low}) >= 0")

    def writelines(self, buffers: Iterable[bytes | bytearray | memoryview]) -> None:
        if self._closing:
            return
        views = [memoryview(b).cast("B") for b in buffers]
        was_empty = not self._queue
        if was_empty:
            left = self._write_now(views)
            if left is None:
                return
            views = left
        for view in views:
            if view:  # kept as a view of the caller's bytes; a mutable buffer is copied
                self._queue.append(view if isinstance(view.obj, bytes) else memoryview(bytes(view)))
                self._size += len(view)
        if was_empty and self._queue:  # the first bytes queued: wait until it is writable
            self._loop.add_writer(self._fd, self._flush)
        if not self._paused and self._size > self._high:
            self._paused = True
            self._pair._protocol.pause_writing()

    def _write_now(self, views: list[memoryview]) -> list[memoryview] | None:
        """Write what the pipe takes now; the views left, or None on an error."""
        try:
            written = os.writev(self._fd, views[:IOV_MAX]) if views else 0
        except (BlockingIOError, InterruptedError):
            written = 0
        except OSError as exc:
            self._fail(exc)
            return None
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]
        return views

    def _flush(self) -> None:
        left = self._write_now(list(self._queue))
        if left is None:
            return
        self._queue.clear()
        self._queue.extend(left)
        self._size = sum(map(len, left))
        if not left:
            self._loop.remove_writer(self._fd)
        if self._paused and self._size <= self._low:
            self._paused = False
            self._pair._protocol.resume_writing()  # (may write more: queued, watched anew)
        if not self._queue and self._closing:
            self._gone(None)

    def close(self) -> None:
        """Stop taking writes; close once what is queued is written."""
        if not self._closing:
            self._closing = True
            if not self._queue:
                self._loop.call_soon(self._gone, None)

    def abort(self) -> None:
        self._closing = True
        self._drop()
        self._loop.call_soon(self._gone, None)

    def _reader_gone(self) -> None:
        self._fail(BrokenPipeError(errno.EPIPE, "the pipe's reader is gone") if self._queue
                   else None)

    def _fail(self, exc: Exception | None) -> None:
        self._closing = True
        self._drop()
        self._loop.call_soon(self._gone, exc)

    def _drop(self) -> None:
        if self._queue:
            self._queue.clear()
            self._size = 0
            self._loop.remove_writer(self._fd)

    def _gone(self, exc: Exception | None) -> None:
        if self._gone_called:
            return
        self._gone_called = True
        self._loop.remove_reader(self._fd)
        self._file.close()
        self._pair._lost("write", exc)


class PipePairTransport(asyncio.Transport):
    """The two pipes' transports as one (see the module's comment)."""

    def __init__(self, protocol: asyncio.BaseProtocol) -> None:
        super().__init__()
        self._protocol: Any = protocol
        self._reader: _PipeReader | None = None
        self._writer: _PipeWriter | None = None
        self._closing = False
        self._eof_written = False
        self._done: set[str] = set()  # the sides whose transport is gone
        self._lost_reported = False

    # -- the transport interface --------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "socket":
            return None
        if name in ("read_pipe", "write_pipe"):
            side = self._reader if name == "read_pipe" else self._writer
            return side.get_extra_info("pipe", default) if side is not None else default
        return default

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._closing = True
        for side in (self._reader, self._writer):
            if side is not None and not side.is_closing():
                side.close()

    def abort(self) -> None:
        self._closing = True
        if self._writer is not None:
            self._writer.abort()
        if self._reader is not None and not self._reader.is_closing():
            self._reader.close()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol  # type: ignore[no-any-return]

    def is_reading(self) -> bool:
        return self._reader is not None and self._reader.is_reading()

    def pause_reading(self) -> None:
        if self._reader is not None:
            self._reader.pause_reading()

    def resume_reading(self) -> None:
        if self._reader is not None:
            self._reader.resume_reading()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert self._writer is not None
        self._writer.writelines((data,))

    def writelines(self, list_of_data: Any) -> None:
        assert self._writer is not None
        self._writer.writelines(list_of_data)

    def write_eof(self) -> None:
        if self._writer is not None:
            self._eof_written = True
            self._writer.close()  # a pipe's EOF is its writer closing

    def can_write_eof(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        return self._writer.get_write_buffer_size() if self._writer is not None else 0

    def get_write_buffer_limits(self) -> tuple[int, int]:
        assert self._writer is not None
        return self._writer.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        assert self._writer is not None
        self._writer.set_write_buffer_limits(high, low)

    # -- from the two sides ---------------------------------------------------------

    def _eof(self) -> None:
        if not self._protocol.eof_received():
            self.close()

    def _lost(self, side: str, exc: Exception | None) -> None:
        """A side's transport is gone.  An error, or the read side ending while
        we did not close: the channel is lost, the other side aborted.  A
        clean end (EOF read, write_eof, close): reported when both are gone,
        so a close() still writes what is buffered before connection_lost,
        as a socket's transport does."""
        self._done.add(side)
        if self._lost_reported:
            return
        if exc is not None:
            self.abort()
        elif len(self._done) < 2:
            if side == "write" and not self._eof_written and not self._closing:
                self.abort()  # the write pipe went away under us
            else:
                return
        self._lost_reported = True
        self._protocol.connection_lost(exc)


async def connect_pipe_pair(loop: asyncio.AbstractEventLoop, protocol_factory: Callable[[], Any],
                            read_fd: int, write_fd: int) -> tuple[PipePairTransport, Any]:
    """Like ``loop.connect_accepted_socket``, for a channel of two pipes (it owns them then)."""
    read_file = open(read_fd, "rb", buffering=0, closefd=True)  # noqa: SIM115 (the transport owns it)
    write_file = open(write_fd, "wb", buffering=0, closefd=True)  # noqa: SIM115 (the transport owns it)
    try:
        protocol = protocol_factory()
        pair = PipePairTransport(protocol)
        pair._writer = _PipeWriter(loop, pair, write_file)
    except BaseException:
        read_file.close()
        write_file.close()
        raise
    # Made before reading starts: the protocol has its transport before any data.
    protocol.connection_made(pair)
    reader = pair._reader = _PipeReader(loop, pair, read_file)
    if pair._closing:  # the protocol refused the connection in connection_made
        reader.close()
    else:
        reader.resume_reading()
    return pair, protocol
