"""Listening on a parsed ``--listen`` address: the one place the command line
(cli.py) and the Python API (api.py) turn one into a listener."""

from __future__ import annotations

import socket

from ..core.addresses import Address, TcpListen, UnixListen
from ..core.errors import LocalError
from .listener import Listener, TcpListener

Listening = Listener | TcpListener

_FAMILIES = {"": socket.AF_UNSPEC, "4": socket.AF_INET, "6": socket.AF_INET6}


def listen_on(address: Address, socket_mode: int, allowed: frozenset[int] | None) -> Listening:
    """A listener on ``address`` (UNIX-LISTEN or TCP-LISTEN), listening now;
    LocalError if it cannot (the CLI's exit 3).  ``socket_mode`` is the UNIX
    socket's mode unless the address gives its own; ``allowed``: the users
    who may connect to it (None: anyone the mode lets in)."""
    if isinstance(address, UnixListen):
        mode = socket_mode if address.mode is None else address.mode
        return Listener(address.path, mode=mode, allowed_uids=allowed)
    if isinstance(address, TcpListen):
        return TcpListener(address.port, None if address.bind is None else str(address.bind),
                           _FAMILIES[address.family.value])
    raise LocalError(f"not an address to listen on: {address}")


def close_all(listeners: list[Listening]) -> None:
    for listener in listeners:
        listener.close()
