"""Addresses in socat's syntax: where subflows go, where we listen, what the stream is.

Each address is ``TYPE:PARAM:PARAM,option=value,option`` exactly as socat
reads it (see address_lexer.py for quoting and escaping); type keywords and
option names are case-insensitive, and socat's aliases work.  What each
type means for sockimux, and the role it may play:

==============================  ==========================  ====================
address (aliases)               options                     roles
==============================  ==========================  ====================
``UNIX-CONNECT:PATH``           ``count``                   subflow, stream
(``UNIX``, ``LOCAL``)
``TCP:HOST:PORT`` (``TCP4``,    ``bind=ADDR[:PORT]``,       subflow, stream
``TCP6``, ``TCP-CONNECT``...)   ``so-bindtodevice=IFACE``,
                                ``connect-timeout=SEC``,
                                ``count``
``EXEC:'COMMAND'``              ``count``                   subflow, stream
``STDIO`` (``-``)                                           stream
``UNIX-LISTEN:PATH``            ``mode=0600`` (``perm``)    listen
(``UNIX-L``)
``TCP-LISTEN:PORT`` (``TCP-L``, ``bind=ADDR``               listen
``TCP4-LISTEN``...)
==============================  ==========================  ====================

*subflow*: we open it, and re-open it when it ends (``--connect``);
*listen*: peers open subflows to it (``--listen``); *stream*: the one byte
stream we carry (``--stream``, ``STDIO`` by default).

**How many subflows: ``count=N``.**  ``--connect 'EXEC:"ssh host ...",count=4'``
opens and keeps 4 subflows of that address.  The count is an address option
because it belongs to the address: each ``--connect`` says everything about
its subflows, where socat users put per-address settings (after a comma, in
the same ``key=value`` form as ``bind=``), and no option's meaning depends
on its position next to another (a ``-n 4`` beside two ``--connect``: which
does it count?).  A multi-homed host wants different counts per address
(``TCP:far:7000,bind=10.0.1.2,count=4`` and ``...,bind=10.0.2.2`` once).
``count`` is not a socat option, so such an address pasted into socat fails
there loudly instead of meaning something else.

Listening is always for many connections (socat's ``fork``) and TCP
listeners always set SO_REUSEADDR: ``fork`` and ``reuseaddr`` are accepted
for socat habits, and change nothing.  Hosts are names, IPv4 literals or
IPv6 literals in brackets (``TCP:[::1]:22``); ports are numbers (service
names would need /etc/services).  ``bind`` takes IP literals only: a name
could resolve to an address of another interface, and ``so-bindtodevice``
names the interface itself.

``address_parser.parse_address()`` returns one of the frozen dataclasses below, each
valid by construction (``__post_init__`` checks what the parser checks),
and ``str()`` of one is its canonical form, which parses back to an equal
value.  Every mistake raises :class:`AddressError` with one line naming the
address and what is wrong with it.
"""

from __future__ import annotations

import enum
import ipaddress
import math
import re
from dataclasses import dataclass, field
from typing import ClassVar

from .address_lexer import join_words, quote, split_words
from .errors import AddressError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_COUNT = 1024  # the default --max-subflows: more could not all be open at once
MAX_UNIX_PATH = 107  # sun_path holds 108 bytes with the terminating NUL


class Role(enum.Enum):
    SUBFLOW = "subflow"  # we open it and keep it open (--connect)
    LISTEN = "listen"  # peers open subflows to it (--listen)
    STREAM = "stream"  # the byte stream we carry (--stream)


class Family(enum.Enum):
    """Which IP version a TCP address may use; the value is socat's keyword suffix."""

    ANY = ""
    IPV4 = "4"
    IPV6 = "6"


# -- checks shared by the parser and the dataclasses -------------------------

def _check_path(path: str) -> None:
    if not path:
        raise AddressError("missing socket path")
    if "\0" in path:
        raise AddressError("socket path contains a NUL character")
    size = len(path.encode("utf-8", "surrogateescape"))
    if size > MAX_UNIX_PATH:
        raise AddressError(f"socket path is too long ({size} bytes, max {MAX_UNIX_PATH})")


def _check_count(count: int) -> None:
    if not 1 <= count <= MAX_COUNT:
        raise AddressError(f"count must be 1-{MAX_COUNT}")


def _check_port(port: int | None, what: str = "port") -> None:
    if port is not None and not 1 <= port <= 65535:
        raise AddressError(f"{what} must be 1-65535")


def _check_family(ip: IPAddress, family: Family, what: str) -> None:
    if family is not Family.ANY and ip.version != int(family.value):
        raise AddressError(f"{what} {ip} is IPv{ip.version}, but TCP{family.value} is IPv{family.value} only")


_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


def _check_hostname(host: str) -> None:
    if not host:
        raise AddressError("missing HOST")
    name = host[:-1] if host.endswith(".") else host
    if re.fullmatch(r"[0-9.]+", name):
        raise AddressError(f"not a valid IPv4 address: {host!r}")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        raise AddressError(f"not a valid host name or IP address: {host!r}")


def _ip_or_none(host: str) -> IPAddress | None:
    """``host`` as an IP address, None if it is not one.  An IPv6 zone
    (``fe80::1%eth0``) must look like an interface name or number, so the
    address prints without quoting."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    _check_zone(ip)
    return ip


def _check_zone(ip: IPAddress) -> None:
    scope = getattr(ip, "scope_id", None)
    if scope is not None and not re.fullmatch(r"[A-Za-z0-9_.-]{1,15}", scope):
        raise AddressError(f"not a valid IPv6 zone (interface): {scope!r}")


def _format_ip(ip: IPAddress, port: int | None = None) -> str:
    text = f"[{ip}]" if ip.version == 6 else str(ip)
    return text if port is None else f"{text}:{port}"


# -- the addresses -------------------------------------------------------------

@dataclass(frozen=True)
class Stdio:
    """Our own STDIN and STDOUT: the stream sockimux has always carried."""

    ROLES: ClassVar[frozenset[Role]] = frozenset({Role.STREAM})

    def __str__(self) -> str:
        return "STDIO"


@dataclass(frozen=True)
class UnixConnect:
    """Connect to the UNIX socket ``path`` (``count`` subflows of it)."""

    path: str
    count: int = 1
    ROLES: ClassVar[frozenset[Role]] = frozenset({Role.SUBFLOW, Role.STREAM})

    def __post_init__(self) -> None:
        _check_path(self.path)
        _check_count(self.count)

    def __str__(self) -> str:
        return f"UNIX-CONNECT:{quote(self.path)}" + _options(_count_option(self.count))


@dataclass(frozen=True)
class Bind:
    """The local end a TCP subflow leaves from: ``bind=ADDR[:PORT]``."""

    ip: IPAddress
    port: int | None = None

    def __post_init__(self) -> None:
        _check_zone(self.ip)
        _check_port(self.port, "bind port")

    def __str__(self) -> str:
        return _format_ip(self.ip, self.port)


@dataclass(frozen=True)
class TcpConnect:
    """Connect over TCP to ``host``:``port``; ``host`` is a name or an IP literal
    (IPv6 without brackets here, normalized)."""

    host: str
    port: int
    family: Family = Family.ANY
    bind: Bind | None = None
    device: str | None = None  # so-bindtodevice: leave by this interface
    connect_timeout: float | None = None  # None: --handshake-timeout (subflow), 30 s (stream)
    count: int = 1
    ROLES: ClassVar[frozenset[Role]] = frozenset({Role.SUBFLOW, Role.STREAM})

    def __post_init__(self) -> None:
        ip = _ip_or_none(self.host)
        if ip is None:
            _check_hostname(self.host)
        else:
            _check_family(ip, self.family, "host")
            object.__setattr__(self, "host", str(ip))  # one spelling per address
        _check_port(self.port)
        if self.bind is not None:
            _check_family(self.bind.ip, self.family, "bind address")
            if ip is not None and ip.version != self.bind.ip.version:
                raise AddressError(f"bind address {self.bind.ip} is IPv{self.bind.ip.version}, "
                                   f"but the host {_format_ip(ip)} is IPv{ip.version}")
        if self.device is not None:
            _check_device(self.device)
        if self.connect_timeout is not None and not (
                math.isfinite(self.connect_timeout) and self.connect_timeout > 0):
            raise AddressError("connect-timeout must be a number of seconds above 0")
        _check_count(self.count)

    @property
    def ip(self) -> IPAddress | None:
        """The host as an IP address, or None for a name (to be resolved)."""
        return _ip_or_none(self.host)

    def __str__(self) -> str:
        ip = self.ip
        host = self.host if ip is None else _format_ip(ip)
        # repr() of a float is the shortest text float() reads back exactly.
        timeout = None if self.connect_timeout is None else repr(self.connect_timeout)
        return f"TCP{self.family.value}:{host}:{self.port}" + _options(
            ("bind", None if self.bind is None else str(self.bind)),
            ("so-bindtodevice", None if self.device is None else quote(self.device)),
            ("connect-timeout", timeout), _count_option(self.count))


@dataclass(frozen=True)
class Exec:
    """Run ``command``; its STDIN and STDOUT are the subflow (or the stream).

    ``command`` is split into ``argv`` as socat's EXEC splits it (spaces,
    quotes, ``\\``), and run without a shell: ``argv[0]`` is looked up in
    PATH.  For shell syntax, run the shell: ``EXEC:'sh -c "a | b"'``.
    """

    command: str
    count: int = 1
    argv: tuple[str, ...] = field(init=False, repr=False, compare=False)
    ROLES: ClassVar[frozenset[Role]] = frozenset({Role.SUBFLOW, Role.STREAM})

    def __post_init__(self) -> None:
        if "\0" in self.command:
            raise AddressError("command contains a NUL character")
        argv = split_words(self.command)
        if not argv or not argv[0].strip():
            raise AddressError("empty command")
        object.__setattr__(self, "argv", argv)
        _check_count(self.count)

    @classmethod
    def from_argv(cls, argv: tuple[str, ...] | list[str], count: int = 1) -> Exec:
        """The EXEC address that runs exactly ``argv`` (quoting what needs it)."""
        return cls(join_words(argv), count)

    def __str__(self) -> str:
        return f"EXEC:{quote(self.command)}" + _options(_count_option(self.count))


@dataclass(frozen=True)
class UnixListen:
    """Listen on the UNIX socket ``path``; ``mode`` None means the default (0600)."""

    path: str
    mode: int | None = None
    ROLES: ClassVar[frozenset[Role]] = frozenset({Role.LISTEN})

    def __post_init__(self) -> None:
        _check_path(self.path)
        if self.mode is not None and not 0 <= self.mode <= 0o777:
            raise AddressError("mode must be octal 0-0777")

    def __str__(self) -> str:
        mode = None if self.mode is None else f"0{self.mode:03o}"
        return f"UNIX-LISTEN:{quote(self.path)}" + _options(("mode", mode))


@dataclass(frozen=True)
class TcpListen:
    """Listen on TCP ``port``, on ``bind`` only if given (else every address)."""

    port: int
    family: Family = Family.ANY
    bind: IPAddress | None = None
    ROLES: ClassVar[frozenset[Role]] = frozenset({Role.LISTEN})

    def __post_init__(self) -> None:
        _check_port(self.port)
        if self.bind is not None:
            _check_zone(self.bind)
            _check_family(self.bind, self.family, "bind address")

    def __str__(self) -> str:
        bind = None if self.bind is None else _format_ip(self.bind)
        return f"TCP{self.family.value}-LISTEN:{self.port}" + _options(("bind", bind))


Address = Stdio | UnixConnect | TcpConnect | Exec | UnixListen | TcpListen

_ROLE_HINTS = {
    Role.SUBFLOW: "cannot open a subflow (use UNIX-CONNECT, TCP or EXEC)",
    Role.LISTEN: "cannot listen (use UNIX-LISTEN or TCP-LISTEN)",
    Role.STREAM: "cannot be the stream (use STDIO, EXEC, TCP or UNIX-CONNECT)",
}


def keyword(address: Address) -> str:
    """The canonical type keyword: ``TCP6``, ``UNIX-LISTEN``..."""
    return str(address).partition(":")[0].partition(",")[0]


def check_role(address: Address, role: Role) -> None:
    """Raise :class:`AddressError` unless ``address`` can play ``role``."""
    if role not in address.ROLES:
        raise AddressError(f"{keyword(address)} {_ROLE_HINTS[role]}")
    if role is not Role.SUBFLOW and getattr(address, "count", 1) != 1:
        raise AddressError("count= is for subflows (--connect) only")


def _options(*pairs: tuple[str, str | None]) -> str:
    """Options in canonical form: fixed order, defaults (None) left out; the
    values are already in a form scan() reads back."""
    return "".join(f",{name}={value}" for name, value in pairs if value is not None)


def _count_option(count: int) -> tuple[str, str | None]:
    return ("count", None if count == 1 else str(count))


def _check_device(name: str) -> None:
    # Linux's dev_valid_name(): what SO_BINDTODEVICE can ever match.
    if not name or len(name) > 15 or name in (".", "..") or any(
            c in "/:" or c.isspace() or not c.isprintable() for c in name):
        raise AddressError(f"not a network interface name: {name!r}")
