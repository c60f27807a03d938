"""A STDIN pipe in bulk, spooled (runtime/spool.py): when LoopInput switches to
it and back, and what the spool holds, with real pipes and sockets."""

from __future__ import annotations

import asyncio
import fcntl
import os
import select
import socket
import termios
import threading

import pytest

from sockimux.core import Extent
from sockimux.runtime import pipes, source, spool

MB = 1 << 20


def held(sp: spool.Spool) -> int:
    """Bytes the spool's chunk pipes hold."""
    total = 0
    for chunk in sp._chunks:
        total += int.from_bytes(fcntl.ioctl(chunk.r, termios.FIONREAD, b"\0\0\0\0"), "little")
    return total


@pytest.mark.parametrize(("max_chunks", "worth"),
                         [(spool.MAX_CHUNKS, True), (1, True), (spool.MAX_CHUNKS, False)])
def test_keystrokes_stay_bytes_and_only_bulk_is_spooled(monkeypatch: pytest.MonkeyPatch,
                                                         max_chunks: int, worth: bool) -> None:
    """Keystrokes through a STDIN pipe go as bytes, with no spool made; a
    writer that keeps the pipe full is spooled (Extents, the spool announced
    to the runner) once a read of SPOOL_FROM came back full; once that burst
    is over and acknowledged the spool is let go (announced gone) and
    keystrokes are bytes again.  A spool that holds all the chunks it may
    (max_chunks 1: always, its last one being kept) has the next bytes read
    instead.  Without a subflow that takes spliced pages (``worth`` False:
    channels of pipes) nothing is spooled.  Every byte arrives once, in order."""
    monkeypatch.setattr(spool, "MAX_CHUNKS", max_chunks)
    bulk = os.urandom(8 * MB)
    keys = [bytes([c]) for c in b"hello"]

    async def main() -> tuple[list[bytes | Extent], list[object], bytes, bool]:
        loop = asyncio.get_running_loop()
        r, w = os.pipe()
        got: list[bytes | Extent] = []
        data = bytearray()
        acked = [0]
        announced: list[object] = []
        arrived = asyncio.Event()

        def on_data(piece: bytes | Extent) -> None:
            got.append(piece)
            if isinstance(piece, Extent):
                assert reader.spool is not None
                back = reader.spool.read_extent(piece)
                assert back is not None and piece.position == len(data)
                data.extend(back)
            else:
                data.extend(piece)
            acked[0] = len(data)  # the peer acknowledges at once
            reader.set_room(16 * MB)  # as the runner does after its step
            arrived.set()

        async def until(size: int) -> None:
            while len(data) < size:
                arrived.clear()
                await asyncio.wait_for(arrived.wait(), 20)

        reader = source.LoopInput(loop, r, on_data, lambda error: None)
        reader.spool_with(lambda: acked[0], announced.append, lambda: worth)
        await reader.start()
        reader.set_room(16 * MB)
        for key in keys:
            os.write(w, key)
            await until(len(data) + 1)
        made_for_keys = reader.spool is not None or bool(announced)
        writer = threading.Thread(target=os.write, args=(w, bulk))
        writer.start()
        await until(len(keys) + len(bulk))
        writer.join()
        for key in keys:
            os.write(w, key)
            await until(len(data) + 1)
        os.close(w)
        reader.set_room(16 * MB)
        return got, announced, bytes(data), made_for_keys

    got, announced, data, made_for_keys = asyncio.run(main())
    keys_bytes = b"".join(keys)
    assert data == keys_bytes + bulk + keys_bytes
    assert not made_for_keys
    assert got[:len(keys)] == keys and got[-len(keys):] == keys  # keystrokes: bytes, one each
    extents = [p for p in got if isinstance(p, Extent)]
    if not worth:
        assert not extents and not announced
    elif max_chunks == 1:  # full once it holds a chunk: the next bulk bytes are read
        assert isinstance(announced[0], spool.Spool) and announced[-1] is None
        assert any(isinstance(a, Extent) and not isinstance(b, Extent) and len(b) >= source.SPOOL_FROM
                   for a, b in zip(got, got[1:], strict=False))
    else:
        assert isinstance(announced[0], spool.Spool) and announced[-1] is None
        assert sum(map(len, extents)) > len(bulk) // 2  # most of the bulk went by the spool


def test_the_spool_holds_only_what_is_not_acknowledged() -> None:
    """However long the stream, the spool's pipes hold what the peer has not
    acknowledged and at most two chunks more; what it holds reads back and
    sends (splice into a socket) exactly, from any offset in it."""
    payload = os.urandom(40 * MB)
    sp = spool.Spool.create(lambda message: None)
    assert sp is not None
    r, w = os.pipe()
    fcntl.fcntl(w, pipes.F_SETPIPE_SZ, MB)
    os.set_blocking(r, False)
    writer = threading.Thread(target=os.write, args=(w, payload))
    writer.start()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    lag = 3 * MB  # what is not acknowledged yet
    offset, most, fds = 0, 0, set()
    try:
        while offset < len(payload):
            select.select([r], [], [], 10)
            try:
                moved = sp.fill(r, offset, MB)
            except BlockingIOError:
                continue
            offset += moved
            acked = max(0, offset - lag)
            sp.release(acked)
            most = max(most, held(sp))
            fds.add(len(sp._chunks) + len(sp._free))
            # what is held reads back exactly, from the middle of a chunk too
            start = acked + (offset - acked) // 3
            assert sp.read_extent(Extent(start, offset - start)) == payload[start:offset]
        piece = Extent(len(payload) - 2 * MB + 12345, 100000)
        assert sp.send(ours.fileno(), piece) == piece.length
        assert theirs.recv(piece.length, socket.MSG_WAITALL) == payload[piece.position:][:piece.length]
    finally:
        writer.join()
        os.close(r)
        os.close(w)
        ours.close()
        theirs.close()
        sp.close()
    assert lag <= most <= lag + 2 * spool.CHUNK
    assert max(fds) <= lag // spool.CHUNK + 3  # pipes held, the free ones with them


def test_a_full_spool_has_bytes_read_until_a_chunk_is_acknowledged(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A spool holding MAX_CHUNKS takes nothing more (fill() says -1: the
    caller reads those bytes) until the peer has acknowledged a chunk whole."""
    monkeypatch.setattr(spool, "MAX_CHUNKS", 2)
    sp = spool.Spool.create(lambda message: None)
    assert sp is not None
    r, w = os.pipe()
    fcntl.fcntl(w, pipes.F_SETPIPE_SZ, MB)
    try:
        offset = 0
        for _ in range(2):
            os.write(w, os.urandom(MB))
            offset += sp.fill(r, offset, MB)
        assert offset == 2 * MB and len(sp._chunks) == 2
        os.write(w, b"x" * MB)
        assert sp.fill(r, offset, MB) == -1
        sp.release(MB - 1)  # not the first chunk whole
        assert sp.fill(r, offset, MB) == -1
        sp.release(MB)
        assert sp.fill(r, offset, MB) == MB and len(sp._chunks) == 2
        assert sp.read_extent(Extent(offset, MB)) == b"x" * MB
    finally:
        os.close(r)
        os.close(w)
        sp.close()


def test_the_spool_keeps_what_a_connection_still_holds_to_send() -> None:
    """An acknowledged range may still be held by a connection (the rest of
    a head-of-line copy whose original arrived first: its header is out, so
    its bytes must follow).  The spool lets go only below both what the peer
    acknowledged and what any connection holds; before, only the first
    counted, and a held Extent's chunk could be emptied under it."""
    from sockimux.core import Session
    from sockimux.runtime.runner import Runner

    class Holding:
        def __init__(self, held: list[object]) -> None:
            self.held = held

    async def main() -> list[int]:
        runner = Runner(Session(os.urandom(16), 0.0), os.open(os.devnull, os.O_RDONLY),
                        os.open(os.devnull, os.O_WRONLY))
        runner.session.sender.acked = 5 * MB
        seen = [runner._spool_keeps()]
        runner.connections[1] = Holding([b"header", Extent(3 * MB, 1000)])  # type: ignore[assignment]
        runner.connections[2] = Holding([Extent(4 * MB, 10), b"x"])  # type: ignore[assignment]
        seen.append(runner._spool_keeps())
        runner.connections[1].held = []
        seen.append(runner._spool_keeps())
        return seen

    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(main()) == [5 * MB, 3 * MB, 4 * MB]
    finally:
        loop.close()
