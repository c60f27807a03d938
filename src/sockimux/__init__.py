"""sockimux: carry one byte stream over many unreliable connections.

The Python API (docs/API.md): ``open_session`` gives the stream as an
async reader/writer pair, ``Stream``; its errors are ``SockimuxError``s.
"""

from .api import SessionError, Stream, open_session
from .core import LocalError, Outcome, ProtocolError, Session, SessionConfig, SockimuxError, UsageError

__version__ = "0.1.0"

__all__ = [
    "LocalError",
    "Outcome",
    "ProtocolError",
    "Session",
    "SessionConfig",
    "SessionError",
    "SockimuxError",
    "Stream",
    "UsageError",
    "__version__",
    "open_session",
]
