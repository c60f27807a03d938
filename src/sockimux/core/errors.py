"""The exception tree.

Everything sockimux raises derives from :class:`SockimuxError`.  The split
follows who is at fault, as h11 splits local from remote errors:

* :class:`UsageError`: the program driving the API misused it (a call in a
  state that does not allow it, a buffer lent twice, pushing after the end
  of the input, a report of more bytes than were handed out).  A bug in the
  caller, never something the peer or the user can cause.
* :class:`ProtocolError`: the peer sent something the protocol forbids.  It
  carries a :class:`CloseCode`, so the same reason goes on the wire and in
  the log line, and it costs only that subflow.
* :class:`LocalError`: what the user asked for cannot be done here (a bad
  address, a socket path we may not use, an unreadable key file).  The core
  raises one kind of it (:class:`AddressError`, from the address parser),
  the runtime and the CLI the others; the CLI reports each as one line with
  its exit code.  It lives here, beside the other two, so that the whole
  tree is one module an API user can import from.
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
    PEER_ABORTED = 9  # never sent: why our subflows closed when the peer aborted (reopen.py: final)
    HANDSHAKE_TIMEOUT = 10  # the hello did not arrive in time
    TOO_MANY_SUBFLOWS = 11  # the subflow cap is reached
    AUTH_FAILED = 12  # the shared-secret proof did not match
    SHUTDOWN = 13  # the process is exiting (signal, no-subflow timeout)


class SockimuxError(Exception):
    """Root of every error sockimux raises on purpose."""


class UsageError(SockimuxError):
    """The API was misused: the caller's bug (see the module's docstring)."""


class LocalError(SockimuxError):
    """What the user asked for cannot be done here: a bad argument, address or
    path, or an environment that does not allow it."""


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
