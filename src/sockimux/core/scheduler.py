"""Pull scheduling: which subflows may write, and what data each one takes.

Theory of operation
-------------------
Subflows are not fed round-robin.  Each one *pulls* the next piece of the
stream when it has room (its in-flight cap, estimate.py), so a fast subflow
simply comes back for more more often.

So that an event costs the same with 1 or 1,000 subflows, the scheduler
keeps two sets rather than passing over all subflows:

* the *ready* subflows, which may have something to write (frames queued,
  an ACK or PONG owed, new credit); the driver pulls only those (and the
  ones whose transport drained);
* the *hungry* subflows, oldest first, whose last pull found room but no
  data: new input wakes only as many of them as it can feed.  A little
  input (a keystroke, a reply) goes first to the subflow the peer's data
  last arrived on, if it is hungry: a path just shown alive, and the one
  the peer's side of an exchange used.  When a subflow stops, the peer's
  probe copy arrives on another, and the reply follows it there instead
  of being caught on the stopped one a second time.  Subflows whose rate
  is known are woken before those that have not shown one yet (just
  joined, or never needed): a newcomer starts with small pieces, so while
  the window binds, feeding it only cuts the stream into more frames.

What a subflow takes, in the sender's order (re-sends first, then new
bytes within credit), is cut into pieces of at most an eighth of its cap.
When it has room and nothing is left to send, it may carry a copy of the
head of the stream, if a much slower subflow holds it up: the peer writes
in order, so those bytes gate everything behind them (docs/PROTOCOL.md
section 8).  Each byte is copied that way once.  Once the last byte is
sent, it may instead carry a copy of the end of another subflow's backlog
(and the FIN), so that subflows of unequal speed all finish together
(_tail()).  And nothing else wakes an idle subflow then, so each time the
head moves on the fastest idle one is pulled to try these (head_moved()).

A subflow that has gone *quiet* (subflow.py: DATA in flight and no sign of
progress for a probe timeout) takes nothing: it may have stopped without a
word, and a stopped connection's kernel buffers still take small writes,
so it would otherwise stay hungry and swallow every keystroke until the
stall timeout.  The stream bytes it holds (unacknowledged, lowest offsets
first, at most PROBE_COPY_LIMIT per quiet episode) are queued as *probe
copies*, which the next subflows to pull take before anything else.  The
peer drops whichever copy arrives second, so a subflow that was only slow
costs those bytes twice, nothing more.
"""

from __future__ import annotations

from collections.abc import Callable

from . import frames
from .config import SessionConfig
from .frames import DATA_ACK_NOW, HEADER_SIZE, data_header
from .handshake import OPEN
from .sender import Outgoing, Piece, StreamSender
from .subflow import Subflow

MIN_PIECE = 8 * 1024  # smallest DATA payload we cut for a subflow of unknown or low rate
PROBE_COPY_LIMIT = 64 * 1024  # stream bytes copied per quiet episode of a subflow (keystrokes: all)
TAIL_MIN_GAIN = 0.02  # seconds: a copy of another subflow's last bytes must end the stream this much sooner


class Scheduler:
    def __init__(self, sender: StreamSender, subflows: dict[int, Subflow], config: SessionConfig,
                 starved: Callable[[], None]) -> None:
        self.sender = sender
        self.subflows = subflows
        self.config = config
        self._starved = starved  # a subflow had room and the window held the data back
        self._ready: set[int] = set()
        self._ready_all = False
        self._hungry: dict[int, None] = {}  # insertion order: oldest first
        self._hungry_new: dict[int, None] = {}  # ...and those whose rate is not known yet
        self.freshest: int | None = None  # the subflow the peer's DATA last arrived on
        self._head_copied_to = 0  # stream offsets below this were copied as head of line once
        self.head_copies = 0  # bytes copied that way or from a backlog's end (statistics)
        # subflow -> (offset from which what it holds was copied by _tail(), bytes copied so)
        self._tail_copied: dict[int, tuple[int, int]] = {}
        self.tail_copies = 0  # of head_copies, those from a backlog's end (_tail())
        self._carrier_of: tuple[int, int, int] | None = None  # (offset, subflow, range end)
        self._probes: list[tuple[int, int, int]] = []  # (start, end, quiet subflow), by start
        self.probe_copies = 0  # bytes copied from quiet subflows (statistics)

    # -- who may write ---------------------------------------------------------

    def ready(self, sid: int) -> None:
        self._ready.add(sid)

    def ready_all(self) -> None:
        """Every subflow may have something to write (new credit, re-sends, a timer)."""
        self._ready_all = True

    def forget(self, sid: int) -> None:
        self._hungry.pop(sid, None)
        self._hungry_new.pop(sid, None)

    def quiet(self, sub: Subflow) -> None:
        """``sub`` has just gone quiet: no new bytes for it, and what it holds
        (lowest offsets first, the peer writes in order) is to be copied."""
        self.forget(sub.id)
        acked = self.sender.acked
        budget = PROBE_COPY_LIMIT
        probes = self._probes
        for start, end in sorted(sub.ranges):
            start = max(start, acked)
            if start >= end:
                continue
            end = min(end, start + budget)
            probes.append((start, end, sub.id))
            budget -= end - start
            if budget <= 0:
                break
        probes.sort()
        self._ready_all = True

    def _probe(self, max_len: int) -> tuple[int, Piece] | None:
        """The next probe copy, at most ``max_len`` bytes.  What was acknowledged
        meanwhile is skipped, and so is all a subflow held that is no longer
        quiet: one that only seemed quiet because our own process was late
        (its ACKs waiting unread) costs no copies once they are read, and
        neither do many at once (a late timer makes every busy one quiet)."""
        probes = self._probes
        acked = self.sender.acked
        while probes:
            start, end, sid = probes[0]
            start = max(start, acked)
            source = self.subflows.get(sid)
            if start >= end or source is None or not source.quiet:
                del probes[0]  # (a closed one's ranges are queued as re-sends)
                continue
            piece = self.sender.peek(start, min(end, start + max_len))
            stop = start + len(piece[1])
            if stop >= end:
                del probes[0]
            else:
                probes[0] = (stop, end, sid)
            return piece
        return None

    def take_ready(self) -> list[int]:
        """Subflows to pull now: those that may have something to write."""
        if self._ready_all:
            ready = list(self.subflows)
            self._ready_all = False
        elif not self._ready:
            return []  # (most steps on the keystroke path)
        else:
            # (filter(): no Python frame, as a comprehension's, per step)
            ready = list(filter(self.subflows.__contains__, self._ready))
        self._ready.clear()
        return ready

    def fed(self, count: int) -> None:
        """``count`` new bytes of input (or credit): wake as many hungry
        subflows as they can feed, those of known rate first."""
        hungry, new = self._hungry, self._hungry_new
        fresh = self.freshest
        if count < MIN_PIECE and fresh is not None and (fresh in hungry or fresh in new):
            self.forget(fresh)
            sub = self.subflows.get(fresh)
            if sub is not None and sub.state is OPEN:
                self._ready.add(fresh)
                return
        while count > 0:
            if hungry:
                sid = next(iter(hungry))
                del hungry[sid]
            elif new:
                sid = next(iter(new))
                del new[sid]
            else:
                return
            sub = self.subflows.get(sid)
            if sub is not None and sub.state is OPEN:
                self._ready.add(sid)
                count -= max(frames.HEADER_SIZE + 1, sub.path.cap() - sub.in_flight)

    def head_moved(self) -> None:
        """All of the stream has been sent and the peer has written more of
        it: no input or credit will wake an idle subflow now, so the fastest
        idle one is pulled, to copy the new head if a much slower subflow
        holds it (_head_of_line()).  Otherwise the end of a transfer waited
        for the slowest subflow to deliver all it held (up to MIN_CAP: half
        a second on a 1 Mbit/s link).  (A pass over the idle subflows: only
        for ACKs after the last byte was sent.)"""
        if not self.config.head_resend:
            return
        best: Subflow | None = None
        for sid in self._hungry:
            sub = self.subflows.get(sid)
            if sub is not None and (best is None or sub.path.rate > best.path.rate):
                best = sub
        if best is not None:
            del self._hungry[best.id]
            self._ready.add(best.id)

    # -- what it takes ------------------------------------------------------------

    def fill(self, sub: Subflow, out: list[Outgoing], now: float, limit: int | None) -> None:
        """Append to ``out`` the DATA frames (and the FIN) ``sub`` takes now:
        up to its in-flight allowance, and ``limit`` payload bytes if given."""
        sender = self.sender
        path = sub.path
        cap = path.cap()
        allowance = cap - (sub.data_out - sub.peer_in)  # cap - in_flight
        budget = allowance if limit is None else limit  # payload bytes
        # Pieces of at most an eighth of the cap: on a slow subflow a whole
        # frame must arrive before it counts as progress (see the stall rule).
        # Before its rate is measured, a subflow's pieces grow with what it
        # has delivered (a quarter of it): a slow one keeps small pieces until
        # its rate is known, and a fast one, already past 1 MiB, is not cut
        # into 8 KiB frames meanwhile (with 128 subflows joining, three
        # quarters of all frames were those).
        if path.rate <= 0:
            size = sub.peer_in // 4
            if size < MIN_PIECE:
                size = MIN_PIECE
            elif size > cap // 8:
                size = cap // 8 if cap >= 8 * MIN_PIECE else MIN_PIECE
        else:
            size = MIN_PIECE if cap < 8 * MIN_PIECE else cap // 8
        chunk = self.config.chunk
        if size < chunk:
            chunk = size
        self._hungry.pop(sub.id, None)
        self._hungry_new.pop(sub.id, None)
        if sub.quiet:
            return  # neither stream bytes nor the FIN until it shows progress
        # (Comparisons rather than min(): a keystroke's pull runs this once.)
        starved: bool | None = None  # sender.starved, known since the last piece taken
        tail_fin = False  # a copy of the stream's last bytes was taken: the FIN goes with it too
        while allowance > HEADER_SIZE and budget > 0:
            most = allowance - HEADER_SIZE
            if chunk < most:
                most = chunk
            if budget < most:
                most = budget
            new = sender.next_new
            piece = self._probe(most) if self._probes else None
            if piece is not None:  # what a quiet subflow holds goes first
                sub.probe_copies += len(piece[1])
                self.probe_copies += len(piece[1])
            elif (piece := sender.take(most)) is None:
                # room, but nothing to send
                (self._hungry if path.rate > 0 else self._hungry_new)[sub.id] = None
                if starved is None:
                    starved = sender.starved
                if starved and allowance >= 2 * MIN_PIECE:
                    self._starved()
                if self.config.head_resend:
                    piece = self._head_of_line(sub, most)
                    if piece is None and sender.eof and sender.next_new >= sender.end:
                        piece = self._tail(sub, most)
                        if piece is not None and piece[0] + len(piece[1]) == sender.end:
                            tail_fin = True
                if piece is None:
                    break
                sub.head_copies += len(piece[1])
            elif sender.next_new == new:  # a re-send: new bytes move next_new
                sub.resent += len(piece[1])
            offset, view = piece
            length = len(view)
            # The last frame before we must wait for an ACK asks for it at once:
            # a peer that holds ACKs for ack_delay would otherwise cost a small
            # send buffer (or window) that delay per buffer-full.
            starved = sender.starved  # (a take() that finds nothing leaves it as is)
            out.append(data_header(offset, length, DATA_ACK_NOW if starved else 0))
            out.append(view)
            sub.carry(offset, length, now)
            allowance -= HEADER_SIZE + length
            budget -= length
        if sender.eof and (sender.fin_due or tail_fin):  # (eof first: no call while the input lasts)
            out.append(frames.encode_fin(sender.end, sender.status))
            sender.fin_in_flight = True
            sub.carries_fin = True

    def _tail(self, sub: Subflow, max_len: int) -> tuple[int, Piece] | None:
        """All of the stream is sent and ``sub`` has room: a copy of the last
        bytes held by the subflow that will be the last to deliver what it
        holds, if that ends the stream sooner.

        Each subflow delivers what it holds in order, so its last bytes come
        last: with links of unequal speed, the faster ones would go idle at
        the end while one still drains its backlog.  ``sub`` takes the share
        of that backlog (from its end) with which both would finish at once,
        and the FIN with the stream's last bytes; the peer drops whichever
        copy comes second.  Only if the stream then ends TAIL_MIN_GAIN sooner,
        by the measured rates; each byte is copied this way once."""
        rate = sub.path.rate
        sender = self.sender
        if rate <= 0 or max_len <= 0 or sender.acked >= sender.end:
            return None  # (all acknowledged: no pass over the subflows on each pull)
        copied = self._tail_copied
        last: Subflow | None = None
        longest = 0.0
        for other in self.subflows.values():
            if other is sub or other.state is not OPEN or other.path.rate <= 0 or not other.ranges:
                continue
            left = (other.in_flight - copied.get(other.id, (0, 0))[1]) / other.path.rate
            if left > longest:
                last, longest = other, left
        if last is None:
            return None
        their = last.path.rate
        # Both finish together when (in_flight + x) / rate == longest - x / their.
        share = (longest * their * rate - sub.in_flight * their) / (rate + their)
        if share / their < TAIL_MIN_GAIN:
            return None
        top, already = copied.get(last.id, (sender.end, 0))
        for start, end in reversed(last.ranges):
            if start < top:
                top = min(top, end)
                if top <= sender.acked:
                    return None
                low = max(start, top - int(min(share, max_len)), sender.acked,
                          sender.chunk_start(top - 1))
                break
        else:
            return None
        if low >= top:
            return None
        piece = sender.peek(low, top)
        copied[last.id] = (low, already + top - low)
        self.tail_copies += top - low
        self.head_copies += top - low
        return piece

    def _head_of_line(self, sub: Subflow, max_len: int) -> tuple[int, Piece] | None:
        """The first unacknowledged bytes, to send again on ``sub``, if a much
        slower subflow holds them and ``sub`` has nothing else to send.

        The peer writes the stream in order, so the bytes at its head gate
        everything behind them: held on a slow subflow, they keep its window
        full and the fast subflows idle.  A copy on an idle subflow that would
        deliver it in less than half the time unblocks the peer (which drops
        whichever copy comes second).  Each byte is re-sent this way once."""
        sender = self.sender
        head = max(sender.acked, self._head_copied_to)
        if head >= sender.next_new or max_len <= 0 or sub.path.rate <= 0:
            return None
        carrier = self._carrier(head)
        if carrier is None:
            return None
        other, end = carrier
        # Only for a subflow at least twice as slow as this one, that will
        # take over twice as long to deliver what it holds as this one the
        # copy (equal subflows never copy: each holds the head in turn).
        if other is sub or other.path.rate * 2 > sub.path.rate:
            return None
        mine = (sub.in_flight + max_len) / sub.path.rate
        theirs = other.in_flight / other.path.rate if other.path.rate > 0 else float("inf")
        if theirs <= 2 * mine:
            return None
        piece = sender.peek(head, min(end, head + max_len))
        self._head_copied_to = head + len(piece[1])
        self.head_copies += len(piece[1])
        return piece

    def _carrier(self, offset: int) -> tuple[Subflow, int] | None:
        """The open subflow whose recorded ranges hold ``offset``, and that
        range's end.  Remembered per offset: hungry subflows ask for the same
        head again and again until it is acknowledged."""
        cached = self._carrier_of
        if cached is not None and cached[0] == offset:
            sub = self.subflows.get(cached[1])
            if sub is not None and sub.state is OPEN:
                return sub, cached[2]
        self._carrier_of = None
        for sub in self.subflows.values():
            if sub.state is OPEN:
                for start, end in sub.ranges:
                    if start <= offset < end:
                        self._carrier_of = (offset, sub.id, end)
                        return sub, end
        return None
