"""An in-memory network driving Sessions with a fake clock.

No sockets, no asyncio, no sleeps: the only time is ``Link.now``, which jumps
from one scheduled event to the next (a piece of bytes arriving, a session
deadline, a slow consumer's next write, a scripted action).

* A :class:`Pipe` is one direction of one subflow.  It carries bytes in
  order, cut into pieces of random size, each arriving at a fake time given
  by the pipe's rate (serialisation) and latency.  A frozen pipe holds its
  bytes and tells nobody; thawing it lets them through again.
* A :class:`Pair` is one subflow: two ends, each on an :class:`Endpoint`,
  joined by two pipes.
* An :class:`Endpoint` plays the runtime for one Session: it feeds STDIN in
  chunks while ``stdin_room`` allows, reads each subflow's bytes into the
  session's buffers (or, with ``direct``, moves a diverted DATA body
  straight to its output, as the runner does with splice), pulls every subflow, writes the output
  (at once, or as a slow consumer), closes it once the stream is complete,
  calls ``handle_timer`` when the deadline has come, and acts on the events
  (``CloseSubflow`` closes that end; the far end learns it from the pipe's
  EOF, like a socket would, unless the pipe is frozen).  When the session is
  over it pulls the last frames, half-closes every subflow and is gone,
  like the asyncio runner.

Invariants are checked after every step (see ``Link._check``): each output
is a prefix of the far input, the sender never retains more than its
buffer limit, the distinct bytes a receiver holds (reorder buffer plus
output not yet written) never exceed its window, and no deadline is left
in the past.  What the receiver holds *in memory* beyond its window (the
same bytes held twice, in overlapping pieces) and deadlines left exactly at
``now`` are recorded in ``Link.held_excess`` and ``Link.deadline_misses``
so tests can assert on them.
"""

from __future__ import annotations

import heapq
import logging
import math
import random
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import cast

from sockimux.core import CloseCode, CloseSubflow, Event, Outcome, Session, SessionConfig
from sockimux.core.driver import WRITE_HIGH, WRITE_LOW
from sockimux.core.receiver import Parked, Piece
from sockimux.core.sender import Outgoing
from sockimux.core.subflow import SubflowState
from sockimux.runtime.render import render

EOF = None
SOCKET_BUFFER = 212992  # what a UNIX stream socket takes before its transport holds any (wmem_default)


@dataclass(frozen=True)
class Log:
    """A line the runtime would log for an event (runtime/render.py)."""

    level: str  # "debug", "info", "warning", "error"
    message: str


class Pipe:
    """One direction of a subflow: in-order bytes, delivered in pieces at fake times."""

    def __init__(self, rng: random.Random, latency: float, rate: float, max_piece: int = 65536) -> None:
        self.rng = rng
        self.latency = latency
        self.rate = rate  # bytes per second
        self.max_piece = max_piece
        self.queue: deque[tuple[float, bytes | None]] = deque()
        self.frozen = False
        self.closed = False  # EOF queued or the pair was torn down: writes are dropped
        self.bytes_written = 0
        self._busy_until = 0.0
        self._last_arrival = 0.0

    def _piece_size(self) -> int:
        # A piece arrives whole, at the time its last byte does: keep each under
        # about 20 ms of the pipe's rate, as a real connection delivers bytes
        # progressively (a 64 KiB piece on a 20 KB/s link would arrive 3 s late).
        largest = max(16, min(self.max_piece, int(self.rate * 0.02)))
        r = self.rng.random()
        if r < 0.1:
            return self.rng.randint(1, 16)
        if r < 0.4:
            return self.rng.randint(1, min(2048, largest))
        return self.rng.randint(1, largest)

    def _schedule(self, now: float, size: int) -> float:
        start = max(now, self._busy_until)
        self._busy_until = start + size / self.rate
        arrival = max(self._busy_until + self.latency, self._last_arrival)
        self._last_arrival = arrival
        return arrival

    def write(self, now: float, buffers: Iterable[bytes | memoryview]) -> None:
        if self.closed:
            return
        data = b"".join(buffers)
        self.bytes_written += len(data)
        pos = 0
        while pos < len(data):
            piece = data[pos : pos + self._piece_size()]
            self.queue.append((self._schedule(now, len(piece)), piece))
            pos += len(piece)

    def write_eof(self, now: float) -> None:
        if not self.closed:
            self.queue.append((self._schedule(now, 0), EOF))
            self.closed = True

    def reset(self, now: float) -> None:
        """Abortive close: bytes not yet delivered are lost, the far end sees the end."""
        if not self.closed:
            self.queue.clear()
            self._last_arrival = 0.0
            self._busy_until = now
            self.queue.append((self._schedule(now, 0), EOF))
            self.closed = True

    def cut(self) -> None:
        """The wire is gone: nothing more arrives (the ends are told directly)."""
        self.queue.clear()
        self.closed = True

    def backlog(self, now: float) -> float:
        """Bytes the writer's transport holds: those written and not yet on the
        wire, beyond what the kernel's socket buffer takes."""
        return max(0.0, (self._busy_until - now) * self.rate - SOCKET_BUFFER)

    def drained_at(self) -> float:
        """When the backlog falls to WRITE_LOW."""
        return self._busy_until - (WRITE_LOW + SOCKET_BUFFER) / self.rate

    def next_time(self) -> float | None:
        if self.frozen or not self.queue:
            return None
        return self.queue[0][0]


@dataclass(eq=False)
class End:
    ep: Endpoint
    sid: int
    out: Pipe  # what this end writes
    inp: Pipe  # what this end reads
    open: bool = True
    closed_at: float | None = None
    full: bool = False  # the transport holds WRITE_HIGH unsent bytes: not writable until drained


@dataclass(eq=False)
class Pair:
    """One subflow: ends ``x`` and ``y``; ``x.out`` is ``y.inp`` and vice versa."""

    name: int
    x: End
    y: End
    opened_at: float

    @property
    def alive(self) -> bool:
        return self.x.open and self.y.open

    @property
    def healthy(self) -> bool:
        return self.alive and not self.x.out.frozen and not self.y.out.frozen

    def ends(self) -> tuple[End, End]:
        return self.x, self.y

    def __repr__(self) -> str:
        return (f"<Pair {self.name} {self.x.ep.name}{self.x.sid}"
                f"{'~' if self.x.out.frozen else '-'}{'~' if self.y.out.frozen else '-'}"
                f"{self.y.ep.name}{self.y.sid} {'alive' if self.alive else 'closed'}>")


class Endpoint:
    """The runtime's role for one Session: STDIN, STDOUT, pulls, timers, events."""

    def __init__(self, name: str, session: Session, data: bytes = b"", *, eof: bool = True,
                 stdin_chunk: int = 65536, consumer: tuple[float, int] | None = None,
                 direct: bool = False) -> None:
        self.name = name
        self.direct = direct  # move DATA bodies straight to the output when the session lets us
        self.direct_bytes = 0
        self.direct_given_up = 0
        # ...and, as the runner does then, park bodies ahead of the stream
        # (bytes kept here under a token, as in its holding pipes).
        self.parked_bytes = 0
        self._holding: dict[int, bytearray] = {}  # token -> the bytes parked under it, in order
        self._parking: dict[int, int] = {}  # subflow -> the token of the body being parked
        self._tokens = 0
        self.session = session
        self.data = data
        self.fed = 0
        self.eof = eof  # close STDIN once all of `data` is fed
        self.eof_sent = False
        self.input_status: int | None = None  # how the "command" our input came from ended
        self.stdin_chunk = stdin_chunk
        self.consumer = consumer  # None: write at once; (period, burst): slow STDOUT
        self.next_write_at: float | None = None
        self.output = bytearray()  # written to "STDOUT"
        self.unwritten: deque[bytes] = deque()  # taken from the session, not yet written
        self.unwritten_bytes = 0
        self.output_closed = False
        self.ends: dict[int, End] = {}
        self.closes: list[tuple[float, CloseSubflow]] = []
        self.logs: list[tuple[float, Log]] = []
        self.events: list[tuple[float, Event]] = []  # every event but CloseSubflow
        self.lost: list[tuple[float, int]] = []  # (time, sid) told to the session
        self.gone = False
        self.finished_at: float | None = None
        self.checked = 0  # output bytes already compared with the far input
        self.stuck = 0  # consecutive steps that left our deadline due
        self.timer_calls = 0
        self.done_alone = False  # the session ended while it had no open subflow
        self.now = 0.0  # the link's clock, for write()
        self.wrote = False  # write() was called since the last flush
        self.drained: set[int] = set()  # subflows whose transport drained since the last step

    @property
    def outcome(self) -> Outcome | None:
        return self.session.outcome

    # -- the transports, as Session.step() sees them ----------------------------

    def writable(self, sid: int) -> bool:
        end = self.ends.get(sid)
        return end is not None and not end.full

    def write(self, sid: int, buffers: list[Outgoing]) -> None:
        end = self.ends[sid]
        end.out.write(self.now, buffers)  # type: ignore[arg-type]  # (no Extents here)
        self.wrote = True
        if end.out.backlog(self.now) > WRITE_HIGH:
            end.full = True  # as asyncio's pause_writing() at the high-water mark

    def close_codes(self) -> list[CloseCode]:
        return [ev.code for _, ev in self.closes]

    def deliver(self, sid: int, piece: bytes | memoryview, now: float) -> None:
        """Bytes arrived on subflow ``sid``: read them as the runner does, into
        the session's buffers, or (direct) a diverted body straight to the
        output, which must then have nothing else waiting to be written."""
        s = self.session
        if not self.direct:
            s.receive(sid, piece, now)
            return
        view = memoryview(piece)
        while view:
            token = self._parking.get(sid)
            if token is not None:
                room = s.park_room(sid)
                if room:
                    n = min(room, len(view))
                    self._holding[token] += view[:n]
                    self.parked_bytes += n
                    s.parked(sid, n, token, now)
                    view = view[n:]
                    continue
                del self._parking[sid]  # the body is all in, or the session took the rest back
            sub = s.subflows.get(sid)
            diverted = sub is not None and sub.reader.diverted > 0
            room = s.direct_room(sid)
            if diverted and not room:
                self.direct_given_up += 1  # the session took the body back
            if room and self.unwritten:
                s.undivert(sid)  # as when the pipe is full
                room = 0
            if room:
                n = min(room, len(view))
                self.output += view[:n]
                self.direct_bytes += n
                s.moved_direct(sid, n, now)
            else:
                buf = s.receive_buffer(sid)
                n = min(len(buf), len(view))
                buf[:n] = view[:n]
                del buf
                if s.received(sid, n, now):
                    if s.divert(sid):
                        self.take_output(now)
                    elif s.park(sid):
                        self._tokens += 1
                        self._parking[sid] = self._tokens
                        self._holding[self._tokens] = bytearray()
            view = view[n:]

    def take_output(self, now: float, output: list[Piece] | None = None) -> bool:
        """Take the session's output (or ``output``, a step's) and write it (at
        once, or queued for the slow consumer); whether there was any."""
        s = self.session
        if output is None:
            output = s.take_output()
        for buf in output:
            if isinstance(buf, Parked):  # its bytes, in order, from where they were parked
                held = self._holding[cast(int, buf.token)]
                data = bytes(held[: len(buf)])
                assert len(data) == len(buf), "a parked piece came out before its bytes were in"
                del held[: len(buf)]
            else:
                data = bytes(buf)
            self.unwritten.append(data)
            self.unwritten_bytes += len(data)
        if self.unwritten and self.consumer is None:
            n = self.unwritten_bytes
            while self.unwritten:
                self.output += self.unwritten.popleft()
            self.unwritten_bytes = 0
            s.output_written(n, now)
            return True
        return bool(output)

    def __repr__(self) -> str:
        return f"<Endpoint {self.name} outcome={self.session.outcome} fed={self.fed} out={len(self.output)}>"


class LinkError(AssertionError):
    pass


class Link:
    """Two (or more) endpoints, the subflow pairs between them, and the fake clock."""

    def __init__(self, *endpoints: Endpoint, seed: int = 0, latency: tuple[float, float] = (0.001, 0.05),
                 rate: tuple[float, float] = (2e6, 50e6), max_piece: int = 65536,
                 check_window: bool = True) -> None:
        self.endpoints = list(endpoints)
        self.rng = random.Random(seed)
        self.now = 0.0
        self.latency = latency
        self.rate = rate
        self.max_piece = max_piece
        self.check_window = check_window
        self.pairs: list[Pair] = []
        self._actions: list[tuple[float, int, bool, Callable[[], None]]] = []
        self._seq = 0
        self.keep_alive_after: float | None = None  # from then on, always keep one healthy pair
        # Once either side is over (its last frames are on their way, and nothing can
        # confirm or repeat them): no more disruptions, and every pipe thaws.
        self.calm_at_end = True
        self.calm = False
        self.steps = 0
        self.held_excess: list[tuple[float, str, int]] = []  # (time, endpoint, bytes held)
        self.max_held: dict[str, int] = {}
        self.max_retained: dict[str, int] = {}
        self.deadline_misses: list[tuple[float, str, float]] = []  # deadline still <= now after a step

    # -- construction ------------------------------------------------------------

    @classmethod
    def between(cls, a_data: bytes = b"", b_data: bytes = b"", *, config: SessionConfig | None = None,
                b_config: SessionConfig | None = None, subflows: int = 1, seed: int = 0,
                consumer: tuple[float, int] | None = None, stdin_chunk: int = 65536,
                latency: tuple[float, float] = (0.001, 0.05), rate: tuple[float, float] = (2e6, 50e6),
                max_piece: int = 65536, direct: bool = False) -> Link:
        """Sessions A and B (B's config defaults to A's), with `subflows` pairs joined at time 0."""
        rng = random.Random(seed ^ 0x5EED)
        a = Endpoint("A", Session(rng.randbytes(16), 0.0, config), a_data, consumer=consumer,
                     stdin_chunk=stdin_chunk, direct=direct)
        b = Endpoint("B", Session(rng.randbytes(16), 0.0, b_config or config), b_data, consumer=consumer,
                     stdin_chunk=stdin_chunk, direct=direct)
        link = cls(a, b, seed=seed, latency=latency, rate=rate, max_piece=max_piece)
        for _ in range(subflows):
            link.join()
        return link

    @property
    def a(self) -> Endpoint:
        return self.endpoints[0]

    @property
    def b(self) -> Endpoint:
        return self.endpoints[1]

    def add(self, ep: Endpoint) -> Endpoint:
        self.endpoints.append(ep)
        return ep

    # -- the network's actions ---------------------------------------------------

    def join(self, x: Endpoint | None = None, y: Endpoint | None = None, *, latency: float | None = None,
             rate: float | None = None) -> Pair | None:
        """Connect a new subflow between x and y (default A and B) now."""
        x = x or self.a
        y = y or self.b
        if x.gone or y.gone:
            return None
        rng = self.rng
        if latency is not None or rate is not None:  # both directions alike
            lat = latency if latency is not None else rng.uniform(*self.latency)
            rt = rate if rate is not None else rng.uniform(*self.rate)
            lat_back, rt_back = lat, rt
        else:
            lat, rt = rng.uniform(*self.latency), rng.uniform(*self.rate)
            lat_back, rt_back = lat * rng.uniform(0.5, 2.0), rt * rng.uniform(0.5, 2.0)
        xy = Pipe(random.Random(rng.random()), lat, rt, self.max_piece)
        yx = Pipe(random.Random(rng.random()), lat_back, rt_back, self.max_piece)
        x_sid = x.session.open_subflow(self.now, rng.randbytes(16))
        y_sid = y.session.open_subflow(self.now, rng.randbytes(16))
        ex = End(x, x_sid, xy, yx)
        ey = End(y, y_sid, yx, xy)
        x.ends[x_sid] = ex
        y.ends[y_sid] = ey
        pair = Pair(len(self.pairs), ex, ey, self.now)
        self.pairs.append(pair)
        return pair

    def kill(self, pair: Pair, reason: str = "killed") -> None:
        """The connection breaks: both ends are told, bytes in transit are lost."""
        for end in pair.ends():
            end.out.cut()
        for end in pair.ends():
            if end.open:
                self._lose(end, reason)

    def freeze(self, pair: Pair, forward: bool = True, backward: bool = True) -> None:
        """Stop delivering (x->y if forward, y->x if backward) without telling anyone."""
        if forward:
            pair.x.out.frozen = True
        if backward:
            pair.y.out.frozen = True

    def thaw(self, pair: Pair) -> None:
        pair.x.out.frozen = pair.y.out.frozen = False

    def live_pairs(self) -> list[Pair]:
        return [p for p in self.pairs if p.alive]

    def at(self, when: float, action: Callable[[], None], disruptive: bool = False) -> None:
        """Run `action` at fake time `when` (skipped once calm if `disruptive`)."""
        self._seq += 1
        heapq.heappush(self._actions, (when, self._seq, disruptive, action))

    # -- running -------------------------------------------------------------------

    def finished(self) -> bool:
        return all(ep.session.outcome is not None for ep in self.endpoints[:2])

    def run(self, until: float, stop: Callable[[], bool] | None = None, max_steps: int = 2_000_000) -> bool:
        """Advance the fake clock until `stop()` (default: A and B both over) or `until`.
        Returns whether `stop()` became true."""
        stop = stop or self.finished
        self._settle()
        while not stop():
            t = self._next_time()
            if t is None or t > until:
                self.now = max(self.now, until)
                return stop()
            if t < self.now:
                raise LinkError(f"time went backwards: {t} < {self.now}")
            self.now = t
            self._fire()
            self._settle()
            self.steps += 1
            if self.steps > max_steps:
                raise LinkError(f"more than {max_steps} steps at t={self.now}: a busy loop?")
        return True

    def _next_time(self) -> float | None:
        times: list[float] = []
        if self._actions:
            times.append(max(self._actions[0][0], self.now))
        for pair in self.pairs:
            for end in pair.ends():
                t = end.out.next_time()
                if t is not None:
                    times.append(max(t, self.now))  # a thawed pipe may hold overdue bytes
        for ep in self.endpoints:
            if ep.gone:
                continue
            d = ep.session.next_deadline()
            if d is not None:
                # A deadline left at `now` by the last step (see _check_deadlines) would
                # stop the fake clock for good; a real clock has moved on a little.
                times.append(d if d > self.now else math.nextafter(self.now, math.inf))
            if ep.next_write_at is not None:
                times.append(ep.next_write_at)
            for end in ep.ends.values():
                if end.full:
                    times.append(max(end.out.drained_at(), self.now))
        return min(times) if times else None

    def _fire(self) -> None:
        now = self.now
        while self._actions and self._actions[0][0] <= now:
            _, _, disruptive, action = heapq.heappop(self._actions)
            if not (disruptive and self.calm):
                action()
        for pair in self.pairs:
            for end in pair.ends():
                pipe, reader = end.out, (pair.y if end is pair.x else pair.x)
                while pipe.queue and not pipe.frozen and pipe.queue[0][0] <= now:
                    _, piece = pipe.queue.popleft()
                    if not reader.open or reader.ep.gone:
                        continue
                    if piece is EOF:
                        self._lose(reader, "closed by the other end")
                    else:
                        reader.ep.deliver(reader.sid, piece, now)
        for ep in self.endpoints:
            if ep.gone:
                continue
            if ep.next_write_at is not None and ep.next_write_at <= now:
                self._consume(ep)
            for end in ep.ends.values():
                if end.full and end.out.drained_at() <= now:
                    end.full = False  # as asyncio's resume_writing() at the low-water mark
                    ep.drained.add(end.sid)
            d = ep.session.next_deadline()
            if d is not None and d <= now:
                ep.timer_calls += 1
                ep.session.handle_timer(now)

    def _lose(self, end: End, reason: str) -> None:
        end.open = False
        end.closed_at = self.now
        end.ep.ends.pop(end.sid, None)
        if not end.ep.gone:
            end.ep.lost.append((self.now, end.sid))
            end.ep.session.subflow_lost(end.sid, self.now, reason)

    def _close(self, ep: Endpoint, event: CloseSubflow) -> None:
        end = ep.ends.pop(event.sid, None)
        if end is None:
            return
        end.open = False
        end.closed_at = self.now
        if event.flush:
            end.out.write(self.now, event.final)
            end.out.write_eof(self.now)
        else:
            end.out.reset(self.now)

    def _consume(self, ep: Endpoint) -> None:
        assert ep.consumer is not None
        period, burst = ep.consumer
        budget = burst
        written = 0
        while ep.unwritten and budget > 0:
            buf = ep.unwritten.popleft()
            if len(buf) > budget:
                ep.unwritten.appendleft(buf[budget:])
                buf = buf[:budget]
            ep.output += buf
            budget -= len(buf)
            written += len(buf)
        ep.unwritten_bytes -= written
        ep.next_write_at = self.now + period if ep.unwritten else None
        if written:
            ep.session.output_written(written, self.now)

    def _flush(self, ep: Endpoint) -> bool:
        """One pass of the runtime for `ep`; whether it did anything."""
        if ep.gone:
            return False
        s, now = ep.session, self.now
        active = False
        if s.outcome is None:
            while ep.fed < len(ep.data) and s.stdin_room > 0:
                n = min(s.stdin_room, ep.stdin_chunk, len(ep.data) - ep.fed)
                s.write_stdin(ep.data[ep.fed : ep.fed + n], now)
                ep.fed += n
                active = True
            if ep.eof and not ep.eof_sent and ep.fed == len(ep.data):
                ep.eof_sent = True
                s.stdin_eof(now, ep.input_status)
                active = True
        ep.now, ep.wrote = now, False
        drained, ep.drained = ep.drained, set()
        step = s.step(now, ep, drained)
        active = active or ep.wrote
        for event in step.events:
            active = True
            if isinstance(event, CloseSubflow):
                ep.closes.append((now, event))
                self._close(ep, event)
            else:
                ep.events.append((now, event))
            for level, message in render(event):
                ep.logs.append((now, Log(logging.getLevelName(level).lower(), message)))
        if step.outcome is not None:
            # Like the runner: the last frames, a half-close on every subflow, gone.
            for end in list(ep.ends.values()):
                end.out.write(now, s.pull(end.sid, now))
                end.out.write_eof(now)
            ep.done_alone = not any(sub.state is SubflowState.OPEN for sub in s.subflows.values())
            ep.gone = True
            ep.finished_at = now
            if self.calm_at_end:
                self._calm_down()
            return True
        if ep.take_output(now, step.output):
            active = True
        if ep.unwritten and ep.next_write_at is None:
            assert ep.consumer is not None
            ep.next_write_at = now + ep.consumer[0]
        if step.output_eof and not ep.unwritten and not ep.output_closed:
            ep.output_closed = True
            s.output_closed(now)
            active = True
        return active

    def _calm_down(self) -> None:
        self.calm = True
        for pair in self.pairs:
            self.thaw(pair)

    def _settle(self) -> None:
        for _ in range(1000):
            active = False
            for ep in self.endpoints:
                active = self._flush(ep) or active
            self._check()
            if not active:
                break
        else:
            raise LinkError(f"the runtime never settles at t={self.now}: a busy loop")
        if (self.keep_alive_after is not None and self.now >= self.keep_alive_after
                and not any(p.healthy for p in self.pairs)
                and not any(ep.gone for ep in self.endpoints[:2])):
            self.join()
            self._settle()
            return
        self._check_deadlines()

    # -- invariants ------------------------------------------------------------------

    def _check(self) -> None:
        eps = self.endpoints
        for i, ep in enumerate(eps[:2]):
            far = eps[1 - i]
            n = len(ep.output)
            if n > ep.checked:
                mine = memoryview(ep.output)[ep.checked : n]
                theirs = memoryview(far.data)[ep.checked : n]
                if mine != theirs:
                    bad = ep.checked + next(k for k in range(len(mine)) if k >= len(theirs)
                                            or mine[k] != theirs[k])
                    raise LinkError(f"{ep.name}'s output differs from {far.name}'s input at byte {bad}"
                                    f"\n{self.describe()}")
                ep.checked = n
        for ep in eps:
            if ep.gone:
                continue
            s = ep.session
            retained = s.sender.end - s.sender.acked
            if retained > self.max_retained.get(ep.name, 0):
                self.max_retained[ep.name] = retained
            if retained > s.sender.buffer_limit:
                raise LinkError(f"{ep.name} retains {retained} bytes > {s.sender.buffer_limit}")
            rx = s.receiver
            held = rx.held_bytes + rx.delivered - rx.written
            if held > self.max_held.get(ep.name, 0):
                self.max_held[ep.name] = held
            if self.check_window and held > s.config.window:
                # Held pieces are disjoint, so this is flow control broken.
                self.held_excess.append((self.now, ep.name, held))

    def _check_deadlines(self) -> None:
        """After timers and pulls, no deadline may be due any more (else: a busy loop)."""
        now = self.now
        for ep in self.endpoints:
            if ep.gone:
                ep.stuck = 0
                continue
            d = ep.session.next_deadline()
            # The session recomputes only the deadlines of subflows it knows
            # were touched: one computed afresh must never be earlier.
            full = ep.session.next_deadline(rescan=True)
            if full is not None and (d is None or d > full):
                raise LinkError(f"{ep.name}: next_deadline() {d} is later than a rescan's {full} "
                                f"(now {now}): a touched subflow was not marked")
            if d is None or d > now:
                ep.stuck = 0
                continue
            if d < now - 1e-9:
                raise LinkError(f"{ep.name}: next_deadline() {d} is in the past (now {now})")
            self.deadline_misses.append((now, ep.name, d))
            ep.stuck += 1
            if ep.stuck > 32:
                raise LinkError(f"{ep.name}: deadline stuck at {d} (now {now}): a busy loop\n"
                                f"{self.describe()}")

    # -- reporting ---------------------------------------------------------------------

    def describe(self) -> str:
        lines = [f"t={self.now:.3f} steps={self.steps}"]
        for ep in self.endpoints:
            s = ep.session
            lines.append(
                f"  {ep!r} sender(end={s.sender.end} acked={s.sender.acked} next_new={s.sender.next_new} "
                f"credit={s.sender.credit} eof={s.sender.eof} fin_done={s.sender.fin_done}) "
                f"receiver(delivered={s.receiver.delivered} written={s.receiver.written} "
                f"fin={s.receiver.fin}) subflows={list(s.subflows.values())} "
                f"deadline={s.next_deadline()}")
        lines += [f"  {p!r}" for p in self.pairs if p.alive]
        for ep in self.endpoints:
            lines += [f"  {ep.name} {t:.3f} {log.level}: {log.message}" for t, log in ep.logs[-12:]]
        return "\n".join(lines)


@dataclass
class Schedule:
    """A scripted list of network events, for property tests: (time, action, index)."""

    events: list[tuple[float, str, int]] = field(default_factory=list)

    def install(self, link: Link) -> None:
        for when, action, index in self.events:
            link.at(when, _make_action(link, action, index), disruptive=action != "join")


def _make_action(link: Link, action: str, index: int) -> Callable[[], None]:
    def run() -> None:
        if action == "join":
            link.join()
            return
        live = link.live_pairs()
        if not live:
            return
        pair = live[index % len(live)]
        if action == "kill":
            link.kill(pair)
        elif action == "freeze":
            link.freeze(pair)
        elif action == "freeze_fwd":
            link.freeze(pair, backward=False)
        elif action == "freeze_back":
            link.freeze(pair, forward=False)
        elif action == "kill_all":
            for p in live:
                link.kill(p)
        else:
            raise ValueError(action)

    return run
