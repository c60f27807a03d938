"""The sans-I/O protocol core: no sockets, no asyncio, no clock (``now`` is passed in)."""

from .errors import CloseCode, LocalError, ProtocolError, SockimuxError, UsageError
from .sender import Extent
from .session import CloseSubflow, Log, Outcome, Session, SessionConfig

__all__ = [
    "CloseCode",
    "CloseSubflow",
    "Extent",
    "LocalError",
    "Log",
    "Outcome",
    "ProtocolError",
    "Session",
    "SessionConfig",
    "SockimuxError",
    "UsageError",
]
