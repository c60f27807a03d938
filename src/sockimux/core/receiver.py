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

What is *acknowledged* is ``written``: bytes the runtime confirms it has
written to STDOUT.  Acknowledging only what is written means the sender
retains everything that could still be lost in this process.
"""

from __future__ import annotations

import bisect

from .errors import CloseCode, ProtocolError, UsageError
from .flow import CreditWindow

Buffer = bytes | bytearray | memoryview


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
        self._held: dict[int, Buffer] = {}  # disjoint out-of-order pieces by offset
        self._starts: list[int] = []  # their offsets, sorted

    def check(self, end: int) -> None:
        """Raise ProtocolError if the peer may not send data up to offset ``end``."""
        if end > self.credit.advertised:
            raise ProtocolError(
                f"data up to offset {end} beyond the credit limit {self.credit.advertised}",
                CloseCode.FLOW_CONTROL,
            )
        if self.fin is not None and end > self.fin:
            raise ProtocolError(f"data up to offset {end} beyond end of stream {self.fin}")

    def receive(self, offset: int, data: Buffer) -> list[Buffer]:
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
        out: list[Buffer] = [
            data if offset == self.delivered else memoryview(data)[self.delivered - offset :]
        ]
        self.delivered = end
        if self._starts:  # (nothing held: the keystroke's case, no call)
            self._release_held(out)
        return out

    def written_direct(self, count: int) -> list[Buffer]:
        """The next ``count`` bytes of the stream went to the output without
        passing through here (the caller checked them with check()); they
        count as delivered and written.  Returns held bytes this releases."""
        self.delivered += count
        self.written += count
        self.direct_bytes += count
        out: list[Buffer] = []
        self._release_held(out)
        return out

    def _release_held(self, out: list[Buffer]) -> None:
        """Append to ``out`` the held pieces that now continue the stream."""
        starts, held = self._starts, self._held
        released = 0
        while released < len(starts) and starts[released] <= self.delivered:
            start = starts[released]
            piece = held.pop(start)
            released += 1
            self.held_bytes -= len(piece)
            stop = start + len(piece)
            if stop > self.delivered:
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
        # Held pieces inside us are dropped; one that starts inside us ends our piece.
        while i < len(starts) and starts[i] < end:
            start = starts[i]
            piece = held[start]
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
            starts.insert(i, offset)
            held[offset] = data
            self.held_bytes += end - offset

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
