"""The values of the command line's options: their types and ranges.

Each type is a function argparse calls on the text given; a value it
cannot take is an ArgumentTypeError naming the range, which the parser
turns into one line and exit 2.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from .core.addresses import Address, Role
from .core.errors import AddressError

# Ranges of the numeric options, checked when parsing (exit 2 outside them).
# The window is carried as a u64 offset on the wire; 1 GiB keeps it, and the
# memory it lets a peer make us hold, sane.
KIB, GIB = 1 << 10, 1 << 30
WINDOW_RANGE = (64 * KIB, GIB)
STALL_RANGE = (0.5, 3600.0)  # below 0.5 s a busy machine's scheduling delays look like stalls
HANDSHAKE_RANGE = (0.5, 3600.0)
NO_SUBFLOW_RANGE = (1.0, 365 * 86400.0)  # a year
COUNT_RANGE = (1, 65536)  # --max-subflows, --max-handshakes
MODE_RANGE = (0, 0o777)
UID_RANGE = (0, 2**32 - 2)  # (uid_t)-1 means "no user"
STATS_RANGE = (0.1, 86400.0)  # --stats=SEC


def human(size: int) -> str:
    return f"{size // GIB}G" if size >= GIB and size % GIB == 0 else f"{size // KIB}K"


def _window_span() -> str:
    return f"{human(WINDOW_RANGE[0])} to {human(WINDOW_RANGE[1])}"


def span(bounds: tuple[float, float]) -> str:
    return f"{bounds[0]:.10g} to {bounds[1]:.10g}"


def _check(value: float, bounds: tuple[float, float], text: str, shown: str) -> None:
    lo, hi = bounds
    if not lo <= value <= hi:  # also false for NaN
        raise argparse.ArgumentTypeError(f"must be from {shown}: {text!r}")


def size(text: str) -> int:
    units = {"": 1, "k": KIB, "m": 1 << 20, "g": GIB}
    t = text.strip().lower().removesuffix("b").removesuffix("i")
    num, unit = (t[:-1], t[-1]) if t and t[-1] in units else (t, "")
    try:
        number = float(num) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a size from {_window_span()}: {text!r} (e.g. 16M, 512K)") from None
    _check(number, WINDOW_RANGE, text, _window_span())
    return int(number)


def seconds(bounds: tuple[float, float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"not a number of seconds from {span(bounds)}: {text!r}") from None
        _check(value, bounds, text, f"{span(bounds)} seconds")
        return value
    return parse


def mode(text: str) -> int:
    try:
        value = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an octal mode from 0000 to 0777: {text!r} (e.g. 0600)") from None
    _check(value, MODE_RANGE, text, "0000 to 0777")
    return value


def whole(bounds: tuple[int, int]) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number from {span(bounds)}: {text!r}") from None
        _check(value, bounds, text, span(bounds))
        return value
    return parse


def socket_path(text: str) -> str:
    """SOCKET, checked as --listen UNIX-LISTEN:SOCKET's path is (empty, too
    long for a UNIX socket): a usage error (exit 2) there, so here too."""
    from .core.addresses import UnixListen
    try:
        UnixListen(text)
    except AddressError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def address(role: Role) -> Callable[[str], Address]:
    def parse(text: str) -> Address:
        # Imported here: a plain ``sockimux SOCKET`` parses no address (start-up time).
        from .core.address_parser import parse_address
        try:
            return parse_address(text, role)
        except AddressError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return parse
