"""The wire codec and the incremental FrameReader."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sockimux.core import CloseCode, ProtocolError, UsageError
from sockimux.core import frames as F
from sockimux.core.frames import Frame, FrameReader, FrameType, Hello

U64 = st.integers(0, F.MAX_OFFSET)
U32 = st.integers(0, (1 << 32) - 1)
ID16 = st.binary(min_size=16, max_size=16)
KNOWN_TYPES = {int(t) for t in FrameType}
# Frame types this test knows how to build (others may be added to the codec later).
CONTROL = [FrameType.FIN, FrameType.PING, FrameType.PONG]
REASON = [FrameType.ABORT, FrameType.REFUSE]


def read_all(reader: FrameReader) -> list[Frame]:
    out = []
    while (frame := reader.next_frame()) is not None:
        out.append(frame)
    return out


def parse(data: bytes) -> list[Frame]:
    reader = FrameReader()
    reader.feed(data)
    frames = read_all(reader)
    assert reader.buffered == 0
    return frames


def header(ftype: int, length: int, value: int = 0, flags: int = 0) -> bytes:
    return F.HEADER.pack(ftype, flags, 0, length, value)


def raw_hello(magic: bytes = F.MAGIC, version: int = F.VERSION, flags: int = 0) -> bytes:
    return F.HELLO.pack(magic, version, flags, 0, bytes(range(16)), bytes(16))


# -- round trips --------------------------------------------------------------------


@given(instance=ID16, nonce=ID16, flags=st.integers(0, 0xFFFF))
def test_hello_round_trip(instance: bytes, nonce: bytes, flags: int) -> None:
    hello = Hello(instance, nonce, flags)
    raw = F.encode_hello(hello)
    assert len(raw) == F.HELLO_SIZE == 48
    assert raw.startswith(F.MAGIC)
    assert F.decode_hello(raw) == hello
    reader = FrameReader()
    reader.feed(raw)
    assert reader.take_hello() == hello
    assert reader.buffered == 0
    assert reader.next_frame() is None


@given(written=U64, limit=U64, subflow_in=U64, fin_done=st.booleans())
def test_ack_round_trip(written: int, limit: int, subflow_in: int, fin_done: bool) -> None:
    (frame,) = parse(F.encode_ack(written, limit, subflow_in, fin_done))
    assert frame.type is FrameType.ACK
    assert frame.value == written
    assert bool(frame.flags & F.ACK_FIN_DONE) is fin_done
    assert F.decode_ack_body(frame.body) == (limit, subflow_in)


@given(ftype=st.sampled_from(CONTROL), value=U64)
def test_control_round_trip(ftype: FrameType, value: int) -> None:
    raw = F.encode_control(ftype, value)
    assert len(raw) == F.HEADER_SIZE
    assert parse(raw) == [Frame(ftype, value, 0, b"")]


@given(ftype=st.sampled_from(REASON), code=st.sampled_from(list(CloseCode)), reason=st.text(max_size=80))
def test_reason_round_trip(ftype: FrameType, code: CloseCode, reason: str) -> None:
    (frame,) = parse(F.encode_reason(ftype, code, reason))
    assert frame.type is ftype
    assert CloseCode(frame.value) is code
    assert bytes(frame.body).decode("utf-8") == reason


def test_reason_is_truncated_to_the_limit() -> None:
    (frame,) = parse(F.encode_reason(FrameType.ABORT, CloseCode.SHUTDOWN, "é" * 1000))
    assert len(frame.body) == F.MAX_REASON
    assert bytes(frame.body).decode("utf-8", "replace").startswith("é" * 100)


@given(offset=st.integers(0, F.MAX_OFFSET - F.MAX_DATA), payload=st.binary(min_size=1, max_size=3000))
def test_data_round_trip(offset: int, payload: bytes) -> None:
    raw = F.data_header(offset, len(payload)) + payload
    assert parse(raw) == [Frame(FrameType.DATA, offset, 0, payload)]


def test_largest_data_frame_is_accepted() -> None:
    payload = bytes(F.MAX_DATA)
    (frame,) = parse(F.data_header(7, len(payload)) + payload)
    assert frame.value == 7 and len(frame.body) == F.MAX_DATA


# -- any split of a valid stream ----------------------------------------------------

frame_bytes = st.one_of(
    st.builds(lambda o, p: F.data_header(o, len(p)) + p, U64, st.binary(min_size=1, max_size=600)),
    st.builds(F.encode_ack, U64, U64, U64, st.booleans()),
    st.builds(F.encode_control, st.sampled_from(CONTROL), U64),
    st.builds(F.encode_reason, st.sampled_from(REASON), st.sampled_from(list(CloseCode)),
              st.text(max_size=40)),
)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(hello=st.builds(Hello, ID16, ID16, st.integers(0, 0xFFFF)), encoded=st.lists(frame_bytes, max_size=12),
       data=st.data())
def test_any_split_yields_the_same_frames(hello: Hello, encoded: list[bytes], data: st.DataObject) -> None:
    stream = F.encode_hello(hello) + b"".join(encoded)
    expected = parse(b"".join(encoded))
    assert len(expected) == len(encoded)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=30), label="cuts"))
    pieces = [stream[i:j] for i, j in zip([0, *cuts], [*cuts, len(stream)], strict=True)]

    reader = FrameReader()
    got_hello: Hello | None = None
    got: list[Frame] = []
    for piece in pieces:
        reader.feed(piece)
        if got_hello is None:
            got_hello = reader.take_hello()
            if got_hello is None:
                continue
        got += read_all(reader)
    assert got_hello == hello
    assert got == expected
    assert reader.buffered == 0


def test_long_stream_in_odd_pieces() -> None:
    """Many frames fed in odd-sized pieces: every frame comes out, intact, and the
    reader never holds more than one partial frame plus the last piece."""
    frames = [F.data_header(i * 1000, 1000) + bytes([i % 256]) * 1000 for i in range(300)]
    stream = b"".join(frames)
    reader = FrameReader()
    got: list[Frame] = []
    for i in range(0, len(stream), 777):
        reader.feed(stream[i : i + 777])
        got += read_all(reader)
        assert reader.buffered < 1016 + 777
    expected = [(i * 1000, bytes([i % 256]) * 1000) for i in range(300)]
    assert [(f.value, bytes(f.body)) for f in got] == expected
    assert reader.buffered == 0


# -- reading into the reader's buffers (what the runtime does) ----------------------


def read_into(reader: FrameReader, stream: bytes, reads: list[int]) -> list[Frame]:
    """Deliver ``stream`` through get_buffer()/buffer_updated(), each read at most
    the next size in ``reads`` (then whatever the buffer takes), parsing after each."""
    got: list[Frame] = []
    pos = 0
    sizes = iter(reads)
    while pos < len(stream):
        buf = reader.get_buffer()
        assert len(buf) > 0
        n = min(len(buf), len(stream) - pos, next(sizes, len(buf)))
        buf[:n] = stream[pos : pos + n]
        del buf
        reader.buffer_updated(n)
        pos += n
        got += read_all(reader)
    return got


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(encoded=st.lists(frame_bytes, max_size=12), bulk=st.lists(st.integers(1, 200_000), max_size=3),
       data=st.data())
def test_reads_sharing_a_scratch_pool_yield_the_same_frames(encoded: list[bytes], bulk: list[int],
                                                        data: st.DataObject) -> None:
    """Two readers sharing one scratch pool, their reads interleaved in any
    sizes, some of them finding nothing (a buffer asked for and no read
    reported, as an event loop does on EAGAIN): each yields exactly the frames
    of its own stream."""
    streams = [b"".join(encoded) + b"".join(F.data_header(i, n) + bytes([i]) * n for i, n in enumerate(bulk)),
               b"".join(reversed(encoded))]
    pool = F.ScratchPool()
    readers = [FrameReader(pool), FrameReader(pool)]
    got: list[list[Frame]] = [[], []]
    pos = [0, 0]
    while pos[0] < len(streams[0]) or pos[1] < len(streams[1]):
        which = data.draw(st.sampled_from([i for i in (0, 1) if pos[i] < len(streams[i])]))
        if data.draw(st.booleans()):
            readers[which].get_buffer()  # a read that found nothing: no buffer_updated()
            continue
        size = data.draw(st.integers(1, 300_000))
        got[which] += read_into(readers[which], streams[which][pos[which] : pos[which] + size], [])
        pos[which] += size
    for which in (0, 1):
        assert got[which] == parse(streams[which])
        assert readers[which].buffered == 0


def test_a_read_that_finds_nothing_leaves_the_shared_scratch_to_others() -> None:
    """Reader A holds half a frame and asks for a buffer, but its read finds
    nothing (EAGAIN: no buffer_updated()); B then reads through the same
    pool.  A's half frame must survive B's bytes."""
    pool = F.ScratchPool()
    a, b = FrameReader(pool), FrameReader(pool)
    frame = F.encode_control(FrameType.PING, 0x0123456789ABCDEF)
    assert read_into(a, frame[:10], []) == []  # half a frame, held by A
    a.get_buffer()  # ...and a read that found nothing
    junk = F.encode_control(FrameType.PONG, 0xFFFFFFFFFFFFFFFF) * 4
    assert read_into(b, junk, []) == parse(junk)
    assert read_into(a, frame[10:], []) == [Frame(FrameType.PING, 0x0123456789ABCDEF, 0)]


def test_bulk_bodies_are_read_into_place() -> None:
    """After one large body, the reader asks for the next header alone, then
    hands out the next body's own buffer: the payload is never copied."""
    size = 256 * 1024
    payloads = [bytes([i]) * size for i in range(4)]
    stream = b"".join(F.data_header(i * size, size) + p for i, p in enumerate(payloads))
    reader = FrameReader()
    got = read_into(reader, stream, [F.SCRATCH_SIZE])  # the first read fills the scratch
    assert [bytes(f.body) for f in got] == payloads
    # Replay frame 2 and 3 by hand: a 16-byte buffer, then the body itself.
    reader = FrameReader()
    read_into(reader, stream[: 2 * (16 + size)], [])
    head = reader.get_buffer()
    assert len(head) == F.HEADER_SIZE
    head[:] = F.data_header(2 * size, size)
    del head
    reader.buffer_updated(F.HEADER_SIZE)
    assert reader.next_frame() is None
    body = reader.get_buffer()
    assert len(body) == size
    target = body.obj
    body[:] = payloads[2]
    del body
    reader.buffer_updated(size)
    frame = reader.next_frame()
    assert frame is not None and frame.body is target and frame.body == payloads[2]


def test_a_body_is_set_aside_only_once_an_eighth_of_it_is_in() -> None:
    reader = FrameReader()
    size = 800_000
    reader.feed(F.data_header(0, size) + bytes(size // 8 - 1))
    assert reader.next_frame() is None
    assert len(reader.get_buffer()) <= F.SCRATCH_SIZE  # not the body's buffer: none yet
    reader = FrameReader()
    reader.feed(F.data_header(0, size) + bytes(size // 8))
    assert reader.next_frame() is None
    assert len(reader.get_buffer()) == size - size // 8  # the rest goes into the body


def test_a_diverted_body_is_left_to_the_caller_and_its_rest_can_come_back() -> None:
    """divert(): the caller moves the body's bytes itself (skipped(n)); after
    undivert() what is left is read as a frame of its own, marked continued,
    and the frames after it parse as usual."""
    size = 100_000
    body = bytes(range(256)) * (size // 256) + bytes(size % 256)
    stream = F.data_header(7000, size) + body + F.encode_control(FrameType.PING, 5)
    reader = FrameReader()
    reader.feed(stream[: F.HEADER_SIZE])
    assert reader.next_frame() is None
    assert reader.pending_body() == (7000, size)
    reader.divert()
    assert reader.pending_body() is None
    assert reader.diverted == size and reader.diverted_offset == 7000
    reader.skipped(30_000)  # moved elsewhere by the caller
    assert reader.diverted == size - 30_000 and reader.diverted_offset == 37_000
    with pytest.raises(UsageError):
        reader.skipped(size)
    reader.undivert()
    assert reader.diverted == 0
    reader.feed(stream[F.HEADER_SIZE + 30_000 :])
    rest = reader.next_frame()
    assert rest == F.Frame(FrameType.DATA, 37_000, 0, body[30_000:], continued=True)
    assert reader.next_frame() == F.Frame(FrameType.PING, 5)
    assert reader.next_frame() is None and reader.buffered == 0


def test_a_body_diverted_to_its_end_leaves_the_reader_at_the_next_header() -> None:
    reader = FrameReader()
    reader.feed(F.data_header(0, 50_000))
    assert reader.next_frame() is None
    reader.divert()
    reader.skipped(50_000)
    assert reader.diverted == 0 and reader.pending_body() is None
    assert len(reader.get_buffer()) == F.HEADER_SIZE  # after a large body: its header alone
    reader.feed(F.data_header(50_000, 10) + b"0123456789")
    assert reader.next_frame() == F.Frame(FrameType.DATA, 50_000, 0, b"0123456789")


def test_only_a_data_body_none_of_which_is_here_can_be_diverted() -> None:
    reader = FrameReader()
    reader.feed(F.data_header(0, 50_000) + b"x")
    assert reader.next_frame() is None
    assert reader.pending_body() is None  # one byte of it is here
    with pytest.raises(UsageError):
        reader.divert()
    reader = FrameReader()
    reader.feed(F.encode_reason(FrameType.ABORT, 1, "bye")[: F.HEADER_SIZE])
    assert reader.next_frame() is None
    assert reader.pending_body() is None


# -- rejected before the body -----------------------------------------------------------


def check_raises(reader: FrameReader, code: CloseCode, hello: bool = False) -> None:
    with pytest.raises(ProtocolError) as info:
        if hello:
            reader.take_hello()
        else:
            reader.next_frame()
    assert info.value.code is code


@pytest.mark.parametrize("junk", [b"X", b"SOCKX", b"GET / HTTP/1.1\r\n", b"\x00" * 48])
def test_bad_magic_is_refused_on_its_first_bytes(junk: bytes) -> None:
    reader = FrameReader()
    reader.feed(junk)
    check_raises(reader, CloseCode.NOT_SOCKIMUX, hello=True)


def test_partial_magic_waits() -> None:
    reader = FrameReader()
    for i in range(len(F.MAGIC)):
        reader.feed(F.MAGIC[i : i + 1])
        assert reader.take_hello() is None


def test_bad_magic_in_a_full_hello() -> None:
    with pytest.raises(ProtocolError) as info:
        F.decode_hello(raw_hello(magic=b"SOCKIMUY"))
    assert info.value.code is CloseCode.NOT_SOCKIMUX


@pytest.mark.parametrize("version", [0, F.VERSION + 1, 0xFFFF])
def test_bad_version(version: int) -> None:
    reader = FrameReader()
    reader.feed(raw_hello(version=version))
    check_raises(reader, CloseCode.BAD_VERSION, hello=True)


@given(ftype=st.integers(0, 255).filter(lambda t: t not in KNOWN_TYPES), length=U32, value=U64)
def test_unknown_type_is_refused_on_its_header(ftype: int, length: int, value: int) -> None:
    reader = FrameReader()
    reader.feed(header(ftype, length, value))
    check_raises(reader, CloseCode.PROTOCOL_ERROR)


# (type, length) pairs outside the allowed body sizes; only the header is fed.
BAD_LENGTHS = [
    (FrameType.DATA, 0),
    (FrameType.DATA, F.MAX_DATA + 1),
    (FrameType.DATA, (1 << 32) - 1),
    (FrameType.ACK, F.ACK_BODY.size - 1),
    (FrameType.ACK, F.ACK_BODY.size + 1),
    (FrameType.ACK, 0),
    (FrameType.FIN, 1),
    (FrameType.PING, 8),
    (FrameType.PONG, 1 << 31),
    (FrameType.ABORT, F.MAX_REASON + 1),
    (FrameType.REFUSE, (1 << 32) - 1),
]


@pytest.mark.parametrize(("ftype", "length"), BAD_LENGTHS)
def test_bad_length_is_refused_before_the_body(ftype: FrameType, length: int) -> None:
    reader = FrameReader()
    reader.feed(header(ftype, length))
    check_raises(reader, CloseCode.PROTOCOL_ERROR)


@pytest.mark.parametrize(("ftype", "length"), BAD_LENGTHS)
def test_bad_length_is_refused_after_valid_frames(ftype: FrameType, length: int) -> None:
    reader = FrameReader()
    valid = F.encode_control(FrameType.PING, 1) + F.data_header(5, 3) + b"abc"
    reader.feed(valid + header(ftype, length)[:-1])
    assert [f.type for f in read_all(reader)] == [FrameType.PING, FrameType.DATA]
    reader.feed(header(ftype, length)[-1:])
    check_raises(reader, CloseCode.PROTOCOL_ERROR)


def test_a_valid_header_waits_for_its_body() -> None:
    reader = FrameReader()
    reader.feed(F.data_header(0, F.MAX_DATA))
    assert reader.next_frame() is None
    reader.feed(bytes(F.MAX_DATA - 1))
    assert reader.next_frame() is None
    reader.feed(b"!")
    frame = reader.next_frame()
    assert frame is not None and len(frame.body) == F.MAX_DATA and bytes(frame.body)[-1:] == b"!"


# -- fuzz ---------------------------------------------------------------------------------


def drain(reader: FrameReader, pieces: list[bytes]) -> None:
    """Feed pieces like a subflow would; only ProtocolError may escape."""
    have_hello = False
    for piece in pieces:
        reader.feed(piece)
        if not have_hello:
            if reader.take_hello() is None:
                continue
            have_hello = True
        read_all(reader)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    cuts = sorted(c % (len(data) + 1) for c in cuts)
    return [data[i:j] for i, j in zip([0, *cuts], [*cuts, len(data)], strict=True)]


@settings(max_examples=300)
@given(junk=st.binary(max_size=400), cuts=st.lists(st.integers(0, 400), max_size=10))
def test_fuzz_arbitrary_bytes(junk: bytes, cuts: list[int]) -> None:
    try:
        drain(FrameReader(), split(junk, cuts))
    except ProtocolError as exc:
        assert isinstance(exc.code, CloseCode)


def _mutated(stream: bytes, edits: list[tuple[int, int]]) -> bytes:
    b = bytearray(stream)
    for pos, val in edits:
        if b:
            b[pos % len(b)] = val
    return bytes(b)


@settings(max_examples=300)
@given(encoded=st.lists(frame_bytes, max_size=6),
       edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
       tail=st.binary(max_size=64), cuts=st.lists(st.integers(0, 10_000), max_size=10))
def test_fuzz_mutated_valid_streams(encoded: list[bytes], edits: list[tuple[int, int]], tail: bytes,
                                    cuts: list[int]) -> None:
    """Past a valid hello, frames with bytes flipped: only ProtocolError may escape."""
    stream = F.encode_hello(Hello(bytes(16))) + _mutated(b"".join(encoded) + tail, edits)
    try:
        drain(FrameReader(), split(stream, cuts))
    except ProtocolError as exc:
        assert isinstance(exc.code, CloseCode)


@given(st.binary(min_size=F.HELLO_SIZE, max_size=F.HELLO_SIZE))
def test_fuzz_decode_hello(raw: bytes) -> None:
    try:
        hello = F.decode_hello(raw)
    except ProtocolError as exc:
        assert exc.code in (CloseCode.NOT_SOCKIMUX, CloseCode.BAD_VERSION)
    else:
        assert raw.startswith(F.MAGIC) and struct.unpack("!H", raw[8:10])[0] == hello.version
