"""The exit codes (README's table, --help's epilog) and how a session's
outcome, its stream command and the peer's become one of them."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .core.events import Outcome

if TYPE_CHECKING:
    from .runtime.dialer import Dialer
    from .runtime.runner import Runner

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_SOCKET = 3
EXIT_OUTPUT_CLOSED = 4
EXIT_PEER_ABORTED = 5
EXIT_NO_SUBFLOWS = 6
EXIT_INPUT_CHANGED = 7
EXIT_GAVE_UP = 8
EXIT_STREAM_COMMAND = 9

EXIT_CODES = {
    Outcome.DONE: EXIT_OK,
    Outcome.OUTPUT_CLOSED: EXIT_OUTPUT_CLOSED,
    Outcome.PEER_ABORTED: EXIT_PEER_ABORTED,
    Outcome.NO_SUBFLOWS: EXIT_NO_SUBFLOWS,
    Outcome.INPUT_CHANGED: EXIT_INPUT_CHANGED,
}


def shown(status: int) -> str:
    """How a command ended, after its name ("ended with killed by signal 9"
    read wrong: each its own phrase)."""
    return f"was killed by signal {-status}" if status < 0 else f"ended with exit status {status}"


def exit_code(outcome: Outcome, runner: Runner | None, dialer: Dialer | None,
               status: int | None, log: logging.Logger, remote_command: bool = False) -> int:
    """Our exit code.  ``remote_command``: the peer's stream is the COMMAND of
    ``sockimux ssh HOST -- COMMAND``, whose exit status becomes ours, as
    ssh's does, once the session is done (a signal N: 128 + N)."""
    if outcome is Outcome.INTERRUPTED and runner is not None and runner.signal is not None:
        return 128 + runner.signal
    if outcome is Outcome.NO_SUBFLOWS and dialer is not None and dialer.gave_up:
        return EXIT_GAVE_UP
    code = EXIT_CODES.get(outcome, EXIT_INTERNAL)
    if status is not None and status != 0:
        log.error("the stream command %s", shown(status))
        if code == EXIT_OK:
            return EXIT_STREAM_COMMAND
    peer = runner.session.peer_status if runner is not None else None
    if code == EXIT_OK and peer is not None:
        if remote_command:
            if peer != 0:
                log.info("the remote command %s", shown(peer))
            return 128 - peer if peer < 0 else peer
        if peer != 0:
            log.error("the peer's stream command %s", shown(peer))
            return EXIT_STREAM_COMMAND
    return code
