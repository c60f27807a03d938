"""Credit-based flow control, receiver side.

The receiver grants the sender the right to send up to ``limit`` = bytes
written out + window size.  Everything the receiver may have to hold (the
reorder buffer and the bytes queued for STDOUT) therefore lies in a range
of ``size`` bytes, whatever the speeds or the reordering: memory is bounded
by construction, never by dropping data ("flush past the gap").

Advertising every written byte would cost one ACK per write; advertising
too rarely starves the sender.  We re-advertise once the limit could move
by a quarter of the window (the sender then still has three quarters in
hand), and the session's delayed-ACK timer covers trickles.
"""

from __future__ import annotations

from .errors import UsageError


class CreditWindow:
    def __init__(self, size: int) -> None:
        if size <= 0:
            raise UsageError("window size must be positive")
        self.size = size
        self.advertised = 0  # highest limit we have told the peer

    def limit(self, written: int) -> int:
        return written + self.size

    def update_due(self, written: int) -> bool:
        # (limit(), inline: asked after every write to STDOUT)
        return written + self.size - self.advertised >= self.size // 4

    def advertise(self, written: int) -> int:
        """Record that the limit for ``written`` is being sent; return it."""
        self.advertised = max(self.advertised, self.limit(written))
        return self.advertised
