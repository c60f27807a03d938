"""Subflow authentication with a pre-shared key (PSK).

Each side proves it knows the key by sending HMAC-SHA256 over both hellos'
fresh nonces and instance ids, in the *sender's* order (its own first).
Fresh nonces from both sides defeat replay; the order defeats reflection
(sending a side's own proof back to it does not match what it expects).
The comparison is constant-time.  This authenticates subflows; it does not
encrypt them.
"""

from __future__ import annotations

from .frames import Hello

LABEL = b"sockimux subflow auth v1"
PROOF_SIZE = 32
MIN_KEY_SIZE = 16


def proof(key: bytes, mine: Hello, theirs: Hello) -> bytes:
    """What we send: our proof of the key for this pair of hellos."""
    import hashlib  # here: only a session with a key needs them (start-up time)
    import hmac
    message = LABEL + mine.nonce + theirs.nonce + mine.instance + theirs.instance
    return hmac.new(key, message, hashlib.sha256).digest()


def verify(key: bytes, mine: Hello, theirs: Hello, received: bytes) -> bool:
    """Whether ``received`` is the peer's valid proof (its hello first)."""
    import hmac
    return hmac.compare_digest(proof(key, theirs, mine), received)
