"""DATA bodies moved by the runtime from a subflow straight to STDOUT.

When STDOUT is a pipe, the runtime may splice a DATA body that continues the
stream from its connection to STDOUT: those bytes never enter our memory.
The session stays the judge: it offers a body only when none of it has been
read and it is the next part of the stream, checks the credit before each
move, and counts what moved as received, delivered and written (the
receiver's ``written_direct``).  Anything else (another subflow delivered
those bytes first, STDOUT is full, a FIN came) gives the rest of the body
back to the reader, which reads it as a frame of its own.

A DATA body that does not continue the stream yet (or one the runtime's
STDOUT cannot take now) may be *parked* instead (park()): the runtime
moves it from the connection into a pipe of its own,
and the receiver holds it as a Parked piece, which goes out in its turn as
an item of the output for the runtime to move from that pipe to STDOUT.
The bytes then never enter our memory either (with several subflows, most
bodies arrive ahead of their turn).  The rules are the same: a body none of
whose bytes has been read, the credit checked, room asked (park_room())
before each move and each move reported (parked()); anything else gives the
rest back to the reader.

These are methods of Session, kept here as one idea of their own.
"""

from __future__ import annotations

from . import frames
from .errors import ProtocolError, UsageError
from .handshake import OPEN
from .parts import SessionParts
from .reader import FrameReader
from .receiver import Piece
from .subflow import Subflow

PARK_MIN = 32 * 1024  # smaller bodies are read: their copy costs less than two splices


class DirectOutput(SessionParts):
    # Provided by Session.
    _output: list[Piece]
    _partial: int

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
        self._diverted(sub)
        return length

    def _diverted(self, sub: Subflow) -> None:
        sub.reader.divert()
        sub.data_in += frames.HEADER_SIZE
        # The body was counted as memory to set aside when its header came
        # (Session._count_partial); it will not be, so it no longer counts
        # (else, many parked at once, the stale counts add up to a refusal).
        self._partial -= sub.held - sub.reader.held
        sub.held = sub.reader.held

    def _still_diverted(self, sid: int) -> FrameReader | None:
        """Subflow ``sid``'s reader, if it has a diverted body left to move and
        the session goes on; else None (the rest, if any, is read as usual)."""
        sub = self.subflows.get(sid)
        if sub is None or not sub.reader.diverted:
            return None
        if sub.state is not OPEN or self.outcome is not None:
            sub.reader.undivert()
            return None
        return sub.reader

    def direct_room(self, sid: int) -> int:
        """Bytes of subflow ``sid``'s diverted body that may go straight to
        STDOUT now.  0 when none: whatever is left of it is read as usual."""
        reader = self._still_diverted(sid)
        if reader is None:
            return 0
        room = reader.diverted
        if self._output or reader.diverted_offset != self.receiver.delivered:
            reader.undivert()  # e.g. another subflow delivered these bytes first
            return 0
        try:
            self.receiver.check(self.receiver.delivered + room)  # a FIN may have come since
        except ProtocolError:
            reader.undivert()  # read as usual, and refused as usual
            return 0
        limit = self.receiver.direct_limit()
        if limit is not None and limit < room:  # a parked piece goes out first, then we see
            if not limit:
                reader.undivert()
            return limit
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

    # -- parking ----------------------------------------------------------------

    def park(self, sid: int) -> tuple[int, int] | None:
        """Offer subflow ``sid``'s next DATA body to the runtime, to park (see
        the module's comment).  Returns its stream offset and length if it
        may (no byte of it has been read, it is at least PARK_MIN bytes,
        not below what was delivered, and nothing received overlaps it),
        else None."""
        sub = self.subflows.get(sid)
        if sub is None or sub.state is not OPEN or self.outcome:
            return None
        pending = sub.reader.pending_body()
        if pending is None:
            return None
        offset, length = pending
        if length < PARK_MIN or self.receiver.park_room(offset, length) != length:
            return None
        try:
            self.receiver.check(offset + length)
        except ProtocolError:
            return None  # read as usual, and refused as usual
        if sub.reader.pending_flags & frames.DATA_ACK_NOW:
            self.acks.asked(offset + length)
        self._diverted(sub)
        return pending

    def park_room(self, sid: int) -> int:
        """Bytes of subflow ``sid``'s parked body that may be moved into its
        pipe now.  0 when none: whatever is left of it is read as usual."""
        reader = self._still_diverted(sid)
        if reader is None:
            return 0
        offset = reader.diverted_offset
        room = reader.diverted
        room = self.receiver.park_room(offset, room)  # 0: delivered or held meanwhile
        if room:
            try:
                self.receiver.check(offset + room)  # a FIN may have come since
            except ProtocolError:
                room = 0
        if not room:
            reader.undivert()  # read as usual (and trimmed, or refused, as usual)
        return room

    def diverted_at(self, sid: int) -> int:
        """The stream offset of the next byte of subflow ``sid``'s diverted body."""
        return self.subflows[sid].reader.diverted_offset

    def parked(self, sid: int, count: int, token: object, now: float) -> None:
        """The next ``count`` bytes of subflow ``sid``'s parked body were moved
        into the runtime's pipe ``token``."""
        sub = self.subflows.get(sid)
        if sub is None:
            raise UsageError(f"parked() on subflow {sid}, which is not open")
        offset = sub.reader.diverted_offset
        sub.reader.skipped(count)
        sub.heard(now)
        sub.data_arrived(count, now, self.config)
        self.scheduler.freshest = sid
        self.scheduler.ready(sid)
        pieces = self.receiver.park(offset, count, token)
        if pieces:
            self._output.extend(pieces)
