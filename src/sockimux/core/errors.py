"""The exception tree.

Everything sockimux raises derives from :class:`SockimuxError`.  The split
follows who is at fault: :class:`LocalError` means we were asked to do
something impossible (a bad argument, a socket path we may not use);
:class:`ProtocolError` means a peer sent something the protocol forbids.  A
protocol error carries a :class:`CloseCode` so the same reason can be put on
the wire and in the log line.
"""

from __future__ import annotations

import enum


class CloseCode(enum.IntEnum):
    """Why a subflow or a session was closed; sent on the wire in REFUSE/ABORT."""

    NORMAL = 0
    PROTOCOL_ERROR = 1  # malformed frame, frame not allowed in this state
    NOT_SOCKIMUX = 2  # the bytes do not start with our hello
    BAD_VERSION = 3  # a hello of a version we do not speak
    FOREIGN_INSTANCE = 4  # hello from a different peer process than the session's
    SELF_CONNECT = 5  # a subflow that leads back to ourselves
    FLOW_CONTROL = 6  # data beyond the credit we granted
    STALLED = 7  # no progress and no keepalive answer in time
    OUTPUT_CLOSED = 8  # our STDOUT was closed before the stream ended
    PEER_ABORTED = 9  # (local only) the peer aborted the session
    HANDSHAKE_TIMEOUT = 10  # the hello did not arrive in time
    TOO_MANY_SUBFLOWS = 11  # the subflow cap is reached
    AUTH_FAILED = 12  # the shared-secret proof did not match
    SHUTDOWN = 13  # the process is exiting (signal, no-subflow timeout)


class SockimuxError(Exception):
    """Root of every error sockimux raises on purpose."""


class LocalError(SockimuxError):
    """We were asked to do something we cannot: a usage or environment problem."""


class ProtocolError(SockimuxError):
    """The peer broke the protocol; ``code`` says how (and goes on the wire)."""

    def __init__(self, message: str, code: CloseCode = CloseCode.PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = code


class AddressError(LocalError):
    """A socat-style address (``--connect``, ``--listen``, ``--stream``) is malformed.

    The message is one line naming the address and its bad part, e.g.
    ``bad address 'TCP:host:70000': port must be 1-65535``; the command line
    reports it as bad usage (exit 2).
    """
