"""A session's settings: the window, the timeouts, the ACK policy's knobs, the limits."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SessionConfig:
    window: int = 16 * 1024 * 1024  # receive window (credit) and send buffer, bytes
    chunk: int = 512 * 1024  # largest DATA payload we send
    stall_timeout: float = 2.5  # seconds without progress or keepalive before a subflow is dropped
    handshake_timeout: float = 10.0  # seconds for a new connection to send its hello
    ack_delay: float = 0.02  # longest we sit on received data before acknowledging it
    ack_every: int = 16 * 1024  # DATA bytes on a subflow that trigger an ACK on it
    ack_interval: float = 0.001  # ...but at most one such ACK per this many seconds, per subflow
    ack_most: int = 1024 * 1024  # ...unless this many DATA bytes are unreported
    max_subflows: int = 1024  # open subflows (including handshakes) at once
    alone_timeout: float | None = None  # give up after this long with no subflow (None: never)
    alone_warning: float = 10.0  # seconds between "no subflow" warnings
    max_handshakes: int = 256  # connections still in HANDSHAKE or AUTH at once
    psk: bytes | None = field(default=None, repr=False)  # shared key: subflows must prove it
    head_resend: bool = True  # an idle subflow re-sends the bytes a much slower one holds up
    probe: bool = True  # a subflow quiet for a probe timeout: its bytes copied, no new ones

    @property
    def keepalive(self) -> float:
        """Idle time after which a subflow sends a PING (several per stall timeout)."""
        return self.stall_timeout / 4
