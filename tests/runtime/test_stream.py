"""STDIN from a regular file, read by the event loop (FileInput), with real
files; a STDOUT pipe (LoopOutput)."""

from __future__ import annotations

import asyncio
import fcntl
import os
from pathlib import Path

import pytest

from sockimux.core import Extent
from sockimux.runtime import file_source, pipes, sink, source


def read_through(path: Path, room: int, extents: bool = False,
                 grow: bytes = b"") -> tuple[bytes, list[int], file_source.FileInput]:
    """Read ``path`` with a FileInput that is given ``room`` bytes after each
    delivery, as the runner does; returns the bytes (Extents read from the
    file), the delivery sizes and the reader.  ``grow`` is appended to the
    file after the first Extent."""

    async def main() -> tuple[bytes, list[int], file_source.FileInput]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[str | None] = loop.create_future()
        got: list[bytes] = []
        fd = os.open(path, os.O_RDONLY)

        def on_data(data: bytes | Extent) -> None:
            if isinstance(data, Extent):
                if grow and not any(kinds):
                    with open(path, "ab") as f:
                        f.write(grow)
                kinds.append(True)
                data = os.pread(fd, data.length, data.position)
            else:
                kinds.append(False)
            got.append(data)
            reader.set_room(room)

        kinds: list[bool] = []
        reader = file_source.FileInput(loop, fd, on_data, lambda error: done.set_result(error), extents)
        await reader.start()
        reader.set_room(room)
        assert await asyncio.wait_for(done, 10) is None
        os.close(fd)
        return b"".join(got), [len(b) for b in got], reader

    return asyncio.run(main())


def test_a_file_is_read_whole_within_the_room(tmp_path: Path) -> None:
    payload = os.urandom(5 * file_source.FILE_READ_SIZE + 12345)
    (tmp_path / "in").write_bytes(payload)
    data, sizes, reader = read_through(tmp_path / "in", 300_000)
    assert data == payload
    assert max(sizes) <= 300_000
    assert reader.worker is None  # tmpfs or page cache: never slow


def test_slow_storage_moves_reads_to_a_thread_in_order(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(file_source, "SLOW_READ", -1.0)  # every read counts as slow
    payload = os.urandom(3 * source.READ_SIZE + 999)
    (tmp_path / "in").write_bytes(payload)
    data, sizes, reader = read_through(tmp_path / "in", 100_000)
    assert data == payload
    assert max(sizes) <= 100_000
    assert reader.worker is not None


def test_a_stdout_pipe_is_grown_to_one_mebibyte_and_splice_sees_it_idle() -> None:
    """LoopOutput makes its pipe hold 1 MiB (so bodies can be spliced into it);
    it is idle, fit to be written around, only while nothing it was handed waits."""
    read_end, write_end = os.pipe()

    async def main() -> tuple[int, bool, bool]:
        loop = asyncio.get_running_loop()
        out = sink.LoopOutput(loop, write_end, lambda n: None, lambda e: None, lambda: None)
        assert not out.idle  # not started
        await out.start()
        idle_at_start = out.idle
        out.write([bytes(2 << 20)])  # more than the pipe holds: some waits in the transport
        return fcntl.fcntl(read_end, pipes.F_GETPIPE_SZ), idle_at_start, out.idle

    size, idle_at_start, idle_when_full = asyncio.run(main())
    os.close(read_end)
    assert size == pipes.PIPE_SIZE
    assert idle_at_start and not idle_when_full


def test_after_a_first_read_a_file_is_handed_out_as_extents(tmp_path: Path) -> None:
    """Extents: the file holds the bytes until they are sent; the stream is the
    file's, and the file's end is only believed once a read finds it, so
    bytes appended meanwhile are not lost."""
    payload = os.urandom(5 * file_source.FILE_READ_SIZE + 12345)
    more = os.urandom(777_777)
    (tmp_path / "in").write_bytes(payload)
    data, sizes, reader = read_through(tmp_path / "in", 3 * file_source.FILE_READ_SIZE, extents=True,
                                       grow=more)
    assert data == payload + more
    assert sizes[0] == file_source.FILE_READ_SIZE  # the first read: bytes
    assert max(sizes) > file_source.FILE_READ_SIZE  # then Extents (reads are at most FILE_READ_SIZE)


@pytest.mark.parametrize("mode", ["bytes", "extents", "thread"])
def test_a_file_truncated_below_what_was_read_is_a_failure_not_an_end(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    """Whichever way the file is read (bytes on the loop, Extents, or a thread
    once reads proved slow), finding it shorter than what was already read
    is reported as a failure: its end there is not the end of the input."""
    if mode == "thread":
        monkeypatch.setattr(file_source, "SLOW_READ", -1.0)
    path = tmp_path / "in"
    path.write_bytes(os.urandom(6 * file_source.FILE_READ_SIZE))

    async def main() -> str | None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[str | None] = loop.create_future()
        fd = os.open(path, os.O_RDONLY)
        deliveries = []

        def on_data(data: bytes | Extent) -> None:
            deliveries.append(data)
            if len(deliveries) == 2:
                os.truncate(path, 1000)
            reader.set_room(file_source.FILE_READ_SIZE)

        reader = file_source.FileInput(loop, fd, on_data, done.set_result, extents=mode == "extents")
        await reader.start()
        reader.set_room(file_source.FILE_READ_SIZE)
        try:
            return await asyncio.wait_for(done, 10)
        finally:
            assert (reader.worker is not None) == (mode == "thread")
            assert any(isinstance(d, Extent) for d in deliveries) == (mode == "extents")
            os.close(fd)

    error = asyncio.run(main())
    assert error is not None and "it was truncated to 1000 bytes" in error


def test_a_file_shorter_than_its_size_is_read_as_bytes_to_its_end() -> None:
    """Files of /sys report a size of 4096 bytes and hold less: handed out by
    that size, as Extents, the bytes past the real end could not be sent
    (sendfile finds nothing there) and the session ended with exit 7."""
    path = Path("/sys/class/net/lo/address")
    assert path.stat().st_size > len(path.read_bytes()) > 0, "sysfs is not mounted"
    data, sizes, _ = read_through(path, 3 * file_source.FILE_READ_SIZE, extents=True)
    assert data == path.read_bytes()
    assert sizes == [len(data)]  # one read, and no Extent past the end


def test_a_stdout_pipe_reports_what_it_took_before_write_returns() -> None:
    """A write the pipe takes whole is reported written before write() returns,
    so the runner acknowledges a keystroke's byte in the pass that wrote it,
    not in another pass through the loop (issue 15 target 2); what waits in
    the transport is reported once the pipe took it."""
    read_end, write_end = os.pipe()

    async def main() -> tuple[list[int], list[int], int]:
        loop = asyncio.get_running_loop()
        reported: list[int] = []
        out = sink.LoopOutput(loop, write_end, reported.append, lambda e: None, lambda: None)
        await out.start()
        out.write([b"k"])
        at_once = list(reported)
        out.write([bytes(2 << 20)])  # more than the pipe holds
        partly = list(reported)
        drained = 0
        while sum(reported) < 1 + (2 << 20):
            await asyncio.sleep(0.01)
            drained += len(os.read(read_end, 1 << 20))
        return at_once, partly, drained

    at_once, partly, drained = asyncio.run(main())
    os.close(read_end)
    assert at_once == [1]
    assert len(partly) == 2 and 0 < partly[1] < 2 << 20  # the pipe took part of it at once
    assert drained > 0


def counting_reads(reader: file_source.FileInput) -> list[Extent]:
    """The Extents ``reader`` is asked to read from here on, in order."""
    reads: list[Extent] = []
    read_extent = reader.read_extent

    def counted(extent: Extent) -> bytes | None:
        reads.append(extent)
        return read_extent(extent)

    reader.read_extent = counted  # type: ignore[method-assign]
    return reads


def test_small_extents_are_read_in_runs_and_written_with_their_headers(tmp_path: Path) -> None:
    """A subflow of unknown rate is handed 8 KiB pieces; from a regular file
    each was a write of its header and a sendfile() of its body.  Now small
    Extents are read, one pread for each run contiguous in the file, and go
    with their headers in one write (issue 15 target 4); a large Extent still
    goes by sendfile(), and a file that shrank under them ends the session."""
    from sockimux.runtime.connection import SubflowConnection
    from sockimux.runtime.sending import SMALL_EXTENT

    data = os.urandom(200 * 1024)
    path = tmp_path / "in"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    errors: list[str | None] = []
    loop = asyncio.new_event_loop()
    try:
        reader = file_source.FileInput(loop, fd, lambda d: None, errors.append, extents=True)
        reads = counting_reads(reader)
        k = 8 * 1024
        big = Extent(4 * k, SMALL_EXTENT)
        buffers = [b"h1", Extent(0, k), b"h2", Extent(k, k), b"h3", Extent(2 * k, k),
                   b"h4", big, b"h5", Extent(16 * k, k), b"h6", Extent(20 * k, k)]
        out = SubflowConnection._read_small(reader, buffers)  # type: ignore[arg-type]
        assert out is not None
        assert reads == [Extent(0, 3 * k), Extent(16 * k, k), Extent(20 * k, k)]
        assert out[7] is big and not any(isinstance(b, Extent) for b in out[:7] + out[8:])
        assert [bytes(b) for b in out[:7:2]] == [b"h1", b"h2", b"h3", b"h4"]
        assert b"".join(bytes(b) for b in out[1:7:2]) == data[:3 * k]
        assert bytes(out[9]) == data[16 * k:17 * k] and bytes(out[11]) == data[20 * k:21 * k]
        os.truncate(path, 15 * k)
        assert SubflowConnection._read_small(reader, [b"h", Extent(18 * k, k)]) is None  # type: ignore[arg-type]
        assert errors and errors[-1] is not None and "truncated" in errors[-1]
    finally:
        loop.close()
        os.close(fd)

def read_pipe(read_end: int, write_end: int, payload: bytes) -> tuple[list[bytes], int]:
    """``payload`` written into the pipe and the write end closed once LoopInput
    started (and grew the pipe); what LoopInput handed out, in pieces, and
    the pipe's size as it found it grown."""

    async def main() -> tuple[list[bytes], int]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[str | None] = loop.create_future()
        got: list[bytes] = []
        reader = source.LoopInput(loop, read_end, got.append, done.set_result)
        await reader.start()
        size = fcntl.fcntl(write_end, pipes.F_GETPIPE_SZ)
        os.set_blocking(write_end, False)  # a pipe not grown fails here, never hangs
        assert os.write(write_end, payload) == len(payload)  # the pipe holds it all
        os.close(write_end)
        reader.set_room(16 << 20)
        assert await asyncio.wait_for(done, 10) is None
        return got, size

    return asyncio.run(main())


def test_a_stdin_pipe_is_grown_and_read_in_growing_pieces() -> None:
    """LoopInput grows a default (64 KiB) STDIN pipe to 1 MiB, and reads a full
    pipe in pieces that double while they come back full, up to
    PIPE_READ_MAX: fewer, larger DATA bodies (uvloop's transport read 256 KiB
    at most).  After a short read the next starts small again."""
    read_end, write_end = os.pipe()
    payload = os.urandom(pipes.PIPE_SIZE)
    got, size = read_pipe(read_end, write_end, payload)
    assert size == pipes.PIPE_SIZE
    assert b"".join(got) == payload
    k = 1024
    # 64 KiB, doubling while full; the last 64 KiB is a short read of a 1 MiB request
    assert [len(g) for g in got] == [64 * k, 128 * k, 256 * k, 512 * k, 64 * k]


def test_a_short_read_of_a_stdin_pipe_starts_small_again() -> None:
    """A keystroke (a short read) sets the next read back to PIPE_READ_MIN."""
    read_end, write_end = os.pipe()

    async def main() -> list[bytes]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[str | None] = loop.create_future()
        got: list[bytes] = []
        total = 0
        reader = source.LoopInput(loop, read_end, got.append, done.set_result)
        await reader.start()
        os.set_blocking(write_end, False)  # a pipe not grown fails, never hangs
        for piece in (b"x" * (64 * 1024), b"y" * (128 * 1024 + 5), b"z", b"w" * (64 * 1024)):
            # written while the reader does not watch: it finds the whole piece there
            reader.set_room(0)
            assert os.write(write_end, piece) == len(piece)
            reader.set_room(16 << 20)
            for _ in range(1000):
                await asyncio.sleep(0.01)
                if len(b"".join(got)) == total + len(piece):
                    break
            total += len(piece)
        os.close(write_end)
        reader.set_room(16 << 20)
        await asyncio.wait_for(done, 10)
        return got

    got = asyncio.run(main())
    k = 1024
    # full 64 KiB, full 128 KiB then 5 bytes (short: back to 64 KiB), 1 byte, 64 KiB
    assert [len(g) for g in got] == [64 * k, 128 * k, 5, 1, 64 * k]


class _Runner:
    """What a SubflowConnection asks of the runner, recorded."""

    def __init__(self, loop: asyncio.AbstractEventLoop, reader: file_source.FileInput) -> None:
        self.loop = loop
        self.file_source = reader
        self.writable: list[int] = []

    def subflow_opened(self, conn: object) -> int:
        return 1

    def subflow_writable(self, sid: int) -> None:
        self.writable.append(sid)

    subflow_drained = subflow_writable

    def subflow_lost(self, sid: int, reason: str) -> None:
        pass

    def resource_warning(self, kind: str, message: str) -> None:
        raise AssertionError(message)

    def internal_error(self, exc: BaseException) -> None:
        raise exc


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_what_the_socket_does_not_take_of_an_extent_waits_and_goes_by_sendfile(
        tmp_path: Path, loop_kind: str) -> None:
    """An Extent of a regular-file STDIN larger than the socket's buffer: what
    sendfile() cannot put in the socket at once is held until the socket is
    writable and sent by sendfile() then, never read into our memory (it
    was read and queued in the transport: two copies of most of the bytes).
    Meanwhile the connection counts as full; frames after the Extent wait
    behind it, in order; once all has gone the runner is told at once."""
    import socket

    import uvloop

    from sockimux.runtime.connection import SubflowConnection

    data = os.urandom(3 * 1024 * 1024)
    path = tmp_path / "in"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    loop = uvloop.new_event_loop() if loop_kind == "uvloop" else asyncio.new_event_loop()

    async def main() -> tuple[bytes, list[Extent], bool, list[int]]:
        reader = file_source.FileInput(loop, fd, lambda d: None, lambda e: None, extents=True)
        reads = counting_reads(reader)
        runner = _Runner(loop, reader)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        theirs.setblocking(False)
        conn = SubflowConnection(runner)  # type: ignore[arg-type]
        await loop.connect_accepted_socket(lambda: conn, ours)
        conn.send([b"head", Extent(0, len(data)), b"tail", Extent(0, 1000)])
        full = conn.full  # the socket took part of it: the rest is held
        got = bytearray()
        want = 4 + len(data) + 4 + 1000
        while len(got) < want:
            await asyncio.sleep(0.001)
            try:
                while chunk := theirs.recv(1 << 20):
                    got += chunk
            except BlockingIOError:
                pass
        await asyncio.sleep(0.01)
        assert conn.transport is not None
        conn.transport.close()
        theirs.close()
        return bytes(got), reads, full, runner.writable

    try:
        got, reads, full, writable = loop.run_until_complete(main())
    finally:
        loop.close()
        os.close(fd)
    assert got == b"head" + data + b"tail" + data[:1000]
    assert reads == [Extent(0, 1000)]  # only the small Extent, with its header
    assert full and writable == [1]
