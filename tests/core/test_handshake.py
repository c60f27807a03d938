"""The handshake table (core/handshake.py), every (state, input) pair."""

from __future__ import annotations

import itertools

import pytest

from sockimux.core import CloseCode, ProtocolError
from sockimux.core.frames import HELLO_AUTH, Hello
from sockimux.core.handshake import TRANSITIONS, Input, SubflowState, advance, on_hello, on_proof, our_hello


@pytest.mark.parametrize(("state", "event"), list(itertools.product(SubflowState, Input)))
def test_every_pair_is_in_the_table_or_a_protocol_error(state: SubflowState, event: Input) -> None:
    if (state, event) in TRANSITIONS:
        assert advance(state, event) is TRANSITIONS[state, event]
    else:
        with pytest.raises(ProtocolError):
            advance(state, event)


def test_closed_is_final_and_every_other_state_can_close() -> None:
    assert all(state is not SubflowState.CLOSED for state, _ in TRANSITIONS)
    for state in (SubflowState.HANDSHAKE, SubflowState.AUTH, SubflowState.OPEN):
        assert advance(state, Input.CLOSE) is SubflowState.CLOSED


def test_hellos_and_proofs() -> None:
    key = b"k" * 16
    mine, theirs = our_hello(b"A" * 16, b"n" * 16, None), Hello(b"B" * 16, b"m" * 16)
    assert on_hello(mine, theirs, None) == (Input.HELLO, None)
    with pytest.raises(ProtocolError) as self_connect:
        on_hello(mine, Hello(b"A" * 16), None)
    assert self_connect.value.code is CloseCode.SELF_CONNECT
    with pytest.raises(ProtocolError) as keyed:
        on_hello(mine, Hello(b"B" * 16, flags=HELLO_AUTH), None)
    assert keyed.value.code is CloseCode.AUTH_FAILED
    mine_keyed = our_hello(b"A" * 16, b"n" * 16, key)
    event, proof = on_hello(mine_keyed, theirs, key)
    assert event is Input.HELLO_KEYED and proof is not None
    # The peer's proof is ours computed from its side; our own sent back is not.
    _, theirs_proof = on_hello(theirs, mine_keyed, key)
    assert theirs_proof is not None
    assert on_proof(mine_keyed, theirs, key, theirs_proof[16:]) is Input.PROOF
    with pytest.raises(ProtocolError):
        on_proof(mine_keyed, theirs, key, proof[16:])
