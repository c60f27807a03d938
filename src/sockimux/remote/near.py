"""Opening one ssh connection of `sockimux ssh` from the near side, up to the
point where it is a plain connected socket that carries a subflow.

Each connection is ``ssh`` (:func:`.sshcmd.ssh_argv`) with one end of a
socketpair as its STDIN and STDOUT (so the runtime adopts a socket, and
splice keeps working), its STDERR passed on to ours (ssh's own messages, a
far-side failure: one line each, for the user; a line repeated by ssh after
ssh is not repeated: :mod:`.sshstderr`).  The first connection writes the
bootstrap (:func:`.bootstrap.bootstrap_input`); every connection then reads
the far side's preamble, exactly (peeked up to its newline: the far side may
send the subflow's first bytes right after it), and is ready.

Why the exceptions say fatal or not: a helper exiting 3 means the far
sockimux is gone (the session ended, or it idled out), a remote exit 127
that ``python3`` is not there, a wrong preamble that something else
answers: retrying cannot help; so does ssh's own 255 when ssh said it
was refused for good (authentication, no such host name) before the far
side was ever reached.  Any other 255 (connection refused, network down)
and a connection cut during start-up may heal, and re-opening is the
runtime's job (:mod:`sockimux.core.reopen`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import signal
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field

from .bootstrap import DEFAULT_PYTHON, bootstrap_input, remote_command
from .handoff import EXIT_NO_SESSION, FarInfo, helper_command, parse_preamble, wait_readable
from .sshcmd import ssh_argv
from .sshstderr import SshStderr

FAR_ENTRY = "sockimux.remote.far"
PREAMBLE_TIMEOUT = 60.0  # a login, the bootstrap and the fork, on a slow link
PREAMBLE_MAX = 512
EXIT_NOT_FOUND = 127  # the remote shell found no such command
_MAY_PASS = {errno.EMFILE, errno.ENFILE, errno.EAGAIN, errno.ENOMEM}  # spawning ssh: not for good

_bootstrap_input = functools.cache(bootstrap_input)  # 75 KB, 23 ms to build: once per process


class OpenFailed(Exception):
    """The connection did not become a subflow; ``fatal``: re-opening cannot help."""

    def __init__(self, message: str, fatal: bool) -> None:
        super().__init__(message)
        self.fatal = fatal


@dataclass
class FarTarget:
    """Where and how the ssh connections of one session go."""

    destination: str
    ssh_options: Sequence[str] = ()
    python: Sequence[str] = DEFAULT_PYTHON
    far_args: Sequence[str] = ()  # for the first connection: the far process's options
    ssh: str = "ssh"
    info: FarInfo | None = field(default=None, init=False)  # known once the first is open
    failed: OpenFailed | None = field(default=None, init=False)  # starting it cannot heal


@dataclass
class OpenConnection:
    """An ssh connection whose channel carries a subflow: ``sock`` is ours."""

    sock: socket.socket
    process: asyncio.subprocess.Process
    messages: SshStderr | None = None


async def _read_preamble(sock: socket.socket, process: asyncio.subprocess.Process,
                         timeout: float, messages: SshStderr | None = None,
                         first: bool = False) -> FarInfo:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            peeked: bytes | None = sock.recv(PREAMBLE_MAX, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            peeked = None
        except OSError:
            peeked = b""  # reset: as good as EOF
        if peeked == b"":
            raise _exit_error(await process.wait(), messages, first)
        if peeked is not None:
            end = peeked.find(b"\n")
            if end >= 0:
                line = sock.recv(end + 1)  # exactly the line: the subflow's bytes stay queued
                try:
                    return parse_preamble(line)
                except ValueError as e:
                    raise OpenFailed(str(e), fatal=True) from None
            if len(peeked) >= PREAMBLE_MAX:
                raise OpenFailed(f"not a sockimux far side: {peeked[:80]!r}", fatal=True)
        left = deadline - loop.time()
        if left <= 0:
            raise OpenFailed(f"no answer from the far side within {timeout:g} s", fatal=False)
        if peeked:
            await asyncio.sleep(min(0.01, left))  # part of a line: readable already, poll
            continue
        with contextlib.suppress(asyncio.TimeoutError):
            await wait_readable(sock, left)


def _exit_error(code: int, messages: SshStderr | None = None, first: bool = False) -> OpenFailed:
    if code == EXIT_NO_SESSION:
        if first and messages is not None:  # the far side's own setup failed: it said why
            messages.drain()
            if messages.lines:
                return OpenFailed(f"the far side could not start ({messages.lines[-1].strip()})",
                                  fatal=True)
        return OpenFailed("the far sockimux is gone (the session ended there)", fatal=True)
    if code == EXIT_NOT_FOUND:
        return OpenFailed("no python3 on the far host (sockimux needs python 3.10 or later there)",
                          fatal=True)
    if code == 255:
        if messages is not None:
            messages.drain()  # ssh has exited: all it said is in the pipe
            said = messages.refused_for_good()
            if said is not None and first:
                return OpenFailed(f"ssh cannot reach the far host: {said}", fatal=True)
        return OpenFailed("ssh failed (see its message above)", fatal=False)
    return OpenFailed(f"the far side exited with {code} before it was ready", fatal=False)


async def open_connection(target: FarTarget, timeout: float = PREAMBLE_TIMEOUT) -> OpenConnection:
    """The first connection of a session (starts the far side, sets
    ``target.info``) or a further one (hands its channel to it)."""
    first = target.info is None
    if first and target.failed is not None:
        raise target.failed  # the far side cannot start for good: said once, not per subflow
    if first:
        command = remote_command(FAR_ENTRY, target.far_args, target.python)
    else:
        assert target.info is not None
        command = helper_command(target.info.socket, target.python)
    ours, theirs = socket.socketpair()
    try:
        err_read, err_write = os.pipe()
    except OSError:
        ours.close()
        theirs.close()
        raise  # short of descriptors: the dialer tries again later
    try:
        process = await asyncio.create_subprocess_exec(
            *ssh_argv(target.destination, command, target.ssh_options, target.ssh),
            stdin=theirs.fileno(), stdout=theirs.fileno(), stderr=err_write,
            start_new_session=True)
    except OSError as e:
        ours.close()
        os.close(err_read)
        # Short of descriptors, processes or memory now (ulimit): that may pass.
        raise OpenFailed(f"cannot run {target.ssh}: {e.strerror or e}",
                         fatal=e.errno not in _MAY_PASS) from None
    finally:
        theirs.close()
        os.close(err_write)
    messages = SshStderr(asyncio.get_running_loop(), err_read)
    try:
        ours.setblocking(False)
        loop = asyncio.get_running_loop()
        if first:
            try:
                await loop.sock_sendall(ours, _bootstrap_input())
            except OSError:  # ssh is gone already (no sshd, no route): its exit says why
                with contextlib.suppress(ProcessLookupError):
                    process.kill()  # (or it is not: then it failed to take its input)
                raise _exit_error(await process.wait(), messages, first) from None
        info = await _read_preamble(ours, process, timeout, messages, first)
        if target.info is None:
            target.info = info
        elif info != target.info:
            raise OpenFailed(f"reached another far sockimux (pid {info.pid}, not "
                             f"{target.info.pid})", fatal=True)
    except BaseException as exc:
        ours.close()
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        messages.drain()
        if first and isinstance(exc, OpenFailed) and exc.fatal:
            target.failed = exc
        raise
    return OpenConnection(ours, process, messages)


def kill(connection: OpenConnection) -> None:
    """Close our end and stop its ssh (a subflow given up, or the session over)."""
    connection.sock.close()
    with contextlib.suppress(ProcessLookupError):
        connection.process.send_signal(signal.SIGTERM)
