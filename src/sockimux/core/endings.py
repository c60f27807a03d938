"""Why a subflow we opened ended, what follows from it, and how a log line says it.

The re-open policy (reopen.py) turns each end into a verdict: *transient*
(start the slot again after a backoff), *fatal* (stop the address for
good: retrying would only repeat the refusal) or *final* (the session is
ending).  Its module docstring says which close code is which, and why.
"""

from __future__ import annotations

import enum

from .errors import CloseCode


class Failure(enum.Enum):
    """How a subflow we opened ended when no close code says why."""

    CONNECT_FAILED = "could not connect"  # refused, unreachable, no such socket, timed out
    CONNECTION_LOST = "connection lost"  # EOF or reset, without a REFUSE
    EXITED = "command exited"  # the EXEC command ended
    CANNOT_RUN = "command cannot be run"  # the EXEC program could not be started at all


EndReason = CloseCode | Failure


class Verdict(enum.Enum):
    TRANSIENT = "transient"  # start the slot again after a backoff
    FATAL = "fatal"  # stop the address for good
    FINAL = "final"  # the session is ending: start nothing more


_FATAL = frozenset({CloseCode.NOT_SOCKIMUX, CloseCode.BAD_VERSION, CloseCode.FOREIGN_INSTANCE,
                    CloseCode.SELF_CONNECT, CloseCode.AUTH_FAILED, Failure.CANNOT_RUN})
_FINAL = frozenset({CloseCode.OUTPUT_CLOSED, CloseCode.PEER_ABORTED, CloseCode.SHUTDOWN})

# How each close code reads in a log line (Failure values read as they are).
_CODE_TEXT = {
    CloseCode.NORMAL: "closed",
    CloseCode.PROTOCOL_ERROR: "protocol error",
    CloseCode.NOT_SOCKIMUX: "what answers there does not speak sockimux",
    CloseCode.BAD_VERSION: "the peer speaks another protocol version",
    CloseCode.FOREIGN_INSTANCE: "it leads to another sockimux process than this session's peer",
    CloseCode.SELF_CONNECT: "it leads back to this same process",
    CloseCode.FLOW_CONTROL: "flow control violated",
    CloseCode.STALLED: "stalled",
    CloseCode.OUTPUT_CLOSED: "output closed",
    CloseCode.PEER_ABORTED: "the peer aborted the session",
    CloseCode.HANDSHAKE_TIMEOUT: "no hello in time",
    CloseCode.TOO_MANY_SUBFLOWS: "too many subflows (one end is at its --max-subflows)",
    CloseCode.AUTH_FAILED: "authentication failed",
    CloseCode.SHUTDOWN: "the peer is shutting down",
}


def verdict(reason: EndReason) -> Verdict:
    """What follows a subflow that ended for ``reason`` (see the module docstring)."""
    if reason in _FATAL:
        return Verdict.FATAL
    if reason in _FINAL:
        return Verdict.FINAL
    return Verdict.TRANSIENT


def describe(reason: EndReason, detail: str = "") -> str:
    """One phrase for a log line: the reason, and the runtime's detail if any."""
    text = _CODE_TEXT[reason] if isinstance(reason, CloseCode) else reason.value
    return f"{text}: {detail}" if detail else text
