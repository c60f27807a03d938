"""Reading frames from a subflow's bytes as they arrive, into lent buffers.

Theory of operation
-------------------
The runtime reads each subflow's bytes into the buffer its reader names
(``get_buffer``) and reports how many came (``buffer_updated``).  Small
frames land in a scratch buffer lent by a :class:`ScratchPool`, and their
bodies are copied out; a large DATA body is read straight into a buffer of
its own size (or moved elsewhere by the caller: ``divert``), so in a bulk
transfer each payload byte lands once.  Headers are checked as soon as
they are in (frames.py holds the codec and the limits), before any body is
awaited or stored.
"""

from __future__ import annotations

from .errors import CloseCode, ProtocolError, UsageError
from .frames import (
    _BODY_LIMITS,
    DATA_FRAME,
    HEADER,
    HEADER_SIZE,
    HELLO_SIZE,
    MAGIC,
    Frame,
    FrameType,
    Hello,
    decode_hello,
)

SCRATCH_SIZE = 64 * 1024  # reads land here unless a frame body is being filled
EXACT_MIN = 32 * 1024  # after a body this large, read just the next header
SPARE_SCRATCH = 2  # free scratch buffers a pool keeps for the next reader

_frame = tuple.__new__  # makes a Frame (a NamedTuple) without a Python call

# FrameType by its wire value: a dict lookup per frame, not an Enum call.
_TYPES: dict[int, FrameType] = {t.value: t for t in FrameType}


class ScratchPool:
    """Scratch buffers lent to readers, each to one reader at a time.

    A reader takes one when asked where to read and gives it back once it has
    parsed what is there (copying the few bytes of an incomplete frame into
    its own buffer).  A buffer lent to a reader is never lent to another, so
    a second read on another subflow cannot overwrite bytes a first one has
    not reported yet, whatever the order of the calls (one task per subflow
    doing ``recv_into`` works as well as asyncio's BufferedProtocol, which
    pairs each get_buffer with its buffer_updated).  Memory stays small: a
    buffer per read in progress, and SPARE_SCRATCH kept free, not one per
    subflow."""

    __slots__ = ("free",)

    def __init__(self) -> None:
        self.free: list[bytearray] = []  # (FrameReader takes and gives inline: once per read)

    def take(self) -> bytearray:
        return self.free.pop() if self.free else bytearray(SCRATCH_SIZE)

    def give(self, scratch: bytearray) -> None:
        if len(self.free) < SPARE_SCRATCH:
            self.free.append(scratch)


class FrameReader:
    """Incremental frame parser for one subflow, built to read into.

    The runtime asks ``get_buffer()`` where the next bytes should go, reads
    into it, and reports the count with ``buffer_updated(n)``; then it calls
    ``take_hello()`` / ``next_frame()`` until they return None.  ``feed()``
    does the same for bytes already in hand.

    Small frames are read into a scratch buffer, taken from a
    :class:`ScratchPool` (which the readers of a session share) by
    ``get_buffer()`` and given back by the ``take_hello()``/``next_frame()``
    call that returns None, and their bodies copied out.  A body that did not arrive whole is allocated
    at its exact size and the rest of it is read straight into it, so in a
    bulk transfer (after a large body the reader asks for one header at a
    time) every payload byte lands once, where it stays until written.

    A DATA body none of whose bytes has been read yet may also be diverted
    (``divert()``): its bytes are then the caller's to move elsewhere (the
    runtime splices them from the socket to STDOUT), each step reported with
    ``skipped(n)``; ``undivert()`` gives back the rest, which comes out as a
    frame of its own marked ``continued``.

    The header is validated as soon as its 16 bytes are in, so an oversize
    length or a frame the subflow's state does not take is rejected before
    any body is awaited.  A body is set aside at its full size only once an
    eighth of it has arrived, or, right after a body read this way, if it is
    at most twice that one's size: what a peer makes us hold is never more
    than eight times what it sent.
    """

    __slots__ = ("_pool", "_scratch", "_buf", "_start", "_end", "_header", "_length", "_body",
                 "_filled", "_previous", "_exact", "_diverted", "_continued")

    def __init__(self, pool: ScratchPool | None = None) -> None:
        self._pool = pool if pool is not None else ScratchPool()
        self._scratch: bytearray | None = None  # lent by the pool, from get_buffer() to release()
        self._buf = bytearray()  # unparsed bytes are _buf[_start:_end]; _buf is ours or _scratch
        self._start = 0
        self._end = 0
        self._header: tuple[FrameType, int, int] | None = None  # (type, flags, value) awaiting body
        self._length = 0  # body length of that frame
        self._body: bytearray | None = None  # that body, when it is read into directly
        self._filled = 0  # bytes of _body that have arrived
        self._previous = 0  # size of the last body if it was large and read directly, else 0
        self._exact = False  # none of the body is here yet; get_buffer() allocates it whole
        self._diverted = False  # the body's bytes are the caller's to move (divert())
        self._continued = False  # the frame awaiting its body had its header counted earlier

    # -- bytes in --------------------------------------------------------------

    def get_buffer(self) -> memoryview:
        """Where to put the next bytes read (any number, up to its length)."""
        if self._diverted or self._exact:  # (no call on the keystroke path)
            self._settle()
        if self._body is not None:
            return memoryview(self._body)[self._filled:]
        pending = self._end - self._start
        if pending > SCRATCH_SIZE // 2:
            # Much fed and not parsed: grow our own buffer instead.
            self._append(bytes(SCRATCH_SIZE))
            self._end = pending
            return memoryview(self._buf)[pending:]
        scratch = self._scratch
        if scratch is None:
            free = self._pool.free  # (ScratchPool.take(), inline: once per read)
            scratch = self._scratch = free.pop() if free else bytearray(SCRATCH_SIZE)
        if self._buf is not scratch:
            if pending:  # (none, as after a keystroke's frame: no slice to copy)
                scratch[:pending] = self._buf[self._start : self._end]
        elif self._start:
            scratch[:pending] = scratch[self._start : self._end]
        self._buf = scratch
        self._start, self._end = 0, pending
        if self._previous:
            # In a bulk transfer: read up to the end of the next DATA header,
            # so that none of its body lands here.
            want = HEADER_SIZE if self._header is None else self._length + HEADER_SIZE
            if pending < want:
                return memoryview(scratch)[pending:want]
        # (The whole of it, as for every keystroke: one view, not a view's slice.)
        return memoryview(scratch)[pending:] if pending else memoryview(scratch)

    def buffer_updated(self, count: int) -> bool:
        """``count`` bytes were put into the buffer ``get_buffer()`` returned.

        False if they all went into a body that is still incomplete: then no
        frame can be ready, and parsing can wait for more."""
        body = self._body
        if body is not None:
            self._filled += count
            return self._filled >= len(body)
        self._end += count
        return True

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Bytes already read elsewhere (copied: the caller may reuse ``data``)."""
        view = memoryview(data).cast("B")
        self._settle()
        if self._body is not None:
            n = min(len(self._body) - self._filled, len(view))
            self._body[self._filled : self._filled + n] = view[:n]
            self._filled += n
            view = view[n:]
        if view:
            self._append(view)

    def _append(self, data: bytes | memoryview) -> None:
        """Move the unparsed bytes to the front of our own buffer and ``data``
        after them (counted as fed)."""
        self.release()
        del self._buf[self._end :]
        del self._buf[: self._start]
        self._start, self._end = 0, self._end - self._start + len(data)
        self._buf += data

    def _settle(self) -> None:
        """Bytes are about to come in: a diverted body is ours again, and a
        body awaited whole gets its buffer."""
        if self._diverted:
            self.undivert()
        if self._exact:
            self._exact = False
            self._body = bytearray(self._length)
            self._filled = 0

    def release(self) -> None:
        """Give the scratch buffer back: keep what is unparsed in our own."""
        scratch = self._scratch
        if self._start == self._end:
            if self._buf:  # the scratch buffer, or ours with everything parsed
                self._buf = bytearray()
                self._start = self._end = 0
        elif self._buf is scratch:
            self._buf = scratch[self._start : self._end]  # a copy of the few bytes left
            self._start, self._end = 0, len(self._buf)
        if scratch is not None:
            self._scratch = None
            free = self._pool.free  # (ScratchPool.give(), inline: once per read)
            if len(free) < SPARE_SCRATCH:
                free.append(scratch)

    @property
    def buffered(self) -> int:
        """Bytes held: received and not yet returned in a frame."""
        return self._end - self._start + (self._filled if self._body is not None else 0)

    # -- bodies moved by the caller ------------------------------------------------

    def pending_body(self) -> tuple[int, int] | None:
        """(offset, length) of a DATA body none of whose bytes is here yet, which
        the caller may take with divert(); otherwise None."""
        header = self._header
        if (header is None or header[0] is not DATA_FRAME or self._diverted
                or self._body is not None or self._end != self._start):
            return None
        return header[2], self._length

    @property
    def held(self) -> int:
        """Bytes of memory this reader holds (or is about to) for an
        incomplete frame: a body set aside, or unparsed bytes of our own."""
        held = len(self._body) if self._body is not None else (self._length if self._exact else 0)
        if self._buf is not self._scratch:
            held += len(self._buf)
        return held

    @property
    def pending_flags(self) -> int:
        """The flags of the frame whose body is awaited (0: none)."""
        return self._header[1] if self._header is not None else 0

    def divert(self) -> None:
        """The caller moves the pending body's bytes itself (say, straight from
        the socket to their destination) and reports each step with skipped(n).
        Its header counts as delivered: the rest, if undiverted, comes back as
        a frame with ``continued`` set."""
        if self.pending_body() is None:
            raise UsageError("divert() without a pending DATA body")
        self._diverted = True
        self._exact = False
        self._continued = True
        self._previous = self._length if self._length >= EXACT_MIN else 0
        self.release()

    @property
    def diverted(self) -> int:
        """Bytes of the diverted body still to be moved by the caller (0: none)."""
        return self._length if self._diverted else 0

    @property
    def diverted_offset(self) -> int:
        """The stream offset of the diverted body's next byte."""
        assert self._header is not None
        return self._header[2]

    def skipped(self, count: int) -> None:
        """The caller moved the diverted body's next ``count`` bytes."""
        if not 0 < count <= self.diverted:
            raise UsageError(f"skipped({count}) with {self.diverted} bytes diverted")
        assert self._header is not None
        kind, flags, value = self._header
        self._length -= count
        if self._length:
            self._header = (kind, flags, value + count)
        else:
            self._header = None
            self._diverted = self._continued = False

    def undivert(self) -> None:
        """The rest of a diverted body is read here again, as a frame of its own."""
        if self._diverted:
            self._diverted = False
            self._exact = True

    # -- frames out --------------------------------------------------------------

    def take_hello(self) -> Hello | None:
        have = self._end - self._start
        if have < HELLO_SIZE:
            # Reject junk early: whatever prefix we have must match the magic.
            prefix = bytes(self._buf[self._start : self._start + min(have, len(MAGIC))])
            if not MAGIC.startswith(prefix):
                raise ProtocolError("not a sockimux peer (bad magic)", CloseCode.NOT_SOCKIMUX)
            self.release()
            return None
        hello = decode_hello(bytes(self._buf[self._start : self._start + HELLO_SIZE]))
        self._start += HELLO_SIZE
        return hello

    def next_frame(self, accepts: frozenset[FrameType] | None = None,
                   state: object = "") -> Frame | None:
        """The next complete frame, or None (then the scratch buffer is free again).

        A frame whose type is not in ``accepts`` (when given) is refused on
        its header, as "not allowed in state ``state``" (its ``value`` if it
        has one: a SubflowState, named only when it is refused)."""
        if self._diverted or self._exact:
            return None
        body = self._body
        if body is not None:
            if self._filled < len(body):
                return None
            self._body = None
            self._previous = len(body) if len(body) >= EXACT_MIN else 0
            return self._finish(body)
        if self._header is None:
            if self._end - self._start < HEADER_SIZE:
                self.release()
                return None
            ftype, flags, reserved, length, value = HEADER.unpack_from(self._buf, self._start)
            kind = _TYPES.get(ftype)
            if kind is None:
                raise ProtocolError(f"unknown frame type {ftype}")
            if accepts is not None and kind not in accepts:
                raise ProtocolError(f"{kind.name} frame not allowed in state "
                                    f"{getattr(state, 'value', state)}")
            low, high = _BODY_LIMITS[kind]
            if not low <= length <= high:
                raise ProtocolError(
                    f"{kind.name} frame with body length {length} (allowed {low}..{high})")
            start = self._start + HEADER_SIZE
            self._start = start
            if length == 0:  # (a FIN's status is in its reserved field)
                return _frame(Frame, (kind, value, flags | reserved << 8, b"", False))
            if self._end - start >= length:
                # The whole frame is here (a keystroke's, a control frame):
                # no header kept for a body to come, no _finish() call.
                self._start = start + length
                if kind is DATA_FRAME:
                    self._previous = 0
                return _frame(Frame, (kind, value, flags, self._buf[start : start + length], False))
            self._length = length
            self._header = (kind, flags, value)
        length = self._length
        have = self._end - self._start
        if have >= length:
            start = self._start
            self._start = start + length
            if self._header[0] is DATA_FRAME:
                self._previous = 0
            return self._finish(self._buf[start : start + length])  # (a copy: one object)
        bulk = length <= 2 * self._previous and self._header[0] is DATA_FRAME
        if have == 0 and bulk:
            # In a bulk transfer, after a header read alone: the body will be
            # read straight into a buffer of its own, or diverted.
            self._exact = True
        elif have * 8 >= length or bulk:
            # Enough of the body is here: the rest goes straight into its final place.
            body = bytearray(length)
            body[:have] = memoryview(self._buf)[self._start : self._end]
            self._start = self._end
            self._body = body
            self._filled = have
        self.release()
        return None

    def _finish(self, body: bytes | bytearray) -> Frame:
        assert self._header is not None
        kind, flags, value = self._header
        self._header = None
        continued, self._continued = self._continued, False
        return _frame(Frame, (kind, value, flags, body, continued))
