"""The holding pipes' pool: bounded by the open file limit, pipes reused once
emptied, pieces taken out exactly, nothing touched after the pool closed."""

from __future__ import annotations

import errno
import os
import resource
from collections.abc import Iterator

import pytest

from sockimux.core import Parked
from sockimux.runtime.holding import DESCRIPTORS_PER_PIPE, HoldingPipes, read_out, splice_out


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
        pipes = [pool.take() for _ in range(4)]
        assert all(p is not None for p in pipes)
        assert pool.take() is None  # the fifth waits: its body is read as usual
        first = pipes[0]
        assert first is not None
        first.filled()  # empty and no longer filling: free again
        assert pool.take() is first
        assert not warnings
    finally:
        pool.close()


def test_pieces_come_out_exactly_and_the_pipe_is_free_once_empty() -> None:
    pool = HoldingPipes(lambda message: None)
    out_read, out_write = os.pipe()
    try:
        pipe = pool.take()
        assert pipe is not None
        fill(pipe.write_end, b"a" * 1000)
        pipe.held += 1000  # (as splice_from() counts what it moved in)
        fill(pipe.write_end, b"b" * 500)
        pipe.held += 500
        pipe.filled()
        first, second = Parked(pipe, 1000), Parked(pipe, 500)
        assert splice_out(first, out_write) == 1000 and first.length == 0
        assert pool.take() is not pipe  # still holds the second piece
        assert read_out(second) == b"b" * 500
        assert os.read(out_read, 2000) == b"a" * 1000
        assert pipe.held == 0 and pool.take() is pipe  # empty: back in the pool
    finally:
        pool.close()
        os.close(out_read), os.close(out_write)


def test_nothing_is_taken_from_a_closed_pool() -> None:
    """After the session the pipes are closed; a piece still named by a sink
    fails clearly rather than reading whatever took the descriptor's number."""
    pool = HoldingPipes(lambda message: None)
    pipe = pool.take()
    assert pipe is not None
    fill(pipe.write_end, b"x" * 10)
    pipe.held += 10
    pool.close()
    assert pipe.read_end == -1 and pool.take() is None
    with pytest.raises(OSError) as raised:
        splice_out(Parked(pipe, 10), 1)
    assert raised.value.errno == errno.EBADF
    with pytest.raises(OSError):
        read_out(Parked(pipe, 10))
