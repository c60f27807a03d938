"""The far COMMAND's STDERR on its own: records, and how CommandStderr hands
them to the helpers' UNIX connections (real pipes and socketpairs, no ssh)."""

from __future__ import annotations

import asyncio
import os
import socket

from hypothesis import given
from hypothesis import strategies as st

from sockimux.remote.commandstderr import HELD_MAX, MARK, RECORD_BYTES, CommandStderr, decode, encode
from sockimux.remote.handoff import Channel
from sockimux.remote.sshstderr import LINE_MAX


@given(st.binary(max_size=9000))
def test_any_bytes_come_back_from_their_records(data: bytes) -> None:
    lines = encode(data)
    assert all(line.startswith(MARK) and line.endswith(b"\n") for line in lines)
    assert all(line.count(b"\n") == 1 and len(line) < LINE_MAX for line in lines)
    assert b"".join(decode(line) or b"" for line in lines) == data


def test_a_line_of_ssh_is_not_a_record() -> None:
    assert decode(b"ssh: connect to host x port 22: Connection refused\n") is None
    assert decode(MARK + b"not base64!\n") is None
    assert decode(MARK + b"aGk=\r\n") == b"hi"


class Helper:
    """A channel whose helper is the other end of a socketpair."""

    def __init__(self) -> None:
        self.far, self.helper = socket.socketpair()
        self.far.setblocking(False)
        self.channel = Channel(-1, -1, None, self.far)

    def received(self) -> bytes:
        self.helper.setblocking(False)
        out = b""
        while True:
            try:
                chunk = self.helper.recv(1 << 20)
            except BlockingIOError:
                return out
            if not chunk:
                return out
            out += chunk


def _decoded(raw: bytes) -> bytes:
    out = []
    for line in raw.splitlines(keepends=True):
        data = decode(line)
        assert data is not None, line
        out.append(data)
    return b"".join(out)


def test_held_until_a_channel_opens_then_kept_to_one_and_moved_when_it_closes() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        read_fd, write_fd = os.pipe()
        open_now: list[Channel] = []
        stderr = CommandStderr(loop, read_fd, lambda: open_now)
        first, second = Helper(), Helper()
        os.write(write_fd, b"before any channel\n")
        await asyncio.sleep(0.05)
        assert first.received() == b""
        open_now += [first.channel, second.channel]
        stderr.send()
        os.write(write_fd, b"one")
        await asyncio.sleep(0.05)
        assert _decoded(first.received()) == b"before any channel\none"
        assert second.received() == b""
        first.channel.close()  # its subflow ended
        open_now.remove(first.channel)
        os.write(write_fd, b"two\n")
        os.close(write_fd)
        await asyncio.wait_for(stderr.sent(), 5)
        assert _decoded(second.received()) == b"two\n"
        stderr.close()

    asyncio.run(main())


def test_with_no_helper_taking_them_the_records_held_are_bounded() -> None:
    """Nobody takes the records: COMMAND's STDERR stops being read once
    HELD_MAX is held, so COMMAND waits (its pipe fills) rather than our
    memory growing; once a helper takes them, all of it comes, in order."""
    async def main() -> None:
        loop = asyncio.get_running_loop()
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        open_now: list[Channel] = []
        stderr = CommandStderr(loop, read_fd, lambda: open_now)
        written = bytearray()
        for i in range(400):
            block = bytes([i % 251]) * 65536
            try:
                written += block[:os.write(write_fd, block)]
            except BlockingIOError:
                await asyncio.sleep(0.01)
                try:
                    written += block[:os.write(write_fd, block)]
                except BlockingIOError:
                    break
            await asyncio.sleep(0)
        assert len(written) < 4 * HELD_MAX, len(written)  # the writer was stopped
        assert stderr._held_bytes < HELD_MAX + 2 * 65536  # noqa: SLF001 (the bound itself)
        os.close(write_fd)
        helper = Helper()
        open_now.append(helper.channel)
        stderr.send()
        got = bytearray()
        ending = asyncio.ensure_future(stderr.sent())
        while not ending.done():
            got += helper.received()
            await asyncio.sleep(0.005)
        got += helper.received()
        assert _decoded(bytes(got)) == bytes(written)
        stderr.close()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_a_helper_that_takes_no_more_then_closes_hands_over_to_the_next() -> None:
    """The first helper stops taking records (its socket full), then its
    channel closes: the rest goes to the second, in order, losing at most
    the one record whose start went to the first."""
    async def main() -> None:
        loop = asyncio.get_running_loop()
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        first, second = Helper(), Helper()
        open_now = [first.channel]
        stderr = CommandStderr(loop, read_fd, lambda: open_now)
        data = bytes(range(256)) * 16384  # 4 MiB: more than a socket and HELD_MAX hold
        written = 0
        while written < len(data):
            try:
                written += os.write(write_fd, data[written:written + 65536])
            except BlockingIOError:
                break  # the first helper is full, and HELD_MAX is held
            await asyncio.sleep(0.001)
        assert written < len(data)
        before = first.received()  # what reached it: nobody read it meanwhile
        open_now[:] = [second.channel]
        first.channel.close()
        got = bytearray()
        while written < len(data):
            try:
                written += os.write(write_fd, data[written:written + 65536])
            except BlockingIOError:
                await asyncio.sleep(0.005)
            got += second.received()
        os.close(write_fd)
        ending = asyncio.ensure_future(stderr.sent())
        while not ending.done():
            got += second.received()
            await asyncio.sleep(0.005)
        got += second.received()
        head = _decoded(before[:before.rfind(b"\n") + 1])  # its last record may be cut
        tail = _decoded(bytes(got))
        assert data.startswith(head) and data.endswith(tail)
        assert 0 <= len(data) - len(head) - len(tail) <= RECORD_BYTES
        stderr.close()

    asyncio.run(asyncio.wait_for(main(), 30))
