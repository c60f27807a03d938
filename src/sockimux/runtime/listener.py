"""The UNIX socket that subflows connect to: created safely, removed on exit;
while the session runs, it hands every connection it accepts to the runner,
once the connecting user passes the SO_PEERCRED policy."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import socket
import stat
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ..core.errors import LocalError

if TYPE_CHECKING:
    from .connection import SubflowConnection
    from .runner import Runner

MAX_PATH = 107  # sun_path is 108 bytes including the terminating NUL
# Connections the kernel queues before we accept them.  Whoever listens on
# our socket (the event loop's server too) must pass this, or it is lost.
BACKLOG = 512
PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
LOCK_WAIT = 2.0  # seconds we wait for the directory lock (held for microseconds by our own kind)


@contextmanager
def _directory_locked(path: str) -> Iterator[None]:
    """Hold an exclusive flock on the socket's directory: two of us starting
    at once on one stale socket would otherwise both see it stale, and one
    could remove the socket the other has just bound.  Without read access
    to the directory we go on unlocked (the kernel still lets only one bind)."""
    try:
        fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        yield
        return
    try:
        # Bounded: in a shared directory (/tmp) anyone may hold a lock on it for
        # ever; after LOCK_WAIT we go on unlocked rather than hang.
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.005)
            except OSError:
                break  # a file system without locks: go on unlocked
        yield
    finally:
        os.close(fd)  # releases the lock


class Listener:
    """A listening UNIX socket at ``path``.

    We never remove a file that is not a socket, never take over a socket
    another live process listens on, and replace a stale one (nobody
    accepts on it).  The socket file is created with ``mode`` whatever the
    umask, and on close we remove it only if it is still the one we made.
    ``allowed_uids``: the users who may connect (None: anyone the socket's
    mode lets in).
    """

    def __init__(self, path: str, mode: int = 0o600, backlog: int = BACKLOG,
                 allowed_uids: frozenset[int] | None = None) -> None:
        self.path = path
        self.allowed_uids = allowed_uids
        self._server: asyncio.AbstractServer | None = None
        size = len(os.fsencode(path))
        if size > MAX_PATH:
            raise LocalError(f"socket path is too long ({size} bytes, max {MAX_PATH}): {path}")
        # Every OSError of the set-up becomes one line (LocalError): no traceback.
        try:
            with _directory_locked(path):
                self.sock = self._listen(path, mode, backlog)
        except OSError as exc:
            raise LocalError(f"cannot listen on {path}: {exc.strerror or exc}") from None

    def _listen(self, path: str, mode: int, backlog: int) -> socket.socket:
        self._clear_stale(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o777)  # bind creates the file with no permissions...
        try:
            sock.bind(path)
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise LocalError(f"{path}: another process created it at the same moment") from None
            raise LocalError(f"cannot listen on {path}: {exc.strerror}") from None
        finally:
            os.umask(old_umask)
        try:
            os.chmod(path, mode)  # ...and only then gets the mode asked for
            self._ino = os.lstat(path).st_ino
            sock.listen(backlog)
        except OSError as exc:
            sock.close()
            raise LocalError(f"cannot listen on {path}: {exc.strerror}") from None
        sock.setblocking(False)
        return sock

    @staticmethod
    def _clear_stale(path: str) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise LocalError(f"cannot use {path}: {exc.strerror}") from None
        if not stat.S_ISSOCK(st.st_mode):
            raise LocalError(f"{path} exists and is not a socket; refusing to touch it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.setblocking(False)  # a live listener with a full backlog must not block us
        listener_pid = 0
        try:
            probe.connect(path)
            # Who listens (the same path given twice, two API sessions on it: us).
            with contextlib.suppress(OSError):
                creds = probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, PEERCRED.size)
                listener_pid = PEERCRED.unpack(creds)[0]
        except BlockingIOError:
            pass  # its backlog is full: someone is listening
        except ConnectionRefusedError:
            try:
                os.unlink(path)  # stale: left behind by a process that is gone
            except FileNotFoundError:
                pass  # someone else removed it first: bind decides which of us has it
            except OSError as exc:
                raise LocalError(f"cannot remove the stale socket {path}: {exc.strerror}") from None
            return
        except OSError as exc:
            raise LocalError(f"cannot use {path}: {exc.strerror}") from None
        finally:
            probe.close()
        if listener_pid == os.getpid():
            raise LocalError(f"this process already listens on {path}")
        raise LocalError(f"another process is listening on {path}")

    def remove(self) -> None:
        """Remove the socket file if it is still ours."""
        try:
            if os.lstat(self.path).st_ino == self._ino:
                os.unlink(self.path)
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()
        self.remove()

    # -- handing connections to the session (runner.Attached) ----------------------

    async def attach(self, runner: Runner) -> None:
        """Accept connections for ``runner`` until detach()."""

        def connection() -> SubflowConnection:
            return runner.connection(self.admit)

        # The server listens again on the socket: with our backlog, not its default of 100.
        self._server = await runner.loop.create_unix_server(connection, sock=self.sock,
                                                            backlog=BACKLOG)

    def detach(self) -> None:
        if self._server is not None:
            self._server.close()
        self.remove()

    def admit(self, sock: socket.socket) -> str | None:
        """Why a new connection must be refused (its user is not allowed), or None."""
        if self.allowed_uids is None:
            return None
        try:
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, PEERCRED.size)
        except (OSError, AttributeError) as exc:
            return f"refused a connection: cannot tell its user ({exc})"
        pid, uid, _gid = PEERCRED.unpack(creds)
        if uid in self.allowed_uids:
            return None
        return (f"refused a connection from uid {uid} (pid {pid}): only uids "
                f"{', '.join(map(str, sorted(self.allowed_uids)))} may connect (see --allow-uid)")


class TcpListener:
    """A listening TCP socket (``TCP-LISTEN:PORT``, on ``bind`` or every
    address): each connection accepted is a subflow.  There is no
    SO_PEERCRED over TCP: whoever can reach the port may connect, so across
    networks use --psk-file (or carry the subflows over ssh)."""

    def __init__(self, port: int, bind: str | None = None, family: int = socket.AF_UNSPEC,
                 backlog: int = BACKLOG) -> None:
        self.where = f"[{bind}]:{port}" if bind and ":" in bind else f"{bind or '*'}:{port}"
        self._server: asyncio.AbstractServer | None = None
        try:
            if bind is None and family == socket.AF_UNSPEC and socket.has_ipv6:
                # Every address, IPv6 and IPv4 alike (a dual-stack socket).
                fam, address = socket.AF_INET6, ("::", port, 0, 0)
            else:
                infos = socket.getaddrinfo(bind, port, family, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
                fam, _, _, _, address = infos[0]  # type: ignore[assignment]
            self.sock = socket.socket(fam, socket.SOCK_STREAM)
        except OSError as exc:
            raise LocalError(f"cannot listen on TCP {self.where}: {exc.strerror or exc}") from None
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if fam == socket.AF_INET6 and bind is None:
                self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            self.sock.bind(address)
            self.sock.listen(backlog)
            self.sock.setblocking(False)
        except OSError as exc:
            self.sock.close()
            raise LocalError(f"cannot listen on TCP {self.where}: {exc.strerror or exc}") from None

    async def attach(self, runner: Runner) -> None:
        self._server = await runner.loop.create_server(runner.connection, sock=self.sock,
                                                       backlog=BACKLOG)

    def detach(self) -> None:
        if self._server is not None:
            self._server.close()

    def close(self) -> None:
        self.sock.close()
