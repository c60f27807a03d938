"""The far side's receiving end of the hand-off, on its own (no ssh, no fork):
descriptors in over a UNIX socket, channels out to a callback."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest

from sockimux.remote.adopt import adopt_channel
from sockimux.remote.far import Echo, FarHost, make_listener
from sockimux.remote.far import main as far_main
from sockimux.remote.handoff import (
    ACCEPTED,
    Channel,
    FarInfo,
    parse_preamble,
    preamble,
)


def _fd_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


async def _hand(path: str, message: bytes, fds: list[int]) -> socket.socket:
    """What the helper does, from a thread: connect, send the descriptors."""
    def send() -> socket.socket:
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        socket.send_fds(s, [message], fds)
        return s
    return await asyncio.to_thread(send)


async def _read_line(reader: socket.socket | int) -> bytes:
    def read() -> bytes:
        line = b""
        while not line.endswith(b"\n"):
            byte = reader.recv(1) if isinstance(reader, socket.socket) else os.read(reader, 1)
            assert byte, line
            line += byte
        return line
    return await asyncio.wait_for(asyncio.to_thread(read), 5)


def _run_host(tmp_path: Path, idle: float, body: object) -> tuple[str, list[Channel]]:
    channels: list[Channel] = []
    path, listener = make_listener(str(tmp_path))

    async def main() -> None:
        host = FarHost(path, listener, idle, channels.append)
        run = asyncio.create_task(host.run())
        await body(host, path, channels)  # type: ignore[operator]
        await asyncio.wait_for(run, idle + 5)

    asyncio.run(main())
    return path, channels


def test_a_socket_and_a_pipe_pair_become_channels_and_carry_bytes(tmp_path: Path) -> None:
    async def body(host: FarHost, path: str, channels: list[Channel]) -> None:
        near, far_end = socket.socketpair()
        keeper = await _hand(path, b"1", [far_end.fileno(), far_end.fileno()])
        far_end.close()
        assert await _read_line(near) == preamble(os.getpid(), path)
        assert await asyncio.to_thread(keeper.recv, 1) == ACCEPTED
        (to_far_r, to_far_w), (from_far_r, from_far_w) = os.pipe(), os.pipe()
        keeper2 = await _hand(path, b"1", [to_far_r, from_far_w])
        os.close(to_far_r)
        os.close(from_far_w)
        assert parse_preamble(await _read_line(from_far_r)) == FarInfo(1, os.getpid(), path)
        assert await asyncio.to_thread(keeper2.recv, 1) == ACCEPTED
        assert host.open_channels == 2
        sock_channel, pipe_channel = channels
        assert sock_channel.sock is not None and pipe_channel.sock is None
        assert pipe_channel.read_fd != pipe_channel.write_fd
        loop = asyncio.get_running_loop()
        for channel, send, recv, shut in (
                (sock_channel, near.sendall, near.recv, lambda: near.shutdown(socket.SHUT_WR)),
                (pipe_channel, lambda b: os.write(to_far_w, b), lambda n: os.read(from_far_r, n),
                 lambda: os.close(to_far_w))):
            await adopt_channel(loop, Echo, channel)
            await asyncio.to_thread(send, b"ping")
            assert await asyncio.to_thread(recv, 4) == b"ping"
            shut()  # EOF: the echo closes, and the channel's helper is released
            assert await asyncio.to_thread(recv, 1) == b""
        assert await asyncio.to_thread(keeper.recv, 1) == b""
        assert await asyncio.to_thread(keeper2.recv, 1) == b""
        os.close(from_far_r)
        near.close()
        assert host.open_channels == 0

    path, _ = _run_host(tmp_path, 0.3, body)
    assert not Path(path).parent.exists()


@pytest.mark.parametrize("message,count", [(b"2", 2), (b"1", 1), (b"1", 3)])
def test_a_malformed_hand_off_is_refused_and_its_descriptors_closed(
        tmp_path: Path, message: bytes, count: int) -> None:
    async def body(host: FarHost, path: str, channels: list[Channel]) -> None:
        r, w = os.pipe()
        keeper = await _hand(path, message, [r, w, w][:count])
        os.close(r)
        # The far side closed its copies: no reader is left for this pipe.
        assert await asyncio.to_thread(keeper.recv, 1) == b"", "the helper was told ACCEPTED"
        await asyncio.sleep(0.05)
        with pytest.raises(BrokenPipeError):
            os.write(w, b"x")
        os.close(w)
        assert channels == [] and host.open_channels == 0

    _run_host(tmp_path, 0.3, body)


def test_the_far_host_stops_on_sigterm_and_removes_its_directory(tmp_path: Path) -> None:
    async def body(host: FarHost, path: str, channels: list[Channel]) -> None:
        await asyncio.sleep(0.1)
        assert Path(path).is_socket()
        os.kill(os.getpid(), 15)

    path, _ = _run_host(tmp_path, 30, body)
    assert not Path(path).parent.exists()


@pytest.mark.parametrize("line", [
    b"SSH-2.0-OpenSSH_9.2\r\n",
    b"sockimux-far 2 pid=1 socket=/tmp/x/s\n",
    b"sockimux-far 1 pid=1\n",
    b"sockimux-far 1 pid=x socket=/tmp/x/s\n",
    b"sockimux-far 1 pid=1 socket=/tmp/x/s",
    b"sockimux-far 1 pid=1 socket=/tmp/x y/s\n",
])
def test_a_line_that_is_not_our_preamble_is_refused(line: bytes) -> None:
    with pytest.raises(ValueError):
        parse_preamble(line)


def test_unknown_preamble_keys_are_ignored() -> None:
    assert parse_preamble(b"sockimux-far 1 socket=/run/user/0/sockimux-0-ab/s cpu=x86 pid=7\n") == FarInfo(
        1, 7, "/run/user/0/sockimux-0-ab/s")


@pytest.mark.parametrize("args", [["--idle-timeout", "0"], ["--idle-timeout", "x"], ["--nope"]])
def test_bad_far_arguments_are_one_line_and_exit_2(args: list[str],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        far_main(args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("sockimux[") and "far side:" in err, err


def test_a_helper_gone_before_our_answer_leaves_no_channel_open(tmp_path: Path) -> None:
    async def body(host: FarHost, path: str, channels: list[Channel]) -> None:
        r, w = os.pipe()
        out_r, out_w = os.pipe()

        def hand() -> socket.socket:
            s = socket.socket(socket.AF_UNIX)
            s.connect(path)
            s.shutdown(socket.SHUT_RD)  # our ACCEPTED cannot be sent: EPIPE, every time
            socket.send_fds(s, [b"1"], [r, out_w])
            return s

        keeper = await asyncio.to_thread(hand)
        os.close(r)
        os.close(out_w)
        assert await _read_line(out_r) == preamble(os.getpid(), path)  # written before the answer
        await asyncio.sleep(0.1)
        with pytest.raises(BrokenPipeError):
            os.write(w, b"x")  # the far side closed its copy of our pipe
        assert channels == [] and host.open_channels == 0
        for fd in (w, out_r):
            os.close(fd)
        keeper.close()

    _run_host(tmp_path, 0.3, body)
