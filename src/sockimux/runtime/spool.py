"""A spool for a STDIN pipe in bulk: its bytes kept in a memfd, sent by sendfile().

Read from a pipe, every byte is copied twice: into our memory (read) and
from it into the socket (write); for a bulk transfer those two copies are
most of the sending side's CPU.  While a pipe STDIN is kept full, LoopInput
(source.py) splices its bytes into a memfd instead (one copy, in the
kernel, and no Python object per read) and hands them out as Extents of
the memfd, just as a regular-file STDIN's are (file_source.py): send()
gives them to the socket by sendfile(), which on Linux passes the memfd's
pages to a UNIX stream socket by reference, without a copy.

The memfd is a ring of ``size`` bytes (the send buffer limit and two
reads more): the byte at stream offset ``o`` is at position ``o % size``,
and is overwritten only once the peer has acknowledged it (fill() never
writes over the unacknowledged), so re-sends read it back as it was.
Writing over pages already there costs the kernel only the copy, where
pages allocated for every new byte and freed behind the acknowledged
ones (a sparse file with holes punched, tried first) cost more than the
two copies they saved.  Pages a sendfile() passed to a socket by reference
are only ever overwritten once acknowledged, that is, once the peer has
written those offsets: a late copy of them (a re-sent range, on a subflow
that stalled) finds the peer past them, and is dropped.  When a burst is
over and acknowledged, the spool is closed (LoopInput): a spool holds
memory only while bulk flows, and at most its size.

Should anything here be missing (no memfd_create or splice, out
of descriptors or memory), the input goes on as bytes: one -v line at most,
never an error.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable

from ..core import Extent

log = logging.getLogger("sockimux")

SPARE = 2 * 1024 * 1024  # ring room beyond the send buffer limit (reads may overshoot it)
PAGE = 4096


class Spool:
    """The memfd holding the bulk bytes of a STDIN pipe; see the module's comment.

    It is an ExtentSource (source.py) for the connections: send(),
    holds(), read_extent().
    """

    def __init__(self, fd: int, size: int, on_error: Callable[[str], None]) -> None:
        self.fd = fd
        self.size = size
        self._on_error = on_error
        self.sendfile = hasattr(os, "sendfile")

    @classmethod
    def create(cls, limit: int, on_error: Callable[[str], None]) -> Spool | None:
        """A new spool for a send buffer of ``limit`` bytes, or None (logged
        at -v) when this system cannot have one."""
        if not (hasattr(os, "memfd_create") and hasattr(os, "splice")):
            log.info("STDIN: no memfd_create or splice here: a pipe is read as bytes")
            return None
        try:
            fd = os.memfd_create("sockimux-stdin", os.MFD_CLOEXEC)
        except OSError as exc:
            log.info("STDIN: no memfd for a pipe in bulk (%s): it is read as bytes",
                     exc.strerror or exc)
            return None
        size = -(-(limit + SPARE) // PAGE) * PAGE
        return cls(fd, size, on_error)

    def room(self, offset: int, acked: int, count: int) -> tuple[int, int]:
        """Where in the ring stream offset ``offset`` goes, and how many bytes
        (at most ``count``) may go there: not over anything the peer has not
        acknowledged (below ``acked``), nor across the ring's end."""
        position = offset % self.size
        return position, min(count, self.size - position, acked + self.size - offset)

    def fill(self, pipe_fd: int, position: int, count: int) -> int:
        """Splice up to ``count`` bytes of ``pipe_fd`` into the ring at
        ``position`` (see room()): how many, 0 at the pipe's end.  Raises
        BlockingIOError when the pipe is empty, OSError otherwise."""
        return os.splice(pipe_fd, self.fd, count, offset_dst=position)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    # -- sending Extents (as FileInput's) -----------------------------------------------

    def send(self, sock_fd: int, extent: Extent) -> int:
        """sendfile() as much of ``extent`` as the socket takes now (0: none,
        or sendfile cannot be used: then the caller reads it)."""
        if not self.sendfile:
            return 0
        try:
            return os.sendfile(sock_fd, self.fd, extent.position, extent.length)
        except BlockingIOError:
            return 0
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                self.sendfile = False
            return 0  # or the socket failed: the transport will say so when given the rest

    def holds(self, extent: Extent) -> bool:
        """Always: the spool keeps every byte not yet acknowledged."""
        return True

    def read_extent(self, extent: Extent) -> bytes | None:
        """The bytes of ``extent``, read back from the spool; None if that
        failed (the session is then ended)."""
        parts = []
        position, left = extent.position, extent.length
        while left:
            try:
                data = os.pread(self.fd, left, position)
            except OSError as exc:
                data, error = b"", exc.strerror or str(exc)
            else:
                error = "it is shorter"  # cannot be: the spool is never truncated
            if not data:
                self._on_error(f"reading STDIN's spool (a memfd) at offset {position} "
                               f"failed: {error}")
                return None
            parts.append(data)
            position += len(data)
            left -= len(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)
