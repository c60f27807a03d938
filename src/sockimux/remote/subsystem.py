"""``sockimux ssh -s HOST NAME``: an ssh subsystem (``sftp``) as the stream.

ssh's ``-s`` asks sshd for a subsystem by name, and sshd runs the program
its configuration names for it.  Our ssh connections carry the far
sockimux instead, so the far side runs that program itself: the one the
far host's sshd configuration names (``Subsystem NAME PROGRAM ARGS``), or
for ``sftp``, where it is configured as sshd's own ``internal-sftp`` or
the configuration cannot be read, the ``sftp-server`` the usual packages
install.  That is what ``scp -S``/``sftp -S`` with ``sockimux ssh`` need
(scp speaks SFTP since OpenSSH 9.0).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

SSHD_CONFIG = "/etc/ssh/sshd_config"
SFTP_SERVERS = (
    "/usr/lib/openssh/sftp-server",  # Debian, Ubuntu
    "/usr/libexec/openssh/sftp-server",  # Fedora, RHEL
    "/usr/lib/ssh/sftp-server",  # Arch, Alpine
    "/usr/libexec/sftp-server",  # macOS, the BSDs
    "/usr/lib/sftp-server",
)


def configured(name: str, lines: Iterable[str]) -> str | None:
    """The command line sshd's configuration gives subsystem ``name`` (the
    first ``Subsystem`` line for it, as sshd takes it), if any."""
    for line in lines:
        words = line.split()
        if len(words) >= 3 and words[0].lower() == "subsystem" and words[1] == name:
            return " ".join(words[2:])
    return None


def _config_lines(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.readlines()
    except OSError:
        return []


def subsystem_command(name: str, config: str = SSHD_CONFIG,
                      sftp_servers: Iterable[str] = SFTP_SERVERS) -> str:
    """The shell command line that serves subsystem ``name`` on this host;
    LookupError (one line) if there is none."""
    line = configured(name, _config_lines(config))
    if line is not None and line.split()[0] != "internal-sftp":
        return line
    if name == "sftp":
        for path in sftp_servers:
            if os.access(path, os.X_OK):
                return path
    raise LookupError(f"no program for the ssh subsystem {name!r} on the far host"
                      + (" (sshd serves it itself: internal-sftp)" if line else ""))
