"""Handing an ssh connection's channel to the far sockimux: no relay per subflow.

Every ssh connection after the first runs :data:`HELPER` (``python3 -c``, no
package needed).  It connects to the far sockimux's private UNIX socket,
sends its fds 0 and 1 with SCM_RIGHTS, puts /dev/null in their place and
then copies what comes on that UNIX connection to its STDERR (the far
command's STDERR, :mod:`.commandstderr`) until the far sockimux closes it:
the bytes of the subflow flow between sshd and the far sockimux directly,
the helper never sees them.

Why the helper must wait rather than exit: when a session's command exits,
sshd stops writing to the command's STDIN ("nobody will be interested in
data we write", OpenSSH session.c, session_exit_message), so the near-to-far
direction would go silent while far-to-near still worked; in fact, measured
here, ssh ends the connection about at once.  A blocked read costs no CPU,
and the waiting helper is ``cat`` (see :data:`HELPER`), not python.

Why a read fd and a write fd: OpenSSH on Linux (Debian's 9.2 here) gives the
command two pipes, not a socketpair; other builds give one socket for both.
:class:`Channel` carries either, and :func:`.adopt.adopt_channel` connects
either to a protocol.

Each handed channel first carries one line from the far sockimux, the
preamble (:func:`preamble`, :func:`parse_preamble`): it tells the near side
that the hand-off worked, and, on the first connection, where the far
sockimux listens so that the next connections can reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shlex
import socket
import stat
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

log = logging.getLogger("sockimux.remote")

PREAMBLE_VERSION = 1
HANDOFF_MESSAGE = b"1"  # the hand-off's own version, sent with the descriptors
ACCEPTED = b"k"  # the far sockimux owns the channel now
HANDOFF_TIMEOUT = 10.0  # a connection that sends no descriptors in this time is dropped
EXIT_NO_SESSION = 3  # the helper's exit code when no far sockimux answers at the path

# `python3 -c HELPER SOCKET`: one line, double quotes only (see bootstrap.LOADER).
# Unexpected errors print one line (no traceback) and exit 1.  Once the far
# sockimux has the channel, the helper becomes `cat` from the UNIX connection
# to the channel's STDERR, until EOF: the far sockimux sends the records of
# its command's STDERR that way (commandstderr.py), and a waiting python3
# holds ~3.8 MB of memory of its own, cat ~0.1 MB (128 subflows: ~490 MB
# against ~13 MB on the far host).  Without a cat, python3 copies.
HELPER = (
    'import os,socket,sys;p=sys.argv[1];'
    'sys.excepthook=lambda t,v,b:print("sockimux: hand-off to",p,"failed:",v,file=sys.stderr);'
    's=socket.socket(socket.AF_UNIX);e=s.connect_ex(p);'
    'e and (print("sockimux: no far sockimux at",p+":",os.strerror(e),file=sys.stderr),os._exit(3));'
    'socket.send_fds(s,[b"1"],[0,1]);n=os.open(os.devnull,os.O_RDWR);os.dup2(n,0);os.dup2(n,1);'
    's.recv(1)==b"k" or (print("sockimux: the far sockimux at",p,"refused this connection",'
    'file=sys.stderr),os._exit(3));os.dup2(s.fileno(),0);os.dup2(2,1);'
    '[os.access(x,os.X_OK) and os.execv(x,["cat"]) for x in ("/bin/cat","/usr/bin/cat")];'
    '[os.write(2,d) for d in iter(lambda:s.recv(65536),b"")]'
)


def helper_command(socket_path: str, python: Sequence[str] = ("python3",)) -> str:
    """The command line ssh runs for every subflow after the first."""
    return " ".join(shlex.quote(w) for w in [*python, "-c", HELPER, socket_path])


def helper_argv(socket_path: str, python: str) -> list[str]:
    """The helper as an argv, for the first connection's process to exec."""
    return [python, "-I", "-c", HELPER, socket_path]


@dataclass(frozen=True)
class FarInfo:
    """What the preamble line says."""

    version: int
    pid: int
    socket: str


def preamble(pid: int, socket_path: str) -> bytes:
    """``sockimux-far VERSION key=value...``: unknown keys are ignored by the
    reader, so later versions can add some without breaking this one."""
    return b"sockimux-far %d pid=%d socket=%s\n" % (PREAMBLE_VERSION, pid, socket_path.encode())


_PREAMBLE = re.compile(rb"sockimux-far (\d+)((?: [a-z]+=[^ \n]*)*)\n\Z")


def parse_preamble(line: bytes) -> FarInfo:
    """The near side's check of the first line a channel carries."""
    match = _PREAMBLE.match(line)
    if match is None:
        raise ValueError(f"not a sockimux far side: {line[:80]!r}")
    version = int(match[1])
    if version != PREAMBLE_VERSION:
        raise ValueError(f"far side speaks preamble version {version}, we speak {PREAMBLE_VERSION}")
    fields = dict(item.split(b"=", 1) for item in match[2].split())
    try:
        return FarInfo(version, int(fields[b"pid"]), fields[b"socket"].decode())
    except (KeyError, ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"malformed preamble: {line[:80]!r}") from e


@dataclass(eq=False)
class Channel:
    """One ssh channel handed over: a socket (``sock``), or a read pipe and a
    write pipe.  Closing it (:meth:`close`) lets its helper exit, and then
    sshd ends the ssh connection."""

    read_fd: int
    write_fd: int
    sock: socket.socket | None
    keeper: socket.socket  # the helper's UNIX connection
    on_close: Callable[[Channel], None] = lambda channel: None
    closed: bool = field(default=False, init=False)

    def take_fds(self) -> tuple[int, int]:
        """Hand the descriptors over (to transports): :meth:`close` no longer closes them."""
        fds = self.read_fd, self.write_fd
        self.read_fd = self.write_fd = -1
        return fds

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.sock is not None:
            self.sock.close()
        else:
            for fd in {self.read_fd, self.write_fd} - {-1}:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.read_fd = self.write_fd = -1
        self.keeper.close()
        self.on_close(self)


def _same_socket(a: int, b: int) -> bool:
    sa, sb = os.fstat(a), os.fstat(b)
    return stat.S_ISSOCK(sa.st_mode) and (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _write_all_blocking(fd: int, data: bytes) -> None:
    was_blocking = os.get_blocking(fd)
    os.set_blocking(fd, True)
    try:
        while data:
            data = data[os.write(fd, data):]
    finally:
        os.set_blocking(fd, was_blocking)


def make_channel(fds: Sequence[int], keeper: socket.socket, line: bytes) -> Channel:
    """Check two received descriptors, send the preamble ``line`` on the write
    side, and wrap them.  Owns ``fds``: closes them on any error."""
    try:
        if len(fds) != 2:
            raise ValueError(f"{len(fds)} descriptors instead of 2")
        read_fd, write_fd = fds
        _write_all_blocking(write_fd, line)
        if _same_socket(read_fd, write_fd):
            os.close(write_fd)
            sock = socket.socket(fileno=read_fd)
            sock.setblocking(False)
            return Channel(read_fd, read_fd, sock, keeper)
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)
        return Channel(read_fd, write_fd, None, keeper)
    except BaseException:
        for fd in set(fds):
            with contextlib.suppress(OSError):
                os.close(fd)
        raise


async def wait_readable(sock: socket.socket, timeout: float) -> None:
    """Until ``sock`` has something to read (or EOF); TimeoutError after ``timeout``."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock.fileno(), wake)
    try:
        await asyncio.wait_for(ready, timeout)
    finally:
        loop.remove_reader(sock.fileno())


async def receive_channel(conn: socket.socket, line: bytes) -> Channel:
    """One hand-off on an accepted UNIX connection: the helper's credentials,
    its message and its two descriptors; then the preamble and our ACCEPTED."""
    uid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1]
    if uid != os.getuid():  # the 0700 directory already stops others: belt and braces
        raise PermissionError(f"hand-off from uid {uid}")
    await wait_readable(conn, HANDOFF_TIMEOUT)
    msg, fds, flags, _ = socket.recv_fds(conn, 16, 4)
    if flags & socket.MSG_CTRUNC or msg != HANDOFF_MESSAGE:
        for fd in fds:
            os.close(fd)
        raise ValueError(f"unexpected hand-off message {msg!r} with {len(fds)} descriptors")
    channel = make_channel(fds, conn, line)
    try:
        conn.setblocking(True)
        conn.send(ACCEPTED)  # one byte into an empty socket buffer: never blocks
        conn.setblocking(False)
    except OSError:
        channel.close()  # the helper is gone, and with it, soon, the ssh connection
        raise
    return channel


async def serve_handoffs(listener: socket.socket, line: bytes,
                         on_channel: Callable[[Channel], None]) -> None:
    """Accept hand-offs on ``listener`` for ever, calling ``on_channel`` with each
    channel; a failed hand-off is logged and dropped (its helper exits 3 or 1)."""
    loop = asyncio.get_running_loop()
    listener.setblocking(False)
    tasks: set[asyncio.Task[None]] = set()

    async def one(conn: socket.socket) -> None:
        try:
            channel = await receive_channel(conn, line)
        except (OSError, ValueError, asyncio.TimeoutError) as e:
            log.warning("a hand-off failed: %s", e)
            conn.close()
            return
        on_channel(channel)

    while True:
        conn, _ = await loop.sock_accept(listener)
        conn.setblocking(False)
        task = loop.create_task(one(conn))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
