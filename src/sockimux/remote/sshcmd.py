"""The ssh command line for each connection of `sockimux ssh` (near side).

Each subflow must be its own TCP connection, whatever the user's ssh config
says, so some options are forced.  ssh keeps the *first* value it gets for
an option, command line before config files, so ours come before the
user's own ``-o`` options and cannot be overridden by them:

* ``ControlMaster=no`` and ``ControlPath=none``: a ControlMaster (or an
  existing master's socket) would carry every "connection" as a channel of
  one TCP connection, and defeat the purpose;
* ``ClearAllForwardings=yes``: a ``LocalForward`` in the config would be set
  up N times (all but one failing to bind; with ``ExitOnForwardFailure``,
  every subflow but one would die at once);
* ``PermitLocalCommand=no``: a ``LocalCommand`` would run once per subflow;
* ``-T``: no pseudo-terminal, a pty would mangle the bytes (and its escape
  character ``~.`` could cut a subflow).
"""

from __future__ import annotations

from collections.abc import Sequence

FORCED_OPTIONS = (
    "-T",
    "-o", "ControlMaster=no",
    "-o", "ControlPath=none",
    "-o", "ClearAllForwardings=yes",
    "-o", "PermitLocalCommand=no",
)


def ssh_argv(destination: str, remote_command: str, user_options: Sequence[str] = (),
             ssh: str = "ssh") -> list[str]:
    """``ssh FORCED USER-OPTIONS -- DESTINATION COMMAND``.  The ``--`` keeps a
    destination that starts with ``-`` from being read as an option."""
    return [ssh, *FORCED_OPTIONS, *user_options, "--", destination, remote_command]
