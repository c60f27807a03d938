"""A hostile peer for end-to-end tests: it speaks the wire protocol well enough to
be accepted by a real sockimux, then misbehaves on command (floods, never reads,
sends impossible frames, leaves frames half-sent).

The wire bytes are built here from the documented format (docs/PROTOCOL.md),
never with the program's own encoder, so that a change to the format shows up
in the tests instead of being silently shared by both ends.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

# -- the wire format, written out independently of src/ ------------------------

MAGIC = b"SOCKIMUX"
HELLO = struct.Struct("!8sHHI16s16s")  # magic, version, flags, reserved, instance, nonce
HEADER = struct.Struct("!BBHIQ")  # type, flags, reserved, length, value
ACK_BODY = struct.Struct("!QQ")  # limit, subflow_in
HELLO_AUTH = 0x0001
DATA, ACK, FIN, PING, PONG, ABORT, REFUSE, AUTH = range(1, 9)
# close codes carried by REFUSE
PROTOCOL_ERROR, NOT_SOCKIMUX, BAD_VERSION, FOREIGN_INSTANCE, SELF_CONNECT, FLOW_CONTROL = range(1, 7)
HANDSHAKE_TIMEOUT, TOO_MANY_SUBFLOWS, AUTH_FAILED = 10, 11, 12


def hello(instance: bytes | None = None, *, version: int = 1, flags: int = 0,
          magic: bytes = MAGIC) -> bytes:
    return HELLO.pack(magic, version, flags, 0, instance or os.urandom(16), os.urandom(16))


def frame(ftype: int, value: int = 0, body: bytes = b"", *, length: int | None = None,
          flags: int = 0) -> bytes:
    return HEADER.pack(ftype, flags, 0, len(body) if length is None else length, value) + body


def ack(written: int, limit: int, subflow_in: int) -> bytes:
    return frame(ACK, written, ACK_BODY.pack(limit, subflow_in))


@dataclass(frozen=True)
class Frame:
    type: int
    flags: int
    value: int
    body: bytes


def parse(buf: bytes) -> tuple[list[Frame], bytes]:
    """The whole frames at the start of ``buf``, and the bytes left over."""
    frames, pos = [], 0
    while pos + HEADER.size <= len(buf):
        ftype, flags, _reserved, length, value = HEADER.unpack_from(buf, pos)
        if pos + HEADER.size + length > len(buf):
            break
        frames.append(Frame(ftype, flags, value, buf[pos + HEADER.size: pos + HEADER.size + length]))
        pos += HEADER.size + length
    return frames, buf[pos:]


# -- raw connections -------------------------------------------------------------

def connect(path: str | Path, timeout: float = 5.0) -> socket.socket:
    """A raw connection, retried while the listener is not there yet."""
    deadline = time.monotonic() + timeout
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(str(path))
            return s
        except (FileNotFoundError, ConnectionRefusedError):
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def recv_at_least(s: socket.socket, count: int, timeout: float = 5.0) -> bytes:
    deadline = time.monotonic() + timeout
    got = b""
    while len(got) < count:
        s.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            pytest.fail(f"only {len(got)} of {count} bytes arrived within {timeout} s")
        if not chunk:
            pytest.fail(f"connection closed after {len(got)} of {count} bytes")
        got += chunk
    return got


def drain(s: socket.socket, timeout: float = 3.0) -> tuple[bytes, bool]:
    """What the other end sends until it closes: (bytes, whether it reset).  Fails
    if the other end keeps the connection open for `timeout` seconds."""
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"the connection was not closed within {timeout} s")
        s.settimeout(left)
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            pytest.fail(f"the connection was not closed within {timeout} s")
        except ConnectionResetError:
            return b"".join(chunks), True
        if not chunk:
            return b"".join(chunks), False
        chunks.append(chunk)


def send(s: socket.socket, data: bytes) -> None:
    """Send, tolerating that sockimux may already have closed the connection."""
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        s.sendall(data)


def refusal(received: bytes) -> tuple[int, str] | None:
    """The REFUSE frame among what sockimux sent after its hello, as (code, reason)."""
    assert received[: len(MAGIC)] == MAGIC, f"no hello first: {received[:64]!r}"
    for f in parse(received[HELLO.size:])[0]:
        if f.type == REFUSE:
            return f.value, f.body.decode()
    return None


def instance_of(path: str | Path) -> bytes:
    """The instance id a sockimux sends in the hello it writes on every new connection."""
    with connect(path) as s:
        return recv_at_least(s, HELLO.size)[16:32]


def ready(path: str | Path, timeout: float = 10.0) -> None:
    """Wait until the process at `path` serves connections (it answers with a hello),
    i.e. its event loop runs and its signal handlers are in place."""
    with connect(path, timeout) as s:
        assert recv_at_least(s, HELLO.size)[: len(MAGIC)] == MAGIC


def rss_kib(pid: int) -> int:
    """Resident set size of a process, from /proc (KiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


# -- the peer ---------------------------------------------------------------------

class HostilePeer:
    """One subflow to a real sockimux, opened under ``instance`` (a fresh random
    one, or one learnt from the real peer to impersonate it)."""

    def __init__(self, path: str | Path, instance: bytes | None = None) -> None:
        self.instance = instance or os.urandom(16)
        self.sock = connect(path)
        send(self.sock, hello(self.instance))
        head = recv_at_least(self.sock, HELLO.size)
        self.their_hello = head[: HELLO.size]
        assert self.their_hello[: len(MAGIC)] == MAGIC, self.their_hello
        self.received, self.pending = parse(head[HELLO.size:])  # frames that came with the hello
        self._unseen = list(self.received)  # ... not yet returned by read()

    @property
    def their_instance(self) -> bytes:
        return self.their_hello[16:32]

    def read(self, timeout: float = 0.0) -> list[Frame]:
        """Read what has arrived (waiting up to ``timeout`` for something); the new frames."""
        new, self._unseen = self._unseen, []
        if new:
            timeout = 0.0
        self.sock.settimeout(timeout if timeout > 0 else 0.0)
        while True:
            try:
                chunk = self.sock.recv(1 << 20)
            except (BlockingIOError, TimeoutError):
                break
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                break
            frames, self.pending = parse(self.pending + chunk)
            new += frames
            self.received += frames
            self.sock.settimeout(0.0)
        return new

    def expect(self, ftype: int, timeout: float = 5.0) -> Frame:
        """Read until a frame of ``ftype`` arrives; fails on a REFUSE or the timeout."""
        deadline = time.monotonic() + timeout
        while True:
            for f in self.read(max(0.01, deadline - time.monotonic())):
                if f.type == ftype:
                    return f
                if f.type == REFUSE and ftype != REFUSE:
                    pytest.fail(f"refused: {f.body.decode(errors='replace')}")
            if time.monotonic() > deadline:
                pytest.fail(f"no frame of type {ftype} within {timeout} s")

    def open(self, timeout: float = 5.0) -> Frame:
        """Wait for the ACK that says sockimux accepted the subflow (its first credit)."""
        return self.expect(ACK, timeout)

    def send(self, data: bytes) -> None:
        self.sock.settimeout(5.0)  # read() leaves it non-blocking
        send(self.sock, data)

    def flood(self, unit: bytes, seconds: float, read: bool = False) -> int:
        """Send ``unit`` over and over for ``seconds`` (reading nothing unless ``read``);
        the bytes sent.  Stops early if sockimux closes the connection."""
        block = unit * max(1, 65536 // len(unit))
        sent = 0
        deadline = time.monotonic() + seconds
        self.sock.settimeout(0.05)
        while time.monotonic() < deadline:
            try:
                sent += self.sock.send(block)
            except TimeoutError:
                pass  # sockimux is not reading just now
            except (BrokenPipeError, ConnectionResetError):
                break
            if read:
                self.read()
        return sent

    def hold_half(self, data: bytes, cut: int) -> None:
        """Send only the first ``cut`` bytes of ``data`` (a frame left half-sent)."""
        self.send(data[:cut])

    def closed(self, timeout: float = 5.0) -> bool:
        """Whether sockimux closes (or resets) the connection within ``timeout``,
        discarding whatever it sends meanwhile."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                if not self.sock.recv(1 << 20):
                    return True
            except TimeoutError:
                return False
            except ConnectionResetError:
                return True
        return False

    def close(self) -> None:
        self.sock.close()
