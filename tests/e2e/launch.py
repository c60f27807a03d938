"""sockimux processes the harness's Peer does not cover: STDIN any descriptor,
STDOUT a pipe whose reading can be held back, limits set for the child,
and the event loop plain asyncio instead of uvloop."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from .harness import SOCKIMUX, kill, require, wait_for

# sockimux run by the interpreter of the checkout with uvloop made unimportable:
# the CLI then falls back to asyncio's own event loop.
WITHOUT_UVLOOP = [sys.executable, "-c", "import sys; sys.modules['uvloop'] = None; "
                  "from sockimux.cli import main; sys.exit(main())"]


def subflow(x: str, y: str) -> subprocess.Popen[bytes]:
    """One subflow: socat joining the sockets ``x`` and ``y``."""
    return subprocess.Popen([require("socat"), f"UNIX-CONNECT:{x}", f"UNIX-CONNECT:{y}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def fd_limit(count: int) -> Callable[[], None]:
    """preexec_fn: at most ``count`` open descriptors, soft and hard (so the
    child cannot raise it)."""
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (count, count))


class Piped:
    """sockimux with STDIN ``stdin`` (a descriptor) and its STDOUT a pipe that
    a thread copies to ``out``; with ``held``, nobody reads it until release():
    a consumer slow to start, like ``| (sleep 3; cat > out)``."""

    def __init__(self, tmp: Path, name: str, *args: str, stdin: int = subprocess.DEVNULL,
                 held: bool = False, asyncio_loop: bool = False,
                 preexec_fn: Callable[[], None] | None = None) -> None:
        self.socket = str(tmp / f"{name}.sock")
        self.out = tmp / f"{name}.out"
        self.err = tmp / f"{name}.err"
        command = WITHOUT_UVLOOP if asyncio_loop else [SOCKIMUX]
        read_end, write_end = os.pipe()
        with open(self.err, "wb") as err:
            self.proc = subprocess.Popen([*command, *args, self.socket], stdin=stdin,
                                         stdout=write_end, stderr=err, preexec_fn=preexec_fn)
        os.close(write_end)
        self._released = threading.Event()
        if not held:
            self._released.set()
        self._copier = threading.Thread(target=self._copy, args=(read_end,), daemon=True)
        self._copier.start()
        wait_for(lambda: os.path.exists(self.socket) or self.proc.poll() is not None, 10,
                 f"{name} to listen")

    def _copy(self, fd: int) -> None:
        self._released.wait()
        with os.fdopen(fd, "rb", buffering=0) as pipe, open(self.out, "wb") as out:
            while chunk := pipe.read(1 << 20):
                out.write(chunk)

    def release(self) -> None:
        self._released.set()

    def wait(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            kill(self.proc)
            pytest.fail(f"sockimux {self.socket} did not exit within {timeout} s:\n{self.stderr()}")
        self._copier.join(timeout)
        return code

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def close(self) -> None:
        self.release()
        kill(self.proc)
