"""Our STDERR, written by a thread of its own while a session runs.

Everything sockimux says during a session (its log lines, the stats, the
progress line, and in `sockimux ssh` what ssh and the far COMMAND say)
must not hold up the event loop, which carries the stream and its ACKs.
A reader of our STDERR that stops (a paused pager, a full pipe nobody
reads, a terminal stopped by ^S) would otherwise block the loop at its
next write, and the peer would take every subflow for stalled.

So writes are queued here, at most :data:`LIMIT` bytes, and a thread
writes them in order.  Past that, `sockimux ssh` stops reading ssh's
STDERR (ssh, and the far COMMAND behind it, wait, as with ssh alone), and
our own lines are dropped and counted (QueuedStderr): a line is never
worth the stream.  At the end, what is queued is written unless STDERR
takes nothing for :data:`PATIENCE` seconds.
"""

from __future__ import annotations

import collections
import contextlib
import io
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO

from .runtime.sink import write_all

LIMIT = 1 << 20  # bytes queued before the callers are asked to wait
PATIENCE = 10.0  # seconds with nothing written before the end gives up on STDERR


class StderrWriter:
    def __init__(self, fd: int = 2) -> None:
        self._fd = fd
        self._queue: collections.deque[bytes] = collections.deque()
        self._size = 0  # bytes queued or being written: until written, a piece counts
        self._gone = False  # STDERR cannot be written: everything is dropped
        self._written_at = 0.0  # when the thread last finished a write
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._on_room: list[Callable[[], None]] = []

    def write(self, data: bytes) -> bool:
        """Queue ``data``; whether there is room for more now."""
        with self._cond:
            if self._gone or not data:
                return True
            if self._thread is not None or self._start():
                self._queue.append(data)
                self._size += len(data)
                self._cond.notify_all()
                return self._size < LIMIT
        with contextlib.suppress(OSError):  # no thread to be had (a process limit): written here
            write_all(self._fd, [data])
        return True

    def _start(self) -> bool:
        thread = threading.Thread(target=self._run, name="sockimux-stderr", daemon=True)
        try:
            thread.start()
        except RuntimeError:
            return False
        self._thread = thread
        self._written_at = time.monotonic()
        return True

    @property
    def full(self) -> bool:
        """LIMIT bytes or more wait: a caller should stop until when_room()."""
        with self._cond:
            return self._size >= LIMIT and not self._gone

    def when_room(self, callback: Callable[[], None]) -> None:
        """``callback()`` once fewer than LIMIT bytes wait (from the thread,
        or at once if that is so already)."""
        with self._cond:
            if self._size >= LIMIT and not self._gone:
                self._on_room.append(callback)
                return
        callback()

    def flush(self, patience: float = PATIENCE) -> None:
        """Until everything queued is written, or STDERR has taken nothing
        for ``patience`` seconds (then the rest is dropped, and so is
        everything written after)."""
        with self._cond:
            while self._size > 0 and not self._gone:
                idle = time.monotonic() - self._written_at
                if idle >= patience:
                    self._gone = True
                    self._queue.clear()
                    self._size = 0
                    break
                self._cond.wait(patience - idle)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                data = self._queue.popleft()
            try:
                write_all(self._fd, [data])
                ok = True
            except OSError:  # closed, or its reader gone
                ok = False
            with self._cond:
                self._written_at = time.monotonic()
                self._size -= len(data)
                if not ok:
                    self._gone = True
                if self._gone:
                    self._queue.clear()
                    self._size = 0
                callbacks: list[Callable[[], None]] = []
                if self._size < LIMIT:
                    callbacks, self._on_room = self._on_room, []
                self._cond.notify_all()
            for callback in callbacks:
                with contextlib.suppress(Exception):  # (a thread of ours prints no traceback)
                    callback()


stderr_writer = StderrWriter()


class QueuedStderr(io.TextIOBase):
    """``sys.stderr`` while a session runs: text goes to the writer's queue
    and the caller never waits.  With the queue full, a write is dropped
    and counted; the count is said before the next line that fits.  flush()
    does not wait (logging calls it after every line): the end does
    (queued_stderr())."""

    def __init__(self, original: IO[str], writer: StderrWriter) -> None:
        super().__init__()
        self._original = original
        self._writer = writer
        self.dropped = 0

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    @property
    def errors(self) -> str:  # type: ignore[override]
        return "backslashreplace"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        try:
            return self._original.isatty()
        except (OSError, ValueError):
            return False

    def fileno(self) -> int:
        return self._original.fileno()

    def write(self, text: str) -> int:
        writer = self._writer
        if writer.full:
            self.dropped += 1
            return len(text)
        if self.dropped:
            writer.write(f"sockimux[{os.getpid()}]: {self.dropped} lines not shown "
                         "(STDERR was not read)\n".encode())
            self.dropped = 0
        writer.write(text.encode("utf-8", "backslashreplace"))
        return len(text)

    def flush(self) -> None:
        pass


@contextlib.contextmanager
def queued_stderr(writer: StderrWriter = stderr_writer) -> Iterator[None]:
    """sys.stderr queued for the writer's thread within; at the end,
    everything queued written (see StderrWriter.flush) and sys.stderr
    as it was."""
    original = sys.stderr
    sys.stderr = QueuedStderr(original, writer)
    try:
        yield
    finally:
        writer.flush()
        sys.stderr = original
