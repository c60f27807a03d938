"""STDOUT a regular file (FileOutput), with real files and sockets: written
by the event loop, DATA bodies spliced into it from a socket through a pipe
of its own, a thread once writes prove slow, and no splice for a file
opened to append."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from pathlib import Path

import pytest

from sockimux.runtime import file_sink, sink, stream


class Written:
    """What a sink reports, as the runner would receive it."""

    def __init__(self) -> None:
        self.count = 0
        self.errors: list[str] = []
        self.closed: asyncio.Future[None] | None = None

    def open(self, loop: asyncio.AbstractEventLoop, fd: int) -> sink.StreamSink:
        self.closed = loop.create_future()
        closed = self.closed
        return stream.open_sink(loop, fd, self.on_written, self.errors.append,
                                lambda: closed.set_result(None))

    def on_written(self, count: int) -> None:
        self.count += count


def splice_all(out: sink.SpliceTarget, sock: socket.socket, count: int) -> int:
    """Splice ``count`` bytes waiting in ``sock`` into ``out``; how many calls it took."""
    calls = 0
    while count:
        count -= out.splice_from(sock.fileno(), count)
        calls += 1
    return calls


def test_a_stdout_file_is_written_by_the_loop_with_bodies_spliced_in_order(tmp_path: Path) -> None:
    """Bytes handed to the sink and bytes spliced from a socket land in the
    file in the order they came, the spliced ones without being reported
    (the session counts them itself); the file is closed at the end."""
    path = tmp_path / "out"
    head, body, tail = os.urandom(100_000), os.urandom(3 << 20), os.urandom(5)
    here, there = socket.socketpair()

    async def main() -> tuple[Written, sink.StreamSink]:
        loop = asyncio.get_running_loop()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        got = Written()
        out = got.open(loop, fd)
        assert isinstance(out, file_sink.FileOutput) and stream.splice_target(out) is out
        await out.start()
        assert out.idle
        out.write([head[:1000], memoryview(head)[1000:]])
        for i in range(0, len(body), 65536):  # as a socket receives a body: piece by piece
            there.sendall(body[i:i + 65536])
            splice_all(out, here, len(body[i:i + 65536]))
        with pytest.raises(BlockingIOError):  # nothing waiting in the socket
            out.splice_from(here.fileno(), 1000)
        out.write([bytearray(tail)])
        out.close()
        assert got.closed is not None
        await asyncio.wait_for(got.closed, 10)
        return got, out

    here.setblocking(False)
    got, out = asyncio.run(main())
    here.close(), there.close()
    assert path.read_bytes() == head + body + tail
    assert got.count == len(head) + len(tail) and not got.errors
    assert isinstance(out, file_sink.FileOutput) and out.worker is None and not out.spliceable


def test_slow_storage_moves_file_writes_to_a_thread_in_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write slower than SLOW_WRITE moves the rest to a thread: no more
    splicing (the sink is no longer idle), and the file is still exact."""
    monkeypatch.setattr(file_sink, "SLOW_WRITE", -1.0)  # every write counts as slow
    path = tmp_path / "out"
    pieces = [os.urandom(n) for n in (70_000, 1, 300_000, 12)]

    async def main() -> tuple[Written, sink.StreamSink]:
        loop = asyncio.get_running_loop()
        got = Written()
        out = got.open(loop, os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC))
        await out.start()
        for piece in pieces:
            out.write([piece])
        assert isinstance(out, file_sink.FileOutput) and out.worker is not None and not out.idle
        out.close()
        assert got.closed is not None
        await asyncio.wait_for(got.closed, 10)
        return got, out

    got, out = asyncio.run(main())
    assert path.read_bytes() == b"".join(pieces)
    assert got.count == sum(map(len, pieces)) and not got.errors


def test_a_file_opened_to_append_is_written_but_not_spliced(tmp_path: Path) -> None:
    """splice() refuses files opened to append (EINVAL): such a STDOUT (``>>``)
    takes no splices, and is appended to."""
    path = tmp_path / "out"
    path.write_bytes(b"before\n")

    async def main() -> sink.StreamSink:
        loop = asyncio.get_running_loop()
        got = Written()
        out = got.open(loop, os.open(path, os.O_WRONLY | os.O_APPEND))
        await out.start()
        assert isinstance(out, file_sink.FileOutput) and stream.splice_target(out) is None
        out.write([b"after\n"])
        out.close()
        assert got.closed is not None
        await asyncio.wait_for(got.closed, 10)
        return out

    asyncio.run(main())
    assert path.read_bytes() == b"before\nafter\n"


def test_bytes_spliced_into_a_file_that_refuses_splice_are_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file system that cannot take splice() (EINVAL from the pipe into the
    file, after the bytes left the socket): those bytes are read back from
    our pipe and written, and no body is spliced again."""
    real_splice = os.splice
    refused: list[int] = []

    def splice(src: int, dst: int, count: int, *args: object, **kwargs: object) -> int:
        if dst == fd:
            refused.append(count)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_splice(src, dst, count, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "splice", splice)
    path = tmp_path / "out"
    body = os.urandom(50_000)
    here, there = socket.socketpair()
    here.setblocking(False)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)

    async def main() -> sink.StreamSink:
        loop = asyncio.get_running_loop()
        got = Written()
        out = got.open(loop, fd)
        await out.start()
        there.sendall(body)
        assert isinstance(out, file_sink.FileOutput)
        assert splice_all(out, here, len(body)) == 1
        assert not out.idle and not out.spliceable
        out.write([b"!"])
        out.close()
        assert got.closed is not None
        await asyncio.wait_for(got.closed, 10)
        return out

    asyncio.run(main())
    here.close(), there.close()
    assert refused == [len(body)]
    assert path.read_bytes() == body + b"!"
