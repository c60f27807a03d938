"""The sans-I/O protocol core: no sockets, no asyncio, no clock (``now`` is passed in)."""

from .driver import Step, Transports
from .errors import CloseCode, LocalError, ProtocolError, SockimuxError, UsageError
from .events import CloseSubflow, Event, Outcome
from .receiver import Parked
from .sender import Extent
from .session import Session, SessionConfig

__all__ = [
    "CloseCode",
    "CloseSubflow",
    "Extent",
    "LocalError",
    "Event",
    "Outcome",
    "Parked",
    "ProtocolError",
    "Session",
    "SessionConfig",
    "SockimuxError",
    "Step",
    "Transports",
    "UsageError",
]
