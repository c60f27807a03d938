"""A subflow's handshake, as tables: which input moves it to which state, and
which frames each state takes.

Theory of operation
-------------------
A subflow is one connection between the two processes.  Each side sends its
HELLO at once (frames.py: magic, version, the sender's instance id, a fresh
nonce, whether it requires a shared key).  Then::

    state      input          next state  action
    HANDSHAKE  HELLO          OPEN        (the session binds the peer instance)
    HANDSHAKE  HELLO_KEYED    AUTH        send our proof of the key (auth.py)
    AUTH       PROOF          OPEN        (the session binds the peer instance)
    HANDSHAKE  CLOSE          CLOSED      refused, timed out or lost
    AUTH       CLOSE          CLOSED
    OPEN       CLOSE          CLOSED      refused, stalled or lost

``TRANSITIONS`` is that table; an input it does not list is a protocol
error, never a silent ignore.  ``ACCEPTS`` is the table of which frames
each state takes; any other frame is a protocol error that closes just this
subflow (reader.FrameReader refuses it on its header).  In HANDSHAKE only a
HELLO may arrive (it is not a framed message, see frames.py).  A hello that
leads back to this very process, or that requires a key we do not have, is
refused before any state of the session changes; so is a wrong proof.
"""

from __future__ import annotations

import enum

from . import auth, frames
from .errors import CloseCode, ProtocolError
from .frames import FrameType, Hello


class SubflowState(enum.Enum):
    HANDSHAKE = "handshake"
    AUTH = "auth"  # hellos exchanged, waiting for the peer's proof of the shared key
    OPEN = "open"
    CLOSED = "closed"

    # Members are singletons compared by identity: hash them so too, in C
    # (Enum's own __hash__ is Python, and ACCEPTS is looked up per frame).
    __hash__ = object.__hash__


# The states as module constants, for the per-frame path: on Python 3.11 every
# ``SubflowState.OPEN`` is looked up through EnumType's ``__getattr__`` hook
# (about 70 ns; a module global, 7 ns), a dozen times per keystroke and side.
HANDSHAKE, AUTH, OPEN, CLOSED = (SubflowState.HANDSHAKE, SubflowState.AUTH, SubflowState.OPEN,
                                 SubflowState.CLOSED)


class Input(enum.Enum):
    HELLO = "hello"  # the peer's valid hello; no shared key on either side
    HELLO_KEYED = "hello, keyed"  # the peer's valid hello; we hold a key (and prove it)
    PROOF = "proof"  # the peer's valid proof of the key
    CLOSE = "close"  # refused (by either side), timed out, stalled or lost


_S, _I = SubflowState, Input
TRANSITIONS: dict[tuple[SubflowState, Input], SubflowState] = {
    (_S.HANDSHAKE, _I.HELLO): _S.OPEN,
    (_S.HANDSHAKE, _I.HELLO_KEYED): _S.AUTH,
    (_S.AUTH, _I.PROOF): _S.OPEN,
    (_S.HANDSHAKE, _I.CLOSE): _S.CLOSED,
    (_S.AUTH, _I.CLOSE): _S.CLOSED,
    (_S.OPEN, _I.CLOSE): _S.CLOSED,
}

ACCEPTS: dict[SubflowState, frozenset[FrameType]] = {
    SubflowState.HANDSHAKE: frozenset(),
    SubflowState.AUTH: frozenset({FrameType.AUTH, FrameType.REFUSE}),
    SubflowState.OPEN: frozenset(FrameType) - {FrameType.AUTH},
    SubflowState.CLOSED: frozenset(),
}


def advance(state: SubflowState, event: Input) -> SubflowState:
    """The state ``event`` leads to from ``state``; ProtocolError if the table has none."""
    try:
        return TRANSITIONS[state, event]
    except KeyError:
        raise ProtocolError(f"{event.value} not allowed in state {state.value}") from None


def our_hello(instance: bytes, nonce: bytes, psk: bytes | None) -> Hello:
    return Hello(instance, nonce, frames.HELLO_AUTH if psk is not None else 0)


def on_hello(mine: Hello, theirs: Hello, psk: bytes | None) -> tuple[Input, bytes | None]:
    """Judge the peer's hello: the input it makes, and the frame to send (our proof)."""
    if theirs.instance == mine.instance:
        raise ProtocolError("subflow leads back to this same process", CloseCode.SELF_CONNECT)
    if psk is None:
        if theirs.flags & frames.HELLO_AUTH:
            raise ProtocolError("peer requires a shared key (--psk-file) and we have none",
                                CloseCode.AUTH_FAILED)
        return Input.HELLO, None
    # Prove we know the key, then wait for the peer's proof before anything
    # else: no state of the session changes for an unauthenticated subflow.
    return Input.HELLO_KEYED, frames.encode_auth(auth.proof(psk, mine, theirs))


def on_proof(mine: Hello, theirs: Hello, psk: bytes, proof: bytes) -> Input:
    """Judge the peer's AUTH frame."""
    if not auth.verify(psk, mine, theirs, proof):
        raise ProtocolError("wrong proof of the shared key", CloseCode.AUTH_FAILED)
    return Input.PROOF
