"""The FIN says how the command whose output the stream was ended
(docs/PROTOCOL.md, FIN_STATUS): an exit status or a signal, carried in the
header's reserved field, and ignored by an instance that does not know it."""

from __future__ import annotations

import pytest

from sockimux.core import frames as F
from sockimux.core.events import Outcome
from sockimux.core.frames import FrameType
from sockimux.core.reader import FrameReader

from .link import Link
from .test_session import finish, payload

KB = 1024


@pytest.mark.parametrize("status", [0, 1, 3, 255, -9, -15, None])
def test_the_fin_carries_the_input_commands_status(status: int | None) -> None:
    link = Link.between(payload(300 * KB, 1), payload(200 * KB, 2), subflows=3, seed=11)
    link.a.input_status = status
    finish(link)
    assert link.b.session.peer_status == status
    assert link.a.session.peer_status is None  # B's input was no command


def test_a_fin_sent_again_on_another_subflow_carries_it_too() -> None:
    """The subflow carrying the FIN is lost before FIN_DONE: the FIN goes out
    again on another, with the same status."""
    link = Link.between(payload(600 * KB, 1), b"", subflows=3, seed=12, rate=(2e5, 4e5))
    link.a.input_status = 7
    fins: list[int] = []

    def kill_the_fin_carrier() -> None:
        carriers = [sid for sid, sub in link.a.session.subflows.items() if sub.carries_fin]
        fins.extend(carriers)
        for pair in link.pairs:
            if any(end.ep is link.a and end.sid in carriers for end in pair.ends()):
                link.kill(pair)

    link.run(until=300, stop=lambda: any(s.carries_fin for s in link.a.session.subflows.values()))
    kill_the_fin_carrier()
    finish(link)
    assert fins, "the FIN was never on a subflow"
    assert link.b.session.peer_status == 7


@pytest.mark.parametrize(("status", "field"), [(0, 0), (3, 3), (255, 255), (-9, 0x109)])
def test_the_status_field_on_the_wire(status: int, field: int) -> None:
    raw = F.encode_fin(1234, status)
    ftype, flags, reserved, length, value = F.HEADER.unpack(raw)
    assert (ftype, flags, reserved, length, value) == (FrameType.FIN, F.FIN_STATUS, field, 0, 1234)
    reader = FrameReader()
    reader.feed(raw)
    frame = reader.next_frame()
    assert frame is not None and frame.flags & F.FIN_STATUS
    assert F.fin_status(frame.flags >> 8) == status


def test_a_fin_without_status_is_the_old_fin() -> None:
    assert F.encode_fin(99, None) == F.encode_control(FrameType.FIN, 99)


def test_the_peers_command_exited_so_the_session_ends_though_our_input_goes_on() -> None:
    """As ssh ends when the remote command exits: A's input came from a command
    that exited (its FIN says so); B's STDIN never ends.  Once B has written
    all of A's stream, both sessions are DONE; B sent only a prefix of its
    input, and A wrote what it got of it, in order."""
    link = Link.between(payload(300 * KB, 1), payload(4096 * KB, 2), subflows=3, seed=21)
    link.a.input_status = 3
    link.b.eof = False  # (a terminal, or a program that waits for us to exit)
    assert link.run(until=300)
    a, b = link.a, link.b
    assert a.outcome is Outcome.DONE and b.outcome is Outcome.DONE, link.describe()
    assert bytes(b.output) == a.data and b.output_closed
    assert b.data.startswith(bytes(a.output))
    assert b.session.peer_status == 3
    assert "command exited" in b.session.outcome_reason
    assert "command exited" in a.session.outcome_reason


def test_without_a_command_that_exited_both_streams_must_end() -> None:
    """No status in A's FIN (no command, or one still running): B's STDIN that
    never ends keeps the session open, as before; the same with status 0 ends."""
    for status, ends in ((None, False), (0, True)):
        link = Link.between(payload(300 * KB, 1), payload(64 * KB, 2), subflows=2, seed=22)
        link.a.input_status = status
        link.b.eof = False
        assert link.run(until=60) is ends, link.describe()
        assert bytes(link.b.output) == link.a.data
        if not ends:
            assert link.a.outcome is None and link.b.outcome is None
