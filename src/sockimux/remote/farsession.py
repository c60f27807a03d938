"""The far process's session: the stream it carries (``--stream``, e.g. the
far host's sshd at ``TCP:127.0.0.1:22``, or ``--command``: a shell command
line), and every handed-over channel a subflow of it.

Each channel enters the runtime through the same door as any connection,
:meth:`Runner.connection`, by :func:`.adopt.adopt_channel` (which releases
the channel's helper when its subflow ends, so that sshd ends that ssh
connection).  The far process ends when the session ends; if the
:class:`.far.FarHost` stops first (idle timeout, SIGTERM), the session is
aborted, so the near side learns it is over.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable

from ..core.addresses import Exec, TcpConnect, UnixConnect
from ..core.errors import LocalError
from ..core.session import Outcome, Session, SessionConfig
from ..runtime.runner import Runner
from ..runtime.sink import OutputWriter
from ..runtime.stream_address import OpenedStream, open_stream
from .adopt import adopt_channel
from .commandstderr import CommandStderr
from .handoff import Channel

log = logging.getLogger("sockimux.remote")

StreamTarget = Exec | TcpConnect | UnixConnect


def shell_command(line: str) -> Exec:
    """``--command LINE``: run by ``/bin/sh -c``, as ssh runs a remote command
    (socat's EXEC quoting of an arbitrary line would be the user's problem)."""
    address = Exec("sh")
    object.__setattr__(address, "argv", ("/bin/sh", "-c", line))  # frozen; argv is derived
    return address


async def _run(host_factory: type, path: str, listener: object, idle_timeout: float,
               stream: OpenedStream) -> Outcome:
    loop = asyncio.get_running_loop()
    session = Session(os.urandom(16), loop.time(), SessionConfig())
    runner = Runner(session, stream.in_fd, stream.out_fd)
    host = host_factory(path, listener, idle_timeout, lambda channel: on_channel(channel))
    stderr = None if stream.err_fd is None else CommandStderr(loop, stream.err_fd,
                                                              lambda: host.channels)
    if stream.child is not None:  # the FIN tells the near side how COMMAND ended
        runner.input_status = stream.exit_status if stderr is None else _after(stderr, stream)
    if stream.half_close and isinstance(runner.sink, OutputWriter):
        runner.sink.half_close = True
    tasks: set[asyncio.Task[None]] = set()

    async def adopt(channel: Channel) -> None:
        try:
            await adopt_channel(loop, runner.connection, channel)
        except OSError as e:
            log.info("channel not adopted: %s", e)

    def on_channel(channel: Channel) -> None:
        if session.outcome is not None:
            channel.close()
            return
        task = loop.create_task(adopt(channel))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        if stderr is not None:
            stderr.send()  # what COMMAND said before any channel was open

    hosting = loop.create_task(host.run())

    def host_ended(_: object) -> None:
        # Idle timeout or a signal: the session cannot go on without the host.
        session.abort(Outcome.NO_SUBFLOWS, "the far side stopped", loop.time())
        runner.kick()

    hosting.add_done_callback(host_ended)
    try:
        return await runner.run()
    finally:
        hosting.remove_done_callback(host_ended)
        if stderr is not None:
            stderr.close()
        host.stop()
        await asyncio.gather(hosting, *tasks, return_exceptions=True)


def _after(stderr: CommandStderr, stream: OpenedStream) -> Callable[[], Awaitable[int | None]]:
    """The command's exit status once its STDERR is in a helper's socket too:
    the FIN goes after the last of its STDERR (commandstderr.py)."""

    async def status() -> int | None:
        code = await stream.exit_status()
        if code is not None:  # (still running: the stream goes on both ways, STDERR too)
            await stderr.sent()
        return code

    return status


def serve_session(loop: asyncio.AbstractEventLoop, host_factory: type, path: str, listener: object,
                  idle_timeout: float, target: StreamTarget | OpenedStream) -> int:
    """Open the stream (unless it was, before the fork), run the session to
    its end; the far process's exit code."""
    try:
        stream = (target if isinstance(target, OpenedStream)
                  else open_stream(target, stderr_pipe=True))
    except LocalError as e:
        log.error("%s", e)
        return 3
    outcome: Outcome | None = None
    try:
        outcome = loop.run_until_complete(_run(host_factory, path, listener, idle_timeout, stream))
    finally:
        status = stream.finish(carried=outcome is Outcome.DONE)
    log.info("session over: %s (stream command status %s)", outcome.name, status)
    return 0 if outcome is Outcome.DONE else 1
