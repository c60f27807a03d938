"""The near side's opening of ssh connections (remote/near.py) against the
private sshd and a loopback far side: sockets ready for the runtime, and
failures told apart (fatal or worth re-opening)."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

import pytest

from sockimux.remote.near import FarTarget, OpenConnection, OpenFailed, _read_preamble, kill, open_connection

from .harness import require
from .test_ssh_example import Sshd, sshd  # noqa: F401 (the fixture)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except FileNotFoundError:
        return False


def _target(server: Sshd, far_args: list[str]) -> FarTarget:
    return FarTarget("127.0.0.1", ["-F", str(server.client_config)], far_args=far_args, ssh=require("ssh"))


async def _echo(conn: OpenConnection, size: int) -> None:
    loop = asyncio.get_running_loop()
    data = os.urandom(size)
    send = loop.create_task(loop.sock_sendall(conn.sock, data))
    got = bytearray()
    while len(got) < size:
        chunk = await asyncio.wait_for(loop.sock_recv(conn.sock, 1 << 16), 20)
        assert chunk, f"the channel ended after {len(got)} bytes"
        got += chunk
    await send
    assert got == data


def test_n_connections_become_sockets_carrying_bytes(sshd: Sshd) -> None:  # noqa: F811
    async def main() -> int:
        target = _target(sshd, ["--loopback", "--idle-timeout", "2"])
        first = await open_connection(target)
        assert target.info is not None
        more = await asyncio.gather(*(open_connection(target) for _ in range(3)))
        conns = [first, *more]
        assert all(c.sock.family == socket.AF_UNIX for c in conns)
        await asyncio.gather(*(_echo(c, 1 << 20) for c in conns))
        for c in conns:
            c.sock.shutdown(socket.SHUT_WR)
            assert await asyncio.wait_for(asyncio.get_running_loop().sock_recv(c.sock, 1), 10) == b""
            assert await asyncio.wait_for(c.process.wait(), 10) == 0
            c.sock.close()
        return target.info.pid

    pid = asyncio.run(main())
    deadline = time.monotonic() + 10
    while _alive(pid):
        assert time.monotonic() < deadline, "the far side did not idle out"
        time.sleep(0.05)


def test_the_subflows_first_bytes_right_after_the_preamble_are_not_lost() -> None:
    """The far side may write right after its preamble: we take exactly the line."""
    async def main() -> bytes:
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        process = await asyncio.create_subprocess_exec(require("true"))
        theirs.sendall(b"sockimux-far 1 pid=9 socket=/tmp/x/s\nFIRST-BYTES")
        info = await _read_preamble(ours, process, 5)
        assert info.pid == 9
        await process.wait()
        rest = await asyncio.get_running_loop().sock_recv(ours, 100)
        ours.close()
        theirs.close()
        return rest

    assert asyncio.run(main()) == b"FIRST-BYTES"


@pytest.mark.parametrize("case", ["gone", "no-python", "not-sockimux", "no-sshd"])
def test_failures_say_whether_reopening_can_help(sshd: Sshd, case: str, tmp_path: Path) -> None:  # noqa: F811
    async def main() -> OpenFailed:
        target = _target(sshd, ["--loopback", "--idle-timeout", "1"])
        if case == "gone":
            first = await open_connection(target)
            kill(first)
            await first.process.wait()
            assert target.info is not None
            while _alive(target.info.pid):
                await asyncio.sleep(0.05)
        elif case == "no-python":
            target.python = ("/nonexistent/python3",)
        elif case == "not-sockimux":
            target.python = ("echo",)
        else:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            target.ssh_options = [*target.ssh_options, "-p", str(port)]
        with pytest.raises(OpenFailed) as failed:
            await open_connection(target, timeout=20)
        return failed.value

    error = asyncio.run(main())
    assert error.fatal == (case != "no-sshd"), error
    expected = {"gone": "is gone", "no-python": "no python3", "not-sockimux": "not a sockimux far side",
                "no-sshd": "ssh failed"}[case]
    assert expected in str(error), error


SHORT_OF_DESCRIPTORS = """
import asyncio, os, resource, sys
import uvloop
from sockimux.remote.near import FarTarget, OpenFailed, open_connection

async def main():
    target = FarTarget("127.0.0.1", ["-F", "/dev/null"], ssh=sys.argv[1])
    lowest_free = os.dup(0)
    os.close(lowest_free)
    # Room for the channel's socketpair, none for what starting ssh needs.
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free + 2, hard))
    try:
        await open_connection(target, timeout=20)
    except OpenFailed as e:
        print("fatal" if e.fatal else "may pass", e)
    except OSError as e:
        print("may pass", e)
    else:
        print("opened")

uvloop.run(main())
"""


def test_short_of_descriptors_to_start_ssh_may_pass() -> None:
    """EMFILE while starting an ssh is the moment's shortage (ulimit -n, other
    subflows holding descriptors), not a command that cannot be run: it must
    not stop the address for good (it did: exit 8, or no re-open ever after)."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", SHORT_OF_DESCRIPTORS, require("ssh")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("may pass") and "Too many open files" in run.stdout, run
