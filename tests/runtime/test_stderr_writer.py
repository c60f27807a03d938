"""StderrWriter on its own, on real pipes: bounded, in order, never stuck
on a STDERR that is gone or takes nothing; QueuedStderr drops and counts."""

from __future__ import annotations

import os
import sys
import threading
import time

from sockimux.stderrwriter import LIMIT, QueuedStderr, StderrWriter, queued_stderr


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


def test_the_end_gives_up_on_a_stderr_that_takes_nothing() -> None:
    read_fd, write_fd = os.pipe()  # nobody reads: 64 KiB fit, then the thread waits
    writer = StderrWriter(write_fd)
    for _ in range(4):
        writer.write(b"y" * 65536)
    started = time.monotonic()
    writer.flush(patience=0.3)
    waited = time.monotonic() - started
    assert 0.25 <= waited < 5  # waited while nothing moved, then gave up
    writer.write(b"after")  # dropped, and never waited for
    writer.flush(patience=0.3)
    assert time.monotonic() - started - waited < 0.2
    os.close(read_fd)  # (the thread's blocked write ends with EPIPE)
    os.close(write_fd)


def test_the_end_waits_as_long_as_stderr_moves() -> None:
    read_fd, write_fd = os.pipe()
    writer = StderrWriter(write_fd)
    data = b"".join(bytes([i]) * 65536 for i in range(8))
    for i in range(8):
        writer.write(data[i * 65536:(i + 1) * 65536])
    got = bytearray()

    def slow_reader() -> None:  # 64 KiB every 0.1 s: 0.8 s in all, patience 0.3 s
        while len(got) < len(data):
            time.sleep(0.1)
            got.extend(os.read(read_fd, 65536))

    reader = threading.Thread(target=slow_reader)
    reader.start()
    writer.flush(patience=0.3)
    reader.join(10)
    assert bytes(got) == data
    os.close(read_fd)
    os.close(write_fd)


def test_lines_past_the_limit_are_dropped_and_counted() -> None:
    read_fd, write_fd = os.pipe()
    writer = StderrWriter(write_fd)
    original = sys.stderr
    with queued_stderr(writer):
        assert isinstance(sys.stderr, QueuedStderr)
        line = "z" * 1023 + "\n"
        sent = 0
        while not writer.full:  # nobody reads yet: the caller never waits
            sys.stderr.write(line)
            sent += 1
        for _ in range(5):
            sys.stderr.write("dropped\n")
        got = bytearray()
        while len(got) < sent * len(line):
            got += os.read(read_fd, 1 << 20)
        sys.stderr.write("last line\n")
        while not got.endswith(b"last line\n"):
            got += os.read(read_fd, 1 << 20)
    assert sys.stderr is original
    text = got.decode()
    assert text.count(line) == sent
    assert "dropped\n" not in text
    assert text.endswith(f"sockimux[{os.getpid()}]: 5 lines not shown (STDERR was not read)\n"
                         "last line\n")
    os.close(read_fd)
    os.close(write_fd)
