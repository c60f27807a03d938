"""StreamReceiver: reordering, duplicates, overlap, end of stream, credit."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sockimux.core import CloseCode, ProtocolError, UsageError
from sockimux.core.receiver import Parked, StreamReceiver


def receiver(window: int = 1 << 20) -> StreamReceiver:
    rx = StreamReceiver(window)
    rx.credit.advertise(0)  # as the session does with its first ACK
    return rx


def feed(rx: StreamReceiver, offset: int, data: bytes) -> bytes:
    return b"".join(bytes(p) for p in rx.receive(offset, data))


def cut(data: bytes, cuts: list[int]) -> list[tuple[int, bytes]]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [(i, data[i:j]) for i, j in zip(points, points[1:], strict=False) if j > i]


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[bytes, list[tuple[int, bytes]]]:
    """A payload and the pieces it arrives as: one or more chunkings (re-sent ranges
    cut differently), duplicates, arbitrary sub-ranges, all in any order."""
    data = draw(st.binary(min_size=0, max_size=3000), label="data")
    pieces = cut(data, draw(st.lists(st.integers(0, 3000), max_size=20), label="cuts"))
    for _ in range(draw(st.integers(0, 2), label="recuts")):
        pieces += cut(data, draw(st.lists(st.integers(0, 3000), max_size=20)))
    if data:
        extra = draw(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(1, 400)), max_size=8))
        pieces += [(s, data[s : s + n]) for s, n in extra]
        if pieces:
            pieces += draw(st.lists(st.sampled_from(pieces), max_size=5), label="duplicates")
    return data, draw(st.permutations(pieces), label="order")


@settings(max_examples=300)
@given(deliveries())
def test_any_order_any_cut_exactly_once(case: tuple[bytes, list[tuple[int, bytes]]]) -> None:
    data, pieces = case
    rx = receiver()
    out = bytearray()
    for offset, piece in pieces:
        out += feed(rx, offset, piece)
        assert out == data[: len(out)]
        assert rx.delivered == len(out)
    assert bytes(out) == data
    assert rx.held_bytes == 0
    assert rx.held_bytes == 0 and rx.delivered == len(data)


@settings(max_examples=100)
@given(deliveries())
def test_fin_first_or_last(case: tuple[bytes, list[tuple[int, bytes]]]) -> None:
    data, pieces = case
    rx = receiver()
    rx.on_fin(len(data))
    assert rx.eof is (len(data) == 0)
    out = bytearray()
    for offset, piece in pieces:
        out += feed(rx, offset, piece)
        assert rx.eof is (len(out) == len(data))
    assert bytes(out) == data
    rx.on_fin(len(data))  # a repeated FIN (re-sent after a subflow died) is fine
    assert rx.eof and not rx.done
    rx.on_written(len(data))
    assert not rx.done
    rx.output_closed = True
    assert rx.done


def test_fin_after_data() -> None:
    rx = receiver()
    assert feed(rx, 0, b"hello") == b"hello"
    assert not rx.eof
    rx.on_fin(5)
    assert rx.eof


def test_fin_with_gap_is_not_eof() -> None:
    rx = receiver()
    assert feed(rx, 3, b"lo") == b""
    rx.on_fin(5)
    assert not rx.eof
    assert feed(rx, 0, b"hel") == b"hello"
    assert rx.eof


def test_fin_moved_is_an_error() -> None:
    rx = receiver()
    rx.on_fin(10)
    with pytest.raises(ProtocolError):
        rx.on_fin(11)
    with pytest.raises(ProtocolError):
        rx.on_fin(9)


@pytest.mark.parametrize("held", [False, True])
def test_fin_below_received_data_is_an_error(held: bool) -> None:
    rx = receiver()
    if held:
        feed(rx, 5, b"abcde")  # held beyond a gap
    else:
        feed(rx, 0, b"0123456789")
    with pytest.raises(ProtocolError):
        rx.on_fin(9)
    rx.on_fin(10)


def test_data_beyond_fin_is_an_error() -> None:
    rx = receiver()
    rx.on_fin(4)
    with pytest.raises(ProtocolError):
        rx.receive(2, b"xyz")
    assert feed(rx, 0, b"abcd") == b"abcd"
    with pytest.raises(ProtocolError):
        rx.receive(4, b"!")


def test_data_beyond_credit_is_flow_control_error() -> None:
    rx = receiver(window=100)
    assert feed(rx, 0, bytes(100)) == bytes(100)  # exactly up to the limit: fine
    with pytest.raises(ProtocolError) as info:
        rx.receive(100, b"x")
    assert info.value.code is CloseCode.FLOW_CONTROL
    with pytest.raises(ProtocolError) as info:
        rx.receive(50, bytes(51))  # straddles the limit
    assert info.value.code is CloseCode.FLOW_CONTROL


def test_credit_must_be_granted_first() -> None:
    rx = StreamReceiver(100)
    with pytest.raises(ProtocolError) as info:
        rx.receive(0, b"x")
    assert info.value.code is CloseCode.FLOW_CONTROL


def test_credit_moves_with_what_is_written() -> None:
    rx = receiver(window=10)
    assert feed(rx, 0, bytes(10)) == bytes(10)
    with pytest.raises(ProtocolError):
        rx.receive(10, b"x")
    rx.on_written(4)
    # Credit moves only when advertised: the peer cannot know of it before.
    with pytest.raises(ProtocolError):
        rx.receive(10, b"x")
    assert rx.credit.advertise(rx.written) == 14
    assert feed(rx, 10, b"abcd") == b"abcd"
    with pytest.raises(ProtocolError):
        rx.receive(14, b"x")


def test_held_out_of_order_data_counts_against_nothing_below() -> None:
    rx = receiver(window=100)
    assert feed(rx, 90, bytes(10)) == b""
    assert rx.held_bytes == 10
    assert len(feed(rx, 0, bytes(90))) == 100
    assert rx.held_bytes == 0


def test_written_beyond_delivered_is_refused() -> None:
    rx = receiver()
    feed(rx, 0, b"abc")
    rx.on_written(2)
    with pytest.raises(UsageError):
        rx.on_written(2)


def test_duplicates_are_counted() -> None:
    rx = receiver()
    feed(rx, 0, b"abcdef")
    assert feed(rx, 2, b"cd") == b""
    assert feed(rx, 4, b"efgh") == b"gh"
    assert rx.duplicate_bytes == 2
    assert rx.delivered == 8


def test_longer_piece_at_same_offset_replaces_held() -> None:
    rx = receiver()
    assert feed(rx, 4, b"ef") == b""
    assert feed(rx, 4, b"efghij") == b""
    assert feed(rx, 4, b"e") == b""
    assert rx.held_bytes == 6
    assert feed(rx, 0, b"abcd") == b"abcdefghij"
    assert rx.held_bytes == 0



# -- parked pieces: held by the runtime (in pipes), taken only whole ------------


def resolve(out: list[object], store: dict[int, bytes], taken: list[int]) -> bytes:
    """The bytes a runtime would write for ``out``: a Parked piece's from the
    store under its token (each token exactly once, whole)."""
    result = bytearray()
    for piece in out:
        if isinstance(piece, Parked):
            assert isinstance(piece.token, int) and piece.token not in taken
            taken.append(piece.token)
            stored = store[piece.token]
            assert len(piece) == len(stored), "a parked piece goes out whole"
            result += stored
        else:
            result += bytes(piece)  # type: ignore[arg-type]
    return bytes(result)


@settings(max_examples=400)
@given(deliveries(), st.lists(st.booleans(), min_size=40, max_size=40),
       st.lists(st.integers(0, 3), min_size=40, max_size=40))
def test_parked_pieces_go_out_whole_and_in_order(case: tuple[bytes, list[tuple[int, bytes]]],
                                                 park: list[bool], direct: list[int]) -> None:
    """Pieces arriving in any order, cut anyhow, duplicated: some parked (where
    park_room() allows all of them), some received as bytes, and sometimes the
    stream's next bytes written past the receiver (a body moved straight to
    the output, never past direct_limit()).  The output is the stream exactly,
    and every parked piece goes out once, whole."""
    data, pieces = case
    rx = receiver()
    store: dict[int, bytes] = {}
    taken: list[int] = []
    out = bytearray()
    for i, (offset, piece) in enumerate(pieces):
        step = i % 40
        if park[step] and piece and rx.park_room(offset, len(piece)) == len(piece):
            store[i] = piece
            out += resolve(rx.park(offset, len(piece), i), store, taken)
        elif direct[step] and rx.delivered < len(data):
            count = len(data) - rx.delivered
            limit = rx.direct_limit()
            if limit is not None:
                count = min(count, limit)
            count = min(count, direct[step] * 50)
            if count:
                out += data[rx.delivered : rx.delivered + count]
                out += resolve(rx.written_direct(count), store, taken)
        else:
            out += resolve(rx.receive(offset, piece), store, taken)
        assert out == data[: len(out)]
        assert rx.delivered == len(out)
    # What is still missing (pieces that went out as written_direct instead) comes last.
    if rx.delivered < len(data):
        out += resolve(rx.receive(rx.delivered, data[rx.delivered :]), store, taken)
    assert bytes(out) == data
    assert sorted(taken) == sorted(store), "every parked piece went out, once"
    assert rx.held_bytes == 0 and rx.parked_bytes == 0


def test_bytes_arriving_over_a_parked_piece_are_cut_around_it() -> None:
    rx = receiver()
    assert rx.park(10, 10, "pipe") == []
    assert rx.park_room(15, 10) == 0  # inside what is parked
    assert rx.park_room(0, 50) == 10  # up to it
    assert rx.direct_limit() == 10
    assert rx.receive(5, b"x" * 30) == []  # held: [5, 10) and [20, 35)
    assert rx.held_bytes == 10 + 5 + 15 and rx.duplicate_bytes == 10
    out = rx.receive(0, b"y" * 40)  # up to the parked piece, it, what was held, the rest
    assert [(type(p).__name__, len(p)) for p in out] == [
        ("memoryview", 10), ("Parked", 10), ("memoryview", 15), ("memoryview", 5)]
    assert [bytes(p) for p in out if not isinstance(p, Parked)] == [b"y" * 10, b"x" * 15, b"y" * 5]
    assert rx.delivered == 40 and rx.held_bytes == 0 and rx.parked_bytes == 0
