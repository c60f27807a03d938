"""DATA bodies moved by the runtime from a subflow straight to STDOUT.

When STDOUT is a pipe, the runtime may splice a DATA body that continues the
stream from its connection to STDOUT: those bytes never enter our memory.
The session stays the judge: it offers a body only when none of it has been
read and it is the next part of the stream, checks the credit before each
move, and counts what moved as received, delivered and written (the
receiver's ``written_direct``).  Anything else (another subflow delivered
those bytes first, STDOUT is full, a FIN came) gives the rest of the body
back to the reader, which reads it as a frame of its own.

These are methods of Session, kept here as one idea of their own.
"""

from __future__ import annotations

from . import frames
from .errors import ProtocolError, UsageError
from .handshake import OPEN
from .parts import SessionParts


class DirectOutput(SessionParts):
    # Provided by Session.
    _output: list[bytes | bytearray | memoryview]

    def divert(self, sid: int) -> int:
        """Offer subflow ``sid``'s next DATA body to the runtime, to move from
        the connection straight to STDOUT.  Returns its length if it may (no
        byte of it has been read, and it continues the stream), else 0.  The
        runtime first writes out what take_output() returns, then asks
        direct_room() before each move, reports each with moved_direct(),
        and writes nothing else to STDOUT meanwhile."""
        sub = self.subflows.get(sid)
        if sub is None or sub.state is not OPEN or self.outcome:
            return 0
        pending = sub.reader.pending_body()
        if pending is None:
            return 0
        offset, length = pending
        if offset != self.receiver.delivered:
            return 0
        try:
            self.receiver.check(offset + length)
        except ProtocolError:
            return 0  # read as usual, and refused as usual
        if sub.reader.pending_flags & frames.DATA_ACK_NOW:
            self.acks.asked(offset + length)
        sub.reader.divert()
        sub.data_in += frames.HEADER_SIZE
        return length

    def direct_room(self, sid: int) -> int:
        """Bytes of subflow ``sid``'s diverted body that may go straight to
        STDOUT now.  0 when none: whatever is left of it is read as usual."""
        sub = self.subflows.get(sid)
        if sub is None:
            return 0
        reader = sub.reader
        room = reader.diverted
        if not room:
            return 0
        if (sub.state is not OPEN or self._output or self.outcome is not None
                or reader.diverted_offset != self.receiver.delivered):
            reader.undivert()  # e.g. another subflow delivered these bytes first
            return 0
        try:
            self.receiver.check(self.receiver.delivered + room)  # a FIN may have come since
        except ProtocolError:
            reader.undivert()  # read as usual, and refused as usual
            return 0
        return room

    def undivert(self, sid: int) -> None:
        """The runtime will not move the rest of the diverted body (STDOUT is full)."""
        sub = self.subflows.get(sid)
        if sub is not None:
            sub.reader.undivert()

    def moved_direct(self, sid: int, count: int, now: float) -> None:
        """The next ``count`` bytes of subflow ``sid``'s diverted body were
        written to STDOUT."""
        sub = self.subflows.get(sid)
        if sub is None:
            raise UsageError(f"moved_direct() on subflow {sid}, which is not open")
        sub.reader.skipped(count)
        sub.heard(now)
        sub.data_arrived(count, now, self.config)
        self.scheduler.freshest = sid
        self.scheduler.ready(sid)
        self._output.extend(self.receiver.written_direct(count))
        self.acks.written(now)
