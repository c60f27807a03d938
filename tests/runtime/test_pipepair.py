"""PipePairTransport: a channel of two pipes driven like one connection, under
asyncio and uvloop, with a BufferedProtocol like the runtime's."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from sockimux.remote.pipepair import PipePairTransport, connect_pipe_pair

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def _run(loop_name: str, coro: Coroutine[Any, Any, None]) -> None:
    loop = LOOPS[loop_name]()
    try:
        loop.run_until_complete(asyncio.wait_for(coro, 30))
    finally:
        loop.close()


class Echo(asyncio.BufferedProtocol):
    """Echoes what it reads (get_buffer hands out 256 KiB: more than the pipe
    to the far reader holds, so the write side fills and pauses)."""

    def __init__(self) -> None:
        self.buf = bytearray(256 << 10)
        self.events: list[str] = []
        self.paused = 0
        self.lost: asyncio.Future[Exception | None] = asyncio.get_event_loop().create_future()
        self.transport: PipePairTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, PipePairTransport)
        self.transport = transport
        self.events.append("made")
        transport.set_write_buffer_limits(high=64 << 10)

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self.buf)

    def buffer_updated(self, nbytes: int) -> None:
        assert self.transport is not None
        self.transport.write(bytes(self.buf[:nbytes]))
        if self.transport.get_write_buffer_size() > 64 << 10 and self.transport.is_reading():
            self.transport.pause_reading()

    def pause_writing(self) -> None:
        self.paused += 1

    def resume_writing(self) -> None:
        assert self.transport is not None
        self.transport.resume_reading()

    def eof_received(self) -> bool:
        self.events.append("eof")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append("lost")
        self.lost.set_result(exc)


async def _pair(loop: asyncio.AbstractEventLoop) -> tuple[PipePairTransport, Echo, int, int]:
    """Our ends: we write into `to_far`, read from `from_far`."""
    to_far_r, to_far_w = os.pipe()
    from_far_r, from_far_w = os.pipe()
    transport, protocol = await connect_pipe_pair(loop, Echo, to_far_r, from_far_w)
    return transport, protocol, to_far_w, from_far_r


@pytest.mark.parametrize("loop_name", LOOPS)
def test_bytes_go_both_ways_with_flow_control_then_eof(loop_name: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        transport, protocol, to_far, from_far = await _pair(loop)
        assert transport.get_extra_info("socket") is None
        data = os.urandom(8 << 20)
        got = bytearray()

        def slow_reader() -> None:
            while chunk := os.read(from_far, 1 << 16):
                got.extend(chunk)
                time.sleep(0.001)  # slower than the echo: its pipe fills, and it must wait

        reader = threading.Thread(target=slow_reader)
        reader.start()
        await asyncio.to_thread(os.write, to_far, data[:1 << 20])
        await asyncio.to_thread(lambda: [os.write(to_far, data[i:i + (1 << 20)])
                                         for i in range(1 << 20, len(data), 1 << 20)])
        os.close(to_far)  # EOF: the protocol says close, the echo's pipe closes too
        assert await protocol.lost is None
        await asyncio.to_thread(reader.join)
        os.close(from_far)
        assert bytes(got) == data
        assert protocol.events == ["made", "eof", "lost"]
        assert protocol.paused > 0, "the write side never applied back-pressure"

    _run(loop_name, main())


@pytest.mark.parametrize("loop_name", LOOPS)
def test_the_far_reader_gone_loses_the_connection_once(loop_name: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        transport, protocol, to_far, from_far = await _pair(loop)
        os.close(from_far)  # nobody reads what we write any more
        os.write(to_far, b"x" * 1000)
        exc = await protocol.lost
        assert isinstance(exc, BrokenPipeError | ConnectionResetError) or exc is None, exc
        await asyncio.sleep(0.05)
        assert protocol.events.count("lost") == 1 and transport.is_closing()
        os.close(to_far)

    _run(loop_name, main())


@pytest.mark.parametrize("loop_name", LOOPS)
def test_write_eof_ends_one_direction_only(loop_name: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        transport, protocol, to_far, from_far = await _pair(loop)
        transport.write(b"bye")
        transport.write_eof()
        assert await asyncio.to_thread(os.read, from_far, 10) == b"bye"
        assert await asyncio.to_thread(os.read, from_far, 10) == b""
        assert not protocol.lost.done(), "the read side was closed with the write side"
        transport.close()
        await protocol.lost
        os.close(to_far)
        os.close(from_far)

    _run(loop_name, main())


@pytest.mark.parametrize("loop_name", LOOPS)
def test_close_writes_out_what_is_buffered_before_the_connection_is_lost(loop_name: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        transport, protocol, to_far, from_far = await _pair(loop)
        data = os.urandom(2 << 20)
        transport.write(data)  # far more than a pipe holds: most of it waits in the transport
        assert transport.get_write_buffer_size() > 0
        transport.close()
        await asyncio.sleep(0.1)
        assert not protocol.lost.done(), "connection_lost before the buffered bytes were written"
        got = bytearray()

        def read_all() -> None:
            while chunk := os.read(from_far, 1 << 16):
                got.extend(chunk)

        await asyncio.to_thread(read_all)
        assert await protocol.lost is None
        assert bytes(got) == data
        os.close(to_far)
        os.close(from_far)

    _run(loop_name, main())


class Header(asyncio.BufferedProtocol):
    """Asks for 16 bytes (a frame header), then stops reading: what the runtime
    does before it splices the body that follows from the pipe itself."""

    def __init__(self) -> None:
        self.buf = bytearray(16)
        self.got: asyncio.Future[bytes] = asyncio.get_event_loop().create_future()
        self.transport: PipePairTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, PipePairTransport)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self.buf)

    def buffer_updated(self, nbytes: int) -> None:
        assert self.transport is not None
        self.transport.pause_reading()
        self.got.set_result(bytes(self.buf[:nbytes]))

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        pass


@pytest.mark.parametrize("loop_name", LOOPS)
def test_nothing_is_read_beyond_what_the_protocol_asked(loop_name: str) -> None:
    """A body left in the pipe is all there for splice(): the transport reads
    the 16 bytes asked for, not a pipe's worth (asyncio's pipe transport read
    256 KiB and fed the rest after them)."""
    async def main() -> None:
        loop = asyncio.get_running_loop()
        to_far_r, to_far_w = os.pipe()
        from_far_r, from_far_w = os.pipe()
        data = os.urandom(60_000)  # fits the pipe: written at once
        os.write(to_far_w, data)
        transport, protocol = await connect_pipe_pair(loop, Header, to_far_r, from_far_w)
        assert await protocol.got == data[:16]
        await asyncio.sleep(0.05)  # any read ahead would have happened by now
        assert transport.get_extra_info("read_pipe").fileno() == to_far_r
        left = os.read(to_far_r, 1 << 20)  # what a splice would move next
        assert left == data[16:]
        transport.close()
        for fd in (to_far_w, from_far_r):
            os.close(fd)

    _run(loop_name, main())
