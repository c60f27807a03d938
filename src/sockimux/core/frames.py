"""Wire codec: pure functions from frames to bytes and back.

Every subflow starts with a fixed-size HELLO in each direction, then carries
frames with one 16-byte header::

    0      1      2             4                     8                    16
    +------+------+-------------+---------------------+--------------------+
    | type | flags|  reserved   |  length (u32)       |  value (u64)       |
    +------+------+-------------+---------------------+--------------------+
    | body: `length` bytes                                                 |

All integers are big-endian.  What ``value`` and the body mean depends on the
type (see docs/PROTOCOL.md).  The reader checks ``length`` against a per-type
limit *before* it waits for or stores the body, so a hostile length field
never makes us allocate.
"""

from __future__ import annotations

import enum
import struct
from collections import deque
from dataclasses import dataclass

from .errors import CloseCode, ProtocolError

MAGIC = b"SOCKIMUX"
VERSION = 1

HELLO = struct.Struct("!8sHHI16s16s")
HELLO_SIZE = HELLO.size  # 48
HEADER = struct.Struct("!BBHIQ")
HEADER_SIZE = HEADER.size  # 16
ACK_BODY = struct.Struct("!QQ")

MAX_DATA = 1 << 20  # largest DATA payload we accept
MAX_REASON = 256  # largest reason text in REFUSE/ABORT
MAX_OFFSET = (1 << 64) - 1


class FrameType(enum.IntEnum):
    DATA = 1  # value = stream offset of the payload's first byte
    ACK = 2  # value = bytes the receiver has written out; body = credit limit, subflow bytes in
    FIN = 3  # value = final stream length
    PING = 4  # value = token to echo
    PONG = 5  # value = the echoed token
    ABORT = 6  # session ends in error; value = CloseCode, body = reason
    REFUSE = 7  # this subflow is refused; value = CloseCode, body = reason
    AUTH = 8  # proof of the pre-shared key; body = HMAC-SHA256 (see auth.py)


HELLO_AUTH = 0x0001  # HELLO flag: this side requires a shared-key proof (AUTH frame)
ACK_FIN_DONE = 0x01  # ACK flag: the acknowledged stream ended and its output is closed

# The body length each frame type may have: (min, max).
_BODY_LIMITS = {
    FrameType.DATA: (1, MAX_DATA),
    FrameType.ACK: (ACK_BODY.size, ACK_BODY.size),
    FrameType.FIN: (0, 0),
    FrameType.PING: (0, 0),
    FrameType.PONG: (0, 0),
    FrameType.ABORT: (0, MAX_REASON),
    FrameType.REFUSE: (0, MAX_REASON),
    FrameType.AUTH: (32, 32),
}


@dataclass(frozen=True)
class Hello:
    instance: bytes  # 16 random bytes naming the sending process
    nonce: bytes = bytes(16)  # fresh per subflow; input to subflow authentication
    flags: int = 0
    version: int = VERSION


@dataclass(frozen=True)
class Frame:
    type: FrameType
    value: int
    flags: int = 0
    body: bytes | bytearray | memoryview = b""


def encode_hello(hello: Hello) -> bytes:
    return HELLO.pack(MAGIC, hello.version, hello.flags, 0, hello.instance, hello.nonce)


def decode_hello(raw: bytes | bytearray | memoryview) -> Hello:
    """Decode exactly HELLO_SIZE bytes; raise ProtocolError if they are not a hello we speak."""
    magic, version, flags, _reserved, instance, nonce = HELLO.unpack(raw)
    if magic != MAGIC:
        raise ProtocolError("not a sockimux peer (bad magic)", CloseCode.NOT_SOCKIMUX)
    if version != VERSION:
        raise ProtocolError(
            f"peer speaks protocol version {version}, we speak {VERSION}", CloseCode.BAD_VERSION
        )
    return Hello(instance=instance, nonce=nonce, flags=flags, version=version)


def data_header(offset: int, length: int) -> bytes:
    """Header of a DATA frame; the payload is written after it as a separate buffer."""
    return HEADER.pack(FrameType.DATA, 0, 0, length, offset)


def encode_ack(written: int, limit: int, subflow_in: int, fin_done: bool) -> bytes:
    flags = ACK_FIN_DONE if fin_done else 0
    return HEADER.pack(FrameType.ACK, flags, 0, ACK_BODY.size, written) + ACK_BODY.pack(
        limit, subflow_in
    )


def encode_control(ftype: FrameType, value: int) -> bytes:
    """FIN, PING or PONG: a bare header."""
    return HEADER.pack(ftype, 0, 0, 0, value)


def encode_reason(ftype: FrameType, code: int, reason: str) -> bytes:
    """ABORT or REFUSE with a human-readable reason (truncated to the limit)."""
    text = reason.encode("utf-8", "replace")[:MAX_REASON]
    return HEADER.pack(ftype, 0, 0, len(text), code) + text


def encode_auth(proof: bytes) -> bytes:
    return HEADER.pack(FrameType.AUTH, 0, 0, len(proof), 0) + proof


def decode_ack_body(body: bytes | bytearray | memoryview) -> tuple[int, int]:
    limit, subflow_in = ACK_BODY.unpack(body)
    return limit, subflow_in


class FrameReader:
    """Incremental frame parser for one subflow.

    ``feed()`` bytes as they arrive; ``next_frame()`` returns the next complete
    frame or None when more bytes are needed.  The header is validated as soon
    as its 16 bytes are in, so an oversize length is rejected before any body
    is awaited or any memory set aside for it.

    Bodies are not copied more than once: a body that lies within one fed
    buffer is returned as a memoryview of it; one that spans several is
    assembled into a bytearray once all of it has arrived (so a header alone
    never makes us set memory aside).
    """

    __slots__ = ("_chunks", "_size", "_length", "_header")

    def __init__(self) -> None:
        self._chunks: deque[memoryview] = deque()  # fed bytes not yet consumed
        self._size = 0  # total bytes in _chunks
        self._header: tuple[FrameType, int, int] | None = None  # (type, flags, value) awaiting body
        self._length = 0  # body length of that frame

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if data:
            self._chunks.append(memoryview(data).cast("B"))
            self._size += len(data)

    @property
    def buffered(self) -> int:
        """Bytes held: fed and not consumed."""
        return self._size

    def _peek(self, count: int) -> bytes:
        """The next ``count`` bytes (or fewer, if fewer are buffered), not consumed."""
        out = bytearray()
        for chunk in self._chunks:
            out += chunk[: count - len(out)]
            if len(out) >= count:
                break
        return bytes(out)

    def _skip(self, count: int) -> None:
        self._size -= count
        chunks = self._chunks
        while count:
            first = chunks[0]
            if len(first) <= count:
                count -= len(first)
                chunks.popleft()
            else:
                chunks[0] = first[count:]
                count = 0

    def take_hello(self) -> Hello | None:
        if self._size < HELLO_SIZE:
            # Reject junk early: whatever prefix we have must match the magic.
            have = self._peek(len(MAGIC))
            if have and not MAGIC.startswith(have):
                raise ProtocolError("not a sockimux peer (bad magic)", CloseCode.NOT_SOCKIMUX)
            return None
        hello = decode_hello(self._peek(HELLO_SIZE))
        self._skip(HELLO_SIZE)
        return hello

    def next_frame(self) -> Frame | None:
        if self._header is None:
            if self._size < HEADER_SIZE:
                return None
            first = self._chunks[0]
            raw = first[:HEADER_SIZE] if len(first) >= HEADER_SIZE else self._peek(HEADER_SIZE)
            ftype, flags, _reserved, length, value = HEADER.unpack(raw)
            try:
                kind = FrameType(ftype)
            except ValueError:
                raise ProtocolError(f"unknown frame type {ftype}") from None
            low, high = _BODY_LIMITS[kind]
            if not low <= length <= high:
                raise ProtocolError(
                    f"{kind.name} frame with body length {length} (allowed {low}..{high})")
            self._skip(HEADER_SIZE)
            if length == 0:
                return Frame(kind, value, flags)
            self._length = length
            self._header = (kind, flags, value)
        length = self._length
        if self._size < length:
            return None  # nothing is set aside until the whole body is here
        if len(self._chunks[0]) >= length:
            return self._finish(self._take_view(length))
        body = bytearray(length)
        filled = 0
        while filled < length:
            first = self._chunks[0]
            n = min(len(first), length - filled)
            body[filled : filled + n] = first[:n]
            filled += n
            self._skip(n)
        return self._finish(body)

    def _take_view(self, length: int) -> memoryview:
        view = self._chunks[0][:length]
        self._skip(length)
        return view

    def _finish(self, body: bytes | bytearray | memoryview) -> Frame:
        assert self._header is not None
        kind, flags, value = self._header
        self._header = None
        return Frame(kind, value, flags, body)
