"""The Python API (sockimux.open_session): real sessions on real sockets,
on plain asyncio and on uvloop.  Two sessions in this process, joined by a
UNIX listener and a dialer; this process against a ./sockimux process;
back-pressure (a reader that stops reading holds the far writer back); a
subflow killed mid-stream."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import threading
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import uvloop

import sockimux
from sockimux import Outcome, SessionConfig, SessionError, Stream

from ..e2e.harness import SOCKIMUX
from ..e2e.hostile_peer import ABORT, PING, HostilePeer, frame

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "uvloop": uvloop.new_event_loop, "asyncio": asyncio.new_event_loop}
SMALL = SessionConfig(window=64 * 1024)  # the CLI's smallest --window


def run(make_loop: Callable[[], asyncio.AbstractEventLoop], main: Awaitable[None],
        timeout: float = 60.0) -> None:
    loop = make_loop()
    try:
        loop.run_until_complete(asyncio.wait_for(main, timeout))
    finally:
        loop.close()


def internal_errors(*streams: Stream) -> str:
    """The tracebacks of the streams' sessions that ended with a bug: a peer's
    shows only as "internal error in the peer" on the other side."""
    found = []
    for stream in streams:
        task = stream._task
        failure = task.exception() if task.done() and not task.cancelled() else None
        if failure is not None:
            found.append("".join(traceback.format_exception(failure)))
    return "\n".join(found) or "no internal error in these sessions"


async def send_all(stream: Stream, data: bytes, piece: int = 100_000) -> None:
    for at in range(0, len(data), piece):
        stream.write(data[at:at + piece])
        await stream.drain()
    stream.write_eof()


async def read_all(stream: Stream) -> bytes:
    parts = []
    while chunk := await stream.read(65536):
        parts.append(chunk)
    return b"".join(parts)


async def exchange(a: Stream, b: Stream, size: int) -> None:
    """Both ways at once; each side gets exactly what the other sent."""
    to_b, to_a = os.urandom(size), os.urandom(size // 3 + 1)
    got = await asyncio.gather(send_all(a, to_b), send_all(b, to_a), read_all(a), read_all(b))
    assert got[2] == to_a
    assert got[3] == to_b


@pytest.mark.parametrize("loop", LOOPS)
def test_two_sessions_in_one_process(tmp_path: Path, loop: str) -> None:
    path = tmp_path / "a.sock"

    async def main() -> None:
        async with sockimux.open_session(listen=[f"UNIX-LISTEN:{path}"]) as a, \
                sockimux.open_session(connect=[f"UNIX-CONNECT:{path},count=3"]) as b:
            await exchange(a, b, 3_000_000)
            seen = a.stats(), b.stats()
            outcomes = await asyncio.gather(a.close(), b.close())
        assert outcomes == [Outcome.DONE, Outcome.DONE]
        # Each side's snapshot counts what the application read of the other's stream.
        assert [snap.written for snap in seen] == [3_000_000 // 3 + 1, 3_000_000], seen
        # ...and the DATA bytes (headers included) its subflows carried of its own stream.
        assert seen[0].data_out >= 3_000_000 and seen[1].data_out >= 3_000_000 // 3 + 1, seen
        for snap in seen:  # (the dialer staggers its starts: the session may end before all 3)
            assert 1 <= snap.established <= 3, snap
            assert json.loads(json.dumps(snap.as_dict()))["written"] == snap.written
        assert not path.exists()  # the listener removed its socket

    run(LOOPS[loop], main())


def test_against_a_sockimux_process(tmp_path: Path) -> None:
    """The API listens; a ./sockimux process connects, its STDIO piped here."""
    path = tmp_path / "a.sock"
    to_peer, from_peer = os.urandom(2_000_000), os.urandom(1_500_000)
    peer_in = tmp_path / "in"
    peer_in.write_bytes(from_peer)

    async def main() -> None:
        async with sockimux.open_session(listen=[f"UNIX-LISTEN:{path}"]) as stream:
            with open(peer_in, "rb") as stdin:
                peer = await asyncio.create_subprocess_exec(
                    SOCKIMUX, "--connect", f"UNIX-CONNECT:{path},count=4", stdin=stdin,
                    stdout=asyncio.subprocess.PIPE)
            assert peer.stdout is not None

            async def peer_output() -> bytes:
                assert peer.stdout is not None
                return await peer.stdout.read()

            got = await asyncio.gather(send_all(stream, to_peer), read_all(stream), peer_output())
            assert got[1] == from_peer
            assert hashlib.sha256(got[2]).digest() == hashlib.sha256(to_peer).digest()
            assert await stream.close() is Outcome.DONE
            assert await peer.wait() == 0

    run(asyncio.new_event_loop, main())


@pytest.mark.parametrize("loop", LOOPS)
def test_a_reader_that_stops_holds_the_writer_back(tmp_path: Path, loop: str) -> None:
    """A reads nothing: B can hand its session about A's window (unread, not
    acknowledged) plus its own send buffer, then drain() waits; once A reads,
    everything arrives intact."""
    path = tmp_path / "a.sock"
    window = SMALL.window
    data = os.urandom(8 * 1024 * 1024)

    async def main() -> None:
        async with sockimux.open_session(listen=[f"UNIX-LISTEN:{path}"], config=SMALL) as a, \
                sockimux.open_session(connect=[f"UNIX-CONNECT:{path},count=2"], config=SMALL) as b:
            taken = 0

            async def writer() -> None:
                nonlocal taken
                for at in range(0, len(data), 16384):
                    b.write(data[at:at + 16384])
                    await b.drain()
                    taken = at + 16384
                b.write_eof()

            task = asyncio.ensure_future(writer())
            await asyncio.sleep(1.0)
            held = taken
            await asyncio.sleep(1.0)
            assert taken == held, "the writer went on while nobody read"
            # A's window unread + B's send buffer, + one piece of slack.
            assert 0 < held <= 2 * window + 16384, held
            received = await read_all(a)
            await task
            assert received == data
            a.write_eof()
            assert await b.read() == b""
            assert await asyncio.gather(a.close(), b.close()) == [Outcome.DONE, Outcome.DONE]

    run(LOOPS[loop], main())


@pytest.mark.parametrize("loop", LOOPS)
def test_subflows_killed_mid_stream(tmp_path: Path, loop: str) -> None:
    """While 24 MB flow (read at a bounded pace), one of the two subflows'
    sockets is reset every 2 MB, on either side in turn, once the dialer
    has brought the last one back: the other carries on, the dialer
    re-opens it, and the bytes arrive intact both ways."""
    path = tmp_path / "a.sock"
    to_a, to_b = os.urandom(24_000_000), os.urandom(8_000_000)

    async def main() -> None:
        async with sockimux.open_session(listen=[f"UNIX-LISTEN:{path}"]) as a, \
                sockimux.open_session(connect=[f"UNIX-CONNECT:{path},count=2"]) as b:
            kills = 0

            def kill() -> bool:
                nonlocal kills
                runner = (a, b)[kills % 2]._runner
                live = [c for c in runner.connections.values()
                        if c.transport is not None and not c.transport.is_closing()]
                if len(live) < 2:
                    return False  # the last one killed is not back yet
                assert live[0].transport is not None
                live[0].transport.abort()  # its real socket, reset mid-stream
                kills += 1
                return True

            async def read_killing(stream: Stream) -> bytes:
                parts, size, next_kill = [], 0, 2_000_000
                while chunk := await stream.read(65536):
                    parts.append(chunk)
                    size += len(chunk)
                    if size >= next_kill and size < len(to_a) - 2_000_000 and kill():
                        next_kill = size + 2_000_000
                    await asyncio.sleep(0.005)  # time for the dialer to re-open
                return b"".join(parts)

            try:
                got = await asyncio.gather(send_all(b, to_a), send_all(a, to_b),
                                           read_killing(a), read_all(b))
            except SessionError as exc:  # name the bug, whichever side had it
                raise AssertionError(f"{exc}\n{internal_errors(a, b)}") from exc
            assert got[2] == to_a
            assert got[3] == to_b
            assert kills >= 3, kills  # more than were ever opened at once: re-opened
            # Stream.stats() has the dialer's side of it: each kill lost one of
            # b's subflows, each came back by a re-open (the listener never refuses).
            (dialed,) = b.stats().addresses
            assert (dialed.label, dialed.count, dialed.lost) == (f"UNIX-CONNECT:{path}", 2, kills)
            assert dialed.reopens == dialed.attempts - 2 >= kills - 1
            assert kills + 1 <= dialed.established <= dialed.attempts, dialed
            assert dialed.last_end is not None and dialed.last_end.startswith("connection lost")
            assert dialed.stopped is None and a.stats().addresses == ()  # a only listens
            assert await asyncio.gather(a.close(), b.close()) == [Outcome.DONE, Outcome.DONE]

    run(LOOPS[loop], main(), timeout=120)


def test_errors_are_the_librarys_own(tmp_path: Path) -> None:
    async def main() -> None:
        with pytest.raises(sockimux.LocalError):  # AddressError
            await sockimux.open_session(listen=["NOPE:1"])
        with pytest.raises(sockimux.LocalError):
            await sockimux.open_session(listen=[f"UNIX-LISTEN:{tmp_path}/no/such/dir/a.sock"])
        # The peer aborts: our read says so with the outcome.
        path = tmp_path / "a.sock"
        a = await sockimux.open_session(listen=[f"UNIX-LISTEN:{path}"])
        b = await sockimux.open_session(connect=[f"UNIX-CONNECT:{path}"])
        b.write(b"x")
        assert await a.read(1) == b"x"
        b.abort()
        with pytest.raises(SessionError) as caught:
            while await a.read():
                pass
        assert caught.value.outcome is Outcome.PEER_ABORTED
        assert isinstance(caught.value, sockimux.SockimuxError)
        with pytest.raises(SessionError):
            await b.close()

    run(asyncio.new_event_loop, main())


def test_the_documented_example(tmp_path: Path) -> None:
    """docs/API.md's complete example, as written there, server and client
    as two processes."""
    text = (Path(__file__).parents[2] / "docs" / "API.md").read_text()
    example = text[text.index("# echo_upper.py"):]
    example = example[:example.index("```")]
    sock = tmp_path / "example.sock"
    script = tmp_path / "echo_upper.py"
    script.write_text(example.replace("/tmp/sockimux-example.sock", str(sock)))
    server = subprocess.Popen([sys.executable, str(script), "server"])
    try:
        client = subprocess.run([sys.executable, str(script), "client"], capture_output=True,
                                timeout=30, check=False)
        assert client.returncode == 0, client.stderr
        assert client.stdout == b"HELLO\nOVER MANY SUBFLOWS\n"
        assert server.wait(timeout=10) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_closing_before_the_end_gives_the_stream_up(tmp_path: Path) -> None:
    """close() before the peer's stream ended: as a STDOUT that goes away
    (OUTPUT_CLOSED here, the peer told: PEER_ABORTED there)."""
    path = tmp_path / "a.sock"

    async def main() -> None:
        a = await sockimux.open_session(listen=[f"UNIX-LISTEN:{path}"])
        b = await sockimux.open_session(connect=[f"UNIX-CONNECT:{path}"])
        a.write(os.urandom(1_000_000))
        assert await b.read(1)
        with pytest.raises(SessionError) as here:
            await b.close()
        assert here.value.outcome is Outcome.OUTPUT_CLOSED
        with pytest.raises(SessionError) as there:
            await a.close()
        assert there.value.outcome is Outcome.PEER_ABORTED

    run(asyncio.new_event_loop, main())


@pytest.mark.parametrize("loop", LOOPS)
def test_frames_arriving_after_an_abort_raise_nothing_in_the_loop(tmp_path: Path, loop: str) -> None:
    """The application aborts; while the runner waits for the peer to close,
    the peer still sends (a PING, owed a PONG): nothing more is written on
    the half-closed subflow, and no error reaches the loop's exception
    handler (which would print a traceback in the application's log)."""
    path = tmp_path / "a.sock"
    errors: list[str] = []

    opened = threading.Event()

    def peer_talks_after_our_abort() -> None:
        peer = HostilePeer(path)
        peer.open()
        opened.set()
        peer.expect(ABORT, timeout=20.0)  # we have written our last frames and our end
        peer.send(frame(PING, 7))
        assert peer.closed(timeout=10.0)
        peer.close()

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(
            lambda _loop, context: errors.append(str(context.get("exception"))))
        stream = await sockimux.open_session(listen=[f"UNIX-LISTEN:{path}"])
        loop = asyncio.get_running_loop()
        peer = loop.run_in_executor(None, peer_talks_after_our_abort)
        assert await loop.run_in_executor(None, opened.wait, 20.0), "the peer's subflow never opened"
        stream.abort()
        with pytest.raises(SessionError) as caught:
            await stream.close()
        assert caught.value.outcome is Outcome.INTERRUPTED
        await peer

    run(LOOPS[loop], main())
    assert errors == []


def test_reading_nothing_does_not_wait(tmp_path: Path) -> None:
    """read(0), as asyncio's StreamReader.read(0), returns b"" at once: it
    neither waits for the peer's bytes nor takes any."""
    path = tmp_path / "a.sock"

    async def main() -> None:
        async with sockimux.open_session(listen=[f"UNIX-LISTEN:{path}"]) as a, \
                sockimux.open_session(connect=[f"UNIX-CONNECT:{path}"]) as b:
            assert await asyncio.wait_for(a.read(0), 5.0) == b""  # nothing has arrived
            b.write(b"xy")
            b.write_eof()
            assert await a.read(1) == b"x"
            assert await a.read(0) == b""
            assert await a.read() == b"y"
            assert await a.read() == b""
            a.write_eof()
            assert await b.read() == b""

    run(asyncio.new_event_loop, main())


@pytest.mark.parametrize("setting", [
    {"window": 0}, {"stall_timeout": 0}, {"handshake_timeout": -1.0},
    {"stall_timeout": float("nan")}, {"handshake_timeout": float("inf")}, {"ack_delay": -0.1},
    {"alone_timeout": 0}, {"max_subflows": 0}, {"max_handshakes": 0}, {"psk": b"too short"}])
def test_a_setting_that_cannot_work_is_refused_at_once(setting: dict[str, object]) -> None:
    """SessionConfig is the API's only gate (no command line's ranges): a
    timeout of 0 refused or dropped every subflow at once, for ever, a NaN
    compared false everywhere.  The library's own error, when it is made."""
    with pytest.raises(sockimux.UsageError) as caught:
        SessionConfig(**setting)  # type: ignore[arg-type]
    assert isinstance(caught.value, sockimux.SockimuxError)
    assert next(iter(setting)) in str(caught.value)
