"""The Python API: a sockimux session whose stream is this program's, not STDIO.

``open_session(listen=[...], connect=[...])`` listens and/or connects on
socat-style addresses (as ``--listen``/``--connect``) and gives the stream
as a :class:`Stream`: ``read``/``write``/``drain``/``write_eof``/``close``.
The stream's ends are an in-process StreamSource/StreamSink pair: the
session acknowledges incoming bytes only once the application has read
them (the CLI's "ACK only what is written"), so a reader that stops
reading holds the far writer back within about a window; and ``drain()``
waits while the session takes no more input (its send buffer is full).
See docs/API.md.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from types import TracebackType

from .core.address_parser import parse_address
from .core.addresses import Role
from .core.errors import SockimuxError
from .core.events import Outcome
from .core.sender import Extent
from .core.session import Session, SessionConfig
from .core.stats import SessionStats
from .runtime.assembly import Listening, close_all, listen_on
from .runtime.dialer import Dialer
from .runtime.runner import Attached, Runner


class SessionError(SockimuxError):
    """The session ended otherwise than with both streams carried
    (``outcome`` says how, ``reason`` why)."""

    def __init__(self, outcome: Outcome, reason: str) -> None:
        super().__init__(f"session ended: {outcome.value}" + (f" ({reason})" if reason else ""))
        self.outcome = outcome
        self.reason = reason


class _Ends:
    """The stream's two ends inside the session (runner.StreamEnds): the
    source takes what the application writes, the sink keeps what the
    session delivers until the application reads it."""

    def __init__(self) -> None:
        self._on_data: Callable[[bytes | Extent], None] | None = None
        self._on_eof: Callable[[str | None], None] | None = None
        self._on_written: Callable[[int], None] | None = None
        self._on_error: Callable[[str], None] | None = None
        self._on_closed: Callable[[], None] | None = None
        self.room = 0  # what the session takes now
        self.outgoing: deque[bytes] = deque()  # written, not yet handed to the session
        self.outgoing_size = 0
        self.eof_asked = False  # write_eof(): handed on once `outgoing` is empty
        self.eof_sent = False
        self.incoming: deque[bytes] = deque()  # delivered, not yet read
        self.incoming_eof = False  # the peer's stream ended (after `incoming`)
        self.closed_reported = False
        self.scheduled = False  # a push() is due from the loop
        self.changed = asyncio.Event()  # set on any change a waiting read/drain cares for

    # -- runner.StreamEnds ------------------------------------------------------------

    def source(self, on_data: Callable[[bytes | Extent], None],
               on_eof: Callable[[str | None], None]) -> _Ends:
        self._on_data, self._on_eof = on_data, on_eof
        return self

    def sink(self, on_written: Callable[[int], None], on_error: Callable[[str], None],
             on_closed: Callable[[], None]) -> _Ends:
        self._on_written, self._on_error, self._on_closed = on_written, on_error, on_closed
        return self

    async def start(self) -> None:
        self.push()

    # -- the source (StreamSource) --------------------------------------------------

    def set_room(self, room: int) -> None:
        # Called from inside the runner's flush: hand bytes on from the loop,
        # not re-entering the session mid-step.
        self.room = room
        if not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self.push)

    def push(self) -> None:
        """Hand the session what it has room for, then the end if asked."""
        self.scheduled = False
        if self._on_data is None:
            return
        while self.outgoing and self.room > 0:
            data = self.outgoing.popleft()
            if len(data) > self.room:
                data, rest = data[:self.room], data[self.room:]
                self.outgoing.appendleft(rest)
            self.outgoing_size -= len(data)
            self.room -= len(data)
            self._on_data(data)  # the runner answers with set_room() at its next flush
        if not self.outgoing and self.eof_asked and not self.eof_sent and self._on_eof is not None:
            self.eof_sent = True
            self._on_eof(None)
        self.changed.set()

    # -- the sink (StreamSink) ------------------------------------------------------

    def write(self, buffers: list[bytes | bytearray | memoryview]) -> None:
        self.incoming.extend(bytes(b) for b in buffers)
        self.changed.set()

    def close(self) -> None:
        self.incoming_eof = True
        self.report_closed()
        self.changed.set()

    def report_closed(self) -> None:
        if self.incoming_eof and not self.incoming and not self.closed_reported:
            self.closed_reported = True
            if self._on_closed is not None:
                self._on_closed()

    def consumed(self, count: int) -> None:
        """The application read ``count`` bytes: only now are they acknowledged."""
        if self._on_written is not None and count:
            self._on_written(count)
        self.report_closed()

    def abandon(self) -> None:
        """The application closed the stream before reading it to its end."""
        if not self.incoming_eof and self._on_error is not None:
            self._on_error("the application closed the stream")


class Stream:
    """The session's stream, as an async reader/writer pair (see open_session)."""

    def __init__(self, ends: _Ends, task: asyncio.Task[Outcome], runner: Runner) -> None:
        self._ends = ends
        self._task = task
        self._runner = runner
        self._closing = False

    def _check(self) -> None:
        """Raise SessionError if the session is over and did not succeed."""
        task = self._task
        if not task.done():
            return
        if task.cancelled():
            raise SessionError(Outcome.INTERRUPTED, "the session's task was cancelled")
        failure = task.exception()
        if failure is not None:  # a bug in sockimux: still one of our errors, the cause kept
            raise SessionError(Outcome.INTERRUPTED, f"internal error: {failure!r}") from failure
        outcome = task.result()
        if outcome is not Outcome.DONE:
            raise SessionError(outcome, self._runner.session.outcome_reason)

    async def _wait(self) -> None:
        """Until the stream or the session changes."""
        ends = self._ends
        ends.changed.clear()
        changed = asyncio.ensure_future(ends.changed.wait())
        try:
            await asyncio.wait({changed, self._task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            changed.cancel()

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (-1: whatever has arrived) of the peer's stream,
        waiting for some; b"" at its end.  SessionError if the session failed."""
        ends = self._ends
        if n == 0:  # as asyncio.StreamReader.read(0): nothing asked, nothing waited for
            self._check()
            return b""
        while not ends.incoming:
            if ends.incoming_eof:
                return b""
            self._check()
            if self._task.done():
                return b""
            await self._wait()
        parts: list[bytes] = []
        left = n if n >= 0 else 1 << 62
        while ends.incoming and left > 0:
            data = ends.incoming.popleft()
            if len(data) > left:
                data, rest = data[:left], data[left:]
                ends.incoming.appendleft(rest)
            parts.append(data)
            left -= len(data)
        data = b"".join(parts)
        ends.consumed(len(data))
        return data

    async def readexactly(self, n: int) -> bytes:
        """Exactly ``n`` bytes; SessionError if the stream ends before."""
        parts: list[bytes] = []
        while n > 0:
            data = await self.read(n)
            if not data:
                raise SessionError(Outcome.DONE, "the stream ended before the bytes expected")
            parts.append(data)
            n -= len(data)
        return b"".join(parts)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data`` (call drain() to wait for room)."""
        ends = self._ends
        if ends.eof_asked:
            raise SessionError(Outcome.DONE, "write after write_eof()")
        self._check()
        if data:
            ends.outgoing.append(bytes(data))
            ends.outgoing_size += len(data)
            ends.push()

    async def drain(self) -> None:
        """Wait until the session has taken everything written (it takes up
        to its send buffer, the window, ahead of the peer's acknowledgement)."""
        while self._ends.outgoing_size:
            self._check()
            if self._task.done():
                return
            await self._wait()

    def write_eof(self) -> None:
        """End our stream (after what was written); reading goes on."""
        self._ends.eof_asked = True
        self._ends.push()

    def at_eof(self) -> bool:
        return self._ends.incoming_eof and not self._ends.incoming

    async def close(self) -> Outcome:
        """End our stream if not done, and wait for the session to end.  A
        peer's stream not read to its end is given up (the peer is told, as
        when a consumer of STDOUT goes away: SessionError OUTPUT_CLOSED)."""
        if not self._closing:
            self._closing = True
            self.write_eof()
            await self.drain()
            if not self.at_eof():
                self._ends.abandon()
        await asyncio.wait({self._task})
        self._check()
        return self._task.result()

    def stats(self) -> SessionStats:
        """One immutable snapshot of the session's counters, per subflow and in
        all (fields: docs/STATS.md; ``as_dict()`` gives them as JSON types)."""
        return self._runner.stats()

    def abort(self) -> None:
        """End the session now, telling the peer (Outcome.INTERRUPTED)."""
        if not self._task.done():
            self._runner.session.abort(Outcome.INTERRUPTED, "aborted by the application",
                                       self._runner.loop.time())
            self._runner.kick()

    async def __aenter__(self) -> Stream:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if exc is not None:
            self.abort()
            await asyncio.gather(self._task, return_exceptions=True)
            return
        await self.close()


@dataclass
class _Opening:
    """What open_session() returns: await it, or use it with ``async with``."""

    listen: Sequence[str]
    connect: Sequence[str]
    config: SessionConfig
    socket_mode: int
    allowed_uids: frozenset[int] | None
    stream: Stream | None = None

    async def _open(self) -> Stream:
        listen = [parse_address(a, Role.LISTEN) for a in self.listen]
        connect = [parse_address(a, Role.SUBFLOW) for a in self.connect]
        if not listen and not connect:
            raise SessionError(Outcome.NO_SUBFLOWS, "give addresses to listen on or connect to")
        allowed = self.allowed_uids
        if allowed is None:
            allowed = frozenset({os.getuid(), 0})
        listeners: list[Listening] = []
        try:
            for address in listen:
                listeners.append(listen_on(address, self.socket_mode, allowed))
        except SockimuxError:
            close_all(listeners)
            raise
        loop = asyncio.get_running_loop()
        ends = _Ends()
        runner = Runner(Session(os.urandom(16), loop.time(), self.config), ends=ends)
        dialer = Dialer(connect, listening=bool(listeners)) if connect else None  # type: ignore[arg-type]
        parts: list[Attached] = [*listeners]
        if dialer is not None:
            parts.append(dialer)

        async def run() -> Outcome:
            try:
                return await runner.run(*parts)
            finally:
                if dialer is not None:
                    await dialer.close()
                close_all(listeners)

        return Stream(ends, loop.create_task(run()), runner)

    def __await__(self) -> Generator[object, None, Stream]:
        return self._open().__await__()

    async def __aenter__(self) -> Stream:
        self.stream = await self._open()
        return self.stream

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        assert self.stream is not None
        await self.stream.__aexit__(kind, exc, tb)


def open_session(listen: Sequence[str] = (), connect: Sequence[str] = (), *,
                 config: SessionConfig | None = None, socket_mode: int = 0o600,
                 allowed_uids: frozenset[int] | None = None) -> _Opening:
    """A session that accepts subflows on ``listen`` (``UNIX-LISTEN:PATH``,
    ``TCP-LISTEN:PORT``) and opens and re-opens them to ``connect``
    (``UNIX-CONNECT:PATH``, ``TCP:HOST:PORT``, ``EXEC:'COMMAND'``, each
    with ``count=N``).  ``await`` it for a :class:`Stream`, or use it as
    ``async with open_session(...) as stream:``.  ``allowed_uids``: who may
    connect to a UNIX listener (default: our own user and root)."""
    return _Opening(list(listen), list(connect), config or SessionConfig(), socket_mode, allowed_uids)
