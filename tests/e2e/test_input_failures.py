"""STDIN that fails is never taken for a complete input: a regular file
truncated below what was already read, or a read error, ends the session
with exit 7 (the peer is told and exits 5), never with exit 0 and a prefix
of the stream passed off as the whole of it."""

from __future__ import annotations

import ctypes
import mmap
import os
import socket
import time
from pathlib import Path

from .harness import Peer, kill, random_file, require, wait_for
from .launch import Piped, subflow

MB = 1 << 20


def read_position(pid: int, path: Path) -> int:
    """The file offset of process ``pid``'s descriptor for ``path`` (0 if none)."""
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                for line in Path(f"/proc/{pid}/fdinfo/{fd}").read_text().splitlines():
                    if line.startswith("pos:"):
                        return int(line.split()[1])
        except OSError:
            continue
    return 0


def test_a_file_truncated_while_the_consumer_is_slow_to_start_exits_7(tmp_path: Path) -> None:
    """A has read (handed out as Extents) and sent a window's worth of its
    file; B holds it all, its STDOUT not read yet.  The file is then truncated
    below what A read: when B's consumer starts and A may read on, the file's
    end is not the end of the input (it used to be: both exited 0 and B's
    output was a 17.8 MB prefix of a 2 GiB file)."""
    require("socat")
    a_in = random_file(tmp_path / "a.in", 48 * MB, seed=7)
    original = a_in.read_bytes()
    a = Peer(tmp_path, "a", a_in)
    b = Piped(tmp_path, "b", held=True)
    relays = [subflow(a.socket, b.socket) for _ in range(3)]
    try:
        # A has read a window (16 MiB) beyond what B wrote out, and stopped.
        wait_for(lambda: read_position(a.proc.pid, a_in) >= 16 * MB, 20, "A to read a window")
        last = -1
        while (pos := read_position(a.proc.pid, a_in)) != last:
            last = pos
            time.sleep(0.3)
        assert last < len(original)
        os.truncate(a_in, 1000)
        b.release()
        assert a.wait(30) == 7, a.stderr()
        assert "it was truncated to 1000 bytes" in a.stderr()
        assert b.wait(30) == 5, b.stderr()
        assert "peer ended the session" in b.stderr()
        out = b.out.read_bytes()
        assert out == original[: len(out)]
        assert "Traceback" not in a.stderr() + b.stderr()
    finally:
        for r in relays:
            kill(r)
        a.close()
        b.close()


def mapped_then_unmapped(size: int) -> int:
    """The address of ``size`` bytes of random data in our memory followed by
    an unmapped page (read through /proc/PID/mem, the end fails with EIO)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    page = mmap.PAGESIZE
    addr = libc.mmap(None, size + page, mmap.PROT_READ | mmap.PROT_WRITE,
                     mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
    assert addr not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
    assert libc.munmap(addr + size, page) == 0
    ctypes.memmove(addr, os.urandom(size), size)
    return int(addr)


def test_a_read_error_on_a_regular_file_is_not_an_end(tmp_path: Path) -> None:
    """/proc/PID/mem is a regular file: read from an address just before an
    unmapped page, it delivers bytes, then fails with EIO.  That used to be
    taken for the end of the input (exit 0 on both sides, the stream cut
    short); with a 64 KiB window the failure comes after a subflow joined,
    so the peer is told."""
    require("socat")
    size = 2 * MB
    addr = mapped_then_unmapped(size)
    mem = os.open(f"/proc/{os.getpid()}/mem", os.O_RDONLY)
    os.lseek(mem, addr, os.SEEK_SET)
    a = Piped(tmp_path, "a", "--window", "64K", stdin=mem)
    os.close(mem)
    b = Peer(tmp_path, "b", None, "--window", "64K")
    relay = subflow(a.socket, b.socket)
    try:
        assert a.wait(30) == 7, a.stderr()
        assert a.stderr().count("\n") == 1, a.stderr()  # one line
        assert "reading STDIN failed: Input/output error" in a.stderr()
        assert b.wait(30) == 5, b.stderr()
        assert "reading STDIN failed" in b.stderr()
        assert 0 < b.out.stat().st_size <= size
        assert b.out.read_bytes() == ctypes.string_at(addr, b.out.stat().st_size)
    finally:
        kill(relay)
        a.close()
        b.close()


def test_a_socket_on_stdin_reset_by_its_writer_is_not_an_end(tmp_path: Path) -> None:
    """A socket on STDIN (read by a thread) whose other end goes away with
    bytes unread (ECONNRESET: the writer died, what it still had to send is
    lost) used to be taken for the end of the input after a warning, and the
    peer exited 0 with a partial stream."""
    require("socat")
    ours, theirs = socket.socketpair()
    theirs.send(b"never read")  # unread in our end when we close it: the reader sees a reset
    payload = os.urandom(300_000)
    a = Piped(tmp_path, "a", stdin=theirs.fileno())
    theirs.close()
    b = Peer(tmp_path, "b", None)
    relay = subflow(a.socket, b.socket)
    try:
        ours.sendall(payload)
        wait_for(lambda: b.out.stat().st_size == len(payload), 20, "the bytes before the reset")
        ours.close()
        assert a.wait(30) == 7, a.stderr()
        assert "reading STDIN failed: Connection reset by peer" in a.stderr()
        assert b.wait(30) == 5, b.stderr()
        assert b.out.read_bytes() == payload
    finally:
        ours.close()
        kill(relay)
        a.close()
        b.close()
