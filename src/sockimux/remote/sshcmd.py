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

One option is only a default: ``ConnectTimeout`` (:data:`CONNECT_TIMEOUT`)
when neither the user's options nor their ssh config set one, as ``ssh -G``
tells.  Without it, an ssh to a host behind a link that black-holes waits
for the kernel's minutes of SYN retries before it fails and the subflow's
re-open backoff can even start.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

CONNECT_TIMEOUT = 10  # seconds, as a TCP subflow's connect (the default --handshake-timeout)

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


def default_options(destination: str, user_options: Sequence[str] = (),
                    ssh: str = "ssh") -> list[str]:
    """``-o ConnectTimeout=10`` unless the user's options or ssh config give
    a ConnectTimeout (``ssh -G`` prints the configuration ssh would use).
    Nothing when ``ssh -G`` fails: the real ssh will say why, once."""
    try:
        run = subprocess.run([ssh, "-G", *user_options, "--", destination], capture_output=True,
                             stdin=subprocess.DEVNULL, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    if run.returncode != 0:
        return []
    for line in run.stdout.decode(errors="replace").splitlines():
        key, _, value = line.partition(" ")
        if key.lower() == "connecttimeout" and value.strip() != "none":
            return []
    return ["-o", f"ConnectTimeout={CONNECT_TIMEOUT}"]
