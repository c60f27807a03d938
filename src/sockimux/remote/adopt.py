"""A handed-over channel into a protocol: what the runtime's entry point for
connections needs to take a channel of either kind.

``Runner.adopt(sock)`` is ``loop.connect_accepted_socket(runner.connection,
sock)``; :func:`adopt_channel` does the same for a :class:`.handoff.Channel`
(a socket, or two pipes through :func:`.pipepair.connect_pipe_pair`), and
releases the channel's helper when the protocol's connection is lost, so
that sshd ends that ssh connection and the far process's idle count is
right.  The release wraps the protocol: neither the runtime nor its
protocol need to know about helpers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from .handoff import Channel
from .pipepair import connect_pipe_pair


class _Releasing(asyncio.Protocol):
    """A plain protocol, passed through; ``release`` once its connection is lost."""

    def __init__(self, inner: Any, release: Callable[[], None]) -> None:
        self.inner = inner
        self._release = release

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()  # type: ignore[no-any-return]

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self.inner.connection_lost(exc)
        finally:
            self._release()


class _ReleasingBuffered(_Releasing, asyncio.BufferedProtocol):
    """The same for a BufferedProtocol (transports check the class, so it must
    be one; _Releasing first, or BufferedProtocol's own eof_received wins)."""

    def get_buffer(self, sizehint: int) -> Any:
        return self.inner.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self.inner.buffer_updated(nbytes)


async def adopt_channel(loop: asyncio.AbstractEventLoop, protocol_factory: Callable[[], Any],
                        channel: Channel) -> tuple[asyncio.BaseTransport, Any]:
    """Connect ``protocol_factory()`` to ``channel`` (which it then owns);
    returns the transport and the protocol the factory made."""

    def wrapped() -> _Releasing:
        inner = protocol_factory()
        cls = _ReleasingBuffered if isinstance(inner, asyncio.BufferedProtocol) else _Releasing
        return cls(inner, channel.close)

    try:
        if channel.sock is not None:
            sock, channel.sock = channel.sock, None
            channel.take_fds()
            try:
                transport, protocol = await loop.connect_accepted_socket(wrapped, sock)
            except BaseException:
                sock.close()
                raise
        else:
            read_fd, write_fd = channel.take_fds()
            transport, protocol = await connect_pipe_pair(loop, wrapped, read_fd, write_fd)
    except BaseException:
        channel.close()
        raise
    return transport, protocol.inner
