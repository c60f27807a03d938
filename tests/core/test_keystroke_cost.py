"""What a keystroke costs the core (issue 15 target 2; docs/PERFORMANCE.md item 14).

Two Sessions joined in memory by four subflows, a fake clock, and the six
steps of a 1-byte echo (A takes the byte and sends it, B writes it out,
``cat`` hands it back to B, B sends it, A writes it out), as the runtime
drives them.  On a keystroke nearly all of a hop's CPU is the interpreter,
so the measure is the number of Python function calls the core makes per
echo (counted with sys.setprofile: exact, and the same on a loaded
machine).  The echo must still come back, byte for byte, with every rule
kept: this only bounds how much work that takes.
"""

from __future__ import annotations

import sys
from types import FrameType as PyFrame

from sockimux.core import Session
from sockimux.core.sender import Outgoing

SUBFLOWS = 4
# Python calls in sockimux/core per echo, both sides together: 172 before
# the keystroke path was trimmed (commit cf58f83), 106 after; 112 at 3e7aea1
# (ACKs riding on DATA added a check per frame), 98 after the second trim
# (docs/PERFORMANCE.md item 17).
BUDGET = 105


class Wire:
    """Every subflow's transport: writable, and what was written, per subflow."""

    def __init__(self) -> None:
        self.out: dict[int, list[bytes]] = {}

    def writable(self, sid: int) -> bool:
        return True

    def write(self, sid: int, buffers: list[Outgoing]) -> None:
        self.out.setdefault(sid, []).extend(bytes(b) for b in buffers)  # type: ignore[arg-type]


class Echo:
    def __init__(self) -> None:
        self.now = 0.0
        self.a, self.b = Session(b"A" * 16, 0.0), Session(b"B" * 16, 0.0)
        self.wa, self.wb = Wire(), Wire()
        for i in range(SUBFLOWS):  # subflow i of A is joined to subflow i of B
            self.a.open_subflow(0.0, bytes([i]) * 16)
            self.b.open_subflow(0.0, bytes([i + 100]) * 16)
        for _ in range(50):  # the handshakes
            self.step(self.a, self.wa)
            self.step(self.b, self.wb)
            if not (self.deliver(self.wa, self.b) | self.deliver(self.wb, self.a)):
                break
        assert all(s.state.value == "open" for s in self.a.subflows.values())

    def deliver(self, wire: Wire, to: Session) -> bool:
        moved = False
        for sid, buffers in wire.out.items():
            if buffers:
                data = b"".join(buffers)
                buffers.clear()
                to.receive(sid, data, self.now)
                moved = True
        return moved

    def step(self, session: Session, wire: Wire) -> bytes:
        """One step; its output written at once and reported, as a STDOUT pipe does."""
        out = b"".join(bytes(b) for b in session.step(self.now, wire).output)
        if out:
            session.output_written(len(out), self.now)
        return out

    def round_trip(self, byte: bytes) -> bytes:
        self.now += 0.0003
        self.a.write_stdin(byte, self.now)
        self.step(self.a, self.wa)
        self.deliver(self.wa, self.b)
        echoed = self.step(self.b, self.wb)  # B writes it to cat...
        self.b.write_stdin(echoed, self.now)  # ...which hands it back
        self.step(self.b, self.wb)
        self.deliver(self.wb, self.a)
        got = self.step(self.a, self.wa)
        self.deliver(self.wa, self.b)  # any ACK
        self.deliver(self.wb, self.a)
        return got


def core_calls(echo: Echo, count: int) -> int:
    """Python calls made in sockimux/core during ``count`` round trips."""
    calls = 0
    marker = "/sockimux/core/"

    def profile(frame: PyFrame, event: str, arg: object) -> None:
        nonlocal calls
        if event == "call" and marker in frame.f_code.co_filename:
            calls += 1

    sys.setprofile(profile)
    try:
        for i in range(count):
            byte = bytes([i & 0xFF])
            assert echo.round_trip(byte) == byte
    finally:
        sys.setprofile(None)
    return calls


def test_keystroke_echo_stays_within_its_call_budget() -> None:
    echo = Echo()
    for i in range(200):  # past the first RTT samples and the rate estimates
        assert echo.round_trip(bytes([i & 0xFF])) == bytes([i & 0xFF])
    per_echo = core_calls(echo, 500) / 500
    assert per_echo <= BUDGET, f"{per_echo:.1f} Python calls in the core per echo"
    # Every rule still ran: both streams acknowledged as the ACK rules say,
    # nothing re-sent, and the deadline is still the earliest one.
    assert echo.a.sender.resent_bytes == echo.b.sender.resent_bytes == 0
    assert echo.a.next_deadline() == echo.a.next_deadline(rescan=True)
    assert echo.b.next_deadline() == echo.b.next_deadline(rescan=True)


def test_acks_ride_on_the_echo_instead_of_waking_the_timer() -> None:
    """Keystrokes both ways every 2 ms for 2 s: the ACKs go with the DATA
    frames (one that has waited half of ack_delay rides on the next), so the
    sessions' timers wake only for the idle subflows' keepalives, not every
    ack_delay for an ACK of its own (each such pass also wrote a frame, and
    woke the relay and the peer, in the middle of the echo)."""
    echo = Echo()
    timers = 0
    for i in range(1000):
        echo.now += 0.0017  # with round_trip()'s 0.3 ms: an echo every 2 ms
        for session, wire in ((echo.a, echo.wa), (echo.b, echo.wb)):
            deadline = session.next_deadline()
            if deadline is not None and deadline <= echo.now:
                session.handle_timer(echo.now)
                echo.step(session, wire)
                timers += 1
        echo.deliver(echo.wa, echo.b)
        echo.deliver(echo.wb, echo.a)
        assert echo.round_trip(bytes([i & 0xFF])) == bytes([i & 0xFF])
    # Both streams acknowledged but for the echoes of the last ack_delay (20 ms).
    assert echo.a.sender.end - echo.a.sender.acked <= 10
    assert echo.b.sender.end - echo.b.sender.acked <= 10
    assert timers <= 20, f"{timers} timer passes in 2 s of echoes"  # 186 before, 6 after (keepalives)
