"""Process set-up that must come before anything else: the STDIO descriptors
and the open file limit."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import resource
import socket
import stat
import sys
import threading
from typing import NoReturn

from ..core.errors import LocalError

STDIN, STDOUT, STDERR = 0, 1, 2
NAMES = {STDIN: "STDIN", STDOUT: "STDOUT", STDERR: "STDERR"}

# Descriptors a subflow may hold at once: its socket, and a duplicate of it
# while a splice() or sendfile() runs in a thread.
FDS_PER_SUBFLOW = 2
# Descriptors that are not subflows: STDIO and our private copies of it, the
# listener, the event loop's epoll, eventfd and signal pipe, the pipes of the
# splice path, the key file, a few connections being refused as they close.
RESERVED_FDS = 32
# Below this limit not even one subflow fits beside what sockimux holds
# before any (16 descriptors: STDIO and its copies, the event loop's): no
# connection could be opened or accepted, and the session would wait for
# one forever.  So it is refused at start.
MIN_FD_LIMIT = 24
# The kernel's ceiling on RLIMIT_NOFILE when the hard limit is "unlimited".
NR_OPEN = "/proc/sys/fs/nr_open"


def claim_stdio() -> frozenset[int]:
    """Put /dev/null on each of fds 0-2 that is closed; return those that were.

    This must run before any socket or file is created: the kernel hands out
    the lowest free descriptor, so with STDIN or STDOUT closed the listening
    socket would become fd 0 or 1, which the STDIO set-up then takes as our
    input or output and covers with /dev/null.
    """
    closed = set()
    for fd in (STDIN, STDOUT, STDERR):
        try:
            os.fstat(fd)
        except OSError:
            closed.add(fd)
            null = os.open(os.devnull, os.O_RDONLY if fd == STDIN else os.O_WRONLY)
            if null != fd:  # cannot happen while the lower ones are taken, but be sure
                os.dup2(null, fd)
                os.close(null)
    return frozenset(closed)


def check_stdio() -> None:
    """Refuse a STDIN we cannot read or a STDOUT we cannot write (LocalError):
    a directory, or a descriptor opened the other way only."""
    for fd, wrong, need in ((STDIN, os.O_WRONLY, "read"), (STDOUT, os.O_RDONLY, "written")):
        name = NAMES[fd]
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise LocalError(f"{name} is a directory; it cannot be {need}")
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == wrong:
            raise LocalError(f"{name} is open for {'writing' if fd == STDIN else 'reading'} only; "
                             f"it cannot be {need}")


def dead_output() -> int:
    """A descriptor every write to which fails with EPIPE: STDOUT when it was
    closed at start.  Like a consumer that went away, it is an error (exit 4)
    only once there is something to write; an empty stream ends cleanly."""
    ours, theirs = socket.socketpair()
    theirs.close()
    return ours.detach()


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        try:
            with open(NR_OPEN) as f:
                target = int(f.read())
        except (OSError, ValueError):
            target = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError):
            pass  # keep what we have
    return soft


def subflows_allowed(fd_limit: int) -> int:
    """How many subflows fit in ``fd_limit`` descriptors (at least 1)."""
    if fd_limit == resource.RLIM_INFINITY:
        return 1 << 30
    return max(1, (fd_limit - RESERVED_FDS) // FDS_PER_SUBFLOW)


def exit_now(code: int) -> NoReturn:
    """End the process with ``code`` without the interpreter's teardown.

    Freeing every module's objects at exit costs about 10 ms of CPU, a tenth
    of a short run's (a git fetch over ssh, a ProxyCommand per login).  By
    the time cli.main() returns every descriptor of ours is closed and every
    byte written; what is left is flushed here.  A non-daemon thread still
    running (an executor's, e.g. after a getaddrinfo) would be waited for by
    a normal exit: then exit normally.
    """
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.flush()
    logging.shutdown()
    if any(t.is_alive() and not t.daemon and t is not threading.main_thread()
           for t in threading.enumerate()):
        sys.exit(code)
    os._exit(code)
