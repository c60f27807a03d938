"""The session's events as log lines: the wording of everything the core reports.

The core hands out facts (core/events.py); this is the one place that turns
them into text.  Tests and users grep these lines: change the wording only
on purpose.
"""

from __future__ import annotations

import logging

from ..core import events as ev
from ..core.config import SessionConfig

DEBUG, INFO, WARNING = logging.DEBUG, logging.INFO, logging.WARNING
_DEFAULT_WINDOW_MIB = SessionConfig().window >> 20
_WHOSE = {"peer": "the peer's --window", "ours": "our --window (the send buffer)"}


def render(event: ev.Event) -> list[tuple[int, str]]:
    """The log lines (level, message) for ``event``; none for some.

    A list, not one line: the end of a session is one fact told in two
    lines (how it ended, at a level that depends on how, and the totals)."""
    if isinstance(event, ev.SubflowEstablished):
        return [(INFO, f"subflow {event.sid} joined ({event.open} open)")]
    if isinstance(event, ev.SubflowClosed):
        if not event.established:
            return []  # its refusal, or nothing (a connection that never spoke), was told
        tail = f"; re-sending {event.resending} bytes on other subflows" if event.resending else ""
        return [(INFO, f"subflow {event.sid} closed ({event.reason}){tail}; {event.open} open")]
    if isinstance(event, ev.SubflowRefused):
        if event.by is ev.By.PEER:
            return [(WARNING, f"subflow {event.sid}: peer refused it: {event.reason}")]
        return [(WARNING, f"subflow {event.sid} refused: {event.reason}")]
    if isinstance(event, ev.SubflowStalled):
        return [(WARNING, f"subflow {event.sid} stalled ({event.why}); dropping it")]
    if isinstance(event, ev.SubflowResumed):
        return [(INFO, f"subflow {event.sid} joined after {event.after:.1f} s without any; resuming")]
    if isinstance(event, ev.PeerBound):
        return [(DEBUG, f"peer instance {event.instance.hex()} (until it refuses us)")]
    if isinstance(event, ev.PeerUnbound):
        instance = event.instance.hex()[:12] if event.instance else ""
        return [(INFO, f"peer instance {instance} did not accept us; the session takes the next "
                       "peer that does")]
    if isinstance(event, ev.Alone):
        return [(WARNING, f"no subflow for {event.seconds:.0f} s; waiting for one to join "
                          f"({event.unacknowledged} bytes unacknowledged)")]
    if isinstance(event, ev.SmallWindow):
        return [(INFO, f"{_WHOSE[event.whose]} of {event.window // 1024} KiB is used up while a "
                       "subflow could carry more: it limits throughput to about a window per round "
                       f"trip (the default is {_DEFAULT_WINDOW_MIB} MiB on both sides)")]
    if isinstance(event, ev.TimerLate):
        return [(INFO, f"timer {event.late:.1f} s late (the process was not running): that time "
                       "is not counted against any subflow")]
    if isinstance(event, ev.InputEnded):
        return [(DEBUG, f"input ended after {event.size} bytes")]
    if isinstance(event, ev.SessionEnded):
        t = event.totals
        return [(DEBUG if event.outcome is ev.Outcome.DONE else WARNING, f"session over: {event.reason}"),
                (INFO, f"sent {t.sent_acked} bytes acknowledged of {t.sent} (re-sent {t.resent} "
                       f"for lost subflows, {t.head_copies} as copies of bytes a slower subflow held), "
                       f"received {t.written} written ({t.direct} of them moved straight to "
                       f"STDOUT, {t.parked} held in pipes until their turn); "
                       f"subflows established: {t.established}")]
    return []  # CloseSubflow: a command, acted on, not told
