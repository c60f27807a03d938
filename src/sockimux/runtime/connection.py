"""One subflow's connection: any connected stream socket (accepted on a
UNIX listener today; dialed over TCP or a socketpair to a child next).

SubflowConnection is the asyncio protocol: it reads straight into the
session's buffers (BufferedProtocol) and hands the session's frames to the
transport.  It also owns the two paths around our memory, both through a
duplicate of the socket's descriptor (direct_source()):

- sendfile(): an Extent of a regular-file STDIN goes from the page cache
  to the socket (send(), sending.py).
- splice(): a DATA body moves from the socket to STDOUT, or to a holding
  pipe until its turn comes (``bodies``, runtime/splicing.py).

What happens to the session is the runner's: the connection calls back
subflow_opened, subflow_data, subflow_writable and subflow_lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, cast

from ..core.driver import WRITE_HIGH, WRITE_LOW
from ..core.errors import CloseCode
from ..core.sender import Outgoing
from ..core.subflow import SubflowState
from .sending import Sending
from .splicing import BodyMover

if TYPE_CHECKING:
    from .runner import Runner

log = logging.getLogger("sockimux")

# A UNIX stream socket queues at most its sender's send buffer (208 KiB by
# default): each splice, sendfile or read on either end moves at most that.
# Asked for more, the kernel gives twice the request up to twice
# net.core.wmem_max (itself 208 KiB by default: then 416 KiB).  With 2 MiB,
# 1 GiB over one subflow took both ends 25% less CPU (PERFORMANCE.md item
# 18).  What is in flight stays bounded by the window and each subflow's cap.
# (Not for TCP: setting it there turns off the kernel's own tuning.)
UNIX_SEND_BUFFER = 1024 * 1024

# Whoever hands connections in may refuse one before it joins the session:
# given the connection's socket, the reason to refuse it (logged), or None.
Admission = Callable[[socket.socket], "str | None"]


class SubflowWatch(Protocol):
    """Whoever opened a connection (a dialer) learns what became of it: it
    re-opens the subflow when it ends, unless the close code says it cannot heal."""

    # The stats name the subflow by this: the address it was opened to and,
    # with count=N, which of its N ("2 of 4"), as the dialer's log and table do.
    label: str

    def established(self) -> None:
        """The hello exchange is done: the subflow is open in the session."""

    def ended(self, code: CloseCode | None, reason: str) -> None:
        """The connection is gone; ``code`` is the session's close code (a
        refusal, a stall), None when the connection itself ended (EOF, error)."""


class SubflowConnection(Sending, asyncio.BufferedProtocol):
    """One connection, from connection_made on: see the module's comment."""

    def __init__(self, runner: Runner, admit: Admission | None = None,
                 watch: SubflowWatch | None = None) -> None:
        self.runner = runner
        self.admit = admit
        self.watch = watch
        self.reported_open = False  # watch.established() was called
        self.sid = 0
        self.transport: asyncio.Transport | None = None
        self.full = False  # the session may hand it nothing more (sending.py)
        self.paused = False  # the transport holds WRITE_HIGH bytes or more
        self.held: list[Outgoing] = []  # waiting for the socket, to go by sendfile()
        self.watching = False  # the loop watches direct_fd for writing (held)
        self.direct_fd = -1  # our duplicate of the socket, for splice and sendfile
        self.sends_direct = False  # direct_fd is the socket itself (not a channel's read pipe)
        self.bodies = BodyMover(self)  # DATA bodies spliced from direct_fd (splicing.py)

    def direct_source(self) -> int:
        """Our duplicate of the socket, or -1: then this subflow does without
        splice and sendfile (out of descriptors, it is tried again later).
        A channel of two pipes (an ssh channel, remote/pipepair.py) gives its
        read pipe: bodies are spliced from it, and nothing is sent by
        sendfile() (``sends_direct`` stays False)."""
        if self.direct_fd < 0:
            assert self.transport is not None
            sock = self.transport.get_extra_info("socket")
            source = sock if sock is not None else self.transport.get_extra_info("read_pipe")
            if source is None:
                return -1
            try:
                self.direct_fd = os.dup(source.fileno())
                self.sends_direct = sock is not None
            except OSError as exc:
                self.runner.resource_warning("dup", f"subflow {self.sid}: sending and receiving "
                                             f"without sendfile/splice ({exc.strerror})")
                return -1
        return self.direct_fd

    def forget_direct(self) -> None:
        self.bodies.stop()
        self.unhold()
        if self.direct_fd >= 0:
            os.close(self.direct_fd)
            self.direct_fd = -1

    # The transport's callbacks hand a bug of ours to the runner themselves:
    # raised to the transport, it would tear this connection down before the
    # runner could tell the peer on it that the session is over.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        try:
            if self.admit is not None:
                refusal = self.admit(self.transport.get_extra_info("socket"))
                if refusal:
                    log.warning("%s", refusal)
                    self.transport.abort()
                    return
            self.transport.set_write_buffer_limits(high=WRITE_HIGH, low=WRITE_LOW)
            sock = self.transport.get_extra_info("socket")
            if sock is not None and sock.family == socket.AF_UNIX:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, UNIX_SEND_BUFFER)
            self.sid = self.runner.subflow_opened(self)
            if not self.sid:
                self.transport.abort()
        except Exception as exc:
            self.runner.internal_error(exc)

    def get_buffer(self, sizehint: int) -> memoryview:
        try:
            return self.runner.session.receive_buffer(self.sid)
        except Exception as exc:
            self.runner.internal_error(exc)
            self.sid = 0  # what is read now is dropped
            return memoryview(bytearray(max(sizehint, 1)))

    def buffer_updated(self, nbytes: int) -> None:
        if self.sid:
            try:
                self.runner.subflow_data(self.sid, nbytes)
                if self.watch is not None and not self.reported_open:
                    self._check_established()
            except Exception as exc:
                self.runner.internal_error(exc)

    def _check_established(self) -> None:
        # The hello exchange completes only while bytes are received: this is
        # the one place a watched subflow can become open.
        sub = self.runner.session.subflows.get(self.sid)
        if sub is not None and sub.state is SubflowState.OPEN and self.watch is not None:
            self.reported_open = True
            self.watch.established()

    def eof_received(self) -> bool:
        try:
            self.runner.subflow_lost(self.sid, "closed by the other end")
        except Exception as exc:
            self.runner.internal_error(exc)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self.forget_direct()
            self.runner.subflow_lost(self.sid, f"error: {exc}" if exc else "connection closed")
        except Exception as error:
            self.runner.internal_error(error)

    def report_end(self, code: CloseCode | None, reason: str) -> None:
        """The runner saw this subflow end: tell the watch, once."""
        if self.watch is not None:
            watch, self.watch = self.watch, None
            watch.ended(code, reason)
