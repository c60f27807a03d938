"""COMMAND's STDERR in `sockimux ssh HOST -- COMMAND`: back to the user as
ssh would bring it, over the ssh connections' own STDERR.

The far sockimux runs COMMAND with its STDERR on a pipe of ours
(:class:`CommandStderr`) and sends what comes out of it, cut into
records, to one channel's helper at a time (its UNIX connection: the
helper is ``cat`` to its ssh channel's STDERR, :data:`.handoff.HELPER`).
On the near side every ssh's STDERR is read line by line
(:mod:`.sshstderr`): a record line is decoded and written to our STDERR
as it is, any other line is ssh's own message.

A record is one line, :data:`MARK` and the bytes in base64, so that it
passes through ssh's STDERR unchanged and any byte (a partial line, a
terminal's escape sequence, no newline at all) comes back as it was; a
line of ssh's own never starts with the mark.

The stream's end waits for the STDERR: once COMMAND's output has ended
and it has exited, its exit status (what the FIN carries, and with it
the end of the session) is taken only after its STDERR has ended too (as
ssh's session does) and all of it is in a helper's socket (within
:data:`SEND_WAIT`), and the near side lets each ssh exit by itself before
it ends them (dialer.py's close()).  What is carried this way is not the
stream: a record on a connection that dies can be lost, as ssh's own
STDERR would be with its connection; the next records take another.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import os
from collections.abc import Callable, Iterable

from .handoff import Channel

MARK = b"#sockimux-stderr:"
RECORD_BYTES = 2048  # COMMAND's bytes per record: a line under sshstderr.LINE_MAX
HELD_MAX = 1 << 20  # records held for a helper; past it COMMAND's STDERR is not read
SEND_WAIT = 10.0  # seconds, at the end, for the helpers to take what is held
RETRY = 0.02  # seconds before trying again a helper that took nothing more


def encode(data: bytes) -> list[bytes]:
    """``data`` as record lines."""
    return [MARK + base64.b64encode(data[i:i + RECORD_BYTES]) + b"\n"
            for i in range(0, len(data), RECORD_BYTES)]


def decode(line: bytes) -> bytes | None:
    """A record line's bytes; None for a line that is not a record."""
    if not line.startswith(MARK):
        return None
    try:
        return base64.b64decode(line[len(MARK):].rstrip(b"\r\n"), validate=True)
    except (binascii.Error, ValueError):
        return None


class CommandStderr:
    """Reads COMMAND's STDERR (``read_fd``, ours) and sends it as records
    to the helper of one of ``channels()`` (the open ones), keeping to one
    channel while it takes them."""

    def __init__(self, loop: asyncio.AbstractEventLoop, read_fd: int,
                 channels: Callable[[], Iterable[Channel]]) -> None:
        self._loop = loop
        self._fd: int | None = read_fd
        self._channels = channels
        self._held: collections.deque[bytes] = collections.deque()
        self._held_bytes = 0
        self._sent = 0  # bytes of the first held record already sent to _to
        self._to: Channel | None = None
        self._retry: asyncio.TimerHandle | None = None  # a helper was full: send() again then
        self._reading = False
        self._ended = asyncio.Event()  # COMMAND's STDERR hit its end
        os.set_blocking(read_fd, False)
        self._read_on()

    # -- COMMAND's side ---------------------------------------------------------

    def _read_on(self) -> None:
        if not self._reading and self._fd is not None:
            self._loop.add_reader(self._fd, self._read)
            self._reading = True

    def _read_off(self) -> None:
        if self._reading and self._fd is not None:
            self._loop.remove_reader(self._fd)
        self._reading = False

    def _read(self) -> None:
        while self._fd is not None and self._held_bytes < HELD_MAX:
            try:
                data = os.read(self._fd, 65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                data = b""
            if not data:
                self._close_input()
                break
            for record in encode(data):
                self._held.append(record)
                self._held_bytes += len(record)
        if self._held_bytes >= HELD_MAX:
            self._read_off()  # the helpers are behind: COMMAND waits, as with ssh
        self.send()

    def _close_input(self) -> None:
        self._read_off()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._ended.set()

    # -- the helpers' side ------------------------------------------------------

    def _target(self) -> Channel | None:
        if self._to is not None and not self._to.closed:
            return self._to
        if self._sent:  # its start went to a helper that is gone: the rest cannot follow
            self._held_bytes -= len(self._held.popleft())
            self._sent = 0
        self._to = next((c for c in self._channels() if not c.closed), None)
        return self._to

    def send(self) -> None:
        """Send what is held to a helper (again when a channel joins or a helper
        takes more)."""
        while self._held:
            to = self._target()
            if to is None:
                return  # held until a channel is open
            record = self._held[0]
            try:
                sent = to.keeper.send(record[self._sent:])
            except (BlockingIOError, InterruptedError):
                self._wait_writable()
                return
            except OSError:
                self._to = None  # that helper is gone: the next channel's takes the rest
                continue
            self._sent += sent
            if self._sent == len(record):
                self._held.popleft()
                self._held_bytes -= len(record)
                self._sent = 0
        self._unwait()
        self._read_on()

    def _wait_writable(self) -> None:
        # Tried again a little later, not on the keeper's readiness: its
        # channel can be closed meanwhile (its subflow ended), and a closed
        # descriptor must not stay watched by the loop.
        if self._retry is None:
            self._retry = self._loop.call_later(RETRY, self._retried)

    def _retried(self) -> None:
        self._retry = None
        self.send()

    def _unwait(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None

    # -- the end ----------------------------------------------------------------

    async def sent(self, wait: float = SEND_WAIT) -> None:
        """Until COMMAND's STDERR has ended (as ssh, however long a child of
        COMMAND that holds it runs on: it may still read the stream), then
        until all of it is in a helper's socket, for at most ``wait`` seconds."""
        await self._ended.wait()
        deadline = self._loop.time() + wait
        while self._held and self._loop.time() < deadline:
            self.send()
            if not self._held or self._target() is None:
                break
            await asyncio.sleep(0.01)

    def close(self) -> None:
        """Stop: what is read and held now is sent if a helper takes it at once."""
        if self._fd is not None:
            self._read()
        self.send()
        self._unwait()
        self._close_input()
