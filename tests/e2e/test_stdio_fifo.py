"""STDIN a named FIFO whose writer wrote and closed before sockimux started."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from .harness import SOCKIMUX, wait_for


def test_a_named_fifo_whose_writer_is_gone(tmp_path: Path) -> None:
    """`echo hello > fifo &` done before `sockimux ... < fifo` reads it: the
    bytes are in the FIFO, no writer is left; that is the whole input."""
    fifo = tmp_path / "f"
    os.mkfifo(fifo)
    sock = str(tmp_path / "a.sock")
    with open(tmp_path / "a.out", "wb") as out, open(tmp_path / "a.err", "wb") as err:
        a = subprocess.Popen([SOCKIMUX, sock], stdin=subprocess.DEVNULL, stdout=out, stderr=err)
    wait_for(lambda: os.path.exists(sock) or a.poll() is not None, 10, "A to listen")
    read_end = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    write_end = os.open(fifo, os.O_WRONLY)
    os.write(write_end, b"hello-fifo\n")
    os.close(write_end)
    os.set_blocking(read_end, True)
    with open(tmp_path / "b.err", "wb") as err:
        b = subprocess.Popen([SOCKIMUX, "--connect", f"UNIX-CONNECT:{sock}"], stdin=read_end,
                             stdout=subprocess.DEVNULL, stderr=err)
    os.close(read_end)
    try:
        assert b.wait(20) == 0
        assert a.wait(20) == 0
        assert (tmp_path / "a.out").read_bytes() == b"hello-fifo\n"
    except subprocess.TimeoutExpired:
        pytest.fail("B did not end")
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.kill()
                p.wait()
