"""What the session is doing, shown: ``--stats`` tables, ``--stats-file``
JSON Lines, and the JSON object SIGUSR1 asks for.

Everything here reads one snapshot (``Session.stats(now)``, core/stats.py)
when it is shown, never per frame.  The table goes to stderr: with rich
when stderr is a terminal and rich can be imported (it is imported only
then: the far host of the ssh mode need not have it), as plain lines
otherwise.  The JSON fields are documented in docs/STATS.md.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import sys
import time
from typing import IO, TYPE_CHECKING, Any

from ..core.errors import LocalError
from ..core.stats import AddressStats, SessionStats

if TYPE_CHECKING:
    import asyncio

    from .runner import Runner

PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def peer_label(sock: socket.socket | None) -> str:
    """Where a connection came from: its peer's address, or for an unnamed
    UNIX socket (socat's) the connecting process."""
    if sock is None:
        return ""
    with contextlib.suppress(OSError):
        name = sock.getpeername()
        if isinstance(name, tuple):
            return f"{name[0]}:{name[1]}"
        if name:
            return str(name.decode(errors="replace") if isinstance(name, bytes) else name)
    if sock.family == socket.AF_UNIX:
        with contextlib.suppress(OSError, AttributeError):
            pid, uid, _gid = PEERCRED.unpack(
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, PEERCRED.size))
            return f"pid {pid} uid {uid}"
    return ""


def as_json(stats: SessionStats, event: str) -> str:
    """One line of JSON: why it was taken, the wall clock, our pid, the snapshot."""
    import json  # here: most runs never write one (start-up time)
    record: dict[str, Any] = {"event": event, "time": round(time.time(), 3), "pid": os.getpid()}
    record.update(stats.as_dict())
    return json.dumps(record, separators=(",", ":"))


def _rate(value: float) -> str:
    return f"{value / 1e6:.2f} MB/s"


def _rtt(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f} ms"


COLUMNS = ("id", "state", "age", "label", "sent", "received", "rate out", "rate in", "rtt",
           "re-sent", "head copies")  # (probe copies: in the summary and the JSON; 80 columns)


def summary(stats: SessionStats) -> str:
    return (f"stats: subflows open {stats.open} ({stats.established} established, "
            f"{stats.closed} closed); sent {stats.sent} bytes, {stats.acked} acknowledged, "
            f"{stats.resent} re-sent, {stats.head_copies} head copies, {stats.probe_copies} probe "
            f"copies; received "
            f"{stats.received}, {stats.written} written; no subflow for {stats.alone_total:.1f} s "
            "in all" + (f", {stats.alone_for:.1f} s now" if stats.alone_for else ""))


def rows(stats: SessionStats) -> list[tuple[str, ...]]:
    return [(str(s.id), s.state, f"{s.age:.1f}", s.label or "-", str(s.data_out), str(s.data_in),
             _rate(s.rate_out), _rate(s.rate_in), _rtt(s.rtt), str(s.resent), str(s.head_copies))
            for s in stats.subflows]


# The addresses we open ourselves (--connect, the ssh mode's): a second table.
ADDRESS_COLUMNS = ("address", "up", "starting", "waiting", "attempts", "re-opens", "lost",
                   "last end", "next attempt")
ADDRESS_TITLE = "addresses we open (re-opened when their subflows end):"


def _next(address: AddressStats) -> str:
    if not address.count:
        return "none: past --max-subflows"  # (fit_counts gave it no subflow)
    if address.stopped is not None:
        return "stopped for good"
    return "-" if address.next_attempt_in is None else f"in {address.next_attempt_in:.1f} s"


def address_rows(stats: SessionStats) -> list[tuple[str, ...]]:
    return [(a.label, f"{a.open}/{a.count}", str(a.starting), str(a.waiting), str(a.attempts),
             str(a.reopens), str(a.lost), a.last_end or "-", _next(a)) for a in stats.addresses]


def _aligned(table: list[tuple[str, ...]], left: frozenset[int] = frozenset()) -> list[str]:
    """Columns padded to their widest cell: numbers to the right, ``left`` to the left."""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return ["  ".join(cell.ljust(w) if i in left else cell.rjust(w)
                      for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
            for row in table]


def plain_lines(stats: SessionStats) -> list[str]:
    """The tables as plain lines, columns aligned: the subflows, then (if
    any) the addresses we open."""
    lines = [summary(stats), *_aligned([COLUMNS, *rows(stats)])]
    if stats.addresses:
        lines += [ADDRESS_TITLE, *_aligned([ADDRESS_COLUMNS, *address_rows(stats)],
                                           frozenset({0, 7, 8}))]
    return lines


def _rich_table(stats: SessionStats, stream: IO[str]) -> bool:
    """Print the tables with rich; False if rich is not installed."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        return False
    console = Console(file=stream, stderr=True)
    table = Table(*COLUMNS, title=summary(stats), title_justify="left")
    for row in rows(stats):
        table.add_row(*row)
    console.print(table)
    if stats.addresses:
        table = Table(*ADDRESS_COLUMNS, title=ADDRESS_TITLE, title_justify="left")
        for row in address_rows(stats):
            table.add_row(*row)
        console.print(table)
    return True


def show_table(stats: SessionStats, prefix: str, stream: IO[str] | None = None) -> None:
    stream = stream or sys.stderr
    with contextlib.suppress(OSError, ValueError):
        if stream.isatty() and _rich_table(stats, stream):
            return
        stream.write("".join(f"{prefix}{line}\n" for line in plain_lines(stats)))
        stream.flush()


class Observer:
    """Beside the runner (runner.Attached): every ``interval`` seconds and
    once the session is over, the table on stderr (``table``) and a JSON
    line appended to ``stats_file``."""

    def __init__(self, interval: float | None, table: bool, stats_file: str | None) -> None:
        self.interval = interval
        self.table = table
        self._file: IO[str] | None = None
        if stats_file is not None:
            try:
                self._file = open(stats_file, "a", encoding="utf-8")  # noqa: SIM115
            except OSError as exc:
                raise LocalError(f"cannot open the stats file {stats_file}: "
                                 f"{exc.strerror or exc}") from None
        self._runner: Runner | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._prefix = f"sockimux[{os.getpid()}]: "

    async def attach(self, runner: Runner) -> None:
        self._runner = runner
        self._arm()

    def _arm(self) -> None:
        if self.interval and self._runner is not None:
            self._timer = self._runner.loop.call_later(self.interval, self._tick)

    def _tick(self) -> None:
        self.emit("interval")
        self._arm()

    def detach(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.emit("exit")
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None

    def emit(self, event: str) -> None:
        runner = self._runner
        if runner is None:
            return
        stats = runner.stats()
        if self.table:
            show_table(stats, self._prefix)
        if self._file is not None:
            try:
                self._file.write(as_json(stats, event) + "\n")
                self._file.flush()
            except OSError as exc:  # a full disk must not end the session: say so once
                with contextlib.suppress(OSError):
                    sys.stderr.write(f"{self._prefix}cannot write the stats file: "
                                     f"{exc.strerror or exc}\n")
                with contextlib.suppress(OSError):
                    self._file.close()
                self._file = None
