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
never makes us allocate.  ``FrameReader`` parses one subflow's bytes as
they are read, into scratch buffers a ``ScratchPool`` lends per read.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import NamedTuple

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


# The types every keystroke meets, as module constants (see handshake.OPEN).
DATA_FRAME, ACK_FRAME = FrameType.DATA, FrameType.ACK

HELLO_AUTH = 0x0001  # HELLO flag: this side requires a shared-key proof (AUTH frame)
ACK_FIN_DONE = 0x01  # ACK flag: the acknowledged stream ended and its output is closed
# DATA flag: the sender can send nothing more until this frame is acknowledged
# (its send buffer or its credit is used up): ACK it as soon as it is written.
DATA_ACK_NOW = 0x01
# FIN flag: the stream was a command's output, and the command has ended;
# the header's reserved field holds how (see encode_fin).
FIN_STATUS = 0x01
SIGNALLED = 0x100  # in a FIN's status: killed by signal (status - 0x100)

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


class Frame(NamedTuple):
    """One frame read from the peer.  (A NamedTuple: one is made per frame,
    and the reader makes it with tuple.__new__, no Python call; a frozen
    dataclass's __init__ costs a call and a setattr per field.)"""

    type: FrameType
    value: int
    flags: int = 0  # for a frame without a body, the header's reserved field in bits 8-23
    body: bytes | bytearray | memoryview = b""
    continued: bool = False  # the rest of a DATA body whose header came with an earlier piece


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


def data_header(offset: int, length: int, flags: int = 0) -> bytes:
    """Header of a DATA frame; the payload is written after it as a separate buffer."""
    return HEADER.pack(DATA_FRAME, flags, 0, length, offset)


def encode_ack(written: int, limit: int, subflow_in: int, fin_done: bool) -> bytes:
    flags = ACK_FIN_DONE if fin_done else 0
    return HEADER.pack(ACK_FRAME, flags, 0, ACK_BODY.size, written) + ACK_BODY.pack(
        limit, subflow_in
    )


def encode_fin(end: int, status: int | None) -> bytes:
    """FIN(end); with ``status`` (an exit status 0-255, or -N: killed by signal
    N, as subprocess reports it) in the reserved field, flagged FIN_STATUS.
    An instance that does not know the flag ignores it and the field."""
    if status is None:
        return HEADER.pack(FrameType.FIN, 0, 0, 0, end)
    return HEADER.pack(FrameType.FIN, FIN_STATUS, fin_status_field(status), 0, end)


def fin_status_field(status: int) -> int:
    return SIGNALLED + (-status & 0xFF) if status < 0 else status & 0xFF


def fin_status(field: int) -> int:
    """The status a FIN_STATUS field carries, as subprocess reports it."""
    return -(field & 0xFF) if field & SIGNALLED else field & 0xFF


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


_IN_READER = frozenset({"EXACT_MIN", "SCRATCH_SIZE", "SPARE_SCRATCH", "FrameReader", "ScratchPool"})


def __getattr__(name: str) -> object:
    """The reader moved to reader.py; its names stay reachable from here."""
    if name in _IN_READER:
        from . import reader
        return getattr(reader, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
