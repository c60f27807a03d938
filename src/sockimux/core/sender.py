"""The sending half of one stream direction.

Theory of operation
-------------------
Bytes from STDIN are appended at the stream's end and *retained* until the
peer acknowledges that it has written them out (a cumulative offset).  What
is retained is handed out for sending as (offset, bytes) pieces, in this
order of preference:

1. ranges queued for re-sending (their subflow died or stalled), lowest first;
2. bytes never sent yet, but only below the peer's credit limit.

Re-sending works on byte *ranges*, not on frames: a range may be cut
differently the second time; the receiver handles overlap.  Nothing here
knows about subflows; the session records which ranges went where.
"""

from __future__ import annotations

import bisect

from .errors import ProtocolError, UsageError


class Extent:
    """``length`` bytes of our input left where they are: in the input file, at
    ``position``.  When STDIN is a regular file the runtime pushes these
    instead of bytes, and resolves each piece handed out when it writes it
    (sendfile, or a read when that cannot be used)."""

    __slots__ = ("position", "length")

    def __init__(self, position: int, length: int) -> None:
        self.position = position
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Extent) and other.position == self.position
                and other.length == self.length)

    def __repr__(self) -> str:
        return f"Extent({self.position}, {self.length})"

    def cut(self, start: int, stop: int) -> Extent:
        """The part [start, stop) of this extent (clipped to its end)."""
        return Extent(self.position + start, min(stop, self.length) - start)


Piece = memoryview | Extent  # retained bytes as handed out
Outgoing = bytes | bytearray | memoryview | Extent  # what the session hands out to write on a subflow


class StreamSender:
    def __init__(self, buffer_limit: int) -> None:
        self.buffer_limit = buffer_limit
        self.acked = 0  # the peer has written [0, acked)
        self.end = 0  # bytes taken from STDIN
        self.next_new = 0  # [0, next_new) has been sent at least once
        self.credit = 0  # the peer allows offsets below this
        self.eof = False  # STDIN has ended; the stream's final length is `end`
        self.status: int | None = None  # how the command that was our input ended (close())
        self.fin_in_flight = False  # a FIN is travelling on a live subflow
        self.fin_done = False  # the peer wrote everything and closed its output
        self.resent_bytes = 0
        # Retained bytes as contiguous chunks: _starts[i] is the offset of _chunks[i].
        self._starts: list[int] = []
        self._chunks: list[bytes | Extent] = []
        self._resend: list[tuple[int, int]] = []  # sorted, disjoint [start, end) ranges

    # -- input from STDIN ---------------------------------------------------

    @property
    def room(self) -> int:
        """How many more bytes from STDIN we are willing to retain now."""
        if self.eof:
            return 0
        room = self.buffer_limit - (self.end - self.acked)
        return room if room > 0 else 0

    def push(self, data: bytes | Extent) -> None:
        if self.eof:
            raise UsageError("push() after close()")
        if not data:
            return
        chunks = self._chunks
        if isinstance(data, Extent) and chunks:
            last = chunks[-1]
            if isinstance(last, Extent) and last.position + last.length == data.position:
                # One Extent for the file's consecutive bytes: a piece is cut
                # from one chunk, so pieces (and DATA frames) stay as large as
                # the subflow allows however little the input was extended by.
                chunks[-1] = Extent(last.position, last.length + data.length)
                self.end += len(data)
                return
        self._starts.append(self.end)
        chunks.append(data)
        self.end += len(data)

    def close(self, status: int | None = None) -> None:
        """STDIN ended; ``status``: how the command whose output it was ended
        (an exit status, or -N for a signal), carried in the FIN."""
        self.eof = True
        self.status = status

    # -- feedback from the peer ---------------------------------------------

    def on_ack(self, written: int, limit: int, fin_done: bool) -> None:
        """Apply an ACK.  ACKs may arrive out of order across subflows, so only
        increases count; values the sender could not have caused are an error."""
        if written > self.next_new:
            raise ProtocolError(f"ack of offset {written}, but only {self.next_new} bytes sent")
        if fin_done and not (self.eof and written == self.end):
            raise ProtocolError("end-of-stream acknowledged before the stream ended")
        if limit > self.credit:
            self.credit = limit
        if fin_done:
            self.fin_done = True
        if written > self.acked:
            self.acked = written
            self._release()

    def _release(self) -> None:
        # Drop chunks that are entirely acknowledged.
        i = bisect.bisect_right(self._starts, self.acked) - 1
        if i > 0:
            del self._starts[:i]
            del self._chunks[:i]
        if self._starts and self._starts[0] + len(self._chunks[0]) <= self.acked:
            self._starts.clear()
            self._chunks.clear()
        while self._resend and self._resend[0][1] <= self.acked:
            self._resend.pop(0)
        if self._resend and self._resend[0][0] < self.acked:
            self._resend[0] = (self.acked, self._resend[0][1])

    # -- handing out bytes ---------------------------------------------------

    def requeue(self, start: int, end: int) -> None:
        """Queue [start, end) for re-sending (clipped to what is unacknowledged)."""
        start = max(start, self.acked)
        if start >= end:
            return
        self.resent_bytes += end - start
        ranges = self._resend
        ranges.append((start, end))
        ranges.sort()
        merged: list[tuple[int, int]] = []
        for s, e in ranges:
            if merged and s <= merged[-1][1]:
                if e > merged[-1][1]:
                    merged[-1] = (merged[-1][0], e)
            else:
                merged.append((s, e))
        self._resend = merged

    @property
    def starved(self) -> bool:
        """Nothing more can be sent until the peer acknowledges: every byte we
        hold went out, and no more may come (the send buffer is full, or the
        credit is used up)."""
        # (Comparisons, not min() and room: asked for every DATA frame.)
        next_new = self.next_new
        if self._resend or (next_new < self.end and next_new < self.credit):
            return False
        return next_new >= self.credit or (
            not self.eof and self.end - self.acked >= self.buffer_limit)  # no room

    def take(self, max_len: int) -> tuple[int, Piece] | None:
        """Next piece to send, at most max_len bytes, or None."""
        if self._resend:
            start, end = self._resend[0]
            piece = self._slice(start, min(end, start + max_len))
            stop = start + len(piece)
            if stop >= end:
                self._resend.pop(0)
            else:
                self._resend[0] = (stop, end)
            return start, piece
        start = self.next_new
        stop = start + max_len
        if self.end < stop:
            stop = self.end
        if self.credit < stop:
            stop = self.credit
        if stop <= start:
            return None
        piece = self._slice(start, stop)
        self.next_new = start + len(piece)
        return start, piece

    def peek(self, start: int, stop: int) -> tuple[int, Piece]:
        """Retained bytes from ``start`` (not yet acknowledged), up to ``stop``
        or the end of the chunk holding them, without taking them."""
        if not (self.acked <= start < self.next_new and start < stop):
            raise UsageError(f"no retained bytes at {start}")
        return start, self._slice(start, min(stop, self.next_new))

    def chunk_start(self, offset: int) -> int:
        """Where the retained chunk holding ``offset`` begins: a piece that
        ends at ``offset`` may begin there, and no lower (see peek())."""
        return self._starts[bisect.bisect_right(self._starts, offset) - 1]

    def _slice(self, start: int, stop: int) -> Piece:
        """Retained bytes from start, up to stop, within one chunk (no copy)."""
        i = bisect.bisect_right(self._starts, start) - 1
        base = self._starts[i]
        chunk = self._chunks[i]
        if isinstance(chunk, Extent):
            return chunk.cut(start - base, stop - base)
        return memoryview(chunk)[start - base : min(len(chunk), stop - base)]

    # -- end of stream -------------------------------------------------------

    @property
    def fin_due(self) -> bool:
        """The FIN should be sent: STDIN ended and every byte went out at least once."""
        return self.eof and self.next_new == self.end and not self.fin_in_flight and not self.fin_done

    @property
    def done(self) -> bool:
        return self.fin_done
