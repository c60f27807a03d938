"""How a run of the session ends (Runner's methods, kept here as one idea).

run() waits until the session has an outcome (_finish, from the flush that
found it) or until a bug stops it (internal_error); then, after detaching
what ran beside it, _drain_and_close writes every subflow's last frames,
half-closes the connections and waits, at most CLOSE_GRACE seconds, for
the peer to close them too.  After a bug the peer is still told the
session is over (an ABORT), so that it does not wait for the rest of our
stream forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ..core import frames
from ..core.errors import CloseCode
from ..core.frames import FrameType
from ..core.session import Outcome, Session
from .connection import SubflowConnection

log = logging.getLogger("sockimux")

CLOSE_GRACE = 2.0  # seconds to let final frames drain before we exit
INTERNAL_ERROR = "internal error in the peer"  # what the peer is told of ours


class Teardown:
    # Provided by Runner.
    session: Session
    loop: asyncio.AbstractEventLoop
    connections: dict[int, SubflowConnection]
    _failed: bool
    _finished: asyncio.Future[None]
    _all_closed: asyncio.Future[None] | None

    def internal_error(self, exc: BaseException) -> None:
        """A bug: run() tells the peer, then raises ``exc``."""
        self._failed = True
        if not self._finished.done():
            self._finished.set_exception(exc)

    def _finish(self) -> None:
        if not self._finished.done():
            self._finished.set_result(None)

    def _abort_on_internal_error(self) -> None:
        # However we fail, the peer must learn that the session is over, or
        # it would wait for the rest of our stream forever.
        try:
            self.session.abort(Outcome.INTERRUPTED, INTERNAL_ERROR, self.loop.time())
        except Exception:
            log.debug("the session could not abort", exc_info=True)  # _drain_and_close sends ABORT

    def _connection_gone(self) -> None:
        if not self.connections and self._all_closed is not None and not self._all_closed.done():
            self._all_closed.set_result(None)

    async def _drain_and_close(self, failed: bool = False) -> None:
        """Write every subflow's last frames (final ACKs, ABORT), then half-close
        and wait for the peer to close too, so neither side's last frames meet
        a connection already torn down.  ``failed``: after an internal error,
        whatever the session can no longer give is an ABORT of our own."""
        now = self.loop.time()
        self._ended = True
        error: Exception | None = None  # a bug met here: raised once every subflow is done
        for sid, conn in list(self.connections.items()):
            transport = conn.transport
            try:
                conn.bodies.stop()  # the transport reads again, to see the peer close
                if transport is None or transport.is_closing():
                    continue
                conn.send(self.session.pull(sid, now))
            except Exception as exc:
                if error is None and not failed:
                    error = exc
                log.debug("final frames of subflow %d", sid, exc_info=True)
                if transport is None or transport.is_closing():
                    continue
                transport.write(frames.encode_reason(FrameType.ABORT, CloseCode.SHUTDOWN,
                                                     INTERNAL_ERROR))
            if transport.is_closing():
                continue
            if transport.can_write_eof():
                transport.write_eof()
            else:
                transport.close()
        deadline = self.loop.time() + CLOSE_GRACE
        while self.connections and self.loop.time() < deadline:
            # Woken as soon as the last one is gone (every exit waited for a poll before).
            self._all_closed = self.loop.create_future()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._all_closed, 0.01)
        for conn in self.connections.values():
            if conn.transport is not None:
                conn.transport.abort()
        if error is not None:
            raise error
