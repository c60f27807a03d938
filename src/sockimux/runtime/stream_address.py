"""The stream we carry when it is not our own STDIO (``--stream ADDR``).

Opened before the session starts, as a pair of descriptors the runner
takes like STDIN and STDOUT:

- ``EXEC:'COMMAND'``: two pipes, one to the command's STDIN and one from its
  STDOUT (its STDERR is ours).  Pipes, not a socketpair: the event loop
  drives them, DATA is spliced into the command's STDIN, and closing our
  end is an end of file the command sees at once.  After the session the
  command is given a moment to finish; its exit status is then part of
  ours (see cli.py: a non-zero status is exit 9).
- ``TCP:HOST:PORT`` and ``UNIX-CONNECT:PATH``: one connected socket, read
  and written by the runner's threads (blocking I/O), so the end of the
  stream is a shutdown of its sending side (``half_close``), while the
  other direction goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
from dataclasses import dataclass

from ..core.addresses import Exec, Stdio, TcpConnect, UnixConnect
from ..core.errors import LocalError

StreamAddress = Stdio | Exec | TcpConnect | UnixConnect
CONNECT_TIMEOUT = 30.0  # seconds, when the address gives no connect-timeout
EXIT_WAIT = 5.0  # seconds the command may take to exit after the session
KILL_WAIT = 2.0


@dataclass
class OpenedStream:
    in_fd: int
    out_fd: int
    half_close: bool = False  # out_fd is a socket: its end is shutdown(SHUT_WR)
    child: subprocess.Popen[bytes] | None = None
    err_fd: int | None = None  # the command's STDERR, when asked for (open_stream's stderr_pipe)
    held_fd: int | None = None  # our copy of the read end of the command's STDIN (_run)

    def finish(self, carried: bool = True) -> int | None:
        """Wait for the command (EXEC) to exit, terminating it if it does not
        within EXIT_WAIT s; its exit status, negative for a signal (None: no
        command).  ``carried`` False: the session failed, nothing more goes to
        or comes from the command, which is terminated at once (it may be
        blocked writing to us, or be a command that never exits by itself);
        its status is then None unless it had ended by itself (we ended it:
        the session's failure is what counts, not the signal we sent)."""
        child = self.child
        if child is None:
            return None
        if self.held_fd is not None:
            os.close(self.held_fd)
            self.held_fd = None
        if not carried:
            if child.poll() is not None:
                return child.returncode
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(KILL_WAIT)
                return None
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            child.wait()
            return None
        for sig, wait in ((None, EXIT_WAIT), (signal.SIGTERM, KILL_WAIT), (signal.SIGKILL, None)):
            if sig is not None:
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                return child.wait(wait)
        return child.wait()


    async def exit_status(self) -> int | None:
        """Once the command's output has ended: its exit status (negative for
        a signal), if it exits within EXIT_WAIT s; None if it does not, or
        there is no command.  (A command may close its output and run on:
        the end of the stream is not held up for long by one that does.)"""
        child = self.child
        if child is None:
            return None
        loop = asyncio.get_running_loop()
        with contextlib.suppress(subprocess.TimeoutExpired):
            return await loop.run_in_executor(None, child.wait, EXIT_WAIT)
        return None


def open_stream(address: Exec | TcpConnect | UnixConnect,
                stderr_pipe: bool = False) -> OpenedStream:
    """Open the stream at ``address``; LocalError (one line) if it cannot be.
    ``stderr_pipe``: an EXEC command's STDERR is a pipe whose read end is
    ``err_fd`` (else it is ours)."""
    if isinstance(address, Exec):
        return _run(address, stderr_pipe)
    try:
        if isinstance(address, TcpConnect):
            sock = _connect_tcp(address)
        else:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(address.path)
            except BaseException:
                sock.close()
                raise
    except OSError as exc:
        raise LocalError(f"cannot open the stream {address}: {exc.strerror or exc}") from None
    sock.settimeout(None)  # the runner's threads do blocking I/O on it
    in_fd = sock.detach()
    return OpenedStream(in_fd, os.dup(in_fd), half_close=True)


def _connect_tcp(address: TcpConnect) -> socket.socket:
    timeout = address.connect_timeout or CONNECT_TIMEOUT
    if address.device is None:
        source = None if address.bind is None else (str(address.bind.ip), address.bind.port or 0)
        sock = socket.create_connection((address.host, address.port), timeout, source)
    else:
        error: OSError = OSError(f"{address.host}: no address")
        for fam, kind, proto, _, target in socket.getaddrinfo(address.host, address.port,
                                                              type=socket.SOCK_STREAM):
            sock = socket.socket(fam, kind, proto)
            try:
                sock.settimeout(timeout)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, address.device.encode())
                if address.bind is not None:
                    sock.bind((str(address.bind.ip), address.bind.port or 0))
                sock.connect(target)
                break
            except OSError as exc:
                sock.close()
                error = exc
        else:
            raise error
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _run(address: Exec, stderr_pipe: bool) -> OpenedStream:
    fds: list[int] = []
    try:
        to_child, ours_out = os.pipe()
        fds += [to_child, ours_out]
        ours_in, from_child = os.pipe()
        fds += [ours_in, from_child]
        err_in, err_out = os.pipe() if stderr_pipe else (None, None)
        fds += [fd for fd in (err_in, err_out) if fd is not None]
        child = subprocess.Popen(address.argv, stdin=to_child, stdout=from_child, stderr=err_out)
    except OSError as exc:
        for fd in fds:
            os.close(fd)
        raise LocalError(f"cannot run the stream command {address.argv[0]}: "
                         f"{exc.strerror or exc}") from None
    for end in (from_child, err_out):
        if end is not None:
            os.close(end)
    # The read end of the command's STDIN stays open here too: a command that
    # stops reading (exits, closes its STDIN) leaves our writes waiting, not
    # failing with EPIPE, which would end the session and lose what the
    # command still writes (its output, its exit status).  Its end ends the
    # session as ssh's does (the FIN says how it ended; core/closing.py).
    return OpenedStream(ours_in, ours_out, child=child, err_fd=err_in, held_fd=to_child)
