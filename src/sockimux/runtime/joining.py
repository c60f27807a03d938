"""How connections enter the session (Runner's methods, kept here as one idea).

Every connection, whoever made it, becomes a subflow through connection():
a listener's server calls it as its protocol factory, a dialer's socket is
adopted (adopt()), an ssh channel's pipes are handed in the same way.
When its transport is made, the connection asks subflow_opened() for the
session's id of it: the session queues our hello on it, and the stats name
it by the address it was opened to, or by where it came from.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import TYPE_CHECKING, Any, cast

from ..core.session import Session
from .connection import Admission, SubflowConnection, SubflowWatch
from .observe import peer_label

if TYPE_CHECKING:
    from .runner import Runner


class Joining:
    # Provided by Runner.
    session: Session
    loop: asyncio.AbstractEventLoop
    connections: dict[int, SubflowConnection]
    _ended: bool

    if TYPE_CHECKING:  # Runner's own
        def kick(self) -> None: ...

    def connection(self, admit: Admission | None = None,
                   watch: SubflowWatch | None = None) -> SubflowConnection:
        """The protocol for a new connection, for a server or create_connection:
        every connection enters the session through it.  ``admit`` may refuse
        the connection first (see connection.Admission); ``watch`` learns when
        it is established and when it ends, and why (a dialer)."""
        return SubflowConnection(cast("Runner", self), admit, watch)

    async def adopt(self, sock: socket.socket, watch: SubflowWatch | None = None) -> None:
        """Make ``sock``, a connected stream socket, a subflow (the runner owns
        it); shielded from a dialer's cancellation at the session's end: closed
        under its transport, the end waited CLOSE_GRACE for it, unseen."""
        adoption = asyncio.ensure_future(
            self.loop.connect_accepted_socket(lambda: self.connection(None, watch), sock))
        adoption.add_done_callback(_retrieve)
        await asyncio.shield(adoption)

    def subflow_opened(self, conn: SubflowConnection) -> int:
        """The session's id for ``conn``; 0 once the session is over (abort it)."""
        if self._ended:
            return 0
        sid = self.session.open_subflow(self.loop.time(), os.urandom(16))
        self.connections[sid] = conn
        if conn.watch is not None:  # the stats name it by the address it was opened to
            self.session.label(sid, conn.watch.label)
        elif conn.transport is not None:  # ...or by where it came from
            self.session.label(sid, peer_label(conn.transport.get_extra_info("socket")))
        self.kick()
        return sid


def _retrieve(adoption: asyncio.Future[Any]) -> None:
    """An adoption whose dialer stopped waiting: its failure is not news."""
    if not adoption.cancelled():
        adoption.exception()
