"""A STDERR nobody reads (a full pipe) never holds up the stream."""

from __future__ import annotations

import fcntl
import os
import subprocess
import threading
from pathlib import Path

from .harness import SOCKIMUX, kill, random_file, require, sha256_file, wait_for

F_SETPIPE_SZ = 1031


def test_a_full_stderr_pipe_does_not_stop_the_stream(tmp_path: Path) -> None:
    """B logs the stats every 0.1 s into a one-page STDERR pipe that nobody
    reads until the stream is over: the pipe is full within a second, while
    the input takes several seconds to come.  Before, B's next log line
    blocked its event loop and the stream stopped for good."""
    payload = random_file(tmp_path / "payload", 8 << 20)
    a_sock, b_sock = str(tmp_path / "a.sock"), str(tmp_path / "b.sock")
    err_read, err_write = os.pipe()
    fcntl.fcntl(err_write, F_SETPIPE_SZ, 4096)
    # A's input arrives over 3 s (a slow writer), so B's stats fill the pipe first.
    feeder = subprocess.Popen(
        ["sh", "-c", f"for i in 0 1 2 3 4 5 6 7; do dd if={payload} bs=1M skip=$i count=1 "
                     "status=none; sleep 0.4; done"], stdout=subprocess.PIPE)
    with open(tmp_path / "a.err", "wb") as a_err:
        a = subprocess.Popen([SOCKIMUX, a_sock], stdin=feeder.stdout,
                             stdout=subprocess.DEVNULL, stderr=a_err)
    assert feeder.stdout is not None
    feeder.stdout.close()
    with open(tmp_path / "b.out", "wb") as b_out:
        b = subprocess.Popen([SOCKIMUX, "--stats=0.1", b_sock], stdin=subprocess.DEVNULL,
                             stdout=b_out, stderr=err_write)
    os.close(err_write)
    relays: list[subprocess.Popen[bytes]] = []
    try:
        wait_for(lambda: os.path.exists(a_sock) and os.path.exists(b_sock), 10, "both to listen")
        relays = [subprocess.Popen([require("socat"), f"UNIX-CONNECT:{a_sock}",
                                    f"UNIX-CONNECT:{b_sock}"]) for _ in range(2)]
        # STDERR is not read: the whole stream must still reach B's STDOUT.
        wait_for(lambda: (tmp_path / "b.out").stat().st_size == 8 << 20, 30,
                 "the stream to reach B while its STDERR is full")
        assert sha256_file(tmp_path / "b.out") == sha256_file(payload)
        assert a.wait(20) == 0
        # Now read it: everything B queued comes out, and B ends.
        got = bytearray()
        reader = threading.Thread(target=lambda: got.extend(_read_all(err_read)))
        reader.start()
        assert b.wait(20) == 0
        reader.join(10)
        text = got.decode()
        assert text.count("sockimux[") > 10  # the stats, every 0.1 s, none lost under 1 MiB
        assert "not shown" not in text
    finally:
        for p in (a, b, feeder, *relays):
            kill(p)
        os.close(err_read)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)
