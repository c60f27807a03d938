"""sockimux: carry one byte stream over many unreliable connections.

The Python API (docs/API.md): ``open_session`` gives the stream as an
async reader/writer pair, ``Stream``; its errors are ``SockimuxError``s.
"""

from __future__ import annotations

# (Not typing's: its import would be the longest part of this module's, in
# which a ^C cannot be caught yet.  mypy takes any TYPE_CHECKING for true.)
TYPE_CHECKING = False
if TYPE_CHECKING:
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

_API = ("SessionError", "Stream", "open_session")
_CORE = ("LocalError", "Outcome", "ProtocolError", "Session", "SessionConfig", "SockimuxError",
         "UsageError")


def __getattr__(name: str) -> object:
    """The API's names, imported at first use: the command line does not need them
    (and every start of ``sockimux`` would pay for their imports).  The core's
    too: ``python -m sockimux`` runs this module before any code of the CLI's,
    so a ^C during the imports could only be caught (__main__.run) once they
    are not made here."""
    if name in _API:
        from . import api
        return getattr(api, name)
    if name in _CORE:
        from . import core
        return getattr(core, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
