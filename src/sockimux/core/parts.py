"""What every one of Session's mixins (dispatch.py, direct.py, timers.py,
closing.py) uses of Session: its parts and its outcome, declared once for
the type checker.  Session's __init__ sets them; each mixin declares only
what it uses beyond these."""

from __future__ import annotations

from .acks import AckPolicy
from .config import SessionConfig
from .events import Event, Outcome
from .receiver import StreamReceiver
from .scheduler import Scheduler
from .sender import StreamSender
from .subflow import Subflow


class SessionParts:
    # Provided by Session.
    config: SessionConfig
    subflows: dict[int, Subflow]
    sender: StreamSender
    receiver: StreamReceiver
    scheduler: Scheduler
    acks: AckPolicy
    outcome: Outcome | None
    _events: list[Event]
