"""A session's settings: the window, the timeouts, the ACK policy's knobs, the limits."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .auth import MIN_KEY_SIZE
from .errors import UsageError

# Settings that must be a number above 0 (a zero window never opens, a zero or
# negative timeout refuses or drops every subflow at once, NaN compares false).
_POSITIVE = ("window", "chunk", "stall_timeout", "handshake_timeout", "ack_every", "ack_most",
             "max_subflows", "alone_warning", "max_handshakes")


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
    head_resend: bool = True  # an idle subflow copies bytes a slower one holds up (head, backlog end)
    probe: bool = True  # a subflow quiet for a probe timeout: its bytes copied, no new ones

    def __post_init__(self) -> None:
        """A setting that cannot work is the caller's error, said at once (the
        API takes a SessionConfig directly, without the CLI's range checks)."""
        for name in _POSITIVE:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 < value < math.inf):
                raise UsageError(f"SessionConfig.{name} must be a number above 0, not {value!r}")
        for name in ("ack_delay", "ack_interval"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 <= value < math.inf):
                raise UsageError(f"SessionConfig.{name} must be a number of seconds, 0 or more, "
                                 f"not {value!r}")
        if self.alone_timeout is not None and not 0 < self.alone_timeout < math.inf:
            raise UsageError(f"SessionConfig.alone_timeout must be None or above 0, "
                             f"not {self.alone_timeout!r}")
        if self.psk is not None and len(self.psk) < MIN_KEY_SIZE:
            raise UsageError(f"SessionConfig.psk must be {MIN_KEY_SIZE} bytes or more")

    @property
    def keepalive(self) -> float:
        """Idle time after which a subflow sends a PING (several per stall timeout)."""
        return self.stall_timeout / 4
