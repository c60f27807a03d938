"""One subflow: its counters, what it owes the peer, its deadline, when it is stalled.

Theory of operation
-------------------
A subflow is one connection between the two processes; its handshake is the
table in handshake.py.  Once OPEN it owes the peer, as *state* rather than
queued frames (so what a peer can make us owe stays bounded):

* an ACK (``ack_due``) after ``ack_every`` DATA bytes (spaced by
  ``ack_interval`` unless ``ack_most`` are unreported), ``ack_delay`` after
  the first unreported one, on joining, and with every keepalive;
* a PONG for the newest PING (however many arrived between two pulls);
* a keepalive PING once it has sent nothing for ``keepalive``.

It counts as stalled when nothing was heard for ``stall_timeout``, when a
PONG waited that long (the peer reads nothing of ours while it pings), or
when our DATA in flight made no progress for that long while the peer's
data was not streaming in either (its ACKs wait behind that data).

Long before that it may count as *quiet*: DATA in flight, no progress and
no DATA from the peer for a probe timeout (``PathEstimate.pto``: the
measured round trip, its deviation and the peer's delayed ACK; tens of
milliseconds on a fast path), as TCP's tail-loss probe or QUIC's probe
timeout would say.  A quiet subflow takes no new stream bytes (it may
only have stopped, with its kernel buffers still taking small writes) and
the stream bytes it holds are copied to the others (scheduler.py), until
the peer reports progress on it again; it is dropped at the stall timeout
as before.  Once per episode: no re-probing while it stays quiet.

Every change to what its deadline depends on goes through a method here,
and each such method marks the subflow (adds its id to the session's set of
touched subflows): the session recomputes only those deadlines after an
event, and this rule holds by construction, not by convention.  The link
tests check after every step that a full rescan never finds an earlier
deadline.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import frames
from .config import SessionConfig
from .errors import CloseCode, ProtocolError
from .estimate import PathEstimate
from .frames import FrameType, Hello
from .handshake import ACCEPTS, OPEN, Input, SubflowState, advance
from .reader import FrameReader
from .sender import Outgoing
from .stats import RATE_INTERVAL

__all__ = ["ACCEPTS", "Subflow", "SubflowState"]


@dataclass(eq=False)
class Subflow:
    id: int
    opened_at: float
    nonce: bytes
    marks: set[int]  # the session's touched subflows: our id goes in on every change
    state: SubflowState = SubflowState.HANDSHAKE
    reader: FrameReader = field(default_factory=FrameReader)
    hello: Hello | None = None  # the hello we sent
    peer: Hello | None = None  # the hello we received
    out: list[Outgoing] = field(default_factory=list)  # frames waiting for pull()
    last_heard: float = 0.0  # any bytes arrived
    last_sent: float = 0.0  # any bytes handed out for writing
    last_data_in: float = float("-inf")  # a DATA frame, or part of a frame, arrived
    last_progress: float = 0.0  # peer_in last advanced (or in-flight went from 0 to >0)
    quiet: bool = False  # no progress for a probe timeout: takes no new stream bytes
    # DATA frame bytes (header + payload) counted on both sides of the subflow.
    data_out: int = 0  # sent by us
    peer_in: int = 0  # the peer says it received this many of ours
    data_in: int = 0  # received by us
    data_in_reported: int = 0  # data_in as of our last ACK on this subflow
    unreported_since: float | None = None  # first DATA since that ACK
    acked_at: float = float("-inf")  # when we last sent an ACK on this subflow
    ack_due: bool = False  # send an ACK on the next pull
    ranges: list[tuple[int, int]] = field(default_factory=list)  # stream ranges sent, maybe unacked
    carries_fin: bool = False
    ping_token: int = 0
    ping_sent_at: float | None = None
    # A PING is answered by state, not by a queued frame: however many PINGs
    # a peer sends without reading, we owe it one PONG (the newest token).
    pong_owed: int | None = None
    pong_owed_since: float | None = None  # when the oldest unanswered PING arrived
    held: int = 0  # reader.held as of the last read (counted in Session._partial)
    path: PathEstimate = field(default_factory=PathEstimate)
    # Final counters (events.SubflowClosed): stream bytes put on this subflow.
    resent: int = 0  # of them, re-sends of ranges a lost subflow carried
    head_copies: int = 0  # of them, copies of bytes a slower subflow held up (head, backlog end)
    probe_copies: int = 0  # of them, copies of what a quiet subflow held
    label: str = ""  # where the runtime says it came from or went to (stats only)
    # The receive rate, for the stats (stats.py): data_in over the last
    # interval of at least RATE_INTERVAL, measured from the mark.
    rate_in: float = 0.0
    in_mark: int = 0  # data_in at the mark
    in_mark_at: float = float("-inf")  # the mark's time (-inf: no DATA yet)

    def mark(self) -> None:
        """Have the session recompute our deadline.  (The methods below add
        our id to ``marks`` inline: they are on the per-frame path.)"""
        self.marks.add(self.id)

    @property
    def in_flight(self) -> int:
        return self.data_out - self.peer_in

    def __repr__(self) -> str:
        return f"<Subflow {self.id} {self.state.value} in_flight={self.in_flight}>"

    # -- the handshake -------------------------------------------------------

    def advance(self, event: Input) -> None:
        self.state = advance(self.state, event)
        self.marks.add(self.id)

    # -- what arrives ----------------------------------------------------------

    def heard(self, now: float) -> None:
        """Bytes arrived."""
        self.last_heard = now
        self.marks.add(self.id)

    def partial(self, now: float) -> None:
        """Part of a frame (of a DATA body, on a slow path) arrived."""
        self.last_data_in = now
        self.marks.add(self.id)

    def data_arrived(self, count: int, now: float, cfg: SessionConfig) -> None:
        """``count`` bytes of DATA frames (as the peer counts them) arrived:
        owed an ACK after ``ack_every`` of them or ``ack_delay``.

        On a fast path ``ack_every`` bytes arrive in microseconds; an ACK
        for each would make ACKs most of both ends' work (each is a write
        here, a wake-up of whatever relays the subflow, and a read and a
        pass through the session there).  So such ACKs are also spaced by
        ``ack_interval``, unless ``ack_most`` bytes are waiting: the first
        DATA after the interval brings the ACK, and if none comes, the
        ``ack_delay`` timer does (no timer per interval: with many subflows
        those wake-ups cost more than the ACKs they save).  A path slower
        than ``ack_every / ack_interval`` (16 MB/s by default) is
        acknowledged exactly as without the spacing; a fast one has a cap of
        megabytes in flight (see estimate.py), so its sender is not held
        up by an ACK sitting out the interval."""
        self.data_in += count
        self.last_data_in = now
        if now - self.in_mark_at >= RATE_INTERVAL:  # at most a few times a second
            if self.in_mark_at == float("-inf"):  # the first DATA: it opens the first interval
                self.in_mark = self.data_in - count
            else:
                self.rate_in = (self.data_in - self.in_mark) / (now - self.in_mark_at)
                self.in_mark = self.data_in
            self.in_mark_at = now
        if self.unreported_since is None:
            self.unreported_since = now
        unreported = self.data_in - self.data_in_reported
        if unreported >= cfg.ack_every and (now >= self.acked_at + cfg.ack_interval
                                            or unreported >= cfg.ack_most):
            self.ack_due = True
        self.marks.add(self.id)

    def delivered(self, peer_in: int, now: float) -> None:
        """The peer's ACK says it received ``peer_in`` DATA bytes of ours here."""
        if peer_in > self.data_out:
            raise ProtocolError(f"peer reports {peer_in} bytes received, {self.data_out} sent")
        if peer_in > self.peer_in:
            saturated = self.in_flight * 2 >= self.path.cap()
            self.peer_in = peer_in
            self.last_progress = now
            self.quiet = False
            self.path.on_delivered(peer_in, now, saturated)
            self.marks.add(self.id)

    def trim(self, acked: int) -> None:
        """The stream is acknowledged below ``acked``: forget the ranges below it."""
        ranges = self.ranges
        i = 0
        while i < len(ranges) and ranges[i][1] <= acked:
            i += 1
        if i:
            del ranges[:i]

    def pinged(self, token: int, now: float) -> None:
        if self.pong_owed_since is None:
            self.pong_owed_since = now
        self.pong_owed = token
        self.marks.add(self.id)

    def ponged(self, token: int, now: float) -> None:
        if self.ping_sent_at is not None and token == self.ping_token:
            self.path.on_rtt(now - self.ping_sent_at)
            self.ping_sent_at = None
            self.marks.add(self.id)  # the probe timeout follows the round trip

    # -- what goes out -----------------------------------------------------------

    def queue(self, frame: bytes) -> None:
        """A frame for the next pull()."""
        self.out.append(frame)
        self.marks.add(self.id)

    def owe_ack(self) -> None:
        self.ack_due = True
        self.marks.add(self.id)

    def take_owed(self) -> list[Outgoing]:
        """The queued frames and the PONG owed, to write now."""
        out, self.out = self.out, []
        if self.pong_owed is not None:
            out.append(frames.encode_control(FrameType.PONG, self.pong_owed))
            self.pong_owed = self.pong_owed_since = None
        self.marks.add(self.id)
        return out

    def acked(self, now: float) -> None:
        """An ACK goes out on this subflow now."""
        self.data_in_reported = self.data_in
        self.acked_at = now
        self.unreported_since = None
        self.ack_due = False
        self.marks.add(self.id)

    def carry(self, offset: int, length: int, now: float) -> None:
        """A DATA frame of stream bytes [offset, offset + length) goes out here."""
        if self.data_out == self.peer_in:
            self.last_progress = now
        self.data_out += frames.HEADER_SIZE + length
        self.path.on_sent(self.data_out, now)
        end = offset + length
        ranges = self.ranges
        if ranges and ranges[-1][1] == offset:
            ranges[-1] = (ranges[-1][0], end)
        else:
            ranges.append((offset, end))

    # -- time ---------------------------------------------------------------------

    def deadline(self, cfg: SessionConfig) -> float:
        """When on_timer() has something to do for this subflow.

        (Comparisons rather than min()/max() and no properties: this runs
        after nearly every event, on the keystroke path.)"""
        if self.state is not OPEN:
            return self.opened_at + cfg.handshake_timeout
        stall = cfg.stall_timeout
        deadline = self.last_heard + stall
        if not self.out:
            keepalive = self.last_sent + stall / 4  # cfg.keepalive
            if keepalive < deadline:
                deadline = keepalive
        if self.data_out > self.peer_in:  # in flight
            since = self.last_progress
            if self.last_data_in > since:
                since = self.last_data_in
            if since + stall < deadline:
                deadline = since + stall
            if cfg.probe and not self.quiet:
                probe = since + self.path.pto(cfg.ack_delay)
                if probe < deadline:
                    deadline = probe
        if self.unreported_since is not None and not self.ack_due:
            ack = self.unreported_since + cfg.ack_delay
            if ack < deadline:
                deadline = ack
        if self.pong_owed_since is not None and self.pong_owed_since + stall < deadline:
            deadline = self.pong_owed_since + stall
        return deadline

    def on_timer(self, now: float, cfg: SessionConfig) -> tuple[CloseCode, str] | None:
        """Apply the rules due at ``now``: why to close the subflow, or None
        (then an ACK or a keepalive PING may be owed).

        Every test is ``now >= start + interval``, the very sum deadline()
        returns, so the timer due at a deadline always fires (``now - start
        >= interval`` can miss it by one rounding)."""
        self.marks.add(self.id)
        if self.state is not OPEN:
            if now >= self.opened_at + cfg.handshake_timeout:
                return (CloseCode.HANDSHAKE_TIMEOUT,
                        f"handshake not completed within {cfg.handshake_timeout:g} s")
            return None
        if now >= self.last_heard + cfg.stall_timeout:
            return CloseCode.STALLED, f"nothing heard for {now - self.last_heard:.1f} s"
        # The runtime pulls nothing from a subflow whose transport is full:
        # a PONG still owed after a stall timeout means the peer reads
        # nothing we send while it keeps sending (say, floods PINGs).
        if self.pong_owed_since is not None and now >= self.pong_owed_since + cfg.stall_timeout:
            return (CloseCode.STALLED, f"the peer has read nothing of ours for "
                                       f"{now - self.pong_owed_since:.1f} s while it pinged")
        # No progress on our data means a dead path only while the peer's
        # data is not streaming in too: its ACKs wait behind that data, and
        # if our direction is dead the peer's "nothing heard" rule drops it.
        if (self.in_flight > 0 and now >= self.last_progress + cfg.stall_timeout
                and now >= self.last_data_in + cfg.stall_timeout):
            return (CloseCode.STALLED, f"{self.in_flight} bytes in flight, none delivered for "
                                       f"{now - self.last_progress:.1f} s")
        if (cfg.probe and not self.quiet and self.in_flight > 0
                and now >= max(self.last_progress, self.last_data_in) + self.path.pto(cfg.ack_delay)):
            # Not dropped: it may only be slow.  The session copies what it
            # holds elsewhere and gives it no new bytes until it progresses.
            self.quiet = True
        if self.unreported_since is not None and now >= self.unreported_since + cfg.ack_delay:
            self.ack_due = True
        if now >= self.last_sent + cfg.keepalive and not self.out:
            self.ping_token += 1
            self.ping_sent_at = now
            self.out.append(frames.encode_control(FrameType.PING, self.ping_token))
            # ACKs are never acknowledged; repeating our state with every
            # keepalive means one lost on a dying subflow cannot freeze the peer.
            self.ack_due = True
        return None

    def resume(self, shift: float, now: float) -> None:
        """The process was not running for a while (see Session.handle_timer):
        move this subflow's clocks on by ``shift`` (never past ``now``)."""
        self.opened_at = min(self.opened_at + shift, now)
        self.last_heard = min(self.last_heard + shift, now)
        self.last_progress = min(self.last_progress + shift, now)
        self.last_data_in = min(self.last_data_in + shift, now)
        self.ping_sent_at = None  # its round trip spans the pause: no measure of the path
        self.marks.add(self.id)

    def close(self) -> None:
        self.advance(Input.CLOSE)
