"""Re-opening the subflows we open ourselves: when, how many at once, when to give up.

Every ``--connect`` address with ``count=N`` owns N *slots*, each one
subflow we keep open as long as the session lives.  The policy touches no
socket or clock (every call takes ``now``) and draws its jitter from the
``random.Random`` it is given, so a test replays any sequence exactly.  The
runtime's loop, as with aioquic's ``get_timer``/``handle_timer``::

    for slot in policy.start_due(now): ...open it...    # after every event below
    policy.next_deadline()                              # when to call start_due again
    policy.established(slot, now)                       # its hello exchange is done
    policy.ended(slot, now, reason, detail)             # it closed, failed or never opened
    policy.take_events()                                # lost / back / stopped: for the log

**Backoff.**  A slot that ends is started again after a delay that doubles
with each failure in a row: nominally 0.4, 0.8, 1.6 ... s, capped at 30 s.
Jitter takes a random 0-50% off each delay, so a first retry comes after
0.2-0.4 s and subflows cut together (one link going down) do not come back
in lock-step.  The count of failures resets when a subflow has stayed
established for 30 s: it is the time a subflow lasts, not whether it
carried data, that tells a working path from one that a middlebox cuts
every few seconds (and each re-open over ssh is a new login).

**Why a subflow ended** decides what follows (:func:`verdict`):

* *fatal*: the address cannot work in this session, retrying would only
  repeat the refusal; the address is stopped with one message, never
  retried.  ``NOT_SOCKIMUX``: what answers there does not speak our
  protocol (an sshd, a web server, a remote shell printing a banner first),
  and will answer the same next time.  ``BAD_VERSION``: the far sockimux
  speaks another version until someone upgrades it.  ``FOREIGN_INSTANCE``:
  the address leads to another sockimux process than this session's peer
  (the peer was restarted): that process cannot continue our stream, and
  every later connection reaches it too.  ``SELF_CONNECT``: the address
  leads back to this very process.  ``AUTH_FAILED``: the keys differ (or one
  side has none); a retry loop against an authenticating peer only looks
  like guessing.  ``Failure.CANNOT_RUN``: the EXEC program does not exist
  or may not be run here.
* *final*: the session itself is ending (``OUTPUT_CLOSED``,
  ``PEER_ABORTED``, ``SHUTDOWN``): nothing is started any more, and nothing
  is reported as an error.
* *transient*, everything else: ``NORMAL``; ``STALLED``;
  ``HANDSHAKE_TIMEOUT``; ``TOO_MANY_SUBFLOWS`` (the peer is at its cap now,
  one of the others may close); ``PROTOCOL_ERROR`` and ``FLOW_CONTROL`` (one
  mangled or misbehaving connection: the next may be fine, and if not the
  backoff bounds the cost); and the ends with no close code: could not
  connect (the far side is not up yet, the link is down), connection lost,
  command exited (ssh exits when its connection dies).

**Starting bound.**  At most 8 slots are *starting* at once (started, hello
not yet done), across all addresses.  Addresses added as *paced* (those
that start a process: EXEC, ssh) are also started at least 20 ms apart:
sshd drops unauthenticated connections beyond its MaxStartups (10 by
default), so 20 ``EXEC:'ssh ...'`` subflows must not all knock at once,
and a fork and exec each is work better spread out.  A socket address
(UNIX, TCP) is only bounded by the 8: ``count=128`` of them is open in
tens of milliseconds, not 2.5 s.  Slots due at the same time start
round-robin over the addresses.

**Logs** come as events, on transitions only: a slot *lost* (or, never
opened yet, failing for the first time), *back* (with the attempts and
time it took), an address *stopped*; never one line per attempt.
:meth:`Reopener.snapshot` gives every address's counters (attempts,
re-opens, losses, why the last subflow ended, stopped or not) as immutable
stats.AddressStats, for the session's stats snapshot; the counts agree
with the log (one *lost* line per ``lost``, *back after N attempts*).
"""

from __future__ import annotations

import enum
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from .endings import EndReason, Failure, Verdict, describe, verdict
from .errors import UsageError
from .stats import AddressStats

__all__ = ["AddressStopped", "EndReason", "Failure", "ReopenConfig", "ReopenEvent", "Reopener",
           "Slot", "SubflowBack", "SubflowLost", "Verdict", "describe", "verdict"]


@dataclass(frozen=True)
class ReopenConfig:
    first_delay: float = 0.4  # nominal delay after the first failure (jitter: 0.2-0.4 s)
    factor: float = 2.0  # each failure in a row multiplies the delay by this
    max_delay: float = 30.0  # ...up to this
    jitter: float = 0.5  # a random fraction up to this is taken off each delay
    healthy_after: float = 30.0  # established this long: the failure count starts over
    max_starting: int = 8  # slots started and not yet established, across addresses
    stagger: float = 0.02  # seconds between two starts

    def __post_init__(self) -> None:
        if not (0 < self.first_delay <= self.max_delay and self.factor >= 1 and 0 <= self.jitter < 1
                and self.healthy_after >= 0 and self.max_starting >= 1 and self.stagger >= 0):
            raise UsageError(f"inconsistent re-open settings: {self}")


@dataclass(frozen=True, order=True)
class Slot:
    """One subflow we keep open: number ``number`` (from 0) of address ``address``."""

    address: int  # index, in the order the addresses were added
    number: int


@dataclass(frozen=True)
class SubflowLost:
    """An open subflow ended, or a slot never opened failed for the first time."""

    slot: Slot
    label: str  # the address and, with count > 1, which of its subflows
    reason: EndReason
    detail: str
    was_open: bool
    retry_in: float  # seconds until it is started again

    @property
    def message(self) -> str:
        why = describe(self.reason, self.detail)
        if self.was_open:
            return f"subflow {self.label} lost ({why}); re-opening it in {self.retry_in:.1f} s"
        return f"subflow {self.label} could not be opened ({why}); retrying until it can"


@dataclass(frozen=True)
class SubflowBack:
    """A slot that was lost (or had failed from the start) is established."""

    slot: Slot
    label: str
    attempts: int  # starts since it was lost, this one included
    outage: float  # seconds since it was lost
    first: bool  # it had never been open before

    @property
    def message(self) -> str:
        verb = "open" if self.first else "back"
        plural = "" if self.attempts == 1 else "s"
        return f"subflow {self.label} {verb} after {self.attempts} attempt{plural} ({self.outage:.1f} s)"


@dataclass(frozen=True)
class AddressStopped:
    """An address is stopped for good: a refusal that cannot heal."""

    address: int
    label: str
    reason: EndReason
    detail: str

    @property
    def message(self) -> str:
        return f"{self.label}: {describe(self.reason, self.detail)}; this cannot heal, not retrying it"


ReopenEvent = SubflowLost | SubflowBack | AddressStopped


# Why an address given no slot (fit_counts) is never opened: its stop reason.
NO_SLOT = "not opened: more addresses than --max-subflows"


class _State(enum.Enum):
    WAITING = "waiting"  # to be started at due_at
    STARTING = "starting"
    OPEN = "open"
    IDLE = "idle"  # never started again (address stopped, session over)


@dataclass
class _SlotState:
    state: _State = _State.WAITING
    due_at: float = 0.0
    opened_at: float = 0.0
    failures: int = 0  # in a row, since it was last established for healthy_after
    started: bool = False
    down_since: float | None = None  # lost (or failing from the start) since then
    attempts_down: int = 0
    ever_open: bool = False


@dataclass
class _Address:
    label: str
    slots: list[_SlotState] = field(default_factory=list)
    paced: bool = True  # its starts are at least `stagger` apart
    attempts: int = 0
    reopens: int = 0
    established: int = 0
    lost: int = 0  # ends of a subflow that was open
    last_end: str | None = None
    stopped: str | None = None


class Reopener:
    """The policy for every slot of every address we open (see the module docstring)."""

    def __init__(self, rng: random.Random, config: ReopenConfig | None = None) -> None:
        self.config = config or ReopenConfig()
        self._rng = rng
        self._addresses: list[_Address] = []
        self._events: list[ReopenEvent] = []
        self._starting = 0
        self._next_start_at = float("-inf")
        self._over = False

    def add(self, label: str, count: int, now: float, paced: bool = True) -> int:
        """Add an address with ``count`` slots, all due now; return its index.
        ``paced``: its starts are at least ``stagger`` apart (it starts a process).
        An address of no slot (more addresses than --max-subflows: fit_counts)
        is never opened; it counts as stopped, so that the others alone decide
        whether every address was given up."""
        if count < 0:
            raise UsageError("count must not be negative")
        address = _Address(label, [_SlotState(due_at=now) for _ in range(count)], paced=paced)
        if not count:
            address.stopped = NO_SLOT
        self._addresses.append(address)
        return len(self._addresses) - 1

    # -- what to start, and when -----------------------------------------------------

    def start_due(self, now: float) -> list[Slot]:
        """The slots to start now; each is *starting* until established or ended."""
        started: list[Slot] = []
        while self._starting < self.config.max_starting:
            paced_now = now >= self._next_start_at
            due = [(st.due_at, number, index)
                   for index, address in enumerate(self._addresses)
                   if paced_now or not address.paced
                   for number, st in enumerate(address.slots)
                   if st.state is _State.WAITING and st.due_at <= now]
            if not due:
                break
            _, number, index = min(due)  # earliest first; ties round-robin over addresses
            self._start(index, number)
            started.append(Slot(index, number))
            if self._addresses[index].paced:
                self._next_start_at = now + self.config.stagger
        return started

    def next_deadline(self) -> float | None:
        """When :meth:`start_due` will have something to start, if nothing else
        happens; None when only an event (established, ended) can change that."""
        if self._starting >= self.config.max_starting:
            return None
        due = [max(st.due_at, self._next_start_at) if address.paced else st.due_at
               for address in self._addresses for st in address.slots
               if st.state is _State.WAITING]
        return min(due) if due else None

    def _start(self, index: int, number: int) -> None:
        address = self._addresses[index]
        st = address.slots[number]
        st.state = _State.STARTING
        self._starting += 1
        address.attempts += 1
        if st.started:
            address.reopens += 1
        st.started = True
        if st.down_since is not None:
            st.attempts_down += 1

    # -- what happened to a slot -------------------------------------------------------

    def established(self, slot: Slot, now: float) -> None:
        """The subflow of ``slot`` finished its hello exchange: it is open."""
        address, st = self._slot(slot, _State.STARTING)
        self._starting -= 1
        st.state = _State.OPEN
        st.opened_at = now
        address.established += 1
        if st.down_since is not None:
            self._events.append(SubflowBack(slot, self._label(slot), st.attempts_down,
                                            now - st.down_since, first=not st.ever_open))
            st.down_since = None
        st.ever_open = True

    def ended(self, slot: Slot, now: float, reason: EndReason, detail: str = "") -> None:
        """The subflow of ``slot`` (starting or open) is gone, for ``reason``;
        ``detail`` is the runtime's own words (an errno, an exit status)."""
        address, st = self._slot(slot, _State.STARTING, _State.OPEN)
        was_open = st.state is _State.OPEN
        if not was_open:
            self._starting -= 1
        address.lost += was_open
        address.last_end = describe(reason, detail)
        outcome = verdict(reason)
        if outcome is Verdict.FINAL:
            st.state = _State.IDLE
            self.stop()
            return
        if outcome is Verdict.FATAL and address.stopped is None:
            address.stopped = describe(reason, detail)
            self._events.append(AddressStopped(slot.address, address.label, reason, detail))
            for other in address.slots:
                if other.state is _State.WAITING:
                    other.state = _State.IDLE
        if address.stopped is not None or self._over:
            st.state = _State.IDLE
            return
        if was_open and now - st.opened_at >= self.config.healthy_after:
            st.failures = 0
        st.failures += 1
        delay = self._backoff(st.failures)
        st.state = _State.WAITING
        st.due_at = now + delay
        if st.down_since is None:
            st.down_since = now
            st.attempts_down = 0
            self._events.append(SubflowLost(slot, self._label(slot), reason, detail, was_open, delay))

    def stop(self) -> None:
        """The session is over: start nothing more."""
        self._over = True
        for address in self._addresses:
            for st in address.slots:
                if st.state is _State.WAITING:
                    st.state = _State.IDLE

    def _backoff(self, failures: int) -> float:
        cfg = self.config
        nominal = min(cfg.max_delay, cfg.first_delay * cfg.factor ** min(failures - 1, 64))
        return nominal * (1 - cfg.jitter * self._rng.random())

    def _slot(self, slot: Slot, *states: _State) -> tuple[_Address, _SlotState]:
        address = self._addresses[slot.address]
        st = address.slots[slot.number]
        if st.state not in states:
            raise UsageError(f"{slot} is {st.state.value}, not {' or '.join(s.value for s in states)}")
        return address, st

    def _label(self, slot: Slot) -> str:
        address = self._addresses[slot.address]
        count = len(address.slots)
        return address.label if count == 1 else f"{address.label} ({slot.number + 1} of {count})"

    # -- for the log and the stats ----------------------------------------------------

    def take_events(self) -> list[ReopenEvent]:
        events, self._events = self._events, []
        return events

    @property
    def starting(self) -> int:
        return self._starting

    @property
    def gave_up(self) -> bool:
        """Every address is stopped for good: no subflow of ours will open again."""
        return bool(self._addresses) and all(a.stopped is not None for a in self._addresses)

    def stats(self, index: int, now: float | None = None) -> AddressStats:
        """Address ``index``'s counters; ``next_attempt_in`` needs ``now``."""
        address = self._addresses[index]
        states = [st.state for st in address.slots]
        due = [st.due_at for st in address.slots if st.state is _State.WAITING]
        next_in = None if now is None or not due else max(0.0, min(due) - now)
        return AddressStats(address.label, len(states), states.count(_State.OPEN),
                            states.count(_State.STARTING), states.count(_State.WAITING),
                            address.attempts, address.reopens, address.established, address.lost,
                            address.last_end, next_in, address.stopped)

    def snapshot(self, now: float) -> tuple[AddressStats, ...]:
        """Every address's counters, in the order added (Session.stats' ``addresses``)."""
        return tuple(self.stats(index, now) for index in range(len(self._addresses)))


def fit_counts(counts: Sequence[int], most: int) -> list[int]:
    """The subflows to open per address when ``counts`` add up to more than
    ``most`` (the session's --max-subflows), never more than ``most`` in all:
    shared in proportion, at least one each; with more addresses than
    ``most``, one each for the first ``most`` and none for the others.
    Slots beyond what the session admits would be refused and retried for
    ever, each failure a line of its own, on both ends."""
    total = sum(counts)
    if total <= most:
        return list(counts)
    if len(counts) >= most:
        return [1] * most + [0] * (len(counts) - most)
    fitted = [max(1, count * most // total) for count in counts]
    while sum(fitted) > most:  # the ones raised to 1 took more than their share
        fitted[fitted.index(max(fitted))] -= 1
    return fitted
