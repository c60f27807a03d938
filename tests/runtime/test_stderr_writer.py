"""StderrWriter on its own, on real pipes: bounded, in order, and never
stuck on a STDERR that is gone."""

from __future__ import annotations

import os
import threading

from sockimux.remote.stderrwriter import LIMIT, StderrWriter


def test_a_reader_that_waits_holds_the_writes_not_the_caller() -> None:
    read_fd, write_fd = os.pipe()
    writer = StderrWriter(write_fd)
    pieces = [bytes([i % 256]) * 4096 for i in range(2 * LIMIT // 4096)]
    room = [writer.write(piece) for piece in pieces]  # nobody reads: none of these blocks
    assert room[0] and not room[-1]  # past LIMIT the caller is told to wait
    woken = threading.Event()
    writer.when_room(woken.set)
    assert not woken.is_set()
    got = bytearray()
    while not woken.is_set() or len(got) < sum(map(len, pieces)):
        got += os.read(read_fd, 1 << 20)
    flushed = threading.Thread(target=writer.flush)
    flushed.start()
    flushed.join(10)
    assert not flushed.is_alive()
    assert bytes(got) == b"".join(pieces)
    os.close(read_fd)
    os.close(write_fd)


def test_a_stderr_that_is_gone_drops_the_writes_and_never_blocks() -> None:
    read_fd, write_fd = os.pipe()
    os.close(read_fd)  # (EPIPE: python ignores SIGPIPE)
    writer = StderrWriter(write_fd)
    for _ in range(4 * LIMIT // 65536):
        writer.write(b"x" * 65536)
    done = threading.Thread(target=writer.flush)
    done.start()
    done.join(10)
    assert not done.is_alive()
    woken = threading.Event()
    writer.when_room(woken.set)
    assert woken.is_set()
    os.close(write_fd)
