"""sockimux: carry one byte stream over many unreliable connections."""

from .core import LocalError, Outcome, ProtocolError, Session, SessionConfig, SockimuxError, UsageError

__version__ = "0.1.0"

__all__ = [
    "LocalError",
    "Outcome",
    "ProtocolError",
    "Session",
    "SessionConfig",
    "SockimuxError",
    "UsageError",
    "__version__",
]
