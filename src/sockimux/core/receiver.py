"""The receiving half of one stream direction.

Theory of operation
-------------------
DATA pieces arrive on any subflow, in any order, possibly more than once and
possibly overlapping (a re-sent range may be cut differently).  The receiver
keeps ``delivered``: every byte below it has been handed to the output, in
order, exactly once.  A piece is trimmed to what lies above ``delivered``;
if it starts at or below ``delivered`` it goes out at once and pulls out any
held pieces it makes contiguous; otherwise it is held (keyed by offset, the
lowest offset found through a sorted list of offsets).  Held pieces are
trimmed against each other on the way in, so they never overlap.

A piece may also be *parked*: its bytes never entered our memory, and the
runtime holds them (in a pipe, runtime/holding.py) under a token.  Such a
piece is only ever taken whole: it is placed only where nothing is held,
bytes arriving later are cut around it (the first copy wins), and when the
stream reaches it, it goes out as a :class:`Parked` item among the bytes,
for the runtime to move to the output.

What is *acknowledged* is ``written``: bytes the runtime confirms it has
written to STDOUT.  Acknowledging only what is written means the sender
retains everything that could still be lost in this process.
"""

from __future__ import annotations

import bisect

from .errors import CloseCode, ProtocolError, UsageError
from .flow import CreditWindow

Buffer = bytes | bytearray | memoryview


class Parked:
    """Stream bytes the runtime holds outside our memory (``token`` says
    where), ``length`` of them, in the output in their turn."""

    __slots__ = ("token", "length")

    def __init__(self, token: object, length: int) -> None:
        self.token = token
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __repr__(self) -> str:
        return f"Parked({self.token!r}, {self.length})"


Piece = Buffer | Parked  # what the receiver holds, and hands to the output


class StreamReceiver:
    def __init__(self, window: int) -> None:
        self.credit = CreditWindow(window)
        self.delivered = 0  # [0, delivered) handed to the output in order
        self.written = 0  # [0, written) confirmed written out
        self.fin: int | None = None  # final stream length, once known
        self.output_closed = False  # the runtime closed our output after the last byte
        self.held_bytes = 0
        self.duplicate_bytes = 0
        self.direct_bytes = 0  # of those written, bytes that went out by written_direct()
        self.parked_bytes = 0  # of those held, bytes parked outside our memory
        self.parked_total = 0  # bytes ever parked
        self._held: dict[int, Piece] = {}  # disjoint out-of-order pieces by offset
        self._starts: list[int] = []  # their offsets, sorted
        self._parked: list[int] = []  # the offsets of the parked ones, sorted

    def check(self, end: int) -> None:
        """Raise ProtocolError if the peer may not send data up to offset ``end``."""
        if end > self.credit.advertised:
            raise ProtocolError(
                f"data up to offset {end} beyond the credit limit {self.credit.advertised}",
                CloseCode.FLOW_CONTROL,
            )
        if self.fin is not None and end > self.fin:
            raise ProtocolError(f"data up to offset {end} beyond end of stream {self.fin}")

    def receive(self, offset: int, data: Buffer) -> list[Piece]:
        """Accept one DATA piece; return the in-order bytes it releases."""
        end = offset + len(data)
        if end > self.credit.advertised or (self.fin is not None and end > self.fin):
            self.check(end)  # raises (tested here first: a call per DATA frame saved)
        if end <= self.delivered:
            self.duplicate_bytes += len(data)
            return []
        if offset > self.delivered:
            self._hold(offset, data)
            return []
        if self._parked and self._parked[0] < end:
            return self._deliver_around(offset, data)
        out: list[Piece] = [
            data if offset == self.delivered else memoryview(data)[self.delivered - offset :]
        ]
        self.delivered = end
        if self._starts:  # (nothing held: the keystroke's case, no call)
            self._release_held(out)
        return out

    def _deliver_around(self, offset: int, data: Buffer) -> list[Piece]:
        """In-order bytes that reach a parked piece: they go out up to it, the
        parked piece goes out whole (with what it makes contiguous), and the
        rest of them is taken up again from where that leaves the stream."""
        view = memoryview(data)
        end = offset + len(view)
        first, taken = self.delivered, 0
        out: list[Piece] = []
        parked = self._parked
        while self.delivered < end:
            stop = parked[0] if parked and parked[0] < end else end
            if stop > self.delivered:
                out.append(view[self.delivered - offset : stop - offset])
                taken += stop - self.delivered
                self.delivered = stop
            self._release_held(out)  # (at least the parked piece at `stop`)
        self.duplicate_bytes += end - first - taken  # (bytes that parked pieces held first)
        return out

    def written_direct(self, count: int) -> list[Piece]:
        """The next ``count`` bytes of the stream went to the output without
        passing through here (the caller checked them with check()); they
        count as delivered and written.  Returns held bytes this releases."""
        self.delivered += count
        self.written += count
        self.direct_bytes += count
        out: list[Piece] = []
        self._release_held(out)
        return out

    def _release_held(self, out: list[Piece]) -> None:
        """Append to ``out`` the held pieces that now continue the stream."""
        starts, held = self._starts, self._held
        released = 0
        while released < len(starts) and starts[released] <= self.delivered:
            start = starts[released]
            piece = held.pop(start)
            released += 1
            self.held_bytes -= len(piece)
            stop = start + len(piece)
            if isinstance(piece, Parked):
                # Nothing delivers past a parked piece's start (receive() and
                # direct_limit() stop there): it goes out whole.
                if start != self.delivered or self._parked[0] != start:
                    raise UsageError(f"parked piece at {start} passed over (delivered {self.delivered})")
                del self._parked[0]
                self.parked_bytes -= piece.length
                out.append(piece)
                self.delivered = stop
            elif stop > self.delivered:
                out.append(memoryview(piece)[self.delivered - start :])
                self.delivered = stop
            else:
                self.duplicate_bytes += len(piece)
        if released:
            del starts[:released]

    def _hold(self, offset: int, data: Buffer) -> None:
        """Keep an out-of-order piece, trimmed so held pieces never overlap:
        what is held is then at most the window, however pieces are cut."""
        end = offset + len(data)
        starts, held = self._starts, self._held
        i = bisect.bisect_right(starts, offset)
        if i:  # the held piece starting at or before us
            prev_end = starts[i - 1] + len(held[starts[i - 1]])
            if prev_end >= end:
                self.duplicate_bytes += len(data)
                return
            if prev_end > offset:
                self.duplicate_bytes += prev_end - offset
                data = memoryview(data)[prev_end - offset :]
                offset = prev_end
        # Held pieces inside us are dropped; one that starts inside us ends our
        # piece.  A parked one is kept whole: we are cut around it.
        while i < len(starts) and starts[i] < end:
            start = starts[i]
            piece = held[start]
            if isinstance(piece, Parked):
                stop = start + piece.length
                self.duplicate_bytes += min(stop, end) - start
                if start > offset:
                    self._insert(i, offset, memoryview(data)[: start - offset])
                    i += 1
                i += 1
                if stop >= end:
                    return
                data = memoryview(data)[stop - offset :]
                offset = stop
                continue
            if start + len(piece) <= end:
                del held[start]
                del starts[i]
                self.held_bytes -= len(piece)
                self.duplicate_bytes += len(piece)
            else:
                self.duplicate_bytes += end - start
                data = memoryview(data)[: start - offset]
                end = start
                break
        if end > offset:
            self._insert(i, offset, data)

    def _insert(self, i: int, offset: int, piece: Piece) -> None:
        self._starts.insert(i, offset)
        self._held[offset] = piece
        self.held_bytes += len(piece)

    # -- parked pieces ----------------------------------------------------------

    def park_room(self, offset: int, length: int) -> int:
        """How many of the ``length`` bytes at ``offset`` may be parked: none
        below what was delivered or where a piece is held, and none past the
        next held piece."""
        if offset < self.delivered:
            return 0
        starts = self._starts
        i = bisect.bisect_right(starts, offset)
        if i and starts[i - 1] + len(self._held[starts[i - 1]]) > offset:
            return 0
        if i < len(starts) and starts[i] < offset + length:
            return starts[i] - offset
        return length

    def park(self, offset: int, length: int, token: object) -> list[Piece]:
        """``length`` bytes at ``offset`` are parked under ``token`` (within
        park_room(), and check()ed); returns what this releases: the piece
        itself and what follows it, if it continues the stream."""
        piece = Parked(token, length)
        self.parked_total += length
        if offset == self.delivered:
            out: list[Piece] = [piece]
            self.delivered += length
            if self._starts:
                self._release_held(out)
            return out
        self._insert(bisect.bisect_right(self._starts, offset), offset, piece)
        self.parked_bytes += length
        bisect.insort(self._parked, offset)
        return []

    def direct_limit(self) -> int | None:
        """How far the stream may be written past the receiver (written_direct())
        before it reaches a parked piece; None: no limit."""
        return self._parked[0] - self.delivered if self._parked else None

    def on_fin(self, final: int) -> None:
        if self.fin is not None:
            if final != self.fin:
                raise ProtocolError(f"end of stream moved from {self.fin} to {final}")
            return
        highest = max([self.delivered] + [s + len(d) for s, d in self._held.items()])
        if final < highest:
            raise ProtocolError(f"end of stream at {final}, below data already received ({highest})")
        self.fin = final

    def on_written(self, count: int) -> None:
        if self.written + count > self.delivered:
            raise UsageError("more bytes reported written than were delivered")
        self.written += count

    @property
    def eof(self) -> bool:
        """Every byte of the stream has been delivered: the output may be closed
        once the runtime has written what it holds."""
        return self.fin is not None and self.delivered == self.fin

    @property
    def done(self) -> bool:
        """The stream is complete, written out, and the output closed."""
        return self.eof and self.written == self.fin and self.output_closed
