"""A regular file as the stream's source (STDIN redirected from a file).

See FileInput; source.py holds the other sources and what they share.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import time
from collections.abc import Callable

from ..core import Extent
from .source import Input, InputReader, read_failure

FILE_READ_SIZE = 1024 * 1024  # reads of a regular file on the event loop (2 full DATA frames)
SLOW_READ = 0.05  # seconds: a file read slower than this moves reads to a thread


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


class FileInput(Input):
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
        super().__init__(loop, fd, on_data, on_eof)
        self._scheduled = False
        self._ended = False
        self.worker: InputReader | None = None  # set once reads moved to a thread
        self._extents = extents  # once the storage proved fast, hand out Extents, not bytes
        self.position: int | None = None  # the file position of the next Extent, in that mode
        self._sized = False  # the file reported a size: one below what we read means truncation
        self.sendfile = extents and hasattr(os, "sendfile")  # Extents go by sendfile()

    async def start(self) -> None:
        with contextlib.suppress(OSError):
            self._sized = os.fstat(self._fd).st_size > 0
        self.set_room(self._room)

    def _end(self, error: str | None) -> None:
        self._ended = True
        self._on_eof(error)

    def _at_end(self) -> str | None:
        return truncation(self._fd, self._sized)

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
            data = os.read(self._fd, asked)
        except OSError as exc:
            self._end(read_failure(self._fd, exc))
            return
        if not data:
            self._end(self._at_end())
            return
        self._room -= len(data)
        if time.monotonic() - started > SLOW_READ:
            # Delivered below before the thread reads on: the order holds.
            self.worker = InputReader(self._loop, self._fd, self._on_data, self._on_eof,
                                      at_end=self._at_end)
            self.worker.spawn()
        elif self._extents and len(data) == asked:
            # A short read found the end, whatever the file's size says (files
            # of /sys report 4096 bytes): only a file that gave all we asked
            # is handed out by its size, as Extents.
            with contextlib.suppress(OSError):  # then bytes it stays
                self.position = os.lseek(self._fd, 0, os.SEEK_CUR)
        self._on_data(data)  # the runner answers with set_room(), which reads on

    def _extend(self, position: int) -> None:
        """Hand out the next bytes of the file as an Extent: the file holds them
        until they are sent.  The file position moves on as a read would."""
        try:
            size = os.fstat(self._fd).st_size
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
            os.lseek(self._fd, self.position, os.SEEK_SET)
        self._room -= count
        self._on_data(Extent(position, count))

    # -- sending Extents ---------------------------------------------------------

    def send(self, sock_fd: int, extent: Extent) -> int:
        """sendfile() as much of ``extent`` as the socket takes now; -1 if the
        file no longer holds it (the session is then ended by on_eof)."""
        if not self.sendfile:
            return 0
        try:
            sent = os.sendfile(sock_fd, self._fd, extent.position, extent.length)
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
            size = os.fstat(self._fd).st_size
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
                data = os.pread(self._fd, left, position)
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
