"""ssh's STDERR in `sockimux ssh`: passed on to ours, line by line, through
a pipe of ours rather than inherited.

Why not inherited: every ssh of a session that cannot connect (no sshd,
authentication refused, a host name that does not resolve) says so, and
the dialer re-opens each of N subflows over and over; inherited, the same
line came out dozens of times a minute (a retry storm on the terminal of a
ProxyCommand).  Here a line that was said in the last :data:`QUIET_FOR`
seconds is not said again.  The last lines are also kept, so that an ssh
that exits 255 can be told apart: refused for good (authentication, an
unknown host name, a changed host key) or worth re-opening (refused
connection, network down).

A line that is a record of the far COMMAND's STDERR (:mod:`.commandstderr`)
is not ssh's: its bytes are written as they are, and never held back.
Everything goes to our STDERR through :mod:`..stderrwriter` (a thread),
in one queue with our own lines: while it holds as much as it may, ssh's
STDERR is not read.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import time

from ..stderrwriter import stderr_writer
from .commandstderr import decode

QUIET_FOR = 10.0  # seconds before the same line of ssh is shown again
KEPT = 20  # last lines kept for the exit's diagnosis
LINE_MAX = 4096  # a longer "line" is passed on in pieces

# What a `sockimux ssh` that our own ssh started through a ProxyCommand of the
# ssh config, for the same host, says before it exits (sshmode.py): a loop.
NESTED = "was started by its own ssh connection to"

# ssh's messages (OpenSSH) that no re-opening can change.
FOR_GOOD = (
    NESTED,
    "Permission denied (",  # authentication refused
    "Name or service not known",  # Could not resolve hostname ...: no such name (not a DNS outage)
    "Host key verification failed",
    "REMOTE HOST IDENTIFICATION HAS CHANGED",
)

_said: dict[bytes, float] = {}  # line -> when it was last shown, over all ssh processes
_open: set[SshStderr] = set()  # not at their end yet (drain_all)


class SshStderr:
    """The read end of one ssh's STDERR pipe, watched by the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, read_fd: int) -> None:
        self._loop = loop
        self._fd: int | None = read_fd
        self._partial = b""
        self.lines: collections.deque[str] = collections.deque(maxlen=KEPT)
        self._paused = False
        os.set_blocking(read_fd, False)
        loop.add_reader(read_fd, self._readable)
        _open.add(self)

    def _readable(self) -> None:
        self.drain(bounded=True)

    def _room_again(self) -> None:
        """(From the writer's thread.)"""
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to read any more
            self._loop.call_soon_threadsafe(self._resume)

    def _resume(self) -> None:
        if self._paused and self._fd is not None:
            self._paused = False
            self._loop.add_reader(self._fd, self._readable)
            self.drain(bounded=True)

    def drain(self, bounded: bool = False) -> None:
        """Pass on what ssh wrote so far (all of it, once ssh has exited).
        ``bounded``: stop, and read again later, while our STDERR's writer
        has as much as it may hold (ssh then waits)."""
        while self._fd is not None:
            if bounded and stderr_writer.full:
                self._paused = True
                self._loop.remove_reader(self._fd)
                stderr_writer.when_room(self._room_again)
                return
            try:
                chunk = os.read(self._fd, 65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                chunk = b""
            if not chunk:
                if self._partial:
                    self._line(self._partial)
                    self._partial = b""
                self.close()
                return
            self._partial += chunk
            while (end := self._partial.find(b"\n")) >= 0 or len(self._partial) > LINE_MAX:
                cut = end + 1 if end >= 0 else LINE_MAX
                self._line(self._partial[:cut])
                self._partial = self._partial[cut:]

    def _line(self, line: bytes) -> None:
        record = decode(line)
        if record is not None:  # the far COMMAND's STDERR: as it was, every time
            stderr_writer.write(record)
            return
        self.lines.append(line.decode(errors="replace").rstrip("\r\n"))
        now = time.monotonic()
        key = line.rstrip(b"\r\n")
        if now - _said.get(key, -QUIET_FOR) < QUIET_FOR:
            return
        if len(_said) > 1000:  # a long session of varied messages: forget the old ones
            _said.clear()
        _said[key] = now
        if not line.endswith(b"\n"):
            line += b"\n"
        stderr_writer.write(line)  # (before our own lines that follow: one queue)

    def refused_for_good(self) -> str | None:
        """The line of ssh that says re-opening cannot help, if it said one."""
        for line in self.lines:
            if any(mark in line for mark in FOR_GOOD):
                return line.strip()
        return None

    def close(self) -> None:
        if self._fd is not None:
            if not self._paused:
                self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None
            _open.discard(self)


def drain_all() -> None:
    """Pass on what every ssh still open wrote so far, and wait until it is
    written (the session is over: its ssh processes have exited, or have
    been ended)."""
    for messages in list(_open):
        messages.drain()
    stderr_writer.flush()
