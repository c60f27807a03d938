from typing import NoReturn

from .cli import main
from .runtime.process import exit_now


def run() -> NoReturn:
    """``sockimux`` (the console script, and ``python -m sockimux``)."""
    exit_now(main())


if __name__ == "__main__":
    run()
