"""From the text of an address to an :data:`~.addresses.Address`.

socat's grammar on top of its lexer (address_lexer.py): a type keyword,
``:``-separated parameters, then ``,``-separated options, each ``name`` or
``name=value``.  Keywords and option names are case-insensitive and take
socat's aliases; each address type accepts only its own options, each at
most once.  What sockimux does not support of socat is refused by name (a
dual address ``A!!B``, an unknown type or option), never ignored.

Every error is an :class:`AddressError` whose message is one line:
``bad address 'TCP:host:70000': port must be 1-65535``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass

from .address_lexer import scan
from .addresses import (
    MAX_COUNT,
    Address,
    Bind,
    Exec,
    Family,
    IPAddress,
    Role,
    Stdio,
    TcpConnect,
    TcpListen,
    UnixConnect,
    UnixListen,
    check_role,
)
from .errors import AddressError

_PARAM_ENDS = (":", ",", "!!")
_NAME_ENDS = (",", "=", "!!")
_VALUE_ENDS = (",", "!!")
_SHOWN = 120  # longest address text quoted whole in a message

Options = dict[str, str | None]  # canonical option name -> value (None: given bare)


@dataclass(frozen=True)
class _Kind:
    keyword: str
    params: tuple[str, ...]  # parameter names, for messages
    options: dict[str, str]  # accepted spelling (lower case) -> canonical name
    build: Callable[[list[str], Options, Family], Address]

    @property
    def syntax(self) -> str:
        return ":".join((self.keyword, *self.params))


def parse_address(text: str, role: Role | None = None) -> Address:
    """Parse one address; with ``role``, also check that it can play it."""
    try:
        address = _parse(text.strip())
        if role is not None:
            check_role(address, role)
    except AddressError as exc:
        shown = text if len(text) <= _SHOWN else text[:_SHOWN - 3] + "..."
        raise AddressError(f"bad address {shown!r}: {exc}") from None
    return address


def _parse(text: str) -> Address:
    if not text:
        raise AddressError("empty address")
    word, pos = scan(text, 0, _PARAM_ENDS)
    found = _KEYWORDS.get(word.upper())
    if found is None:
        raise AddressError(_unknown_type(word))
    kind, family = found
    params: list[str] = []
    while text.startswith(":", pos):
        value, pos = scan(text, pos + 1, _PARAM_ENDS)
        params.append(value)
    options: Options = {}
    while text.startswith(",", pos):
        name, pos = scan(text, pos + 1, _NAME_ENDS)
        given: str | None = None
        if text.startswith("=", pos):
            given, pos = scan(text, pos + 1, _VALUE_ENDS)
        _add_option(kind, options, name, given)
    if pos < len(text):  # only "!!" stops the loops above before the end
        raise AddressError("dual addresses (A!!B, one to read, one to write) are not supported")
    for value in (*params, *(v for v in options.values() if v is not None)):
        if "\0" in value:
            raise AddressError("contains a NUL character")
    _check_params(kind, params)
    return kind.build(params, options, family)


def _unknown_type(word: str) -> str:
    if not word:
        return "missing address type (e.g. TCP:HOST:PORT)"
    if "/" in word:
        return (f"{word!r} is not an address; a UNIX socket is UNIX-CONNECT:PATH "
                "(or UNIX-LISTEN:PATH to listen)")
    return (f"unknown address type {word!r} "
            "(known: STDIO, UNIX-CONNECT, TCP, EXEC, UNIX-LISTEN, TCP-LISTEN)")


def _add_option(kind: _Kind, options: Options, name: str, value: str | None) -> None:
    if not name:
        raise AddressError("empty option (a stray ',')")
    canonical = kind.options.get(name.lower())
    if canonical is None:
        if not kind.options:
            raise AddressError(f"{kind.keyword} takes no options")
        known = ", ".join(sorted(set(kind.options.values())))
        raise AddressError(f"unknown option {name!r} for {kind.keyword} (known: {known})")
    if canonical in options:
        raise AddressError(f"option {canonical} given twice")
    options[canonical] = value


def _check_params(kind: _Kind, params: list[str]) -> None:
    if len(params) == len(kind.params):
        return
    if not kind.params:
        raise AddressError(f"{kind.keyword} takes no parameters")
    if len(params) < len(kind.params):
        missing = " and ".join(kind.params[len(params):])
        raise AddressError(f"missing {missing} ({kind.syntax})")
    hint = ""
    if kind.keyword == "EXEC":
        hint = "; quote the command (EXEC:'...') or escape its colons (\\:)"
    elif kind.keyword.startswith("TCP") and "PORT" in kind.params and "HOST" in kind.params:
        hint = "; an IPv6 host goes in brackets, e.g. TCP:[::1]:22"
    raise AddressError(f"too many parameters ({kind.syntax}){hint}")


# -- values --------------------------------------------------------------------

def _needed(options: Options, name: str, example: str) -> str | None:
    """The value of option ``name``, None if absent; present without one is an error."""
    if name not in options:
        return None
    value = options[name]
    if value is None:
        raise AddressError(f"option {name} needs a value ({name}={example})")
    return value


def _implied(options: Options, name: str, why: str) -> None:
    """Accept socat's ``fork`` / ``reuseaddr`` (bare or =1): sockimux always does that."""
    value = options.get(name)
    if value is not None and value != "1":
        raise AddressError(f"option {name} cannot be changed: {why}")


def _number(text: str, what: str, low: int, high: int) -> int:
    if not re.fullmatch(r"[0-9]{1,10}", text) or not low <= int(text) <= high:
        raise AddressError(f"{what} must be {low}-{high}"
                           + (" (a number; service names are not looked up)"
                              if what == "port" and text and not text.isdigit() else ""))
    return int(text)


def _count(options: Options) -> int:
    text = _needed(options, "count", "N")
    return 1 if text is None else _number(text, "count", 1, MAX_COUNT)


def _ip(text: str, what: str) -> IPAddress:
    inner = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        ip = ipaddress.ip_address(inner)
    except ValueError:
        hint = " (an interface is so-bindtodevice=IFACE)" if what == "bind address" else ""
        raise AddressError(f"{what} must be an IP address, not {text!r}{hint}") from None
    if inner != text and ip.version != 6:
        raise AddressError(f"{what} {text!r}: brackets are for IPv6 addresses only")
    return ip


def _bind(text: str) -> Bind:
    """``ADDR``, ``ADDR:PORT``, ``[ADDR6]`` or ``[ADDR6]:PORT``."""
    if text.startswith("["):
        host, close, port = text.partition("]")
        host += close
        if port and not port.startswith(":"):
            raise AddressError(f"bind={text}: expected [ADDR] or [ADDR]:PORT")
        port = port[1:]
    elif text.count(":") > 1:
        raise AddressError(f"bind={text}: an IPv6 address goes in brackets, e.g. bind=[::1]")
    else:
        host, _, port = text.partition(":")
    # Port 0 is socat's "any port": as no port at all.
    return Bind(_ip(host, "bind address"), _number(port, "bind port", 0, 65535) or None if port else None)


def _host(text: str) -> str:
    if not text:
        raise AddressError("missing HOST")
    if text.startswith("["):
        return str(_ip(text, "host"))
    return text  # a name or an IP literal: TcpConnect checks it


_PF = {"ip4": Family.IPV4, "ipv4": Family.IPV4, "inet": Family.IPV4, "4": Family.IPV4,
       "ip6": Family.IPV6, "ipv6": Family.IPV6, "inet6": Family.IPV6, "6": Family.IPV6}


def _pf(options: Options, family: Family) -> Family:
    """socat's ``pf=ip4|ip6`` (protocol family): TCP-LISTEN:P,pf=ip6 is TCP6-LISTEN:P."""
    text = _needed(options, "pf", "ip4")
    if text is None:
        return family
    chosen = _PF.get(text.lower())
    if chosen is None:
        raise AddressError(f"pf must be ip4 or ip6, not {text!r}")
    if family is not Family.ANY and chosen is not family:
        raise AddressError(f"pf={text} contradicts the IPv{family.value} of the address type")
    return chosen


def _seconds(text: str, what: str) -> float:
    if not re.fullmatch(r"([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?", text):
        raise AddressError(f"{what} must be a number of seconds above 0")
    return float(text)


# -- the address types -----------------------------------------------------------

def _build_stdio(params: list[str], options: Options, family: Family) -> Address:
    return Stdio()


def _build_unix_connect(params: list[str], options: Options, family: Family) -> Address:
    return UnixConnect(params[0], _count(options))


def _build_tcp_connect(params: list[str], options: Options, family: Family) -> Address:
    bind = _needed(options, "bind", "ADDR[:PORT]")
    timeout = _needed(options, "connect-timeout", "SEC")
    return TcpConnect(_host(params[0]), _number(params[1], "port", 1, 65535), _pf(options, family),
                      bind=None if bind is None else _bind(bind),
                      device=_needed(options, "so-bindtodevice", "IFACE"),
                      connect_timeout=None if timeout is None else _seconds(timeout, "connect-timeout"),
                      count=_count(options))


def _build_exec(params: list[str], options: Options, family: Family) -> Address:
    return Exec(params[0], _count(options))


def _build_unix_listen(params: list[str], options: Options, family: Family) -> Address:
    _implied(options, "fork", "a listener always accepts many subflows")
    mode = _needed(options, "mode", "0600")
    if mode is not None and not re.fullmatch(r"[0-7]{1,4}", mode):
        raise AddressError("mode must be octal 0-0777, e.g. mode=0600")
    return UnixListen(params[0], None if mode is None else int(mode, 8))


def _build_tcp_listen(params: list[str], options: Options, family: Family) -> Address:
    _implied(options, "fork", "a listener always accepts many subflows")
    _implied(options, "so-reuseaddr", "listeners always set it")
    bind = _needed(options, "bind", "ADDR")
    if bind is not None and (bind.count(":") == 1 or "]:" in bind):
        raise AddressError(f"bind={bind}: the port is the parameter (TCP-LISTEN:PORT,bind=ADDR)")
    return TcpListen(_number(params[0], "port", 1, 65535), _pf(options, family),
                     None if bind is None else _ip(bind, "bind address"))


_COUNT = {"count": "count"}
_DEVICE = {name: "so-bindtodevice" for name in ("so-bindtodevice", "bindtodevice", "if", "interface")}
_FORK = {"fork": "fork"}
_FAMILY = {"pf": "pf", "protocol-family": "pf"}

_STDIO = _Kind("STDIO", (), {}, _build_stdio)
_UNIX_CONNECT = _Kind("UNIX-CONNECT", ("PATH",), _COUNT, _build_unix_connect)
_EXEC = _Kind("EXEC", ("COMMAND",), _COUNT, _build_exec)
_UNIX_LISTEN = _Kind("UNIX-LISTEN", ("PATH",), {"mode": "mode", "perm": "mode", **_FORK},
                     _build_unix_listen)


def _tcp_kinds(suffix: str) -> tuple[_Kind, _Kind]:
    connect = _Kind(f"TCP{suffix}", ("HOST", "PORT"),
                    {"bind": "bind", "connect-timeout": "connect-timeout", **_DEVICE, **_COUNT,
                     **_FAMILY},
                    _build_tcp_connect)
    listen = _Kind(f"TCP{suffix}-LISTEN", ("PORT",),
                   {"bind": "bind", "reuseaddr": "so-reuseaddr", "so-reuseaddr": "so-reuseaddr", **_FORK,
                    **_FAMILY},
                   _build_tcp_listen)
    return connect, listen


_KEYWORDS: dict[str, tuple[_Kind, Family]] = {
    "STDIO": (_STDIO, Family.ANY), "-": (_STDIO, Family.ANY),
    **{k: (_UNIX_CONNECT, Family.ANY) for k in ("UNIX-CONNECT", "UNIX", "UNIX-CLIENT", "LOCAL")},
    "EXEC": (_EXEC, Family.ANY),
    "UNIX-LISTEN": (_UNIX_LISTEN, Family.ANY), "UNIX-L": (_UNIX_LISTEN, Family.ANY),
}
for _family in Family:
    _connect, _listen = _tcp_kinds(_family.value)
    for _word in (f"TCP{_family.value}", f"TCP{_family.value}-CONNECT"):
        _KEYWORDS[_word] = (_connect, _family)
    for _word in (f"TCP{_family.value}-LISTEN", f"TCP{_family.value}-L"):
        _KEYWORDS[_word] = (_listen, _family)
