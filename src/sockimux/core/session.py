"""The session: one stream in each direction, carried by any number of subflows.

Theory of operation
-------------------
This is a sans-I/O state machine.  The runtime feeds it events, each with
the current time ``now`` (seconds, any monotonic origin):

* ``open_subflow`` / ``receive_buffer`` + ``received`` / ``subflow_lost``: a
  connection appeared, delivered bytes (read into the buffer the session
  named), or went away;
* ``divert`` / ``direct_room`` / ``moved_direct``: a DATA body that
  continues the stream, moved by the runtime from its connection straight
  to STDOUT (when STDOUT is a pipe, by splice), never entering our memory;
* ``write_stdin`` / ``stdin_eof``: bytes (and the end) of our input;
* ``output_written`` / ``output_closed``: what the runtime wrote to STDOUT;
* ``handle_timer`` at ``next_deadline()``.

and collects what the session wants done:

* ``pull(sid, now)``: buffers to write on that subflow now.  Call it after
  every event for every subflow that has room in its transport; it is where
  the pull scheduler hands out data;
* ``take_output()``: in-order bytes for STDOUT; close STDOUT once
  ``output_eof`` is true and everything taken has been written;
* ``take_events()``: subflows to close (``CloseSubflow``) and log lines;
* ``outcome``: set once the session is over.

Reliability rests on three rules.  The sender retains every byte until the
peer acknowledges having *written* it.  Every subflow records the stream
ranges it carried, and when it dies or stalls those ranges are queued to be
re-sent on the others.  The receiver keeps exactly-once, in-order delivery
whatever arrives twice or out of order.  So a subflow may vanish at any
moment, all of them may vanish for a while, and the stream still resumes
exactly where it stopped once a subflow (from the same peer process) joins.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from . import auth, frames
from .errors import CloseCode, ProtocolError, UsageError
from .frames import Frame, FrameReader, FrameType, Hello
from .receiver import StreamReceiver
from .sender import Extent, Outgoing, Piece, StreamSender
from .subflow import ACCEPTS, Subflow, SubflowState


def _printable(raw: bytes | bytearray | memoryview) -> str:
    """A peer-supplied reason, safe to log: no newlines or terminal escapes."""
    text = bytes(raw).decode("utf-8", "replace")
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


MIN_PIECE = 8 * 1024  # smallest DATA payload we cut for a subflow of unknown or low rate
# Below this a window costs throughput even on loopback (docs/PERFORMANCE.md,
# "The window"): say so when it is what holds the data back.
SMALL_WINDOW = 4 * 1024 * 1024


@dataclass(frozen=True)
class SessionConfig:
    window: int = 16 * 1024 * 1024  # receive window (credit) and send buffer, bytes
    chunk: int = 512 * 1024  # largest DATA payload we send
    stall_timeout: float = 2.5  # seconds without progress or keepalive before a subflow is dropped
    handshake_timeout: float = 10.0  # seconds for a new connection to send its hello
    ack_delay: float = 0.02  # longest we sit on received data before acknowledging it
    ack_every: int = 16 * 1024  # DATA bytes on a subflow that trigger an ACK on it
    ack_interval: float = 0.001  # ...but at most one such ACK per this many seconds, per subflow
    ack_most: int = 1024 * 1024  # ...unless this many DATA bytes are unreported
    max_subflows: int = 1024  # open subflows (including handshakes) at once
    alone_timeout: float | None = None  # give up after this long with no subflow (None: never)
    alone_warning: float = 10.0  # seconds between "no subflow" warnings
    max_handshakes: int = 256  # connections still in HANDSHAKE or AUTH at once
    psk: bytes | None = field(default=None, repr=False)  # shared key: subflows must prove it
    head_resend: bool = True  # an idle subflow re-sends the bytes a much slower one holds up

    @property
    def keepalive(self) -> float:
        """Idle time after which a subflow sends a PING (several per stall timeout)."""
        return self.stall_timeout / 4


class Outcome(enum.Enum):
    DONE = "done"  # both streams delivered and acknowledged
    OUTPUT_CLOSED = "output closed"  # our STDOUT went away before the stream ended
    PEER_ABORTED = "peer aborted"
    NO_SUBFLOWS = "no subflows"  # alone_timeout expired
    INTERRUPTED = "interrupted"  # the runtime shut us down (signal)
    INPUT_CHANGED = "input changed"  # STDIN failed: a regular file lost bytes, or a read error


@dataclass(frozen=True)
class CloseSubflow:
    """Close this subflow's connection, after writing ``final`` if ``flush``."""

    sid: int
    code: CloseCode
    reason: str
    final: list[Outgoing]
    flush: bool


@dataclass(frozen=True)
class Log:
    level: str  # "debug", "info", "warning", "error"
    message: str


Event = CloseSubflow | Log


class Session:
    def __init__(self, instance: bytes, now: float, config: SessionConfig | None = None) -> None:
        self.instance = instance
        self.config = config or SessionConfig()
        self.sender = StreamSender(self.config.window)
        self.receiver = StreamReceiver(self.config.window)
        self.subflows: dict[int, Subflow] = {}
        self.peer_instance: bytes | None = None
        self.peer_confirmed = False  # the peer accepted one of our subflows (any frame but REFUSE)
        self.outcome: Outcome | None = None
        self.outcome_reason = ""
        self.subflows_joined = 0
        self._next_id = 1
        self._events: list[Event] = []
        self._output: list[bytes | bytearray | memoryview] = []
        self._acked_written = 0  # receiver.written as of the last ACK we sent
        self._written_at: float | None = None  # when written first moved past that
        self._ack_asked = 0  # the peer asked for an ACK once written reaches this (DATA_ACK_NOW)
        self._window_noted = False  # the "window limits throughput" line was logged
        self._partial = 0  # sum of the subflows' `held`: memory set aside for incomplete frames
        self._fin_done_announced = False
        self._fin_done_sent = False  # an ACK with FIN_DONE was handed to a subflow
        self._alone_since: float | None = now
        self._alone_warned_at = now
        # Subflows that may have something to write: pulling only these keeps
        # the cost of an event independent of the number of subflows.
        self._ready: set[int] = set()
        self._ready_all = False
        # Open subflows whose last pull found no data to send while they had
        # room, oldest first: new STDIN wakes only as many as it can feed.
        self._hungry: dict[int, None] = {}
        self._head_resent_to = 0  # stream offsets below this were re-sent as head of line once
        self.head_resent = 0  # bytes re-sent that way (statistics)
        self._carrier_of: tuple[int, int, int] | None = None  # (offset, subflow, range end)
        # Each subflow's next deadline, recomputed only for the subflows an
        # event touched (readied, pulled, timed), so that next_deadline()
        # after every event does not cost a pass over all subflows.
        self._deadlines: dict[int, float] = {}
        self._dirty: set[int] = set()
        self._due: float | None = None  # what next_deadline() last returned (see handle_timer)
        # The subflows' readers read small frames into buffers lent from
        # this pool, each to one reader at a time (see frames.ScratchPool).
        self._scratch = frames.ScratchPool()
        self._discard: bytearray | None = None  # where bytes for a closed subflow are read

    # -- subflows ------------------------------------------------------------

    def open_subflow(self, now: float, nonce: bytes) -> int:
        """A connection was made.  Returns its id; pull() yields our HELLO first."""
        sid = self._next_id
        self._next_id += 1
        sub = Subflow(sid, opened_at=now, nonce=nonce, last_heard=now, last_sent=now,
                      reader=FrameReader(self._scratch))
        flags = frames.HELLO_AUTH if self.config.psk is not None else 0
        sub.hello = Hello(self.instance, nonce, flags)
        sub.out.append(frames.encode_hello(sub.hello))
        self.subflows[sid] = sub
        self._ready.add(sid)
        self._dirty.add(sid)
        pending = sum(1 for s in self.subflows.values() if s.state is not SubflowState.OPEN)
        if len(self.subflows) > self.config.max_subflows:
            self._refuse(sub, CloseCode.TOO_MANY_SUBFLOWS,
                         f"already {self.config.max_subflows} subflows", now)
        elif pending > self.config.max_handshakes:
            self._refuse(sub, CloseCode.TOO_MANY_SUBFLOWS,
                         f"already {self.config.max_handshakes} connections in handshake", now)
        return sid

    def receive_buffer(self, sid: int) -> memoryview:
        """Where to read subflow ``sid``'s next bytes; report them with received().

        The buffer is this subflow's until then: reads on several subflows
        may be in progress at once, and a read given up (nothing came) needs
        no report; the next call for that subflow asks again."""
        sub = self.subflows.get(sid)
        if sub is None:  # a connection on its way out: what it reads is discarded
            if self._discard is None:
                self._discard = bytearray(frames.SCRATCH_SIZE)
            return memoryview(self._discard)
        return sub.reader.get_buffer()

    def received(self, sid: int, count: int, now: float) -> bool:
        """``count`` bytes were read into the buffer receive_buffer(sid) returned.

        Returns False when nothing came of them yet (part of a large body
        arrived): no need to pull or re-arm the timer then."""
        sub = self.subflows.get(sid)
        if sub is None or sub.state is SubflowState.CLOSED:
            return False
        sub.last_heard = now
        self._dirty.add(sid)
        reader = sub.reader
        if not reader.buffer_updated(count):
            sub.last_data_in = now  # part of a frame arrived
            return False
        self._ready.add(sid)
        try:
            if sub.state is SubflowState.HANDSHAKE:
                hello = reader.take_hello()
                if hello is None:
                    return True
                self._on_hello(sub, hello, now)
            while sub.state is SubflowState.OPEN or sub.state is SubflowState.AUTH:
                frame = reader.next_frame(ACCEPTS[sub.state], sub.state.value)
                if frame is None:
                    break
                self._on_frame(sub, frame, now)
            if reader.buffered:
                sub.last_data_in = now  # part of a frame (a DATA body, on a slow path) arrived
        except ProtocolError as exc:
            self._refuse(sub, exc.code, str(exc), now)
        finally:
            reader.release()
        if sub.id in self.subflows:  # not refused just now
            self._count_partial(sub, now)
        return True

    def _count_partial(self, sub: Subflow, now: float) -> None:
        """Bound the memory set aside for frames not complete yet, over all
        subflows.  An honest peer has at most its credit in flight (a window;
        twice that with copies of bytes a slower subflow holds up, section
        8), but each reader may set aside up to a 1 MiB body: without this,
        a peer could make us hold max_subflows MiB by leaving one large
        frame half-sent on each subflow."""
        held = sub.reader.held
        self._partial += held - sub.held
        sub.held = held
        limit = 2 * self.config.window + 2 * frames.MAX_DATA
        if self._partial > limit:
            self._refuse(sub, CloseCode.FLOW_CONTROL,
                         f"incomplete frames on all subflows would hold {self._partial} bytes, "
                         f"more than {limit}", now)

    def receive(self, sid: int, data: bytes | bytearray | memoryview, now: float) -> None:
        """Bytes read from subflow ``sid`` (copied in, as a read would have put them)."""
        view = memoryview(data).cast("B")
        while view:
            buf = self.receive_buffer(sid)
            n = min(len(buf), len(view))
            buf[:n] = view[:n]
            del buf
            view = view[n:]
            self.received(sid, n, now)

    # -- bodies moved straight to STDOUT ------------------------------------

    def divert(self, sid: int) -> int:
        """Offer subflow ``sid``'s next DATA body to the runtime, to move from
        the connection straight to STDOUT.  Returns its length if it may (no
        byte of it has been read, and it continues the stream), else 0.  The
        runtime first writes out what take_output() returns, then asks
        direct_room() before each move, reports each with moved_direct(),
        and writes nothing else to STDOUT meanwhile."""
        sub = self.subflows.get(sid)
        if sub is None or sub.state is not SubflowState.OPEN or self.outcome:
            return 0
        pending = sub.reader.pending_body()
        if pending is None:
            return 0
        offset, length = pending
        if offset != self.receiver.delivered:
            return 0
        try:
            self.receiver.check(offset + length)
        except ProtocolError:
            return 0  # read as usual, and refused as usual
        if sub.reader.pending_flags & frames.DATA_ACK_NOW:
            self._ack_when_written(offset + length)
        sub.reader.divert()
        sub.data_in += frames.HEADER_SIZE
        return length

    def direct_room(self, sid: int) -> int:
        """Bytes of subflow ``sid``'s diverted body that may go straight to
        STDOUT now.  0 when none: whatever is left of it is read as usual."""
        sub = self.subflows.get(sid)
        if sub is None:
            return 0
        reader = sub.reader
        room = reader.diverted
        if not room:
            return 0
        if (sub.state is not SubflowState.OPEN or self._output or self.outcome is not None
                or reader.diverted_offset != self.receiver.delivered):
            reader.undivert()  # e.g. another subflow delivered these bytes first
            return 0
        try:
            self.receiver.check(self.receiver.delivered + room)  # a FIN may have come since
        except ProtocolError:
            reader.undivert()  # read as usual, and refused as usual
            return 0
        return room

    def undivert(self, sid: int) -> None:
        """The runtime will not move the rest of the diverted body (STDOUT is full)."""
        sub = self.subflows.get(sid)
        if sub is not None:
            sub.reader.undivert()

    def moved_direct(self, sid: int, count: int, now: float) -> None:
        """The next ``count`` bytes of subflow ``sid``'s diverted body were
        written to STDOUT."""
        sub = self.subflows.get(sid)
        if sub is None:
            raise UsageError(f"moved_direct() on subflow {sid}, which is not open")
        sub.reader.skipped(count)
        sub.last_heard = now
        self._dirty.add(sid)
        self._data_arrived(sub, count, now)
        self._ready.add(sid)
        self._output.extend(self.receiver.written_direct(count))
        self._written_more(now)

    def subflow_lost(self, sid: int, now: float, reason: str = "connection closed") -> None:
        """The runtime saw the connection end (EOF or error)."""
        sub = self.subflows.get(sid)
        if sub is not None:
            self._close(sub, CloseCode.NORMAL, reason, now, notify=False)

    # -- the local stream ------------------------------------------------------

    @property
    def stdin_room(self) -> int:
        """Bytes of STDIN the session will take now (0: stop reading)."""
        return 0 if self.outcome else self.sender.room

    def write_stdin(self, data: bytes | Extent, now: float) -> None:
        self.sender.push(data)
        want = len(data)
        hungry = self._hungry
        while hungry and want > 0:
            sid = next(iter(hungry))
            del hungry[sid]
            sub = self.subflows.get(sid)
            if sub is not None and sub.state is SubflowState.OPEN:
                self._ready.add(sid)
                want -= max(frames.HEADER_SIZE + 1, sub.path.cap() - sub.in_flight)

    def stdin_eof(self, now: float) -> None:
        self.sender.close()
        self._ready_all = True
        self._log("debug", f"input ended after {self.sender.end} bytes")

    def take_output(self) -> list[bytes | bytearray | memoryview]:
        """In-order bytes for STDOUT; report them with output_written() once written."""
        out, self._output = self._output, []
        return out

    @property
    def output_eof(self) -> bool:
        """The peer's stream is complete: close STDOUT after writing what was taken."""
        return self.receiver.eof

    def output_written(self, count: int, now: float) -> None:
        self.receiver.on_written(count)
        self._written_more(now)

    def _ack_when_written(self, end: int) -> None:
        """The peer waits for an ACK of the stream up to ``end`` (a DATA frame
        flagged DATA_ACK_NOW): send one as soon as that much is written."""
        if end > self._ack_asked:
            self._ack_asked = end
        if self.receiver.written >= self._ack_asked > self._acked_written:
            self._ack_on_best_subflow()  # e.g. a copy of bytes already written

    def _written_more(self, now: float) -> None:
        rx = self.receiver
        if self._ack_asked > self._acked_written and rx.written >= self._ack_asked:
            self._ack_on_best_subflow()
            return
        if rx.written > self._acked_written and self._written_at is None:
            self._written_at = now
        if rx.credit.update_due(rx.written):
            self._ack_on_best_subflow()

    def output_closed(self, now: float) -> None:
        """STDOUT was closed after the last byte of the peer's stream."""
        self.receiver.output_closed = True
        self._announce_fin_done()
        self._check_done()

    def abort(self, outcome: Outcome, reason: str, now: float) -> None:
        """End the session from this side; tell the peer on every subflow."""
        if self.outcome is not None:
            return
        code = CloseCode.OUTPUT_CLOSED if outcome is Outcome.OUTPUT_CLOSED else CloseCode.SHUTDOWN
        for sub in self.subflows.values():
            if sub.state is SubflowState.OPEN:
                sub.out.append(frames.encode_reason(FrameType.ABORT, code, reason))
        self._end(outcome, reason)

    # -- output to subflows -------------------------------------------------

    def pull(self, sid: int, now: float, limit: int | None = None) -> list[Outgoing]:
        """Buffers to write on subflow ``sid`` now (header and payload separate).

        Write all of them, in order.  The data part is bounded by the subflow's
        in-flight allowance and by ``limit`` (payload bytes; 0: control frames
        only, for a transport that has enough queued), so call again
        after the peer acknowledges (any receive()) or after your transport
        drains."""
        sub = self.subflows.get(sid)
        if sub is None:
            return []
        self._dirty.add(sid)
        out, sub.out = sub.out, []
        if sub.state is SubflowState.OPEN:
            if sub.pong_owed is not None:
                out.append(frames.encode_control(FrameType.PONG, sub.pong_owed))
                sub.pong_owed = sub.pong_owed_since = None
            if sub.ack_due:
                out.append(self._ack(sub, now))
            if self.outcome is None and limit != 0:
                self._fill(sub, out, now, limit)
        if out:
            sub.last_sent = now
        return out

    def _fill(self, sub: Subflow, out: list[Outgoing], now: float,
              limit: int | None) -> None:
        sender = self.sender
        cap = sub.path.cap()
        allowance = cap - sub.in_flight
        budget = allowance if limit is None else limit  # payload bytes
        # Pieces of at most an eighth of the cap: on a slow subflow a whole
        # frame must arrive before it counts as progress (see the stall rule).
        size = MIN_PIECE if sub.path.rate <= 0 else max(MIN_PIECE, cap // 8)
        chunk = min(self.config.chunk, size)
        self._hungry.pop(sub.id, None)
        while allowance > frames.HEADER_SIZE and budget > 0:
            piece = sender.take(min(chunk, allowance - frames.HEADER_SIZE, budget))
            if piece is None:
                self._hungry[sub.id] = None  # room, but nothing to send
                if sender.starved and not self._window_noted and allowance >= 2 * MIN_PIECE:
                    self._note_small_window()
                if self.config.head_resend:
                    piece = self._head_of_line(sub, min(chunk, allowance - frames.HEADER_SIZE, budget))
                if piece is None:
                    break
            offset, view = piece
            size = frames.HEADER_SIZE + len(view)
            if sub.in_flight == 0:
                sub.last_progress = now
            # The last frame before we must wait for an ACK asks for it at once:
            # a peer that holds ACKs for ack_delay would otherwise cost a small
            # send buffer (or window) that delay per buffer-full.
            flags = frames.DATA_ACK_NOW if sender.starved else 0
            out.append(frames.data_header(offset, len(view), flags))
            out.append(view)
            sub.data_out += size
            sub.path.on_sent(sub.data_out, now)
            allowance -= size
            budget -= len(view)
            end = offset + len(view)
            if sub.ranges and sub.ranges[-1][1] == offset:
                sub.ranges[-1] = (sub.ranges[-1][0], end)
            else:
                sub.ranges.append((offset, end))
        if sender.fin_due:
            out.append(frames.encode_control(FrameType.FIN, sender.end))
            sender.fin_in_flight = True
            sub.carries_fin = True

    def _note_small_window(self) -> None:
        """Once per session: a subflow had room, but the window (our send
        buffer, or the peer's credit) held the data back, and that window is
        small enough that it, not the path, limits throughput."""
        sender = self.sender
        if sender.next_new >= sender.credit:
            window, whose = sender.credit - sender.acked, "the peer's --window"
        else:
            window, whose = self.config.window, "our --window (the send buffer)"
        if 0 < window < SMALL_WINDOW:  # (no credit at all yet: no ACK has come)
            self._window_noted = True
            self._log("info", f"{whose} of {window // 1024} KiB is used up while a subflow could "
                              "carry more: it limits throughput to about a window per round "
                              f"trip (the default is {SessionConfig().window >> 20} MiB on both sides)")

    def _head_of_line(self, sub: Subflow, max_len: int) -> tuple[int, Piece] | None:
        """The first unacknowledged bytes, to send again on ``sub``, if a much
        slower subflow holds them and ``sub`` has nothing else to send.

        The peer writes the stream in order, so the bytes at its head gate
        everything behind them: held on a slow subflow, they keep its window
        full and the fast subflows idle.  A copy on an idle subflow that would
        deliver it in less than half the time unblocks the peer (which drops
        whichever copy comes second).  Each byte is re-sent this way once."""
        sender = self.sender
        head = max(sender.acked, self._head_resent_to)
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
        self._head_resent_to = head + len(piece[1])
        self.head_resent += len(piece[1])
        return piece

    def _carrier(self, offset: int) -> tuple[Subflow, int] | None:
        """The open subflow whose recorded ranges hold ``offset``, and that
        range's end.  Remembered per offset: hungry subflows ask for the same
        head again and again until it is acknowledged."""
        cached = self._carrier_of
        if cached is not None and cached[0] == offset:
            sub = self.subflows.get(cached[1])
            if sub is not None and sub.state is SubflowState.OPEN:
                return sub, cached[2]
        self._carrier_of = None
        for sub in self.subflows.values():
            if sub.state is SubflowState.OPEN:
                for start, end in sub.ranges:
                    if start <= offset < end:
                        self._carrier_of = (offset, sub.id, end)
                        return sub, end
        return None

    def take_ready(self) -> list[int]:
        """Subflows to pull() now: those that may have something to write."""
        if self._ready_all:
            ready = list(self.subflows)
        else:
            ready = [sid for sid in self._ready if sid in self.subflows]
        self._ready_all = False
        self._ready.clear()
        self._dirty.update(ready)
        return ready

    def take_events(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    # -- timers --------------------------------------------------------------

    def next_deadline(self, rescan: bool = False) -> float | None:
        """When to call handle_timer() next (None: no timer needed).

        Only the deadlines of subflows touched since the last call are
        recomputed (``rescan``: all of them).  Whatever changes a subflow's
        deadline touches it: bytes received on it, a pull, being readied, a
        timer.  The link tests check after every step that a rescan never
        finds an earlier deadline."""
        deadlines = self._deadlines
        dirty = self.subflows.keys() if rescan else self._dirty
        for sid in dirty:
            sub = self.subflows.get(sid)
            if sub is not None:
                deadlines[sid] = self._subflow_deadline(sub)
        self._dirty.clear()
        cfg = self.config
        times: list[float] = []
        if deadlines:
            times.append(min(deadlines.values()))
        if self._written_at is not None and any(
                sub.state is SubflowState.OPEN for sub in self.subflows.values()):
            times.append(self._written_at + cfg.ack_delay)
        if self._alone_since is not None and self.outcome is None:
            times.append(self._alone_warned_at + cfg.alone_warning)
            if cfg.alone_timeout is not None:
                times.append(self._alone_since + cfg.alone_timeout)
        self._due = min(times) if times else None
        return self._due

    def _subflow_deadline(self, sub: Subflow) -> float:
        cfg = self.config
        if sub.state is not SubflowState.OPEN:
            return sub.opened_at + cfg.handshake_timeout
        deadline = sub.last_heard + cfg.stall_timeout
        if not sub.out:
            deadline = min(deadline, sub.last_sent + cfg.keepalive)
        if sub.in_flight > 0:
            deadline = min(deadline, max(sub.last_progress, sub.last_data_in) + cfg.stall_timeout)
        if sub.unreported_since is not None and not sub.ack_due:
            deadline = min(deadline, sub.unreported_since + cfg.ack_delay)
        if sub.pong_owed_since is not None:
            deadline = min(deadline, sub.pong_owed_since + cfg.stall_timeout)
        return deadline

    def handle_timer(self, now: float) -> None:
        # Every test below is `now >= start + interval`, the very sum that
        # next_deadline() returns, so the timer due at a deadline always fires
        # (`now - start >= interval` can miss it by one rounding).
        cfg = self.config
        self._ready_all = True
        self._dirty.update(self.subflows)
        due, self._due = self._due, None
        if due is not None and now - due > cfg.keepalive:
            self._resumed(now, now - due)
        for sub in list(self.subflows.values()):
            if sub.state is not SubflowState.OPEN:
                if now >= sub.opened_at + cfg.handshake_timeout:
                    self._refuse(sub, CloseCode.HANDSHAKE_TIMEOUT,
                                 f"handshake not completed within {cfg.handshake_timeout:g} s", now)
                continue
            if now >= sub.last_heard + cfg.stall_timeout:
                self._stalled(sub, f"nothing heard for {now - sub.last_heard:.1f} s", now)
                continue
            # The runtime pulls nothing from a subflow whose transport is full:
            # a PONG still owed after a stall timeout means the peer reads
            # nothing we send while it keeps sending (say, floods PINGs).
            if sub.pong_owed_since is not None and now >= sub.pong_owed_since + cfg.stall_timeout:
                self._stalled(sub, f"the peer has read nothing of ours for "
                                   f"{now - sub.pong_owed_since:.1f} s while it pinged", now)
                continue
            # No progress on our data means a dead path only while the peer's
            # data is not streaming in too: its ACKs wait behind that data, and
            # if our direction is dead the peer's "nothing heard" rule drops it.
            if (sub.in_flight > 0 and now >= sub.last_progress + cfg.stall_timeout
                    and now >= sub.last_data_in + cfg.stall_timeout):
                self._stalled(sub, f"{sub.in_flight} bytes in flight, none delivered for "
                                   f"{now - sub.last_progress:.1f} s", now)
                continue
            if sub.unreported_since is not None and now >= sub.unreported_since + cfg.ack_delay:
                sub.ack_due = True
            if now >= sub.last_sent + cfg.keepalive and not sub.out:
                sub.ping_token += 1
                sub.ping_sent_at = now
                sub.out.append(frames.encode_control(FrameType.PING, sub.ping_token))
                # ACKs are never acknowledged; repeating our state with every
                # keepalive means one lost on a dying subflow cannot freeze the peer.
                sub.ack_due = True
        if self._written_at is not None and now >= self._written_at + cfg.ack_delay:
            self._ack_on_best_subflow()
        if self._alone_since is not None and self.outcome is None:
            alone = now - self._alone_since
            if cfg.alone_timeout is not None and now >= self._alone_since + cfg.alone_timeout:
                self._end(Outcome.NO_SUBFLOWS, f"no subflow for {alone:.0f} s")
            elif now >= self._alone_warned_at + cfg.alone_warning:
                self._alone_warned_at = now
                self._log("warning", f"no subflow for {alone:.0f} s; waiting for one to join "
                                     f"({self.sender.end - self.sender.acked} bytes unacknowledged)")

    def _resumed(self, now: float, late: float) -> None:
        """The timer came ``late`` seconds after the deadline next_deadline()
        gave: the process was not running meanwhile (stopped, as by SIGSTOP, a
        debugger or a paused container, or its loop blocked).  Then nothing
        could be read either, and what arrived meanwhile is still waiting to
        be (uvloop runs due timers before it polls for I/O): judged now, every
        subflow would look dead, on both ends if both were paused.  So that
        time is not counted against any subflow: their clocks move on by it,
        and by a keepalive interval more, so that each is judged only after
        what arrived has been read and a keepalive (sent now: last_sent does
        not move) has had time to be answered.  While the process runs, a
        timer fires within milliseconds of its deadline, so one this late
        means exactly that; a little late (a busy loop), it judges as ever.  A
        peer that did not stop goes on judging our subflows by its own clock,
        and drops them if we stayed away too long."""
        shift = late + self.config.keepalive

        def moved(t: float) -> float:
            return min(t + shift, now)

        for sub in self.subflows.values():
            sub.opened_at = moved(sub.opened_at)
            sub.last_heard = moved(sub.last_heard)
            sub.last_progress = moved(sub.last_progress)
            sub.last_data_in = moved(sub.last_data_in)
            sub.ping_sent_at = None  # its round trip spans the pause: no measure of the path
        if self._alone_since is not None:
            self._alone_since = moved(self._alone_since)
            self._alone_warned_at = moved(self._alone_warned_at)
        self._log("info", f"timer {late:.1f} s late (the process was not running): that time "
                          "is not counted against any subflow")

    # -- internals -------------------------------------------------------------

    def _on_hello(self, sub: Subflow, hello: Hello, now: float) -> None:
        if hello.instance == self.instance:
            raise ProtocolError("subflow leads back to this same process", CloseCode.SELF_CONNECT)
        sub.peer = hello
        key = self.config.psk
        if key is None:
            if hello.flags & frames.HELLO_AUTH:
                raise ProtocolError("peer requires a shared key (--psk-file) and we have none",
                                    CloseCode.AUTH_FAILED)
            self._establish(sub, now)
            return
        # Prove we know the key, then wait for the peer's proof before anything
        # else: no state of the session changes for an unauthenticated subflow.
        assert sub.hello is not None
        sub.out.append(frames.encode_auth(auth.proof(key, sub.hello, hello)))
        sub.state = SubflowState.AUTH

    def _on_auth(self, sub: Subflow, proof: bytes, now: float) -> None:
        assert self.config.psk is not None and sub.hello is not None and sub.peer is not None
        if not auth.verify(self.config.psk, sub.hello, sub.peer, proof):
            raise ProtocolError("wrong proof of the shared key", CloseCode.AUTH_FAILED)
        self._establish(sub, now)

    def _establish(self, sub: Subflow, now: float) -> None:
        hello = sub.peer
        assert hello is not None
        if self.peer_instance is None:
            # Tentative until the peer shows it accepted this subflow too
            # (see _on_frame and _close): a peer bound to another instance
            # refuses us, and must not become ours for life.
            self.peer_instance = hello.instance
            self.peer_confirmed = False
            self._log("debug", f"peer instance {hello.instance.hex()} (until it refuses us)")
        elif hello.instance != self.peer_instance:
            raise ProtocolError(
                f"hello from instance {hello.instance.hex()[:12]}, but this session's peer is "
                f"{self.peer_instance.hex()[:12]} (was the peer restarted?)",
                CloseCode.FOREIGN_INSTANCE,
            )
        sub.state = SubflowState.OPEN
        sub.ack_due = True  # grant credit / report state on the new subflow at once
        self.subflows_joined += 1
        if self._alone_since is not None:
            if self.subflows_joined > 1:
                self._log("info", f"subflow {sub.id} joined after {now - self._alone_since:.1f} s "
                                  "without any; resuming")
            self._alone_since = None
        self._log("info", f"subflow {sub.id} joined ({self._live_count()} open)")

    def _on_frame(self, sub: Subflow, frame: Frame, now: float) -> None:
        ftype = frame.type  # the reader refused types this state does not take (ACCEPTS)
        if not self.peer_confirmed and sub.state is SubflowState.OPEN and ftype is not FrameType.REFUSE:
            # The peer sends an ACK at once on accepting a subflow: any frame
            # but REFUSE means it accepted us, and the binding holds for life.
            self.peer_confirmed = True
        if ftype is FrameType.DATA:
            header = 0 if frame.continued else frames.HEADER_SIZE
            self._data_arrived(sub, header + len(frame.body), now)
            pieces = self.receiver.receive(frame.value, frame.body)
            if pieces:
                self._output.extend(pieces)
            if frame.flags & frames.DATA_ACK_NOW:
                self._ack_when_written(frame.value + len(frame.body))
        elif ftype is FrameType.ACK:
            limit, peer_in = frames.decode_ack_body(frame.body)
            if peer_in > sub.data_out:
                raise ProtocolError(f"peer reports {peer_in} bytes received, {sub.data_out} sent")
            if peer_in > sub.peer_in:
                saturated = sub.in_flight * 2 >= sub.path.cap()
                sub.peer_in = peer_in
                sub.last_progress = now
                sub.path.on_delivered(peer_in, now, saturated)
            credit_blocked = self.sender.next_new >= self.sender.credit
            self.sender.on_ack(frame.value, limit, bool(frame.flags & frames.ACK_FIN_DONE))
            if credit_blocked and self.sender.credit > self.sender.next_new:
                self._ready_all = True  # new credit: any subflow may take data
            self._trim_ranges(sub)
            self._check_done()
        elif ftype is FrameType.FIN:
            self.receiver.on_fin(frame.value)
        elif ftype is FrameType.PING:
            if sub.pong_owed_since is None:
                sub.pong_owed_since = now
            sub.pong_owed = frame.value
        elif ftype is FrameType.PONG:
            if sub.ping_sent_at is not None and frame.value == sub.ping_token:
                sub.path.on_rtt(now - sub.ping_sent_at)
                sub.ping_sent_at = None
        elif ftype is FrameType.ABORT:
            reason = _printable(frame.body)
            self._end(Outcome.PEER_ABORTED, f"peer ended the session: {reason}")
        elif ftype is FrameType.AUTH:
            self._on_auth(sub, bytes(frame.body), now)
        elif ftype is FrameType.REFUSE:
            reason = _printable(frame.body)
            self._log("warning", f"subflow {sub.id}: peer refused it: {reason}")
            self._close(sub, CloseCode(frame.value) if frame.value in CloseCode._value2member_map_
                        else CloseCode.PROTOCOL_ERROR, reason, now)

    def _data_arrived(self, sub: Subflow, count: int, now: float) -> None:
        """``count`` bytes of DATA frames (as the peer counts them) arrived on
        ``sub``: owed an ACK after ``ack_every`` of them or ``ack_delay``.

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
        megabytes in flight (see scheduler.py), so its sender is not held
        up by an ACK sitting out the interval."""
        sub.data_in += count
        sub.last_data_in = now
        if sub.unreported_since is None:
            sub.unreported_since = now
        cfg = self.config
        unreported = sub.data_in - sub.data_in_reported
        if unreported >= cfg.ack_every and (now >= sub.acked_at + cfg.ack_interval
                                            or unreported >= cfg.ack_most):
            sub.ack_due = True

    def _ack(self, sub: Subflow, now: float) -> bytes:
        rx = self.receiver
        limit = rx.credit.advertise(rx.written)
        sub.data_in_reported = sub.data_in
        sub.acked_at = now
        sub.unreported_since = None
        sub.ack_due = False
        if rx.written >= self._acked_written:
            self._acked_written = rx.written
            self._written_at = None
        if rx.done:
            self._fin_done_sent = True
            self._check_done()
        return frames.encode_ack(rx.written, limit, sub.data_in, rx.done)

    def _ack_on_best_subflow(self) -> None:
        """Queue a stream-level ACK on the open subflow with the least queued."""
        best: Subflow | None = None
        for sub in self.subflows.values():
            if sub.state is SubflowState.OPEN and (
                best is None or sub.in_flight * best.path.cap() < best.in_flight * sub.path.cap()
            ):
                best = sub
        if best is not None:
            best.ack_due = True
            self._ready.add(best.id)
            self._written_at = None

    def _announce_fin_done(self) -> None:
        # The last ACK matters most: send it on every subflow, so one lost
        # subflow cannot leave the peer waiting for it.
        if not self._fin_done_announced:
            self._fin_done_announced = True
            self._ready_all = True
            for sub in self.subflows.values():
                if sub.state is SubflowState.OPEN:
                    sub.ack_due = True

    def _trim_ranges(self, sub: Subflow) -> None:
        acked = self.sender.acked
        ranges = sub.ranges
        i = 0
        while i < len(ranges) and ranges[i][1] <= acked:
            i += 1
        if i:
            del ranges[:i]

    def _check_done(self) -> None:
        # Our last ACK (FIN_DONE) must have gone out on a subflow first: ending
        # with none open would leave the peer waiting for it forever.
        if (self.outcome is None and self.sender.done and self.receiver.done
                and self._fin_done_sent):
            self._end(Outcome.DONE, "both streams delivered")

    def _stalled(self, sub: Subflow, why: str, now: float) -> None:
        self._log("warning", f"subflow {sub.id} stalled ({why}); dropping it")
        self._close(sub, CloseCode.STALLED, why, now, flush=False)

    def _refuse(self, sub: Subflow, code: CloseCode, reason: str, now: float) -> None:
        self._log("warning", f"subflow {sub.id} refused: {reason}")
        sub.out.append(frames.encode_reason(FrameType.REFUSE, code, reason))
        self._close(sub, code, reason, now)

    def _close(self, sub: Subflow, code: CloseCode, reason: str, now: float,
               notify: bool = True, flush: bool = True) -> None:
        was_open = sub.state is SubflowState.OPEN
        sub.state = SubflowState.CLOSED
        self._partial -= sub.held
        sub.held = 0
        del self.subflows[sub.id]
        self._deadlines.pop(sub.id, None)
        self._hungry.pop(sub.id, None)
        resend = 0
        for start, end in sub.ranges:
            before = self.sender.resent_bytes
            self.sender.requeue(start, end)
            resend += self.sender.resent_bytes - before
        sub.ranges.clear()
        self._ready_all = True  # re-sends (or a lost FIN) for the others to take
        if sub.carries_fin and not self.sender.fin_done:
            self.sender.fin_in_flight = False
        if notify:
            self._events.append(CloseSubflow(sub.id, code, reason, sub.out, flush))
            sub.out = []
        if was_open and not self.peer_confirmed and self._live_count() == 0:
            # Refused (or lost) before the peer said a word: it may be bound to
            # another instance, so we take no peer yet.  Nothing of either
            # stream moved: we had no credit (it comes in the peer's ACK) and
            # any DATA from the peer would have confirmed it.
            assert self.sender.credit == 0 and self.receiver.delivered == 0
            self._log("info", f"peer instance {self.peer_instance.hex()[:12] if self.peer_instance else ''} "
                              "did not accept us; the session takes the next peer that does")
            self.peer_instance = None
        if was_open:
            # The ACK that freed the peer's sender may have died with this
            # subflow: repeat our state at once on the best one left.
            self._ack_on_best_subflow()
            tail = f"; re-sending {resend} bytes on other subflows" if resend else ""
            self._log("info", f"subflow {sub.id} closed ({reason}){tail}; {self._live_count()} open")
        if self._live_count() == 0 and self._alone_since is None:
            self._alone_since = now
            self._alone_warned_at = now

    def _live_count(self) -> int:
        return sum(1 for s in self.subflows.values() if s.state is SubflowState.OPEN)

    def _end(self, outcome: Outcome, reason: str) -> None:
        if self.outcome is None:
            self.outcome = outcome
            self.outcome_reason = reason
            self._log("debug" if outcome is Outcome.DONE else "warning", f"session over: {reason}")
            tx = self.sender
            self._log("info", f"sent {tx.acked} bytes acknowledged of {tx.end} (re-sent {tx.resent_bytes} "
                              f"for lost subflows, {self.head_resent} as head-of-line copies), "
                              f"received {self.receiver.written} written ({self.receiver.direct_bytes} "
                              f"of them moved straight to STDOUT); subflows established: "
                              f"{self.subflows_joined}")

    def _log(self, level: str, message: str) -> None:
        self._events.append(Log(level, message))
