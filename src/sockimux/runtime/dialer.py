"""The subflows we open ourselves (``--connect``), kept open for as long as
the session lives.

Each address with ``count=N`` owns N slots of the re-open policy
(core/reopen.py), which decides when a slot is started, how many start at
once and when an address is given up.  The dialer does the I/O: it opens
a connected socket for each slot it is told to start and hands it to the
runner (Runner.adopt) with itself as the connection's watch, so that it
learns when the subflow is established and when, and why, it ends:

- ``TCP:HOST:PORT``: a non-blocking connect, from ``bind=`` and through
  ``so-bindtodevice=`` if given, TCP_NODELAY set (our frames are already
  whole writes: Nagle would only delay ACKs and PINGs), given up after
  ``connect-timeout=``, by default the session's handshake timeout;
- ``UNIX-CONNECT:PATH``;
- ``EXEC:'COMMAND'``: the command's STDIN and STDOUT are one end of a
  socketpair and the subflow the other, so splice() and sendfile() work on
  it as on any socket.  Children are reaped as they exit (their status is
  the subflow's end reason) and killed when the process ends.

A connection that cannot be made (refused, unreachable, timed out) is a
transient failure; a program that cannot be run at all, and the session's
refusals that cannot heal (a different key, not sockimux, another
version: its CloseSubflow close code), stop the address with one error
line.  When every address is stopped, none of our subflows is open and
nothing listens for subflows, no subflow can ever join: the session ends
(``gave_up``; the CLI's exit 8).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import socket
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ..core.addresses import Exec, TcpConnect, UnixConnect
from ..core.errors import CloseCode
from ..core.reopen import (
    AddressStopped,
    EndReason,
    Failure,
    ReopenConfig,
    Reopener,
    Slot,
    SubflowBack,
    SubflowLost,
    fit_counts,
)
from ..core.session import Outcome
from .connect import connect_tcp, connect_unix
from .held_lines import HeldLines
from .runner import Runner

if TYPE_CHECKING:  # remote/ is imported only for ssh subflows (start-up time)
    from ..remote.near import FarTarget, OpenConnection

log = logging.getLogger("sockimux")


@dataclass(frozen=True)
class SshSubflows:
    """``sockimux ssh``'s subflows: each its own ssh connection to ``target``
    (remote/near.py); the first one started starts the far side."""

    target: FarTarget
    count: int = 1

    def __str__(self) -> str:
        return f"ssh {self.target.destination}"


SubflowAddress = UnixConnect | TcpConnect | Exec | SshSubflows
EXIT_WAIT = 1.0  # seconds an EXEC child whose subflow ended may take to exit by itself
KILL_WAIT = 2.0  # seconds between SIGTERM and SIGKILL for children left at the end


@dataclass
class _Attempt:
    """One start of a slot: its connection, and its child for EXEC."""

    slot: Slot
    task: asyncio.Task[None] | None = None
    child: asyncio.subprocess.Process | None = None
    done: bool = False  # policy.ended() was called for it


@dataclass
class _Watch:
    """The runner's view back to us for one connection (connection.SubflowWatch)."""

    dialer: Dialer
    attempt: _Attempt
    label: str

    def established(self) -> None:
        self.dialer.established(self.attempt)

    def ended(self, code: CloseCode | None, reason: str) -> None:
        self.dialer.connection_ended(self.attempt, code, reason)


class Dialer:
    """Opens and re-opens the subflows of ``addresses`` (runner.Attached).

    ``listening``: something else lets subflows join (a listener), so the
    session goes on even when every address here is given up.
    """

    def __init__(self, addresses: Sequence[SubflowAddress], listening: bool = False,
                 config: ReopenConfig | None = None, rng: random.Random | None = None) -> None:
        self.addresses = list(addresses)
        self.listening = listening
        self.policy = Reopener(rng or random.Random(), config)
        self.gave_up = False  # every address was stopped for good, and the session ended for it
        self._runner: Runner | None = None
        self._attempts: dict[Slot, _Attempt] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._detached = False
        self._children: set[asyncio.subprocess.Process] = set()  # EXEC children, some exited
        self._waiting: set[asyncio.Task[None]] = set()  # the loop holds tasks only weakly
        self._far_start: asyncio.Lock | None = None  # one ssh starts the far side, the others wait
        self._held = HeldLines(log)  # lines about subflows lost or not opened (held_lines.py)

    # -- runner.Attached -----------------------------------------------------------

    async def attach(self, runner: Runner) -> None:
        self._runner = runner
        runner.address_stats = self.policy.snapshot  # our addresses, in its stats snapshot
        now = runner.loop.time()
        asked = [address.count for address in self.addresses]
        most = runner.session.config.max_subflows
        counts = fit_counts(asked, most)
        if counts != asked:
            unused = counts.count(0)
            log.warning("--connect asks for %d subflows, more than --max-subflows (%d, by default "
                        "what the open file limit leaves room for): opening %d%s", sum(asked), most,
                        sum(counts), f", none to the last {unused} of the {len(counts)} addresses"
                        if unused else "")
        for address, count in zip(self.addresses, counts, strict=True):
            # The policy numbers the slots ("2 of 4"): the label leaves count= out.
            self.policy.add(str(replace(address, count=1)), count, now,
                            paced=isinstance(address, (Exec, SshSubflows)))
        self._pump()

    def detach(self) -> None:
        """Start nothing more.  The subflows open now stay open while the
        last frames drain; close() ends the children after that."""
        self._detached = True
        runner = self._runner
        if runner is not None and runner.session.outcome is Outcome.DONE:
            self._held.drop("the session was over")
        else:
            self._held.flush()
        self.policy.stop()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for attempt in self._attempts.values():
            if attempt.task is not None and not attempt.task.done():
                attempt.task.cancel()  # still connecting: it will not be a subflow now

    async def close(self) -> None:
        """After the session: give the children a moment to exit by themselves
        (their subflow's end reached them: an ssh passes on all of its
        STDERR first), then terminate, then kill them."""
        pending = [*self._waiting, *(a.task for a in self._attempts.values() if a.task is not None)]
        for task in pending:
            task.cancel()  # left pending, the loop's end would report each of them
        await asyncio.gather(*pending, return_exceptions=True)
        for sig, wait in ((None, EXIT_WAIT), (signal.SIGTERM, KILL_WAIT), (signal.SIGKILL, KILL_WAIT)):
            live = [c for c in self._children if c.returncode is None]
            if not live:
                break
            for child in live:
                if sig is not None:
                    with contextlib.suppress(ProcessLookupError):
                        child.send_signal(sig)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(c.wait() for c in live)), wait)
        if any(isinstance(address, SshSubflows) for address in self.addresses):
            from ..remote.sshstderr import drain_all
            drain_all()  # what the far COMMAND said last (the ssh processes' exits came first)

    # -- the policy's loop ------------------------------------------------------------

    def _pump(self) -> None:
        """Start what the policy says is due, log its events, and wake up when
        it next has something to start."""
        runner = self._runner
        if runner is None or self._detached:
            return
        now = runner.loop.time()
        for slot in self.policy.start_due(now):
            attempt = _Attempt(slot)
            self._attempts[slot] = attempt
            address = self.addresses[slot.address]
            log.info("opening subflow %s", self._label(slot))
            attempt.task = runner.loop.create_task(self._open(attempt, address))
        self._log_events(runner.loop)
        self._check_gave_up()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.policy.next_deadline()
        if deadline is not None and not self._detached:
            self._timer = runner.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._pump()

    def _log_events(self, loop: asyncio.AbstractEventLoop) -> None:
        for event in self.policy.take_events():
            if isinstance(event, SubflowLost):
                self._held.add(loop, event.message)
                continue
            self._held.flush()  # (in order)
            if isinstance(event, AddressStopped):
                log.error("%s", event.message)
            elif isinstance(event, SubflowBack):
                log.warning("%s", event.message)

    def _check_gave_up(self) -> None:
        runner = self._runner
        if (runner is None or self.listening or self.gave_up or not self.policy.gave_up
                or self._attempts):  # one of ours still starting or open: it may carry on
            return
        self.gave_up = True
        reason = "every --connect address was refused for good, and nothing listens for subflows"
        runner.session.abort(Outcome.NO_SUBFLOWS, reason, runner.loop.time())
        runner.kick()

    def _label(self, slot: Slot) -> str:
        address = replace(self.addresses[slot.address], count=1)
        count = self.addresses[slot.address].count
        return str(address) if count == 1 else f"{address} ({slot.number + 1} of {count})"

    # -- what became of a slot --------------------------------------------------------

    def established(self, attempt: _Attempt) -> None:
        if self._runner is not None and not attempt.done:
            self.policy.established(attempt.slot, self._runner.loop.time())
            self._pump()

    def connection_ended(self, attempt: _Attempt, code: CloseCode | None, reason: str) -> None:
        """The subflow's connection is gone.  For EXEC, the child's exit status
        says more than the end of its socket: wait a moment for it."""
        child = attempt.child
        if child is None or code is not None:
            if child is not None:
                self._end_child(child)
            if code is None:
                self._ended(attempt, Failure.CONNECTION_LOST, reason)
            else:  # the session's reason, unless it only repeats what the code says
                self._ended(attempt, code, "" if code is CloseCode.SELF_CONNECT else reason)
            return
        assert self._runner is not None
        task = self._runner.loop.create_task(self._child_ended(attempt, child, reason))
        self._waiting.add(task)
        task.add_done_callback(self._waiting.discard)

    async def _child_ended(self, attempt: _Attempt, child: asyncio.subprocess.Process,
                           reason: str) -> None:
        try:
            status = await asyncio.wait_for(child.wait(), EXIT_WAIT)
        except asyncio.TimeoutError:
            self._end_child(child)
            self._ended(attempt, Failure.CONNECTION_LOST, reason)
            return
        self._ended(attempt, Failure.EXITED, _status(status))

    def _ended(self, attempt: _Attempt, reason: EndReason, detail: str) -> None:
        if attempt.done or self._runner is None:
            return
        attempt.done = True
        attempt.task = None
        if self._attempts.get(attempt.slot) is attempt:
            del self._attempts[attempt.slot]
        # Once the session is over (if only a moment before detach()), its
        # subflows end as they should: nothing to report, nothing to re-open.
        if not self._detached and self._runner.session.outcome is None:
            self.policy.ended(attempt.slot, self._runner.loop.time(), reason, detail)
            self._pump()

    def _end_child(self, child: asyncio.subprocess.Process) -> None:
        if child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.terminate()

    # -- opening -----------------------------------------------------------------------

    async def _open(self, attempt: _Attempt, address: SubflowAddress) -> None:
        runner = self._runner
        assert runner is not None
        watch = _Watch(self, attempt, self._label(attempt.slot))
        try:
            if isinstance(address, Exec):
                sock = await self._spawn(attempt, address)
            elif isinstance(address, SshSubflows):
                sock = await self._ssh(attempt, address.target)
            elif isinstance(address, TcpConnect):
                # Not the kernel's minutes of SYN retries on a link that
                # black-holes: a connect has the time a hello has to arrive.
                timeout = address.connect_timeout or runner.session.config.handshake_timeout
                sock = await connect_tcp(runner.loop, address, timeout)
            else:
                sock = await connect_unix(runner.loop, address)
        except _CannotRun as exc:
            self._settle(attempt, Failure.CANNOT_RUN, str(exc))
            return
        except _OpenFailed as exc:  # fatal: no far side, no python3, not sockimux
            self._settle(attempt, Failure.CANNOT_RUN if exc.fatal else Failure.CONNECT_FAILED, str(exc))
            return
        except OSError as exc:
            self._settle(attempt, Failure.CONNECT_FAILED, exc.strerror or str(exc))
            return
        try:
            await runner.adopt(sock, watch)
        except OSError as exc:
            sock.close()
            if attempt.child is not None:
                self._end_child(attempt.child)
            self._settle(attempt, Failure.CONNECT_FAILED, exc.strerror or str(exc))
            return
        attempt.task = None

    def _settle(self, attempt: _Attempt, reason: EndReason, detail: str) -> None:
        attempt.task = None
        self._ended(attempt, reason, detail)

    async def _spawn(self, attempt: _Attempt, address: Exec) -> socket.socket:
        ours, theirs = socket.socketpair()
        try:
            child = await asyncio.create_subprocess_exec(*address.argv, stdin=theirs.fileno(),
                                                         stdout=theirs.fileno())
        except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
            ours.close()
            raise _CannotRun(f"{address.argv[0]}: {exc.strerror}") from None
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        attempt.child = child
        self._children = {c for c in self._children if c.returncode is None}
        self._children.add(child)
        return ours


    async def _ssh(self, attempt: _Attempt, target: FarTarget) -> socket.socket:
        """An ssh connection whose channel is a subflow; its ssh is the
        attempt's child, as an EXEC command is (its exit ends the subflow)."""
        from ..remote.near import OpenFailed
        try:
            return await self._ssh_started(attempt, target)
        except OpenFailed as exc:
            raise _OpenFailed(str(exc), exc.fatal) from None

    async def _ssh_started(self, attempt: _Attempt, target: FarTarget) -> socket.socket:
        from ..remote.near import open_connection
        if target.info is None:  # no far side yet: one ssh starts it, then the others join it
            if self._far_start is None:
                self._far_start = asyncio.Lock()
            async with self._far_start:  # (one that cannot start, for good, is not tried again)
                return self._ssh_open(attempt, await open_connection(target))
        return self._ssh_open(attempt, await open_connection(target))

    def _ssh_open(self, attempt: _Attempt, connection: OpenConnection) -> socket.socket:
        attempt.child = connection.process
        self._children = {c for c in self._children if c.returncode is None}
        self._children.add(connection.process)
        return connection.sock


class _OpenFailed(Exception):
    """remote.near's OpenFailed, seen where remote/ is not imported."""

    def __init__(self, message: str, fatal: bool) -> None:
        super().__init__(message)
        self.fatal = fatal


class _CannotRun(Exception):
    """The EXEC program cannot be started at all (missing, not executable)."""


def _status(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit status {code}"
