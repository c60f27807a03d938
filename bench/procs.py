"""Child processes, pipes, payloads and the sink for the benchmarks.

Every child is started in a session (process group) of its own, so that
``Procs.close`` can stop it and whatever it forked (socat's ``EXEC:cat``) by
its group id, and so that a Ctrl-C on the terminal reaches only the bench,
which then cleans up in its ``finally``.  Nothing is ever stopped by name.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import select
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SOCKIMUX = str(ROOT / "sockimux")
# The command that runs sockimux (``--sockimux`` replaces it); the socket path is appended.
SOCKIMUX_CMD: list[str] = [SOCKIMUX]
SINK = str(BENCH / "sink.py")
PIPE_SIZE = 1 << 20  # the sink's pipe, for sockimux and socat alike

MiB = 1 << 20


def sockimux_argv(socket_path: str) -> list[str]:
    return [*SOCKIMUX_CMD, socket_path]


def sockimux_command() -> str:
    """For netlab's --imux-cmd (a shell-style string)."""
    return shlex.join(SOCKIMUX_CMD)


class BenchError(Exception):
    """A measurement could not be made; the message says why (with stderr tails)."""


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    err: Path | None  # its stderr, if kept

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr_tail(self, limit: int = 3000) -> str:
        if self.err is None:
            return ""
        try:
            data = self.err.read_bytes()
        except OSError:
            return ""
        text = data[-limit:].decode(errors="replace").rstrip()
        return ("...\n" if len(data) > limit else "") + text

    def describe(self) -> str:
        """Name, exit status and stderr, for an error message."""
        rc = self.proc.poll()
        status = ("still running" if rc is None else f"killed by signal {-rc}" if rc < 0
                  else f"exit status {rc}")
        tail = self.stderr_tail()
        return f"{self.name} ({status}); stderr:\n  " + (tail.replace("\n", "\n  ") if tail else "(empty)")


class Procs:
    """The children of one measurement; ``close()`` stops every one still running."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.children: list[Child] = []
        self._files: list[IO[bytes]] = []

    def __enter__(self) -> Procs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def spawn(self, name: str, argv: Sequence[str], *, stdin: Any = subprocess.DEVNULL,
              stdout: Any = subprocess.DEVNULL, keep_stderr: bool = True,
              stderr_file: IO[bytes] | None = None) -> Child:
        err: Path | None = None
        if stderr_file is not None:
            stderr: Any = stderr_file
        elif keep_stderr:
            err = self.tmp / f"{name}.stderr"
            f = open(err, "wb")  # noqa: SIM115 - closed in close()
            self._files.append(f)
            stderr = f
        else:
            stderr = subprocess.DEVNULL
        try:
            proc = subprocess.Popen(list(argv), stdin=stdin, stdout=stdout, stderr=stderr,
                                    start_new_session=True, cwd=self.tmp)
        except OSError as exc:
            raise BenchError(f"cannot start {name} ({argv[0]}): {exc}") from None
        child = Child(name, proc, err)
        self.children.append(child)
        return child

    def shared_stderr(self, name: str) -> IO[bytes]:
        """One stderr file for many children (e.g. 128 relays)."""
        f = open(self.tmp / f"{name}.stderr", "ab")  # noqa: SIM115 - closed in close()
        self._files.append(f)
        return f

    def close(self) -> None:
        live = [c for c in self.children if c.proc.poll() is None]
        for c in live:
            _signal_group(c.proc, signal.SIGTERM)
            _signal_group(c.proc, signal.SIGCONT)  # a stopped child (see stall) must see it
        deadline = time.monotonic() + 3.0
        for c in live:
            try:
                c.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(c.proc, signal.SIGKILL)
                c.proc.wait()
        for f in self._files:
            f.close()
        self._files.clear()


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    # Only while the leader is alive (not yet reaped), so the group id is surely ours.
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)


def wait_exit(child: Child, timeout: float) -> int | None:
    try:
        return child.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> tuple[float, bool] | None:
    """utime+stime of ``pid`` so far, and whether it has exited (a zombie not
    yet reaped, whose times are final); None once it is reaped."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS, fields[0] in "ZX"  # fields 14, 15


def cpu_at_exit(child: Child, timeout: float) -> float | None:
    """utime+stime in seconds once ``child`` has exited: read while it is a
    zombie (not yet reaped, so its times are final); None if it does not
    exit in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = cpu_seconds(child.pid)
        if now is None:
            return None  # reaped already: cannot happen before wait_exit(), but say nothing
        if now[1]:
            return now[0]
        time.sleep(0.005)
    return None


def wait_listening(children: Sequence[tuple[Child, str]], timeout: float = 10.0) -> None:
    """Wait until each child's socket file exists; fail with its stderr if it died first."""
    deadline = time.monotonic() + timeout
    for child, path in children:
        while not os.path.exists(path):
            if child.proc.poll() is not None:
                raise BenchError(f"{child.name} exited before listening on {path}: {child.describe()}")
            if time.monotonic() > deadline:
                raise BenchError(f"{child.name} did not listen on {path} within {timeout:g} s: "
                                 f"{child.describe()}")
            time.sleep(0.01)
    # bind() creates the file a moment before listen(): let both happen.
    time.sleep(0.1)


def connections(path: str) -> int:
    """Connections to the listening UNIX socket ``path``: accepted ones and those still
    in its backlog (a stopped listener), from /proc/net/unix."""
    count = 0
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            fields = line.split()
            # Num RefCount Protocol Flags Type St Inode Path; flag 00010000: the listener itself
            if len(fields) == 8 and fields[7] == path and fields[3] != "00010000":
                count += 1
    return count


def pipe(size: int | None = None) -> tuple[int, int]:
    r, w = os.pipe()
    if size:
        with contextlib.suppress(OSError):
            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, size)
    return r, w


def close_fds(*fds: int) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


class Watchdog:
    """Calls ``on_expire`` once after ``seconds`` unless cancelled (a blocking read's timeout)."""

    def __init__(self, seconds: float, on_expire: Callable[[], None]) -> None:
        self.expired = False

        def fire() -> None:
            self.expired = True
            on_expire()

        self._timer = threading.Timer(seconds, fire)
        self._timer.daemon = True
        self._timer.start()

    def cancel(self) -> None:
        self._timer.cancel()


# -- the sink: a separate process that drains a pipe ---------------------------------


class Sink:
    """``sink.py`` reading ``fd`` (or watching the regular file ``file`` until its writer
    closes it): counts bytes, optionally hashes and rate-limits.

    It reports (JSON) bytes, sha256, and CLOCK_MONOTONIC times of the first
    byte and of EOF, which compare directly with this process's
    ``time.monotonic()``.
    """

    def __init__(self, procs: Procs, name: str, fd: int | None, *, sha256: bool,
                 rate: float | None = None, file: Path | None = None) -> None:
        argv = [sys.executable, SINK] + (["--sha256"] if sha256 else [])
        if rate:
            argv += ["--rate", str(rate)]
        if file is not None:
            argv += ["--file", str(file)]
        self.child = procs.spawn(name, argv, stdin=subprocess.DEVNULL if fd is None else fd,
                                 stdout=subprocess.PIPE)
        if file is not None:
            self._watching(10.0)

    def _watching(self, timeout: float) -> None:
        """Wait for the line that says the watch is set (nothing else is written before
        the report, so a raw read takes just that line)."""
        out = self.child.proc.stdout
        assert out is not None
        ready, _, _ = select.select([out], [], [], timeout)
        if not ready or os.read(out.fileno(), 64) != b"watching\n":
            raise BenchError(f"the sink did not start watching its file: {self.child.describe()}")

    def result(self, timeout: float) -> dict[str, Any]:
        """Wait for EOF (or stop it at ``timeout``) and return its report."""
        proc = self.child.proc
        try:
            out, _ = proc.communicate(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGTERM)
            out, _ = proc.communicate(timeout=10)
            timed_out = True
        try:
            report: dict[str, Any] = json.loads(out.decode())
        except ValueError:
            raise BenchError(f"sink produced no report: {self.child.describe()}") from None
        report["timed_out"] = timed_out
        return report

    def stop(self) -> dict[str, Any]:
        """Stop it now (it reports what it read so far)."""
        _signal_group(self.child.proc, signal.SIGTERM)
        return self.result(10)


# -- payloads ------------------------------------------------------------------------


@dataclass
class Payload:
    path: Path
    size: int
    sha256: str


def make_payload(directory: Path, name: str, size: int) -> Payload:
    """``size`` random bytes in ``directory`` (tmpfs), with their sha256."""
    path = directory / name
    h = hashlib.sha256()
    block = 16 * MiB
    try:
        with open(path, "wb") as f:
            left = size
            while left:
                data = os.urandom(min(block, left))
                h.update(data)
                f.write(data)
                left -= len(data)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return Payload(path, size, h.hexdigest())


def payload_dir(wanted: str | None) -> Path:
    for candidate in ([wanted] if wanted else ["/dev/shm"]):
        p = Path(candidate)
        if p.is_dir() and os.access(p, os.W_OK):
            return p
    raise BenchError(f"payload directory {wanted or '/dev/shm'} is not writable (use --payload-dir)")


# -- /proc -----------------------------------------------------------------------------


def proc_status_kib(pid: int, *keys: str) -> dict[str, int] | None:
    """VmHWM, VmRSS, ... of ``pid`` in KiB, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            lines = f.readlines()
    except OSError:
        return None
    out: dict[str, int] = {}
    for line in lines:
        key, _, rest = line.partition(":")
        if key in keys:
            out[key] = int(rest.split()[0])
    return out
