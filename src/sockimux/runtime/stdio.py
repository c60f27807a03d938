"""STDIN and STDOUT, whatever they are (pipe, file, terminal, socket).

Each gets a thread doing plain blocking I/O.  That works for every kind of
file descriptor, including regular files and terminals that asyncio cannot
watch, and it never sets O_NONBLOCK on a file description we share with
other processes (the shell's terminal, a pipe another program holds).
"""

from __future__ import annotations

import asyncio
import errno
import os
import threading
from collections import deque
from collections.abc import Callable

READ_SIZE = 256 * 1024
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


class InputReader:
    """Reads ``fd`` in a thread while the session has room, handing bytes to the loop.

    A background job reading a terminal would be stopped by SIGTTIN; the CLI
    ignores SIGTTIN, so such a read fails with EIO, which we take as an
    empty input, as for /dev/null.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int,
                 on_data: Callable[[bytes], None], on_eof: Callable[[str | None], None]) -> None:
        self._loop = loop
        self._fd = fd
        self._on_data = on_data
        self._on_eof = on_eof
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
                if exc.errno in (errno.EIO, errno.EBADF):
                    call(self._on_eof, None)  # background job on a terminal, or no stdin
                else:
                    call(self._on_eof, exc.strerror)
                return
            if not data:
                call(self._on_eof, None)
                return
            if not call(self._on_data, data):
                return
            if len(data) < size:
                with self._cond:
                    self._room += size - len(data)


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
