#!/usr/bin/env python3
"""Coverage-guided fuzzing of FrameReader (atheris).

The oracle is tests/core/test_fuzz.py's check_reader_input: the bytes are fed
to a fresh reader whole, split, and split with DATA bodies diverted (moved
"elsewhere" by the caller, and handed back at random); only ProtocolError
may escape, every way gives the same frames and the same error, and what
stays buffered is at most one incomplete frame.

Layout of a fuzz input::

    byte 0   bit 0: the stream starts with a HELLO (take_hello first);
             bits 1-7: cut the stream every n bytes (0 = whole)
    rest     the stream

Run: .venv/bin/python fuzz/fuzz_frames.py fuzz/corpus/frames -max_total_time=60
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

import atheris  # noqa: E402

with atheris.instrument_imports(include=["sockimux"]):
    import sockimux.core.frames  # noqa: F401
    import sockimux.core.reader  # noqa: F401  (the reader moved out of frames.py)

from tests.core.test_fuzz import check_reader_input, gen_reader_input  # noqa: E402


def test_one_input(data: bytes) -> None:
    head = data[0] if data else 0
    stream = data[1:]
    step = head >> 1
    cuts = list(range(step, len(stream), step)) if step else []
    check_reader_input(stream, cuts, bool(head & 1))


def seed_corpus(directory: Path, count: int = 64) -> None:
    rng = random.Random(1)
    for i in range(count):
        stream, _cuts, with_hello = gen_reader_input(rng)
        head = (rng.choice((0, 1, 3, 16)) << 1) | with_hello
        (directory / f"seed-{i:03d}").write_bytes(bytes([head]) + stream)


def main() -> None:
    for arg in sys.argv[1:]:
        path = Path(arg)
        if not arg.startswith("-") and path.is_dir() and not any(path.iterdir()):
            seed_corpus(path)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
