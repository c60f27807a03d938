"""``sockimux ssh [-n N] [OPTIONS] [SSH OPTIONS] [USER@]HOST [-- COMMAND...]``:
the command line of the one-command ssh mode (the session itself is cli.py's,
with one --connect address: :class:`.runtime.dialer.SshSubflows`).

Without COMMAND the far stream is the far host's sshd (``TCP:127.0.0.1:22``,
``--far-port`` to change the port): a ProxyCommand.  With COMMAND it is that
command, run by the far host's ``/bin/sh -c`` as ssh runs one.  ssh's own
options (``-p``, ``-i``, ``-F``, ``-o``, ``-l``, ``-J``...) are passed to every
ssh connection; ``-p`` is the port ssh connects to, not the far stream's.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from .remote.bootstrap import DEFAULT_PYTHON
from .remote.near import FarTarget
from .remote.sshcmd import CONNECT_TIMEOUT, default_options
from .remote.sshstderr import NESTED
from .runtime.dialer import SshSubflows

DEFAULT_SUBFLOWS = 4
CHAIN = "SOCKIMUX_SSH_HOSTS"  # the hosts the `sockimux ssh` that started us reach (newline-separated)
SSH_WITH_ARGUMENT = set("BbcDEeFIiJLlmOopQRSWw")  # ssh's options that take a value
SSH_FLAGS = set("46AaCfGgKkMNnqsTtVvXxYy")

USAGE = f"""\
usage: sockimux ssh [-n N] [--far-port PORT] [--idle-timeout SEC] [-v] [-q]
                    [SSH OPTIONS] [USER@]HOST [-- COMMAND...]

Carry STDIN/STDOUT to HOST over N ssh connections (default 4), each its own
TCP connection (ControlMaster=no, ControlPath=none are forced), re-opened
by themselves when they end.  The first one starts the far sockimux over
ssh (only python3 is needed there: the package is sent along, nothing is
left behind); the others hand their channel to it.

  without COMMAND: the stream is HOST's sshd at 127.0.0.1:PORT (a ProxyCommand)
    ssh -o ProxyCommand='sockimux ssh -n 4 %h' user@host
  with COMMAND: the stream is COMMAND's STDIN/STDOUT on HOST (run by /bin/sh -c)
    tar c dir | sockimux ssh -n 8 host -- tar x -C /dst
  with -s, as ssh: COMMAND is an ssh subsystem's name (sftp), run on HOST by
  the program its sshd config names (for sftp, its sftp-server otherwise)
    sftp -S sockimux-ssh host    (sockimux-ssh: a script: exec sockimux ssh "$@")

options:
  -n N, --subflows N   ssh connections (1 to 64; default 4)
  --far-port PORT      without COMMAND: the far sshd's port on 127.0.0.1 (default 22)
  --idle-timeout SEC   the far sockimux gives up after SEC without any subflow (default 300)
  --python CMD         the far host's python (default python3)
  -v, -q               log more, or only errors (sockimux's own; ssh's -v: -o LogLevel=DEBUG)
  SSH OPTIONS          given to every ssh: -p PORT, -i KEY, -F CONFIG, -l USER, -o OPT=VAL...
                       (before or after HOST, bundled or not, as ssh reads them: -Cp 2222)
                       (-o ConnectTimeout={CONNECT_TIMEOUT} unless your options or ssh config set
                       one: an ssh that gets no answer fails then, and is retried)

exit codes: with COMMAND, once the session is done, COMMAND's exit status, as
with ssh (128+N if signal N killed it); otherwise as sockimux's (see sockimux
--help); 8 also when the far side cannot be started or reached for good (no
python3 there, authentication refused).
"""


class UsageError(Exception):
    pass


@dataclass
class SshCommand:
    address: SshSubflows
    verbose: int = 0
    quiet: bool = False
    help: bool = False
    rest: list[str] = field(default_factory=list)


def _number(option: str, text: str, low: float, high: float) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{option}: not a number: {text!r}") from None
    if not low <= value <= high:
        raise UsageError(f"{option}: {text} is not from {low:g} to {high:g}")
    return value


def _ssh_option(arg: str) -> bool:
    """Whether ``arg`` is a whole ssh option (flags, bundled as getopt reads
    them: -4C, -Cp2222), False if its value is the next word (-p, -Cp);
    UsageError if it is none of ssh's."""
    for at, letter in enumerate(arg[1:], 2):
        if letter in SSH_WITH_ARGUMENT:
            return at < len(arg)
        if letter not in SSH_FLAGS:
            raise UsageError(f"unknown option {arg}")
    return True


def _subsystem_flag(arg: str) -> tuple[str | None, bool]:
    """ssh's -s (COMMAND is a subsystem's name) taken out of an option's flags
    (-s, -sT), for the far side to run that subsystem: our own ssh connections
    run the far sockimux.  The option without it (None: nothing left), and
    whether it was there."""
    flags = arg[1:]
    for at, letter in enumerate(flags):
        if letter in SSH_WITH_ARGUMENT:
            flags, rest = flags[:at], flags[at:]
            break
    else:
        rest = ""
    if "s" not in flags:
        return arg, False
    left = flags.replace("s", "") + rest
    return (f"-{left}" if left else None), True


def parse(argv: Sequence[str]) -> SshCommand:
    """UsageError (exit 2) for anything it cannot read."""
    args = list(argv)
    count, far_port, idle, verbose, quiet = DEFAULT_SUBFLOWS, 22, 300.0, 0, False
    subsystem = False
    python: Sequence[str] = DEFAULT_PYTHON
    ssh_options: list[str] = []
    i = 0

    def value() -> str:
        nonlocal i
        if i + 1 >= len(args):
            raise UsageError(f"{args[i]} needs a value")
        i += 1
        return args[i]

    destination: str | None = None
    # As ssh reads its command line: options before HOST and after it (ssh
    # host -p 2222 cmd), up to COMMAND's first word or "--".
    while i < len(args):
        arg = args[i]
        if arg == "--" or not arg.startswith("-") or arg == "-":
            if destination is not None or arg == "--":
                break
            destination = arg
            i += 1
            continue
        if arg in ("-h", "--help"):
            return SshCommand(SshSubflows(FarTarget("")), help=True)
        if arg in ("-n", "--subflows"):
            count = int(_number(arg, value(), 1, 64))
        elif arg == "--far-port":
            far_port = int(_number(arg, value(), 1, 65535))
        elif arg == "--idle-timeout":
            idle = _number(arg, value(), 1, 1e8)
        elif arg == "--python":
            python = shlex.split(value()) or list(DEFAULT_PYTHON)
        elif set(arg[1:]) == {"v"}:  # -v, -vv: ours, as for sockimux itself
            verbose += len(arg) - 1
        elif arg == "-q":
            quiet = True
        else:
            whole = _ssh_option(arg)
            kept, asks = _subsystem_flag(arg)
            subsystem = subsystem or asks
            if kept is not None:  # (None: it was -s alone)
                ssh_options += [kept] if whole else [kept, value()]
        i += 1
    if i < len(args) and args[i] == "--":
        i += 1
    if destination is None:
        if i >= len(args):
            raise UsageError("no HOST given")
        destination = args[i]
        i += 1
    command = args[i:]
    far_args = ["--idle-timeout", f"{idle:g}"]
    if subsystem:
        if len(command) != 1:
            raise UsageError("-s needs the subsystem's name as the one word after HOST")
        far_args += ["--subsystem", command[0]]
    elif command:
        far_args += ["--command", " ".join(command)]  # as ssh joins a remote command's words
    else:
        far_args += ["--stream", f"TCP:127.0.0.1:{far_port}"]
    target = FarTarget(destination, ssh_options, python, far_args)
    return SshCommand(SshSubflows(target, count), verbose, quiet)


def _say(line: str) -> None:
    """One line on STDERR; one that cannot take it (/dev/full) changes no exit code."""
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(line)
        sys.stderr.flush()


def session_argv(argv: Sequence[str]) -> tuple[list[str], SshSubflows] | int:
    """For cli.main: sockimux's own arguments and the subflows' address, or
    the exit code when there is no session to run (--help, bad usage)."""
    try:
        command = parse(argv)
    except UsageError as e:
        _say(f"sockimux ssh: {e} (see sockimux ssh --help)\n")
        return 2
    if command.help:
        # As sockimux --help (argparse): on STDERR when STDOUT is closed, and
        # a STDOUT that cannot take it (/dev/full) is no traceback.
        out = sys.stdout if sys.stdout is not None else sys.stderr
        with contextlib.suppress(OSError, ValueError, AttributeError):
            out.write(USAGE)
            out.flush()
        return 0
    own = ["-v"] * command.verbose + (["-q"] if command.quiet else [])
    target = command.address.target
    # An ssh config whose ProxyCommand for HOST runs `sockimux ssh HOST` makes
    # each of our ssh connections run it again, and each of its own again...
    # Our ssh connections (and their ProxyCommands) inherit the chain of the
    # hosts being reached: HOST met again in it is that loop, not a session.
    chain = [h for h in os.environ.get(CHAIN, "").split("\n") if h]
    if target.destination in chain:
        _say(f"sockimux[{os.getpid()}]: sockimux ssh {target.destination} {NESTED} "
             f"{target.destination} (a ProxyCommand in your ssh config?): not starting it again\n")
        return 2
    os.environ[CHAIN] = "\n".join([*chain, target.destination])
    try:
        defaults = default_options(target.destination, target.ssh_options, target.ssh)
    except KeyboardInterrupt:  # ssh -G runs the config's Match exec: it can take a while
        _say(f"sockimux[{os.getpid()}]: interrupted while reading the ssh config\n")
        return 128 + signal.SIGINT
    target.ssh_options = [*target.ssh_options, *defaults]
    return own, command.address
