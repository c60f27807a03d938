import os
import signal
import sys
from typing import NoReturn


def _no_stats_yet(signo: int, frame: object) -> None:
    """SIGUSR1 before the session exists: nothing to report yet."""


def run() -> NoReturn:
    """``sockimux`` (the console script, and ``python -m sockimux``)."""
    if os.environ.pop("SOCKIMUX_SIGINT", None) == "default":
        # ./sockimux started python with SIGINT ignored (a ^C while python
        # starts would be a traceback): from here on, the handler below takes it.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    # SIGUSR1 asks for the stats "at any time" (README): its default action
    # would end us while the modules load, before the CLI blocks and then
    # handles it.  (A handler, not SIG_IGN: the commands we start get the
    # default back.)
    signal.signal(signal.SIGUSR1, _no_stats_yet)
    try:
        # Imported here, under the handler below: the imports take a few
        # tenths of a second, in which a ^C must not print a traceback.
        from .cli import main
        from .runtime.process import exit_now
        code = main()
    except KeyboardInterrupt:
        # Before the CLI blocks and handles SIGINT (a session's ^C is
        # "session over: interrupted by SIGINT", as here, exit 130).
        try:
            sys.stderr.write(f"sockimux[{os.getpid()}]: interrupted by SIGINT\n")
            sys.stderr.flush()
        except (OSError, ValueError, AttributeError):
            pass  # no STDERR: nothing to say
        os._exit(130)
    exit_now(code)


if __name__ == "__main__":
    run()
