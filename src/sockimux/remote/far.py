"""The far sockimux's process when started over ssh: detached, reachable by
later ssh connections, and sure to end.

The first ssh connection runs ``python3 -c LOADER sockimux.remote.far ARGS``
(:mod:`.bootstrap`).  That process makes a private directory (mode 0700, a
random name, under ``$XDG_RUNTIME_DIR`` when it is ours, else /tmp) with a
listening UNIX socket in it, then forks:

* the child calls ``setsid()`` (a session of its own: no signal meant for the
  ssh connection's processes reaches it, and it does not end with them),
  puts /dev/null on fds 0-2 (it must hold no channel's descriptor it was not
  handed, or sshd would keep that connection open for as long as it lives)
  and serves hand-offs (:mod:`.handoff`);
* the parent, sshd's child, execs :data:`.handoff.HELPER` on the socket, so
  that the first connection's channel is handed over like every later one
  and the first connection is only the first subflow.

The far process ends when the session ends (:meth:`FarHost.stop`), on
SIGTERM/SIGINT/SIGHUP, or after ``--idle-timeout`` seconds with no channel
open at all (default 300): nobody is left running for ever on someone's
server.  Whichever way it ends, it removes its socket and directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import stat
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import NoReturn

from ..core.address_parser import parse_address
from ..core.addresses import Role, Stdio, TcpConnect, UnixConnect
from ..core.errors import AddressError, LocalError
from ..runtime.stream_address import OpenedStream, open_stream
from .adopt import adopt_channel
from .farsession import StreamTarget, serve_session, shell_command
from .handoff import Channel, helper_argv, preamble, serve_handoffs
from .subsystem import subsystem_command

log = logging.getLogger("sockimux.remote")

DEFAULT_IDLE_TIMEOUT = 300.0
SOCKET_NAME = "s"
EXIT_OK, EXIT_USAGE, EXIT_SETUP = 0, 2, 3


def runtime_base() -> str:
    """Where the private directory goes: ``$XDG_RUNTIME_DIR`` (a tmpfs only we
    can enter, emptied at logout) when it is a directory of ours, else /tmp."""
    base = os.environ.get("XDG_RUNTIME_DIR", "")
    with contextlib.suppress(OSError):
        st = os.stat(base)
        if base and stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077:
            return base
    return tempfile.gettempdir()


def make_listener(base: str | None = None) -> tuple[str, socket.socket]:
    """A fresh 0700 directory with a random name and a listening socket in it."""
    directory = tempfile.mkdtemp(prefix=f"sockimux-{os.getuid()}-", dir=base or runtime_base())
    path = os.path.join(directory, SOCKET_NAME)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(path)
        listener.listen(64)
    except OSError:
        listener.close()
        remove_listener(path)
        raise
    return path, listener


def remove_listener(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
    with contextlib.suppress(OSError):
        os.rmdir(os.path.dirname(path))


class FarHost:
    """Serves hand-offs and counts open channels; stops after ``idle_timeout``
    seconds with none open.  ``on_channel`` gets each new channel (the
    runtime's entry point for connections, once it has one) and must
    :meth:`Channel.close` it when the subflow ends."""

    def __init__(self, path: str, listener: socket.socket, idle_timeout: float,
                 on_channel: Callable[[Channel], None]) -> None:
        self.path = path
        self._listener = listener
        self._idle_timeout = idle_timeout
        self._on_channel = on_channel
        self._open: set[Channel] = set()
        self._stopped = asyncio.Event()
        self._idle: asyncio.TimerHandle | None = None

    @property
    def open_channels(self) -> int:
        return len(self._open)

    @property
    def channels(self) -> set[Channel]:
        """The channels open now."""
        return self._open

    def stop(self) -> None:
        """End the far process (the session is over)."""
        self._stopped.set()

    def _arm_idle(self) -> None:
        if self._idle is None and not self._open:
            loop = asyncio.get_running_loop()
            self._idle = loop.call_later(self._idle_timeout, self._give_up)

    def _give_up(self) -> None:
        log.warning("no subflow for %g s: giving up", self._idle_timeout)
        self.stop()

    def _adopt(self, channel: Channel) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        self._open.add(channel)
        channel.on_close = self._released
        self._on_channel(channel)

    def _released(self, channel: Channel) -> None:
        self._open.discard(channel)
        self._arm_idle()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for signo in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(signo, self.stop)
        line = preamble(os.getpid(), self.path)
        server = loop.create_task(serve_handoffs(self._listener, line, self._adopt))
        self._arm_idle()
        try:
            await self._stopped.wait()
        finally:
            server.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await server
            self._listener.close()
            remove_listener(self.path)
            for channel in list(self._open):
                channel.close()


class Echo(asyncio.BufferedProtocol):
    """Echoes every byte back; closes at EOF.  Reads pause while the echo waits
    to be written, as the runtime's subflows do."""

    def __init__(self) -> None:
        self._buf = bytearray(1 << 16)
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self._buf)

    def buffer_updated(self, nbytes: int) -> None:
        assert self._transport is not None
        self._transport.write(bytes(self._buf[:nbytes]))

    def pause_writing(self) -> None:
        assert self._transport is not None
        self._transport.pause_reading()

    def resume_writing(self) -> None:
        assert self._transport is not None
        self._transport.resume_reading()

    def eof_received(self) -> bool:
        return False  # the transport closes once the echo is written


def loopback(tasks: set[asyncio.Task[None]]) -> Callable[[Channel], None]:
    """A channel handler that echoes (:class:`Echo`): checks the ssh path and
    the hand-off without any session, through the same :func:`.adopt.adopt_channel`
    the runtime will use."""

    async def adopt(channel: Channel) -> None:
        try:
            await adopt_channel(asyncio.get_running_loop(), Echo, channel)
        except OSError as e:
            log.info("loopback channel not adopted: %s", e)

    def on_channel(channel: Channel) -> None:
        task = asyncio.get_running_loop().create_task(adopt(channel))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    return on_channel


def new_loop() -> asyncio.AbstractEventLoop:
    """uvloop when the far host has it; plain asyncio otherwise (all it needs is python3)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line, like every other failure of ours (argparse adds a usage block)."""
        self.exit(EXIT_USAGE, f"sockimux[{os.getpid()}]: far side: {message}\n")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = _Parser(prog="sockimux-far", description="the far side of `sockimux ssh`")
    p.add_argument("--idle-timeout", type=float, default=DEFAULT_IDLE_TIMEOUT, metavar="SEC",
                   help="exit after this long with no subflow (default %(default)g)")
    p.add_argument("--loopback", action="store_true",
                   help="echo each subflow's bytes back (checks ssh and the hand-off; no session)")
    p.add_argument("--log", metavar="FILE", help="append the far side's log here (default: none)")
    p.add_argument("--stream", metavar="ADDR", help="the stream to carry: EXEC:'COMMAND', "
                   "TCP:HOST:PORT, UNIX-CONNECT:PATH (e.g. TCP:127.0.0.1:22)")
    p.add_argument("--command", metavar="LINE", help="the stream is this shell command line")
    p.add_argument("--subsystem", metavar="NAME",
                   help="the stream is the program that serves this ssh subsystem (sftp)")
    args = p.parse_args(argv)
    args.target = None
    if args.command is not None:
        args.target = shell_command(args.command)
    elif args.stream is not None:
        try:
            address = parse_address(args.stream, Role.STREAM)
        except AddressError as e:
            p.error(str(e))
        if isinstance(address, Stdio):
            p.error("--stream STDIO: the far process has no STDIO to carry")
        args.target = address
    if not 0 < args.idle_timeout < 1e9:
        p.error("--idle-timeout must be a number of seconds above 0")
    return args


def _detach(log_path: str | None) -> None:
    """The child's half of the fork: a session of its own, no channel's fds."""
    os.setsid()
    os.chdir("/")
    null = os.open(os.devnull, os.O_RDWR)
    err = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600) if log_path else null
    for fd in (0, 1):
        os.dup2(null, fd)
    os.dup2(err, 2)
    for fd in {null, err}:
        os.close(fd)


def serve(path: str, listener: socket.socket, idle_timeout: float, loopback_mode: bool,
          stream: StreamTarget | OpenedStream | None = None) -> int:
    tasks: set[asyncio.Task[None]] = set()
    handler = loopback(tasks) if loopback_mode else _no_session_yet
    loop = new_loop()
    try:
        if stream is not None and not loopback_mode:
            return serve_session(loop, FarHost, path, listener, idle_timeout, stream)
        host = FarHost(path, listener, idle_timeout, handler)
        loop.run_until_complete(host.run())
    finally:
        loop.close()
    return EXIT_OK


def _no_session_yet(channel: Channel) -> None:
    """Without --stream, --command or --loopback there is nothing to carry."""
    log.warning("no stream to carry: this subflow is refused")
    channel.close()


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    if args.subsystem is not None and args.target is None:
        try:  # (before the fork: a subsystem not served here is said to the user)
            args.target = shell_command(subsystem_command(args.subsystem))
        except LookupError as e:
            print(f"sockimux[{os.getpid()}]: {e}", file=sys.stderr)
            return EXIT_SETUP
    if isinstance(args.target, (TcpConnect, UnixConnect)) and not args.loopback:
        # Before the fork, while our STDERR is still the first ssh's: a far
        # sshd that is not there (no --far-port for its port) is said to
        # the user, not only to the detached process's /dev/null.  (A
        # command is started after it: the detached process is its parent.)
        try:
            args.target = open_stream(args.target)
        except LocalError as e:
            print(f"sockimux[{os.getpid()}]: {e}", file=sys.stderr)
            return EXIT_SETUP
    try:
        path, listener = make_listener()
    except OSError as e:
        return _setup_failed("cannot make the far side's socket", e)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        child = os.fork()
    except OSError as e:
        listener.close()
        remove_listener(path)
        return _setup_failed("cannot start the far side", e)
    if child == 0:
        code = 1
        try:
            _detach(args.log)
            logging.basicConfig(format=f"sockimux-far[{os.getpid()}]: %(message)s", level=logging.INFO)
            code = serve(path, listener, args.idle_timeout, args.loopback, args.target)
        except BaseException as e:  # nobody to show a traceback to: one line in the log
            log.error("internal error: %r", e)
        finally:
            remove_listener(path)
            logging.shutdown()
            os._exit(code)
    listener.close()
    try:
        os.execv(sys.executable, helper_argv(path, sys.executable))
    except OSError as e:
        # The far process idles out and cleans up: nothing to undo here.
        return _setup_failed(f"cannot run {sys.executable} to hand the channel over", e)


def _setup_failed(what: str, error: OSError) -> int:
    print(f"sockimux[{os.getpid()}]: {what}: {error.strerror or error}", file=sys.stderr)
    return EXIT_SETUP
