"""The receiving half of one stream direction.

Theory of operation
-------------------
DATA pieces arrive on any subflow, in any order, possibly more than once and
possibly overlapping (a re-sent range may be cut differently).  The receiver
keeps ``delivered``: every byte below it has been handed to the output, in
order, exactly once.  A piece is trimmed to what lies above ``delivered``;
if it starts at or below ``delivered`` it goes out at once and pulls out any
held pieces it makes contiguous; otherwise it is held (keyed by offset, the
lowest offset found through a heap).

What is *acknowledged* is ``written``: bytes the runtime confirms it has
written to STDOUT.  Acknowledging only what is written means the sender
retains everything that could still be lost in this process.
"""

from __future__ import annotations

import heapq

from .errors import CloseCode, ProtocolError
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
        self._held: dict[int, Buffer] = {}
        self._heap: list[int] = []

    def receive(self, offset: int, data: Buffer) -> list[Buffer]:
        """Accept one DATA piece; return the in-order bytes it releases."""
        end = offset + len(data)
        if end > self.credit.advertised:
            raise ProtocolError(
                f"data up to offset {end} beyond the credit limit {self.credit.advertised}",
                CloseCode.FLOW_CONTROL,
            )
        if self.fin is not None and end > self.fin:
            raise ProtocolError(f"data up to offset {end} beyond end of stream {self.fin}")
        if end <= self.delivered:
            self.duplicate_bytes += len(data)
            return []
        if offset > self.delivered:
            old = self._held.get(offset)
            if old is None:
                heapq.heappush(self._heap, offset)
            elif len(old) >= len(data):
                self.duplicate_bytes += len(data)
                return []
            else:
                self.held_bytes -= len(old)
            self._held[offset] = data
            self.held_bytes += len(data)
            return []
        out: list[Buffer] = [
            data if offset == self.delivered else memoryview(data)[self.delivered - offset :]
        ]
        self.delivered = end
        heap, held = self._heap, self._held
        while heap and heap[0] <= self.delivered:
            start = heapq.heappop(heap)
            piece = held.pop(start)
            self.held_bytes -= len(piece)
            stop = start + len(piece)
            if stop > self.delivered:
                out.append(memoryview(piece)[self.delivered - start :])
                self.delivered = stop
            else:
                self.duplicate_bytes += len(piece)
        return out

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
            raise RuntimeError("more bytes reported written than were delivered")
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
