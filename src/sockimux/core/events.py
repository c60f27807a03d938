"""What leaves the core as data: how the session ended, and what to do or say.

The runtime acts on CloseSubflow and renders the rest (runtime/render.py).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .errors import CloseCode
from .sender import Outgoing


class Outcome(enum.Enum):
    DONE = "done"  # both streams delivered and acknowledged
    OUTPUT_CLOSED = "output closed"  # our STDOUT went away before the stream ended
    PEER_ABORTED = "peer aborted"
    NO_SUBFLOWS = "no subflows"  # alone_timeout expired
    INTERRUPTED = "interrupted"  # the runtime shut us down (signal)
    INPUT_CHANGED = "input changed"  # STDIN failed: a regular file lost bytes, or a read error


@dataclass(frozen=True)
class CloseSubflow:
    """Close this subflow's connection, after writing ``final`` if ``flush``."""

    sid: int
    code: CloseCode
    reason: str
    final: list[Outgoing]
    flush: bool


@dataclass(frozen=True)
class Log:
    level: str  # "debug", "info", "warning", "error"
    message: str


Event = CloseSubflow | Log
