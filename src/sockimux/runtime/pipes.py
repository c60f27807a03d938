"""What the runtime's pipes share: their size, the splice flags, making one.

Pipes of our own hold bytes by page reference (splice, tee): STDOUT's
(file_sink.py), the bodies held until their turn (holding.py), a STDIN
pipe's spool (spool.py).  STDIN's and STDOUT's own pipes are grown too.
"""

from __future__ import annotations

import errno
import fcntl
import os

F_GETPIPE_SZ = 1032  # fcntl commands, Linux
F_SETPIPE_SZ = 1031
PIPE_SIZE = 1 << 20  # what an unprivileged process may ask for (/proc/sys/fs/pipe-max-size)
SPLICE_NONBLOCK = getattr(os, "SPLICE_F_NONBLOCK", 2)
SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 0) | SPLICE_NONBLOCK


def grow_pipe(fd: int, size: int = PIPE_SIZE) -> None:
    """Make a pipe hold up to ``size`` bytes, if the kernel lets us.  STDOUT:
    with the default 64 KiB, a pipe is mostly full, so few bodies could be
    spliced into it and each write wakes the consumer for little.  STDIN: a
    writer that keeps it full (``cat file |``) fills 1 MiB between our
    reads, and a read takes it in one piece instead of 64 KiB ones."""
    try:
        if fcntl.fcntl(fd, F_GETPIPE_SZ) < size:
            fcntl.fcntl(fd, F_SETPIPE_SZ, size)
    except OSError:
        pass  # not Linux, or over the user's pipe-buffer allowance: keep its size


def new_pipe(size: int, exact: bool = False) -> tuple[int, int]:
    """A pipe of ours (read end, write end), both non-blocking, grown to
    ``size`` if the kernel lets us; with ``exact``, OSError if it did not."""
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    grow_pipe(w, size)
    if exact:
        try:
            if fcntl.fcntl(w, F_GETPIPE_SZ) < size:
                raise OSError(errno.ENOBUFS, "a pipe too small")
        except OSError:
            os.close(r)
            os.close(w)
            raise
    return r, w
