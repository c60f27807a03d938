"""What stops a session from outside: signals, and bugs the event loop catches
(and SIGUSR1, which only asks for the stats snapshot: one JSON line on stderr).

The CLI attaches this beside the session (runner.Attached) and the runner
exposes what it needs: interrupt(signo), internal_error(exc) and
resource_warning(kind, message).  SIGHUP says whoever holds our STDIO hung
up (ssh sends it to its ProxyCommand once it is done): the session may
well be complete but for the last frames in flight, so it gets a grace
period before it is interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from typing import Any

from .runtime.observe import as_json
from .runtime.runner import Runner
from .runtime.splicing import RESOURCE_ERRORS

log = logging.getLogger("sockimux")

# SIGUSR1 writes the stats snapshot as one JSON line on stderr; blocked
# with the others until handled, so an early one cannot kill us (its default).
HANDLED_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1}
HANGUP_GRACE = 5.0  # seconds a session may take to finish after SIGHUP


class ProcessSignals:
    """SIGINT, SIGTERM and SIGHUP end the session (exit 128+N), SIGUSR1
    writes the stats (runtime/observe.py); the loop's
    exception handler turns a bug in a callback into one clear line.  The
    CLI blocks the signals from before the socket exists: attach() handles
    them, then unblocks them (any that arrived meanwhile are delivered)."""

    def __init__(self) -> None:
        self._runner: Runner | None = None
        self._hangup_timer: asyncio.TimerHandle | None = None

    async def attach(self, runner: Runner) -> None:
        self._runner = runner
        loop = runner.loop
        loop.set_exception_handler(self._on_exception)
        for signo in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signo, runner.interrupt, signo)
        loop.add_signal_handler(signal.SIGHUP, self._on_hangup)
        loop.add_signal_handler(signal.SIGUSR1, self._on_usr1)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)

    def detach(self) -> None:
        if self._hangup_timer is not None:
            self._hangup_timer.cancel()

    def _on_hangup(self) -> None:
        runner = self._runner
        assert runner is not None
        if self._hangup_timer is None and runner.signal is None:
            log.info("SIGHUP: finishing the session (at most %g s)", HANGUP_GRACE)
            self._hangup_timer = runner.loop.call_later(HANGUP_GRACE, runner.interrupt,
                                                        signal.SIGHUP)

    def _on_usr1(self) -> None:
        runner = self._runner
        assert runner is not None
        line = as_json(runner.stats(), "signal")
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write(line + "\n")
            sys.stderr.flush()

    def _on_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        runner = self._runner
        assert runner is not None
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in RESOURCE_ERRORS and "socket" in context:
            # asyncio could not accept a connection (out of descriptors): it
            # tries again in a moment; the session goes on without it.
            runner.resource_warning("accept", f"cannot accept a connection: {exc.strerror}")
            return
        # A bug in a callback: end the session with one clear line, not a traceback.
        runner.internal_error(exc if isinstance(exc, BaseException)
                              else RuntimeError(str(context.get("message"))))
