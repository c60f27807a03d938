"""``--progress``: one live line on a terminal stderr, cleared at exit.

Drawn with rich (imported only when the line is on: the far host of the ssh
mode need not have it), redrawn from the event loop a few times a second
(rich's own refresh thread is not used), and only when stderr is a
terminal: otherwise the option does nothing (without rich it says so).  Log lines
keep appearing above the live line: while it is shown, the log handlers
that write to stderr write through rich's console.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any

from ..core.stats import SessionStats

if TYPE_CHECKING:
    import asyncio

    from .runner import Runner

PERIOD = 0.25  # seconds between redraws
SMOOTHING = 0.3  # weight of the newest interval in the rates shown


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def _eta(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """Beside the runner (runner.Attached), when stderr is a terminal."""

    def __init__(self, input_size: int | None) -> None:
        self.input_size = input_size  # STDIN is a regular file of this many bytes (for the ETA)
        self._runner: Runner | None = None
        self._live: Any = None  # rich.live.Live
        self._timer: asyncio.TimerHandle | None = None
        self._last: SessionStats | None = None
        self._rates = [0.0, 0.0]  # bytes/s acknowledged by the peer, written to STDOUT
        self._handlers: list[tuple[logging.StreamHandler[Any], Any]] = []

    async def attach(self, runner: Runner) -> None:
        if not sys.stderr.isatty():
            return
        try:
            from rich.console import Console
            from rich.live import Live
        except ImportError:
            logging.getLogger("sockimux").warning("--progress needs the rich package; "
                                                  "no progress line")
            return
        self._runner = runner
        console = Console(file=sys.stderr)
        self._live = Live("", console=console, auto_refresh=False, transient=True,
                          redirect_stdout=False, redirect_stderr=False)
        self._live.start()
        # Log lines go through the console, above the live line.
        for handler in logging.getLogger("sockimux").handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr:
                self._handlers.append((handler, handler.stream))
                handler.setStream(_ConsoleStream(console))
        self._tick()

    def _tick(self) -> None:
        runner = self._runner
        if runner is None or self._live is None:
            return
        self._live.update(self.line(runner.stats()), refresh=True)
        self._timer = runner.loop.call_later(PERIOD, self._tick)

    def line(self, stats: SessionStats) -> str:
        last, self._last = self._last, stats
        if last is not None and stats.at > last.at:
            span = stats.at - last.at
            for i, (now, then) in enumerate(((stats.acked, last.acked),
                                             (stats.written, last.written))):
                self._rates[i] += SMOOTHING * ((now - then) / span - self._rates[i])
        up, down = self._rates
        text = (f"sent {_size(stats.acked)} ({_size(up)}/s)  received {_size(stats.written)} "
                f"({_size(down)}/s)  subflows {stats.open} up / {len(stats.subflows)}")
        if self.input_size:
            text += f"  {100 * stats.acked / self.input_size:.0f}%"
            left = self.input_size - stats.acked
            if left > 0 and up > 0:
                text += f"  ETA {_eta(left / up)}"
        return text

    def detach(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for handler, stream in self._handlers:
            handler.setStream(stream)
        self._handlers.clear()
        if self._live is not None:
            self._live.stop()  # transient: the line is cleared
            self._live = None


class _ConsoleStream:
    """A file-like stream for a log handler: each line printed through the
    rich console (above its live line), as it is, with no markup."""

    def __init__(self, console: Any) -> None:
        self.console = console

    def write(self, text: str) -> int:
        text = text.removesuffix("\n")
        if text:
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)
        return len(text)

    def flush(self) -> None:
        pass
