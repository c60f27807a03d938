"""Connected sockets for the dialer's ``TCP:`` and ``UNIX-CONNECT:``
addresses (runtime/dialer.py): non-blocking, closed again on any failure;
a TCP connect is given up after its timeout (the dialer's connect-timeout=)."""

from __future__ import annotations

import asyncio
import socket

from ..core.addresses import TcpConnect, UnixConnect


async def connect_unix(loop: asyncio.AbstractEventLoop, address: UnixConnect) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, address.path)
    except BaseException:
        sock.close()
        raise
    return sock


async def connect_tcp(loop: asyncio.AbstractEventLoop, address: TcpConnect,
                      timeout: float) -> socket.socket:
    """A connected TCP socket to the first of the host's addresses that takes
    us, each given ``timeout`` seconds."""
    family = {"": socket.AF_UNSPEC, "4": socket.AF_INET, "6": socket.AF_INET6}[address.family.value]
    if address.bind is not None:
        family = socket.AF_INET if address.bind.ip.version == 4 else socket.AF_INET6
    infos = await loop.getaddrinfo(address.host, address.port, family=family, type=socket.SOCK_STREAM)
    error: OSError = OSError(f"{address.host}: no address")
    for fam, kind, proto, _, target in infos:
        sock = socket.socket(fam, kind, proto)
        try:
            sock.setblocking(False)
            if address.device is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, address.device.encode())
            if address.bind is not None:
                if address.bind.port is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((str(address.bind.ip), address.bind.port or 0))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await asyncio.wait_for(loop.sock_connect(sock, target), timeout)
        except asyncio.TimeoutError:
            sock.close()
            error = OSError(f"no answer within {timeout:g} s")
            continue
        except OSError as exc:
            sock.close()
            error = exc
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    raise error
