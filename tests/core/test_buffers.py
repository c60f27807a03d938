"""The buffers a session lends for reading: safe whatever the order of the
calls, and small with many subflows (issue 12 item 5).  Also the API's
misuse errors (item 6).  Fake clock, no sockets."""

from __future__ import annotations

import tracemalloc

import pytest

from sockimux.core import Session, SessionConfig, UsageError
from sockimux.core import frames as F
from sockimux.core.frames import FrameType
from sockimux.core.subflow import SubflowState

from .test_hardening import frames_in, raw_peer


def pings(first: int, count: int) -> bytes:
    return b"".join(F.encode_control(FrameType.PING, t) for t in range(first, first + count))


def test_reads_on_two_subflows_in_progress_at_once() -> None:
    """A task per subflow (``await sock_recv_into(sock, receive_buffer(sid))``)
    asks for both buffers before either read is reported: each subflow's
    bytes must stay its own."""
    s = Session(b"A" * 16, 0.0)
    one, two = raw_peer(s), raw_peer(s)
    first, second = pings(1, 100), pings(1000, 100)
    buf_one = s.receive_buffer(one)
    buf_two = s.receive_buffer(two)
    buf_one[: len(first)] = first
    buf_two[: len(second)] = second
    del buf_one, buf_two
    s.received(one, len(first), 0.1)
    s.received(two, len(second), 0.1)
    assert [f.value for f in frames_in(s.pull(one, 0.1)) if f.type is FrameType.PONG] == [100]
    assert [f.value for f in frames_in(s.pull(two, 0.1)) if f.type is FrameType.PONG] == [1099]
    assert all(sub.state is SubflowState.OPEN for sub in s.subflows.values())


def test_a_read_given_up_and_asked_again() -> None:
    """A read that found nothing (EAGAIN) is never reported: the next one on
    that subflow asks again, and another subflow's read in between is safe."""
    s = Session(b"A" * 16, 0.0)
    one, two = raw_peer(s), raw_peer(s)
    s.receive_buffer(one)  # nothing came
    s.receive(two, pings(7, 3), 0.1)
    buf = s.receive_buffer(one)
    buf[:16] = pings(5, 1)
    del buf
    s.received(one, 16, 0.2)
    assert [f.value for f in frames_in(s.pull(one, 0.2)) if f.type is FrameType.PONG] == [5]
    assert [f.value for f in frames_in(s.pull(two, 0.2)) if f.type is FrameType.PONG] == [9]


def test_memory_with_1024_subflows_stays_small() -> None:
    """Every one of 1024 subflows reads a few frames: the scratch buffers are
    lent while a read is in progress, not kept per subflow (64 KiB each would
    be 64 MiB)."""
    s = Session(b"A" * 16, 0.0, SessionConfig(max_subflows=1024, max_handshakes=1024))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        sids = [raw_peer(s) for _ in range(1024)]
        for sid in sids:
            s.receive(sid, pings(1, 4), 0.1)
            s.pull(sid, 0.1)
        per_subflow = (tracemalloc.get_traced_memory()[0] - before) / len(sids)
    finally:
        tracemalloc.stop()
    assert len(s.subflows) == 1024
    assert per_subflow < 16 * 1024, per_subflow


def test_misuse_is_a_usage_error() -> None:
    s = Session(b"A" * 16, 0.0)
    with pytest.raises(UsageError):
        s.moved_direct(42, 10, 0.0)  # no such subflow
    s.stdin_eof(0.0)
    with pytest.raises(UsageError):
        s.write_stdin(b"late", 0.0)  # after the end of the input
    with pytest.raises(UsageError):
        s.output_written(1, 0.0)  # nothing was handed out
