"""How a subflow's connection writes what the session hands it (Sending,
a part of SubflowConnection, connection.py).

Bytes go to the transport.  An Extent of a regular-file STDIN goes by
sendfile(), from the page cache to the socket
without a copy of ours, when nothing is queued in the transport before it.
What the socket does not take at once is *held*: the rest of the Extent,
and everything after it, waits until the socket is writable again, and
goes on by sendfile() then; meanwhile the connection counts as full (the
session hands it nothing more).  Read back and queued in the transport
instead, as it was before, the rest cost a read and a write of every byte:
most of the bytes, the socket's buffer being smaller than a DATA body.
Small Extents are read and written with the frames around them
(SMALL_EXTENT).  Where sendfile() cannot be used (a channel of pipes, a
source that refused it, no room in epoll) the bytes are read and queued.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, cast

from ..core.sender import Extent, Outgoing
from .source import ExtentSource

if TYPE_CHECKING:
    from .runner import Runner

# Extents shorter than this are read and written with the frames around them
# (one pread for each run of them that is contiguous in the file, one writev
# for the lot) rather than each by sendfile() after a write of its header: a
# subflow of unknown rate is handed 8 KiB pieces, and for those the two
# system calls per frame cost far more than the copy.  From 16 KiB up the
# copy costs more (over 128 subflows, with many pieces of 16-64 KiB, the
# sender's CPU per GiB fell from 0.58 to 0.54 s when the bound fell from 64).
SMALL_EXTENT = 16 * 1024


class Sending:
    """The sending half of SubflowConnection (see the module's comment)."""

    runner: Runner
    transport: asyncio.Transport | None
    sid: int
    direct_fd: int
    sends_direct: bool
    full: bool  # the session may hand it nothing more: paused, or held
    paused: bool  # the transport holds WRITE_HIGH bytes or more
    held: list[Outgoing]  # what waits for the socket to take it by sendfile()
    watching: bool  # the loop watches direct_fd for writing (held)

    def direct_source(self) -> int:
        raise NotImplementedError  # (the connection's)

    def splices(self) -> bool:
        """Whether Extents go to this connection without a copy of ours: a
        socket, not a channel of pipes (remote/pipepair.py)."""
        transport = self.transport
        return transport is not None and transport.get_extra_info("socket") is not None

    def send(self, buffers: list[Outgoing]) -> None:
        """Write ``buffers`` in order (see the module's comment)."""
        transport = self.transport
        if transport is None:
            return
        if self.held:
            # Only a subflow's last frames come while some are held (the
            # session hands a full one nothing else): all go now, in order.
            buffers = self.held + buffers
            self.unhold()
            self._write(transport, buffers, False)
        elif self.runner.file_source is None:
            # Only a regular-file STDIN hands out Extents: without one, every
            # buffer is bytes, and a keystroke's frame goes in one call.
            transport.writelines(buffers)  # type: ignore[arg-type]
        else:
            self._write(transport, buffers, True)

    def _write(self, transport: asyncio.Transport, buffers: list[Outgoing], hold: bool) -> None:
        source = self.runner.file_source
        if source is None:  # (held bytes only: Extents are all acknowledged)
            transport.writelines(buffers)  # type: ignore[arg-type]
            return
        read = self._read_small(source, buffers)
        if read is None:  # the input file shrank: the session is over
            transport.abort()
            return
        buffers = read
        start = 0
        for i, buf in enumerate(buffers):
            if not isinstance(buf, Extent):
                continue
            if not source.holds(buf):  # the session is over: not even its header goes
                return
            if i > start:
                transport.writelines(cast(list[bytes], buffers[start:i]))
            start = i + 1
            sent = 0
            direct = (source.sendfile and not transport.is_closing() and self.direct_source() >= 0
                      and self.sends_direct)
            queued = transport.get_write_buffer_size() > 0
            if direct and not queued:
                sent = source.send(self.direct_fd, buf)
            if (direct and hold and (queued or 0 < sent < len(buf))
                    and self._hold([buf.cut(sent, len(buf)), *buffers[i + 1:]])):
                return
            if 0 <= sent < len(buf):
                data = source.read_extent(buf.cut(sent, len(buf)))
                if data is not None:
                    transport.write(data)
                    sent = len(buf)
                else:
                    sent = -1
            if sent < 0:  # the input file shrank: the session is over
                transport.abort()
                return
        if start < len(buffers):
            transport.writelines(cast(list[bytes], buffers[start:]))

    def _hold(self, rest: list[Outgoing]) -> bool:
        """Keep ``rest`` until the socket is writable; False if the loop cannot
        watch it (then it is read and queued now)."""
        if not self.watching:
            try:
                self.runner.loop.add_writer(self.direct_fd, self._send_held)
            except OSError:
                return False
            self.watching = True
        self.held = rest
        self.full = True
        return True

    def _send_held(self) -> None:
        """The socket is writable: what was held goes on (and may be held again)."""
        try:
            transport = self.transport
            if transport is None or transport.is_closing():
                self.unhold()
                return
            if transport.get_write_buffer_size() > 0:
                return  # a header before the held Extent is still queued: it goes first
            held, self.held = self.held, []
            self._write(transport, held, True)
            if self.held:
                return  # (still watched)
            self.full = self.paused
            if not self.full:
                # Its step now: the frames it writes are most often held
                # again at once, and the socket stays watched meanwhile.
                self.runner.subflow_drained(self.sid)
            if not self.held:
                self.unhold()
        except Exception as exc:
            self.runner.internal_error(exc)

    def unhold(self) -> None:
        """Stop watching the socket for writing; what is held is dropped (the
        caller sends it, or the connection is gone)."""
        if self.watching:
            self.watching = False
            self.runner.loop.remove_writer(self.direct_fd)
        self.held = []
        self.full = self.paused

    def pause_writing(self) -> None:
        self.paused = self.full = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.held:
            return  # writable once what is held has gone
        self.full = False
        try:
            self.runner.subflow_writable(self.sid)
        except Exception as exc:
            self.runner.internal_error(exc)

    @staticmethod
    def _read_small(source: ExtentSource, buffers: list[Outgoing]) -> list[Outgoing] | None:
        """``buffers`` with each Extent under SMALL_EXTENT replaced by its bytes,
        a run of them contiguous in the file (headers between) read at once;
        None if the file no longer holds them."""
        out: list[Outgoing] = []
        i, count = 0, len(buffers)
        while i < count:
            first = buffers[i]
            if not isinstance(first, Extent) or first.length >= SMALL_EXTENT:
                out.append(first)
                i += 1
                continue
            last, end = i, first.position + first.length
            while last + 2 < count:
                header, after = buffers[last + 1], buffers[last + 2]
                if (isinstance(header, Extent) or not isinstance(after, Extent)
                        or after.position != end or after.length >= SMALL_EXTENT):
                    break
                last, end = last + 2, end + after.length
            data = source.read_extent(Extent(first.position, end - first.position))
            if data is None:
                return None
            view = memoryview(data)
            for buf in buffers[i:last + 1]:
                if isinstance(buf, Extent):
                    offset = buf.position - first.position
                    out.append(view[offset:offset + buf.length])
                else:
                    out.append(buf)
            i = last + 1
        return out
