"""Our STDERR, written by a thread of its own for `sockimux ssh`: what ssh
and the far COMMAND say (:mod:`.sshstderr`) must not hold up the event
loop, which carries the stream and its ACKs.

A reader of our STDERR that stops (a paused pager, a full pipe) would
otherwise block the loop at its next write, and the far side would take
every subflow for stalled.  Here at most :data:`LIMIT` bytes wait for the
thread; past that the callers stop reading ssh's STDERR, so ssh, and
behind it the far COMMAND, wait instead, as with ssh alone.
"""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import Callable

from ..runtime.sink import write_all

LIMIT = 1 << 20  # bytes queued before the callers are asked to wait


class StderrWriter:
    def __init__(self, fd: int = 2) -> None:
        self._fd = fd
        self._queue: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._busy = False  # the thread holds a piece it is writing
        self._gone = False  # STDERR cannot be written: everything is dropped
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._on_room: list[Callable[[], None]] = []

    def write(self, data: bytes) -> bool:
        """Queue ``data``; whether there is room for more now."""
        with self._cond:
            if self._gone or not data:
                return True
            self._queue.append(data)
            self._size += len(data)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="sockimux-stderr",
                                                daemon=True)
                self._thread.start()
            self._cond.notify_all()
            return self._size < LIMIT

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

    def flush(self) -> None:
        """Until everything queued is written (or STDERR is gone)."""
        with self._cond:
            while (self._queue or self._busy) and not self._gone:
                self._cond.wait()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                data = self._queue.popleft()
                self._busy = True
            try:
                write_all(self._fd, [data])
                ok = True
            except OSError:  # closed, or its reader gone
                ok = False
            with self._cond:
                self._busy = False
                self._size -= len(data)
                if not ok:
                    self._gone = True
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
