"""Command line: ``sockimux [options] [SOCKET]``, with ``--listen``, ``--connect``, ``--stream``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import stat
import sys
from collections.abc import Sequence
from dataclasses import replace

from . import __version__, options
from .core.addresses import Role, Stdio
from .core.auth import MIN_KEY_SIZE
from .core.errors import LocalError
from .core.session import Outcome, Session, SessionConfig
from .exits import (
    EXIT_INTERNAL,
    EXIT_SOCKET,
    EXIT_USAGE,
    exit_code,
)
from .interrupts import HANDLED_SIGNALS, ProcessSignals
from .options import (
    COUNT_RANGE,
    HANDSHAKE_RANGE,
    NO_SUBFLOW_RANGE,
    STALL_RANGE,
    STATS_RANGE,
    UID_RANGE,
    WINDOW_RANGE,
    human,
    span,
)
from .runtime import allocator, process
from .runtime.assembly import Listening, close_all, listen_on
from .runtime.dialer import Dialer, SshSubflows
from .runtime.listener import Listener
from .runtime.observe import Observer
from .runtime.progress import Progress
from .runtime.runner import Attached, Runner
from .runtime.sink import OutputWriter
from .runtime.stream_address import OpenedStream, open_stream
from .stderrwriter import queued_stderr
from .usage import DESCRIPTION, EPILOG


class _Parser(argparse.ArgumentParser):
    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None
                         ) -> tuple[argparse.Namespace, list[str]]:
        """``--stats=SEC`` is ``--stats --stats-every=SEC`` (the value only with "=")."""
        given = list(sys.argv[1:] if args is None else args)
        end = given.index("--") if "--" in given else len(given)
        for i in reversed(range(end)):
            if given[i].startswith("--stats="):
                given[i:i + 1] = ["--stats", "--stats-every=" + given[i].removeprefix("--stats=")]
        return super().parse_known_args(given, namespace)

    def error(self, message: str) -> None:  # type: ignore[override]
        message = message.replace("argument --stats-every:", "argument --stats:")  # see below
        self.exit(EXIT_USAGE, f"sockimux: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    d = SessionConfig()
    p = _Parser(prog="sockimux", description=DESCRIPTION, epilog=EPILOG,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("socket", metavar="SOCKET", nargs="?", type=options.socket_path,
                   help="path of the UNIX socket to listen on (as --listen UNIX-LISTEN:SOCKET); "
                        "optional with --listen or --connect")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="log more on stderr (-v: subflows joining and leaving, and a summary "
                        "at the end; -vv: debug)")
    p.add_argument("-q", "--quiet", action="store_true", help="log only errors")
    p.add_argument("--version", action="version", version=f"sockimux {__version__}")
    a = p.add_argument_group("addresses (see below)")
    a.add_argument("--connect", type=options.address(Role.SUBFLOW), action="append", default=[],
                   metavar="ADDR", help="open subflows to ADDR and re-open them when they end: "
                                         "UNIX-CONNECT:PATH, TCP:HOST:PORT, EXEC:'COMMAND', "
                                         "each with count=N; repeatable")
    a.add_argument("--listen", type=options.address(Role.LISTEN), action="append", default=[],
                   metavar="ADDR", help="also accept subflows at ADDR: UNIX-LISTEN:PATH, "
                                         "TCP-LISTEN:PORT; repeatable")
    a.add_argument("--stream", type=options.address(Role.STREAM), default=Stdio(), metavar="ADDR",
                   help="the stream to carry: STDIO (default), EXEC:'COMMAND', TCP:HOST:PORT, "
                        "UNIX-CONNECT:PATH")
    t = p.add_argument_group("reliability and flow control")
    w_lo, w_hi = (human(x) for x in WINDOW_RANGE)
    t.add_argument("--window", type=options.size, default=d.window, metavar="SIZE",
                   help="receive window: how far the peer may send ahead of what we have "
                        f"written out; also the send buffer ({w_lo} to {w_hi}; "
                        "default %(default)s bytes)")
    t.add_argument("--stall-timeout", type=options.seconds(STALL_RANGE), default=d.stall_timeout,
                   metavar="SEC", help="drop a subflow that moves nothing and answers no keepalive "
                                        "for this long, re-sending its data on others "
                                        f"({span(STALL_RANGE)} s; default %(default)s)")
    t.add_argument("--no-subflow-timeout", type=options.seconds(NO_SUBFLOW_RANGE), default=None,
                   metavar="SEC", help="give up (exit 6) after this long with no subflow "
                                        f"({span(NO_SUBFLOW_RANGE)} s); default: wait forever, "
                                        "warning every 10 s")
    t.add_argument("--handshake-timeout", type=options.seconds(HANDSHAKE_RANGE), default=d.handshake_timeout,
                   metavar="SEC", help="close a connection that sends no hello in this long; "
                                        "also how long a --connect TCP: connect may take, unless "
                                        "its connect-timeout= says "
                                        f"({span(HANDSHAKE_RANGE)} s; default %(default)s)")
    t.add_argument("--max-subflows", type=options.whole(COUNT_RANGE), default=None, metavar="N",
                   help=f"refuse connections beyond N at once ({span(COUNT_RANGE)}; default "
                        f"{d.max_subflows}, or fewer if the open file limit allows fewer: "
                        f"{process.FDS_PER_SUBFLOW} per subflow, {process.RESERVED_FDS} kept)")
    t.add_argument("--max-handshakes", type=options.whole(COUNT_RANGE), default=d.max_handshakes,
                   metavar="N", help="refuse connections beyond N that have not finished their "
                                      f"hello ({span(COUNT_RANGE)}; default %(default)s)")
    s = p.add_argument_group("security")
    s.add_argument("--socket-mode", type=options.mode, default=0o600, metavar="MODE",
                   help="permissions of the socket file, octal, whatever the umask "
                        "(0000 to 0777; default 0600)")
    s.add_argument("--allow-uid", type=options.whole(UID_RANGE), action="append", default=[], metavar="UID",
                   help="also accept connections from this user id "
                        f"({span(UID_RANGE)}; default: only our own "
                        "user and root, checked with SO_PEERCRED); repeatable")
    s.add_argument("--allow-any-user", action="store_true",
                   help="accept connections from any user the socket mode lets in")
    s.add_argument("--psk-file", metavar="FILE",
                   help="shared key (at least 16 bytes) both sides must prove in every subflow's "
                        "hello; authenticates subflows, does not encrypt them")
    _observing(p)
    return p


def _observing(p: argparse.ArgumentParser) -> None:
    """The options that show what the session does (runtime/observe.py)."""
    o = p.add_argument_group("observing (SIGUSR1 writes the stats as one JSON line on stderr)")
    o.add_argument("--stats", action="store_true",
                   help="--stats[=SEC]: a table of the subflows (and of the --connect addresses: "
                        "attempts, re-opens, why the last ended) on stderr at exit, and every SEC "
                        f"seconds if given ({span(STATS_RANGE)}); plain lines when stderr is not "
                        "a terminal")
    # --stats=SEC arrives here (see _Parser.parse_known_args): an optional
    # value after a space would take the SOCKET argument for itself.
    o.add_argument("--stats-every", type=options.seconds(STATS_RANGE), default=None, help=argparse.SUPPRESS)
    o.add_argument("--progress", action="store_true",
                   help="one live line on stderr (bytes each way, rates, subflows, and the ETA "
                        "when STDIN is a file), cleared at exit; only when stderr is a terminal "
                        "(otherwise it does nothing)")
    o.add_argument("--stats-file", metavar="PATH",
                   help="append the stats as one JSON object per line (docs/STATS.md) at exit, "
                        "and every SEC seconds of --stats=SEC")


def _observer(args: argparse.Namespace) -> Observer | None:
    if not args.stats and args.stats_file is None:
        return None
    return Observer(args.stats_every, args.stats, args.stats_file)


def _input_size(fd: int) -> int | None:
    """Bytes left to read from STDIN if it is a regular file (for --progress's ETA)."""
    try:
        st = os.fstat(fd)
        return st.st_size - os.lseek(fd, 0, os.SEEK_CUR) if stat.S_ISREG(st.st_mode) else None
    except OSError:
        return None


def _read_psk(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            key = f.read(4097).strip()
    except OSError as exc:
        raise LocalError(f"cannot read the key file {path}: {exc.strerror}") from None
    if len(key) < MIN_KEY_SIZE:
        raise LocalError(f"the key in {path} is too short ({len(key)} bytes, need {MIN_KEY_SIZE}; "
                         "e.g. head -c 32 /dev/urandom | base64 > FILE)")
    if len(key) > 4096:
        raise LocalError(f"the key in {path} is too long (max 4096 bytes)")
    return key


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"sockimux[{os.getpid()}]: %(message)s"))
    root = logging.getLogger("sockimux")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    sys.unraisablehook = _unraisable
    sys.excepthook = _uncaught


def _unraisable(unraisable: sys.UnraisableHookArgs) -> None:
    """An exception raised where nothing can catch it (a destructor) is one
    debug line, not the multi-line "Exception ignored in" report: uvloop's
    process handle raises one in its __dealloc__ after a spawn failed for
    want of a descriptor (ulimit -n), which sockimux survives."""
    logging.getLogger("sockimux").debug("ignored in %r: %r", unraisable.object, unraisable.exc_value)


def _uncaught(kind: type[BaseException], value: BaseException, _: object) -> None:
    """What Python would print as a traceback (uvloop's __dealloc__ above
    prints its exception this way too, through PyErr_PrintEx): one line."""
    # uvloop's, after a failed spawn that was already reported: a debug line.
    level = logging.DEBUG if "__dealloc__" in str(value) else logging.ERROR
    logging.getLogger("sockimux").log(level, "%s: %s", kind.__name__, value)


def _private_stdio(closed: frozenset[int]) -> tuple[int, int]:
    """Take STDIN and STDOUT for ourselves.

    STDOUT is duplicated and fd 1 pointed at /dev/null, so closing our copy
    really ends the stream for the consumer (no stray reference keeps it open).
    A STDOUT that was closed at start is one whose reader has gone.
    """
    out_fd = process.dead_output() if process.STDOUT in closed else os.dup(process.STDOUT)
    in_fd = os.dup(process.STDIN)  # /dev/null if it was closed: an empty input
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, process.STDIN)
    os.dup2(null, process.STDOUT)
    os.close(null)
    sys.stdout = None
    return in_fd, out_fd


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _max_subflows(requested: int | None, log: logging.Logger) -> int:
    """--max-subflows, or by default as many as the open file limit allows
    (raised to its hard limit first), at most the built-in default
    (LocalError: a limit too low for any subflow)."""
    fd_limit = process.raise_fd_limit()
    if fd_limit < process.MIN_FD_LIMIT:
        raise LocalError(f"the open file limit ({fd_limit}) is too low: sockimux needs at least "
                         f"{process.MIN_FD_LIMIT} (ulimit -n)")
    fitting = process.subflows_allowed(fd_limit)
    if requested is None:
        chosen = min(SessionConfig().max_subflows, fitting)
        log.info("open file limit %d: at most %d subflows", fd_limit, chosen)
        return chosen
    if requested > fitting:
        log.warning("--max-subflows %d is more than the open file limit (%d) leaves room for "
                    "(%d subflows); connections beyond that may fail", requested, fd_limit, fitting)
    return requested


def _listeners(args: argparse.Namespace, allowed: frozenset[int] | None) -> list[Listening]:
    """SOCKET and every --listen address, listening (LocalError: exit 3)."""
    made: list[Listening] = []
    try:
        if args.socket is not None:
            made.append(Listener(args.socket, mode=args.socket_mode, allowed_uids=allowed))
        for address in args.listen:
            made.append(listen_on(address, args.socket_mode, allowed))
    except LocalError:
        close_all(made)
        raise
    return made


def main(argv: Sequence[str] | None = None) -> int:
    # Before anything creates a descriptor: see process.claim_stdio.
    try:
        closed = process.claim_stdio()
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.write(process.STDERR, f"sockimux[{os.getpid()}]: cannot set up STDIO: {exc}\n".encode())
        return EXIT_SOCKET
    if sys.stderr is None:  # it was closed: logging and argparse write to /dev/null instead
        sys.stderr = open(process.STDERR, "w", errors="backslashreplace", closefd=False)  # noqa: SIM115
    ssh: SshSubflows | None = None
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["ssh"]:  # sockimux ssh ...: sshmode.py
        from .sshmode import session_argv  # with remote/: only this mode needs them
        mode = session_argv(argv[1:])
        if isinstance(mode, int):
            return mode
        argv, ssh = mode
    parser = build_parser()
    args = parser.parse_args(argv)
    if ssh is not None:
        args.connect = [ssh]
    elif args.socket is None and not args.listen and not args.connect:
        parser.error("give a SOCKET to listen on, or --listen or --connect addresses")
    with queued_stderr():  # from here on, STDERR never holds up the loop
        return _session(args, ssh, closed)


def _session(args: argparse.Namespace, ssh: SshSubflows | None, closed: frozenset[int]) -> int:
    _setup_logging(args.verbose, args.quiet)
    log = logging.getLogger("sockimux")
    if isinstance(args.stream, Stdio):
        try:
            process.check_stdio()
        except LocalError as exc:
            log.error("%s", exc)
            return EXIT_USAGE
    try:
        max_subflows = _max_subflows(args.max_subflows, log)
    except LocalError as exc:
        log.error("%s", exc)
        return EXIT_SOCKET
    config = SessionConfig(window=args.window, stall_timeout=args.stall_timeout,
                           handshake_timeout=args.handshake_timeout, max_subflows=max_subflows,
                           alone_timeout=args.no_subflow_timeout)
    psk = None
    if args.psk_file is not None:
        try:
            psk = _read_psk(args.psk_file)
        except LocalError as exc:
            log.error("%s", exc)
            return EXIT_USAGE
    config = replace(config, psk=psk, max_handshakes=args.max_handshakes)
    try:
        observer = _observer(args)
    except LocalError as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    allowed = None if args.allow_any_user else frozenset({os.getuid(), 0, *args.allow_uid})
    # A background job must not be stopped for touching the terminal: reading
    # it then fails with EIO, which counts as an empty input.
    signal.signal(signal.SIGTTIN, signal.SIG_IGN)
    signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    if not isinstance(args.stream, Stdio):
        # Before the signals are blocked: a command would inherit the mask.
        try:
            stream = open_stream(args.stream)
        except LocalError as exc:
            log.error("%s", exc)
            return EXIT_SOCKET
        except KeyboardInterrupt:  # a connect can take a while: no traceback for a ^C
            log.error("interrupted while opening the stream")
            return 128 + signal.SIGINT
    # Hold SIGINT/SIGTERM/SIGHUP from before the socket exists until the
    # runner handles them, so an early signal cannot leave the socket behind.
    signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
    try:
        listeners = _listeners(args, allowed)
    except LocalError as exc:
        log.error("%s", exc)
        return EXIT_SOCKET
    try:
        if isinstance(args.stream, Stdio):
            stream = OpenedStream(*_private_stdio(closed))
        loop = _new_loop()
    except OSError as exc:  # e.g. no descriptor left: one line, as for the socket
        log.error("cannot start: %s", exc.strerror or exc)
        for listener in listeners:
            listener.close()
        return EXIT_SOCKET
    allocator.tune()
    runner: Runner | None = None
    dialer = Dialer(args.connect, listening=bool(listeners)) if args.connect else None

    async def run() -> Outcome:
        nonlocal runner
        session = Session(os.urandom(16), loop.time(), config)
        runner = Runner(session, stream.in_fd, stream.out_fd)
        if stream.child is not None:  # the FIN says how the command ended
            runner.input_status = stream.exit_status
        if stream.half_close and isinstance(runner.sink, OutputWriter):
            runner.sink.half_close = True
        parts: list[Attached] = [ProcessSignals()]
        if observer is not None:
            parts.append(observer)
        if args.progress:  # after the observer: it is cleared before the table at exit
            parts.append(Progress(_input_size(stream.in_fd)))
        parts.extend(listeners)
        if dialer is not None:
            parts.append(dialer)
        try:
            return await runner.run(*parts)
        finally:
            if dialer is not None:
                await dialer.close()

    try:
        outcome = loop.run_until_complete(run())
    except BaseException as exc:  # a bug: report it in one line, details with -vv
        log.error("internal error: %s: %s", type(exc).__name__, exc)
        log.debug("traceback", exc_info=True)
        for listener in listeners:
            listener.close()
        stream.finish(carried=False)
        return EXIT_INTERNAL
    finally:
        loop.close()
        # Its handlers are gone: a late SIGUSR1 (a stats request) must not kill us.
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    for listener in listeners:
        listener.close()
    remote_command = ssh is not None and "--command" in ssh.target.far_args
    status = stream.finish(carried=outcome is Outcome.DONE)
    return exit_code(outcome, runner, dialer, status, log, remote_command)
