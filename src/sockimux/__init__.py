"""sockimux: carry one byte stream over many unreliable connections.

The Python API (docs/API.md): ``open_session`` gives the stream as an
async reader/writer pair, ``Stream``; its errors are ``SockimuxError``s.
"""

from typing import TYPE_CHECKING, Any

from .core import LocalError, Outcome, ProtocolError, Session, SessionConfig, SockimuxError, UsageError

if TYPE_CHECKING:
    from .api import SessionError, Stream, open_session

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

_API = ("SessionError", "Stream", "open_session")


def __getattr__(name: str) -> Any:
    """The API's names, imported at first use: the command line does not need them
    (and every start of ``sockimux`` would pay for their imports)."""
    if name in _API:
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
