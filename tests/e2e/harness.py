"""Real processes for end-to-end tests: sockimux pairs, socat subflows, relays."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOCKIMUX = str(ROOT / "sockimux")


def require(tool: str) -> str:
    """Path of a tool the test needs; a missing tool fails the test, never skips it."""
    path = shutil.which(tool) or (f"/usr/sbin/{tool}" if os.access(f"/usr/sbin/{tool}", os.X_OK) else None)
    if path is None:
        pytest.fail(f"{tool} is not installed: run `make` (it installs the test tools)")
    return path


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def random_file(path: Path, size: int, seed: int = 0) -> Path:
    """A file of `size` pseudo-random bytes (fast, reproducible from the seed)."""
    import random

    rng = random.Random(seed)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 1 << 20)
            f.write(rng.randbytes(n))
            left -= n
    return path


def feed(proc: subprocess.Popen[bytes], data: bytes, seconds: float) -> threading.Thread:
    """Write ``data`` to proc's STDIN evenly over about ``seconds``, then close it."""

    def run() -> None:
        assert proc.stdin is not None
        step = 64 * 1024
        pause = seconds / max(1, len(data) // step)
        try:
            for i in range(0, len(data), step):
                proc.stdin.write(data[i : i + step])
                proc.stdin.flush()
                time.sleep(pause)
        finally:
            proc.stdin.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


F_SETPIPE_SZ = 1031


class Peer:
    """One sockimux process with its STDIN from a file (or a pipe) and STDOUT to
    a file, or (``stdout_pipe``: 0 for the default size, or a size in bytes)
    to a pipe that a thread of ours copies to that file (at ``stdout_rate``
    bytes/s, if given)."""

    def __init__(self, tmp: Path, name: str, stdin: Path | None, *args: str,
                 stdin_pipe: bool = False, stdout: Path | None = None,
                 stdout_pipe: int | None = None, stdout_rate: float | None = None) -> None:
        self._stdout_rate = stdout_rate  # bytes/s the pipe is read at (None: at once)
        self.socket = str(tmp / f"{name}.sock")
        self.out = stdout or tmp / f"{name}.out"
        self.err = tmp / f"{name}.err"
        self._stdout_f = open(self.out, "wb")
        self._stderr_f = open(self.err, "wb")
        if stdin_pipe:
            stdin_arg: int | object = subprocess.PIPE
        else:
            stdin_arg = open(stdin, "rb") if stdin is not None else subprocess.DEVNULL
        self._copier: threading.Thread | None = None
        if stdout_pipe is None:
            self.proc = subprocess.Popen([SOCKIMUX, *args, self.socket], stdin=stdin_arg,
                                         stdout=self._stdout_f, stderr=self._stderr_f)
        else:
            read_end, write_end = os.pipe()
            if stdout_pipe:
                fcntl.fcntl(read_end, F_SETPIPE_SZ, stdout_pipe)
            self.proc = subprocess.Popen([SOCKIMUX, *args, self.socket], stdin=stdin_arg,
                                         stdout=write_end, stderr=self._stderr_f)
            os.close(write_end)
            self._copier = threading.Thread(target=self._copy, args=(read_end,), daemon=True)
            self._copier.start()
        if stdin_arg is not subprocess.PIPE and stdin_arg is not subprocess.DEVNULL:
            stdin_arg.close()  # type: ignore[union-attr]
        wait_for(lambda: os.path.exists(self.socket) or self.proc.poll() is not None, 10,
                 f"{name} to listen")

    def _copy(self, fd: int) -> None:
        rate = self._stdout_rate
        step = 1 << 20 if rate is None else 64 * 1024
        start, total = time.monotonic(), 0
        with os.fdopen(fd, "rb", buffering=0) as pipe:
            while chunk := pipe.read(step):
                self._stdout_f.write(chunk)
                total += len(chunk)
                if rate is not None:
                    time.sleep(max(0.0, start + total / rate - time.monotonic()))
        self._stdout_f.flush()

    def wait(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout)
            if self._copier is not None:
                self._copier.join(timeout)
            return code
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"sockimux {self.socket} did not exit within {timeout} s; stderr:\n{self.stderr()}")

    def stderr(self) -> str:
        self._stderr_f.flush()
        return self.err.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdin:
            self.proc.stdin.close()
        self._stdout_f.close()
        self._stderr_f.close()


def socat_subflow(a: Peer, b: Peer, *extra: str) -> subprocess.Popen[bytes]:
    """One subflow: socat joining the two peers' sockets."""
    return subprocess.Popen([require("socat"), *extra, f"UNIX-CONNECT:{a.socket}",
                             f"UNIX-CONNECT:{b.socket}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def replace_relays(a: Peer, b: Peer, relays: list[subprocess.Popen[bytes]], times: int,
                   written: int, pause: float) -> None:
    """``times`` over: once B has written more than ``written`` bytes, and
    ``pause`` seconds more, the oldest relay is killed mid-transfer and a
    new one joins (``relays`` is kept current)."""
    for _ in range(times):
        wait_for(lambda: b.out.stat().st_size > written, 20, "data to flow")
        time.sleep(pause)
        kill(relays.pop(0))
        relays.append(socat_subflow(a, b))


def wait_for(cond: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def kill(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
    proc.wait()


class Relay:
    """A subflow through this test process, which can freeze it: stop forwarding
    in both directions without closing anything (a black-holed connection)."""

    def __init__(self, a: Peer, b: Peer) -> None:
        self.frozen = threading.Event()
        self.closed = threading.Event()
        self.sa = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sb = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sa.connect(a.socket)
        self.sb.connect(b.socket)
        self.threads = [threading.Thread(target=self._pump, args=(self.sa, self.sb), daemon=True),
                        threading.Thread(target=self._pump, args=(self.sb, self.sa), daemon=True)]
        for t in self.threads:
            t.start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        src.settimeout(0.05)
        while not self.closed.is_set():
            if self.frozen.is_set():
                time.sleep(0.05)
                continue
            try:
                data = src.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            try:
                dst.sendall(data)
            except OSError:
                break
        if not self.frozen.is_set():
            self.close()

    def freeze(self) -> None:
        self.frozen.set()

    def close(self) -> None:
        self.closed.set()
        for s in (self.sa, self.sb):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
