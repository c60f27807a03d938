"""The two ends of a bulk transfer: what the sender reads and what the receiver writes.

STDIN of the sending end (sockimux A, or the socat endpoint a):

``file``
    the payload file itself (``sockimux A.sock < payload``; socat reads
    ``OPEN:payload``), which lets sockimux send straight from the file.
``pipe``
    a pipe (1 MiB) that ``cat payload`` fills (``cat payload | sockimux
    A.sock``; socat reads ``STDIN``).  ``cat`` starts before the clock and
    blocks once the pipe is full (sockimux A reads ahead up to its window,
    as it does from a file: see bulk.py).

STDOUT of the receiving end (sockimux B, or the socat endpoint b):

``pipe``
    a pipe (1 MiB) that sink.py drains, counting (the run ends at EOF there).
``file``
    a regular file next to the payload (tmpfs: ``sockimux B.sock > out``),
    created empty before each run and removed after it; sink.py watches it
    and the run ends at its IN_CLOSE_WRITE, when the writer closes it (a
    pipe's EOF is the same moment: the last writer closing it).
"""

from __future__ import annotations

import os

from procs import PIPE_SIZE, Payload, Procs, Sink, close_fds, pipe

KINDS = ("file", "pipe")
# How each kind reads in a description: STDIN (before the command, after it, socat's
# address), and STDOUT (after the command).
FEED_TEXT = {"file": ("", " < payload", "OPEN:payload"), "pipe": ("cat payload | ", "", "STDIN")}
OUTPUT_TEXT = {"pipe": " | sink", "file": " > out (tmpfs file)"}


class Feed:
    """STDIN of the sending end (``with``: spawn the endpoint with ``fd`` inside)."""

    def __init__(self, procs: Procs, payload: Payload, kind: str) -> None:
        if kind == "file":
            self.fd = os.open(payload.path, os.O_RDONLY)
            self.socat_address = f"OPEN:{payload.path}"
            return
        self.socat_address = "STDIN"
        r, w = pipe(PIPE_SIZE)
        try:
            procs.spawn("cat", ["cat", str(payload.path)], stdout=w)
        except BaseException:
            close_fds(r)
            raise
        finally:
            close_fds(w)
        self.fd = r

    def __enter__(self) -> Feed:
        return self

    def __exit__(self, *exc: object) -> None:
        """Once the endpoint has it, our copy goes: the endpoint is the pipe's only reader."""
        close_fds(self.fd)


class Output:
    """STDOUT of the receiving end (``with``, for the whole run): spawn the writer with
    ``fd``, then ``sink()``.  The file (``file``) is next to the payload, removed at the end."""

    def __init__(self, kind: str, payload: Payload) -> None:
        self.kind = kind
        self.path = payload.path.with_name(payload.path.name + ".out")
        self._read = -1
        if kind == "pipe":
            self._read, self.fd = pipe(PIPE_SIZE)
        else:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)

    def sink(self, procs: Procs, sha256: bool) -> Sink:
        """Our copies go first, so that the writer's close is the last one; then the sink starts."""
        read, self._read = self._read, -1
        self._close_write()
        try:
            if self.kind == "pipe":
                return Sink(procs, "sink", read, sha256=sha256)
            return Sink(procs, "sink", None, sha256=sha256, file=self.path)
        finally:
            if read >= 0:
                close_fds(read)

    def _close_write(self) -> None:
        if self.fd >= 0:
            close_fds(self.fd)
            self.fd = -1

    def __enter__(self) -> Output:
        return self

    def __exit__(self, *exc: object) -> None:
        self._close_write()
        if self._read >= 0:
            close_fds(self._read)
            self._read = -1
        self.path.unlink(missing_ok=True)
