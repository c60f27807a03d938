"""StreamSender: retention, take/requeue/ack, credit, buffer room, FIN."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from sockimux.core import ProtocolError, UsageError
from sockimux.core.sender import Extent, StreamSender


def take(tx: StreamSender, max_len: int = 1 << 30) -> tuple[int, bytes] | None:
    piece = tx.take(max_len)
    return None if piece is None else (piece[0], bytes(piece[1]))


def sender(data: bytes = b"", limit: int = 1000, credit: int = 0) -> StreamSender:
    tx = StreamSender(limit)
    if data:
        tx.push(data)
    if credit:
        tx.on_ack(0, credit, False)
    return tx


def has_resend(tx: StreamSender) -> bool:
    """Ranges are queued for re-sending (read from the sender's state)."""
    return bool(tx._resend)


def sendable(tx: StreamSender) -> int:
    """Bytes ready to go now: queued re-sends plus new bytes within credit."""
    queued = sum(e - s for s, e in tx._resend)
    return queued + max(0, min(tx.end, tx.credit) - tx.next_new)


def test_nothing_goes_out_without_credit() -> None:
    tx = sender(b"abcdef")
    assert sendable(tx) == 0
    assert take(tx) is None
    tx.on_ack(0, 4, False)
    assert sendable(tx) == 4
    assert take(tx) == (0, b"abcd")
    assert take(tx) is None
    tx.on_ack(0, 100, False)
    assert take(tx) == (4, b"ef")
    assert take(tx) is None


def test_take_respects_max_len_and_chunk_boundaries() -> None:
    tx = sender(credit=100)
    tx.push(b"abc")
    tx.push(b"defgh")
    assert take(tx, 2) == (0, b"ab")
    assert take(tx, 10) == (2, b"c")  # one retained chunk per piece (no copy)
    assert take(tx, 10) == (3, b"defgh")
    assert take(tx, 10) is None
    assert tx.next_new == 8


def test_credit_only_grows() -> None:
    tx = sender(bytes(50), credit=30)
    tx.on_ack(0, 10, False)  # an older ACK arriving late on another subflow
    assert tx.credit == 30
    assert take(tx) == (0, bytes(30))


def test_requeue_goes_first_lowest_first_and_merges() -> None:
    tx = sender(bytes(range(100)), credit=100)
    assert take(tx, 100) == (0, bytes(range(100)))
    tx.push(bytes(range(100, 150)))
    tx.on_ack(0, 200, False)
    tx.requeue(60, 70)
    tx.requeue(10, 20)
    tx.requeue(15, 30)
    tx.requeue(30, 35)
    assert has_resend(tx)
    assert sendable(tx) == 25 + 10 + 50
    assert take(tx, 5) == (10, bytes(range(10, 15)))
    assert take(tx) == (15, bytes(range(15, 35)))
    assert take(tx) == (60, bytes(range(60, 70)))
    assert not has_resend(tx)
    assert take(tx) == (100, bytes(range(100, 150)))


def test_requeue_is_clipped_to_what_is_unacknowledged() -> None:
    tx = sender(bytes(100), credit=100)
    take(tx)
    tx.on_ack(40, 100, False)
    tx.requeue(0, 30)
    assert not has_resend(tx)
    tx.requeue(20, 60)
    assert take(tx) == (40, bytes(20))
    tx.requeue(50, 80)
    tx.on_ack(70, 100, False)
    assert take(tx) == (70, bytes(10))
    assert take(tx) is None


def test_ack_releases_retention_and_room() -> None:
    tx = StreamSender(100)
    assert tx.room == 100
    tx.push(bytes(60))
    tx.push(bytes(40))
    assert tx.room == 0
    tx.on_ack(0, 100, False)
    take(tx)
    take(tx)
    tx.on_ack(30, 130, False)
    assert tx.room == 30
    tx.on_ack(20, 130, False)  # out of order: ignored
    assert tx.acked == 30 and tx.room == 30
    tx.on_ack(100, 200, False)
    assert tx.room == 100
    assert tx._chunks == [] and tx._starts == []


def test_ack_beyond_what_was_sent_is_an_error() -> None:
    tx = sender(bytes(10), credit=5)
    take(tx)
    with pytest.raises(ProtocolError):
        tx.on_ack(6, 10, False)


def test_fin_done_before_the_end_is_an_error() -> None:
    tx = sender(bytes(10), credit=10)
    take(tx)
    with pytest.raises(ProtocolError):
        tx.on_ack(10, 20, True)  # STDIN has not ended
    tx.close()
    with pytest.raises(ProtocolError):
        tx.on_ack(5, 20, True)  # not everything written
    tx.on_ack(10, 20, True)
    assert tx.done


def test_fin_due_after_everything_sent_once() -> None:
    tx = sender(bytes(10), credit=5)
    tx.close()
    assert tx.room == 0
    with pytest.raises(UsageError):
        tx.push(b"x")
    assert not tx.fin_due
    take(tx)
    assert not tx.fin_due  # 5 bytes wait for credit
    tx.on_ack(0, 10, False)
    take(tx)
    assert tx.fin_due
    tx.fin_in_flight = True
    assert not tx.fin_due
    tx.fin_in_flight = False  # its subflow died
    tx.requeue(0, 10)
    assert tx.fin_due  # a FIN may overtake re-sent data; the receiver copes
    tx.on_ack(10, 20, True)
    assert not tx.fin_due and tx.done


def test_extents_are_handed_out_cut_like_bytes() -> None:
    """Bytes left in the input file (Extents) are retained, cut, re-sent and
    released exactly as bytes are; mixed with bytes, each piece stays within
    one chunk."""
    tx = StreamSender(1 << 20)
    tx.push(b"head")  # the first read of a file is bytes
    tx.push(Extent(4, 100))  # then the file holds the rest: file offset 4 is stream offset 4
    tx.on_ack(0, 1000, False)
    assert tx.take(10) == (0, memoryview(b"head"))
    assert tx.take(30) == (4, Extent(4, 30))
    assert tx.take(1000) == (34, Extent(34, 70))
    assert tx.take(1000) is None
    tx.requeue(20, 50)
    assert tx.take(1000) == (20, Extent(20, 30))
    assert tx.peek(60, 90) == (60, Extent(60, 30))
    tx.on_ack(64, 1000, False)
    assert tx.room == (1 << 20) - 40
    assert tx.peek(64, 1000) == (64, Extent(64, 40))


def test_consecutive_extents_make_one_piece() -> None:
    """An input file extended a little at a time is still handed out in
    pieces as large as asked for; Extents that do not follow on (a file
    read as bytes in between) are not joined."""
    tx = StreamSender(1 << 20)
    for position in range(0, 1000, 100):
        tx.push(Extent(position, 100))
    tx.push(b"x" * 10)
    tx.push(Extent(1010, 50))
    tx.push(Extent(2000, 50))  # not where the last one ended
    tx.on_ack(0, 1 << 20, False)
    assert tx.take(900) == (0, Extent(0, 900))
    assert tx.take(1000) == (900, Extent(900, 100))
    assert tx.take(1000) == (1000, memoryview(b"x" * 10))
    assert tx.take(1000) == (1010, Extent(1010, 50))
    assert tx.take(1000) == (1060, Extent(2000, 50))
    tx.requeue(50, 950)
    assert tx.take(2000) == (50, Extent(50, 900))
    tx.on_ack(990, 1 << 20, False)
    assert tx.peek(990, 2000) == (990, Extent(990, 10))


def test_empty_stream() -> None:
    tx = StreamSender(10)
    tx.close()
    assert tx.fin_due
    assert take(tx) is None
    tx.on_ack(0, 10, True)
    assert tx.done


class SenderModel(RuleBasedStateMachine):
    """Random pushes, takes, ACKs and subflow losses against a simple model.

    Every piece handed out is "on" one of a few model subflows; losing a
    subflow requeues its ranges, as the session does.  Checked: every byte
    handed out is the right byte; new bytes never pass the credit; retention
    stays within the buffer limit; and every unacknowledged byte that went
    out is either still on a subflow or queued for re-sending."""

    @initialize(limit=st.integers(1, 300))
    def setup(self, limit: int) -> None:
        self.tx = StreamSender(limit)
        self.data = bytearray()
        self.ranges: dict[int, list[tuple[int, int]]] = {i: [] for i in range(3)}
        self.max_credit = 0

    @rule(n=st.integers(1, 120), byte=st.integers(0, 255))
    def push(self, n: int, byte: int) -> None:
        n = min(n, self.tx.room)
        if n:
            chunk = bytes((byte + i) % 256 for i in range(n))
            self.tx.push(chunk)
            self.data += chunk

    @precondition(lambda self: not self.tx.eof)
    @rule()
    def close(self) -> None:
        self.tx.close()

    @rule(max_len=st.integers(1, 200), sub=st.integers(0, 2))
    def take(self, max_len: int, sub: int) -> None:
        before_new = self.tx.next_new
        piece = self.tx.take(max_len)
        if piece is None:
            assert sendable(self.tx) == 0
            return
        offset, view = piece
        assert 0 < len(view) <= max_len
        assert bytes(view) == self.data[offset : offset + len(view)]
        assert offset >= self.tx.acked
        if offset >= before_new:
            assert offset == before_new
            assert offset + len(view) <= self.tx.credit
        else:
            assert offset + len(view) <= before_new  # a re-send of bytes sent before
        self.ranges[sub].append((offset, offset + len(view)))

    @rule(frac=st.floats(0, 1), grant=st.integers(0, 400))
    def ack(self, frac: float, grant: int) -> None:
        tx = self.tx
        written = tx.acked + int((tx.next_new - tx.acked) * frac)
        limit = written + grant
        self.max_credit = max(self.max_credit, limit)
        tx.on_ack(written, limit, False)
        assert tx.credit == self.max_credit
        for sub, rs in self.ranges.items():
            self.ranges[sub] = [(s, e) for s, e in rs if e > tx.acked]

    @rule(frac=st.floats(0, 1))
    def stale_ack(self, frac: float) -> None:
        tx = self.tx
        acked, credit = tx.acked, tx.credit
        tx.on_ack(int(acked * frac), int(credit * frac), False)
        assert (tx.acked, tx.credit) == (acked, credit)

    @rule(sub=st.integers(0, 2))
    def lose(self, sub: int) -> None:
        for s, e in self.ranges[sub]:
            self.tx.requeue(s, e)
        self.ranges[sub] = []

    @precondition(lambda self: self.tx.eof and self.tx.next_new == self.tx.end)
    @rule()
    def finish(self) -> None:
        tx = self.tx
        for sub in self.ranges:
            self.lose(sub)
        tx.on_ack(tx.acked, tx.end + 1, False)
        self.max_credit = max(self.max_credit, tx.end + 1)
        while (piece := tx.take(1000)) is not None:
            assert bytes(piece[1]) == self.data[piece[0] : piece[0] + len(piece[1])]
        assert not has_resend(tx)
        tx.on_ack(tx.end, tx.end + 1, True)
        assert tx.done and tx.credit == self.max_credit and tx.room == 0
        self.ranges = {i: [] for i in range(3)}

    @invariant()
    def bounded(self) -> None:
        tx = self.tx
        assert 0 <= tx.acked <= tx.next_new <= tx.end == len(self.data)
        assert tx.end - tx.acked <= tx.buffer_limit
        assert tx.room == (0 if tx.eof else tx.buffer_limit - (tx.end - tx.acked))

    @invariant()
    def nothing_forgotten(self) -> None:
        tx = self.tx
        covered = set()
        for rs in [*self.ranges.values(), tx._resend]:
            for s, e in rs:
                covered.update(range(s, e))
        missing = set(range(tx.acked, tx.next_new)) - covered
        assert not missing, f"bytes {sorted(missing)[:5]}... neither in flight nor queued"
        prev_end = -1
        for s, e in tx._resend:
            assert tx.acked <= s < e <= tx.next_new and s > prev_end
            prev_end = e


TestSenderModel = SenderModel.TestCase
TestSenderModel.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)
