"""STDIN or STDOUT whose file description another process made non-blocking
(O_NONBLOCK is a property of the description, shared by every process that
holds it: a parent's socket, a terminal a program left non-blocking).
sockimux must not take EAGAIN there for a failure ("reading STDIN failed:
Resource temporarily unavailable", exit 7), and must leave the flags as it
found them."""

from __future__ import annotations

import fcntl
import os
import pty
import random
import socket
import subprocess
import threading
import time
import tty
from pathlib import Path

import pytest

from .harness import SOCKIMUX, wait_for


def _nonblocking(fd: int) -> int:
    flags = fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK
    fcntl.fcntl(fd, fcntl.F_SETFL, flags)
    return flags


def _pair(tmp: Path, b_stdin: int | None, b_stdout: int | None,
          a_stdin: Path | None = None) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
    """A listening on a socket, its STDOUT a file; B connecting to it."""
    sock = str(tmp / "a.sock")
    with open(a_stdin or os.devnull, "rb") as a_in, open(tmp / "a.out", "wb") as a_out, \
            open(tmp / "a.err", "wb") as a_err:
        a = subprocess.Popen([SOCKIMUX, sock], stdin=a_in, stdout=a_out, stderr=a_err)
    wait_for(lambda: os.path.exists(sock) or a.poll() is not None, 10, "A to listen")
    with open(tmp / "b.err", "wb") as b_err:
        b = subprocess.Popen([SOCKIMUX, "--connect", f"UNIX-CONNECT:{sock},count=2"],
                             stdin=subprocess.DEVNULL if b_stdin is None else b_stdin,
                             stdout=subprocess.DEVNULL if b_stdout is None else b_stdout,
                             stderr=b_err)
    return a, b


def _logs(tmp: Path) -> str:
    return "\n".join(f"--- {n}\n{(tmp / n).read_text(errors='replace')}" for n in ("a.err", "b.err"))


def _stop(*procs: subprocess.Popen[bytes]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


@pytest.mark.parametrize("kind", ["socket", "terminal"])
def test_a_nonblocking_stdin_shared_with_the_parent(tmp_path: Path, kind: str) -> None:
    """Input typed slowly into a non-blocking STDIN arrives whole; the parent's
    flags are as it set them, during the session and after."""
    if kind == "socket":
        ours, theirs = socket.socketpair()
        stdin = theirs.fileno()
        write, end = ours.sendall, lambda: ours.shutdown(socket.SHUT_WR)
    else:
        master, stdin = pty.openpty()
        tty.setraw(stdin)  # bytes as they are; the end: ^D is not special in raw mode
        write, end = (lambda data: os.write(master, data)), (lambda: None)
    flags = _nonblocking(stdin)
    a, b = _pair(tmp_path, stdin, None)
    try:
        lines = b"".join(b"line %d\n" % i for i in range(5))
        for i in range(5):
            time.sleep(0.2)  # B reads in between: each read of an empty input is EAGAIN
            write(b"line %d\n" % i)
            assert fcntl.fcntl(stdin, fcntl.F_GETFL) == flags
        end()
        if kind == "terminal":  # raw: no end of input to type; SIGTERM ends it
            wait_for(lambda: (tmp_path / "a.out").read_bytes() == lines or b.poll() is not None, 30,
                     "the lines to arrive")
            b.terminate()
            assert b.wait(30) == 143, _logs(tmp_path)
        else:
            assert b.wait(30) == 0, _logs(tmp_path)
            assert a.wait(30) == 0, _logs(tmp_path)
        assert (tmp_path / "a.out").read_bytes() == lines, _logs(tmp_path)
        assert fcntl.fcntl(stdin, fcntl.F_GETFL) == flags
    finally:
        _stop(a, b)


def test_a_nonblocking_stdout_socket_with_a_slow_reader(tmp_path: Path) -> None:
    """B's STDOUT a socket the parent made non-blocking, read slowly: its
    buffer fills (EAGAIN for a non-blocking write), and B waits for room."""
    data = random.Random(7).randbytes(4 << 20)
    src = tmp_path / "a.in"
    src.write_bytes(data)
    ours, theirs = socket.socketpair()
    _nonblocking(theirs.fileno())
    a, b = _pair(tmp_path, None, theirs.fileno(), a_stdin=src)
    theirs.close()
    got = bytearray()

    def read_slowly() -> None:
        time.sleep(1)  # let the socket's buffer fill first
        while chunk := ours.recv(256 * 1024):
            got.extend(chunk)
            time.sleep(0.01)

    reader = threading.Thread(target=read_slowly, daemon=True)
    reader.start()
    try:
        assert b.wait(60) == 0, _logs(tmp_path)
        assert a.wait(60) == 0, _logs(tmp_path)
        reader.join(60)
        assert bytes(got) == data, _logs(tmp_path)
    finally:
        _stop(a, b)
        ours.close()
