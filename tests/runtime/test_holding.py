"""The holding pipes' pool: bounded by the open file limit, pipes reused once
emptied, pieces taken out exactly, nothing touched after the pool closed."""

from __future__ import annotations

import errno
import os
import resource
from collections.abc import Iterator

import pytest

from sockimux.core import Parked
from sockimux.runtime.holding import (
    CAPACITY,
    DESCRIPTORS_PER_PIPE,
    HoldingPipe,
    HoldingPipes,
    read_out,
    splice_out,
)

KB = 1024


@pytest.fixture
def file_limit() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (4 * DESCRIPTORS_PER_PIPE, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def fill(pipe_fd: int, data: bytes) -> None:
    assert os.write(pipe_fd, data) == len(data)


def test_the_pool_takes_at_most_its_share_of_the_descriptors(file_limit: None) -> None:
    warnings: list[str] = []
    pool = HoldingPipes(warnings.append)
    try:
        assert pool.most == 4
        pipes = [pool.take(i * KB, KB) for i in range(4)]
        assert all(p is not None for p in pipes)
        assert pool.take(4 * KB, KB) is None  # the fifth waits: its body is read as usual
        first = pipes[0]
        assert first is not None
        first.filled()  # empty and no longer filling: free again
        assert pool.take(0, KB) is first
        assert not warnings
    finally:
        pool.close()


def test_pieces_come_out_exactly_and_the_pipe_is_free_once_empty() -> None:
    pool = HoldingPipes(lambda message: None)
    out_read, out_write = os.pipe()
    try:
        pipe = pool.take(0, 1500)
        assert pipe is not None
        fill(pipe.write_end, b"a" * 1000)
        pipe.held += 1000  # (as splice_from() counts what it moved in)
        fill(pipe.write_end, b"b" * 500)
        pipe.held += 500
        pipe.filled()
        first, second = Parked(pipe, 1000), Parked(pipe, 500)
        assert splice_out(first, out_write) == 1000 and first.length == 0
        other = pool.take(0, 10)
        assert other is not pipe  # it holds what ends at 1500: nothing may go behind it below that
        assert read_out(second) == b"b" * 500
        assert os.read(out_read, 2000) == b"a" * 1000
        assert pipe.held == 0 and pool.take(0, 10) is pipe  # empty: back in the pool
    finally:
        pool.close()
        os.close(out_read), os.close(out_write)


def test_bodies_share_a_pipe_in_the_order_of_their_offsets() -> None:
    """A pipe is a queue: a body goes behind the pipe whose last body ends
    nearest below it, if it has room; one that would have to come out before
    what a pipe holds goes elsewhere."""
    pool = HoldingPipes(lambda message: None)

    def put(offset: int, length: int) -> HoldingPipe:
        pipe = pool.take(offset, length)
        assert pipe is not None
        pipe.held += length  # (as if spliced in)
        pipe.filled()
        return pipe

    try:
        a = put(100 * KB, 50 * KB)
        b = put(300 * KB, 50 * KB)
        assert b is a  # behind it, in order
        c = put(200 * KB, 50 * KB)
        assert c is not a  # before what a holds: another pipe
        assert put(250 * KB, 40 * KB) is c  # c's end (250 KiB) is the nearest below
        assert put(400 * KB, 40 * KB) is a  # a's end (350 KiB) is nearer than c's (290 KiB)
        filling = pool.take(500 * KB, 10 * KB)
        assert filling is a
        assert pool.take(600 * KB, 10 * KB) is c  # a takes one body at a time
        assert put(700 * KB, CAPACITY) not in (a, c)  # room: a full body fits in neither
    finally:
        pool.close()


def test_nothing_is_taken_from_a_closed_pool() -> None:
    """After the session the pipes are closed; a piece still named by a sink
    fails clearly rather than reading whatever took the descriptor's number."""
    pool = HoldingPipes(lambda message: None)
    pipe = pool.take(0, 10)
    assert pipe is not None
    fill(pipe.write_end, b"x" * 10)
    pipe.held += 10
    pool.close()
    assert pipe.read_end == -1 and pool.take(10, 10) is None
    with pytest.raises(OSError) as raised:
        splice_out(Parked(pipe, 10), 1)
    assert raised.value.errno == errno.EBADF
    with pytest.raises(OSError):
        read_out(Parked(pipe, 10))
