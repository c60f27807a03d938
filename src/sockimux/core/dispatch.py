"""What each frame from the peer does, once its subflow's state accepts it.

The reader (reader.py) has already refused a frame the subflow's state does
not take (handshake.ACCEPTS), so each branch here only applies one: a hello
and a proof move the handshake (handshake.py) and bind the peer's instance;
DATA goes to the receiver, an ACK to the sender and the subflow's counters,
a PING is owed a PONG, a REFUSE closes the subflow, an ABORT the session.

A peer bound by a first subflow is tentative until the peer shows it
accepted one of ours (any frame but REFUSE): a peer bound to another
instance refuses us, and must not become ours for life.

These are methods of Session, kept here as one idea of their own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import events as ev
from . import frames, handshake
from .errors import CloseCode, ProtocolError
from .events import Outcome
from .frames import ACK_FRAME, DATA_FRAME, Frame, FrameType
from .handshake import OPEN, Input
from .parts import SessionParts
from .receiver import Piece
from .subflow import Subflow


def _printable(raw: bytes | bytearray | memoryview) -> str:
    """A peer-supplied reason, safe to log: no newlines or terminal escapes."""
    text = bytes(raw).decode("utf-8", "replace")
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


class FrameDispatch(SessionParts):
    # Provided by Session.
    peer_instance: bytes | None
    peer_confirmed: bool
    peer_status: int | None
    subflows_joined: int
    _alone_since: float | None
    alone_total: float
    _output: list[Piece]

    if TYPE_CHECKING:  # Session's own
        def _live_count(self) -> int: ...
        def _check_done(self) -> None: ...
        def _end(self, outcome: Outcome, reason: str) -> None: ...
        def _close(self, sub: Subflow, code: CloseCode, reason: str, now: float,
                   notify: bool = True, flush: bool = True, by: ev.By = ev.By.US) -> None: ...

    # -- frames in -------------------------------------------------------------

    def _on_hello(self, sub: Subflow, hello: frames.Hello, now: float) -> None:
        assert sub.hello is not None
        event, proof = handshake.on_hello(sub.hello, hello, self.config.psk)
        sub.peer = hello
        if proof is not None:
            sub.queue(proof)
            sub.advance(event)
        else:
            self._establish(sub, event, now)

    def _establish(self, sub: Subflow, event: Input, now: float) -> None:
        hello = sub.peer
        assert hello is not None
        if self.peer_instance is None:
            # Tentative until the peer shows it accepted this subflow too
            # (see _on_frame and _close): a peer bound to another instance
            # refuses us, and must not become ours for life.
            self.peer_instance = hello.instance
            self.peer_confirmed = False
            self._events.append(ev.PeerBound(hello.instance))
        elif hello.instance != self.peer_instance:
            raise ProtocolError(
                f"hello from instance {hello.instance.hex()[:12]}, but this session's peer is "
                f"{self.peer_instance.hex()[:12]} (was the peer restarted?)",
                CloseCode.FOREIGN_INSTANCE,
            )
        sub.advance(event)
        sub.owe_ack()  # grant credit / report state on the new subflow at once
        self.subflows_joined += 1
        if self._alone_since is not None:
            self.alone_total += now - self._alone_since
            if self.subflows_joined > 1:
                self._events.append(ev.SubflowResumed(sub.id, now - self._alone_since))
            self._alone_since = None
        self._events.append(ev.SubflowEstablished(sub.id, hello.instance, now, self._live_count()))

    def _on_frame(self, sub: Subflow, frame: Frame, now: float) -> None:
        ftype = frame.type  # the reader refused types this state does not take (ACCEPTS)
        if not self.peer_confirmed and sub.state is OPEN and ftype is not FrameType.REFUSE:
            # The peer sends an ACK at once on accepting a subflow: any frame
            # but REFUSE means it accepted us, and the binding holds for life.
            self.peer_confirmed = True
        if ftype is DATA_FRAME:
            header = 0 if frame.continued else frames.HEADER_SIZE
            sub.data_arrived(header + len(frame.body), now, self.config)
            self.scheduler.freshest = sub.id
            pieces = self.receiver.receive(frame.value, frame.body)
            if pieces:
                self._output.extend(pieces)
            if frame.flags & frames.DATA_ACK_NOW:
                self.acks.asked(frame.value + len(frame.body))
        elif ftype is ACK_FRAME:
            limit, peer_in = frames.decode_ack_body(frame.body)
            sub.delivered(peer_in, now)
            sender = self.sender
            credit_blocked = sender.next_new >= sender.credit
            head = sender.acked
            sender.on_ack(frame.value, limit, bool(frame.flags & frames.ACK_FIN_DONE))
            if credit_blocked and sender.credit > sender.next_new:
                # New credit: for the subflows that had room and nothing to
                # send (the others are pulled when their own room comes).
                self.scheduler.fed(sender.credit - sender.next_new)
            if sender.acked > head and sender.eof and sender.next_new >= sender.end:
                self.scheduler.head_moved()
            sub.trim(sender.acked)
            self._check_done()
        elif ftype is FrameType.FIN:
            self.receiver.on_fin(frame.value)
            if frame.flags & frames.FIN_STATUS:
                self.peer_status = frames.fin_status(frame.flags >> 8)
        elif ftype is FrameType.PING:
            sub.pinged(frame.value, now)
        elif ftype is FrameType.PONG:
            sub.ponged(frame.value, now)
        elif ftype is FrameType.ABORT:
            reason = _printable(frame.body)
            self._end(Outcome.PEER_ABORTED, f"peer ended the session: {reason}")
        elif ftype is FrameType.AUTH:
            assert self.config.psk is not None and sub.hello is not None and sub.peer is not None
            event = handshake.on_proof(sub.hello, sub.peer, self.config.psk, bytes(frame.body))
            self._establish(sub, event, now)
        elif ftype is FrameType.REFUSE:
            reason = _printable(frame.body)
            code = (CloseCode(frame.value) if frame.value in CloseCode._value2member_map_
                    else CloseCode.PROTOCOL_ERROR)
            self._events.append(ev.SubflowRefused(sub.id, ev.By.PEER, code, reason))
            self._close(sub, code, reason, now, by=ev.By.PEER)
