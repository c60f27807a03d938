#!/usr/bin/env python3
"""Coverage-guided fuzzing of a Session receiving a hostile subflow (atheris).

The fuzz input is one hostile subflow: a few control bytes, then the bytes
the "peer" sends.  The oracle is the one the hypothesis tests use
(tests/core/test_fuzz.py, check_session_inputs): Sessions A and B are wired
in memory with fake time; A receives the bytes on a second subflow, split
and interleaved with A's own writes; A must not raise, its buffers stay
bounded, the healthy subflow stays open, and when the hostile subflow could
not change A's stream state the A<->B transfer still completes exactly.

Layout of a fuzz input::

    byte 0   config (bits 0-1: default / small window / psk / psk + small window),
             bit 2: prepend a valid HELLO from B's instance, bit 3: keep the
             subflow open afterwards (it must stall), bits 4-5: pulls (0..3)
    byte 1   split: the stream is cut every (byte 1 + 1) bytes, 0 = not cut
    byte 2   fake seconds between chunks (index into DTS)
    rest     the hostile stream (after the HELLO if bit 2 is set)

Run (see fuzz/README.md)::

    .venv/bin/pip install atheris
    .venv/bin/python fuzz/fuzz_session.py fuzz/corpus/session -max_total_time=60 \\
        -artifact_prefix=fuzz/artifacts/

An empty corpus directory is first filled with seeds from the test generators.
Every crash becomes a named regression test in tests/core/test_fuzz.py.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

import atheris  # noqa: E402

with atheris.instrument_imports(include=["sockimux"]):
    import sockimux.core.session  # noqa: F401

from tests.core.test_fuzz import (  # noqa: E402
    HostileInput,
    check_session_inputs,
    gen_frames,
    raw_hello,
)

CONFIG_NAMES = ["default", "small", "psk", "psk-small"]
DTS = [0.0, 0.0, 0.001, 0.05, 1.0]
PAYLOAD_A = bytes(range(256)) * 12  # 3072 bytes: some of it goes out on the hostile subflow
PAYLOAD_B = b"the healthy peer's stream " * 20


def decode(data: bytes) -> tuple[str, HostileInput]:
    head = data[:3].ljust(3, b"\0")
    stream = data[3:]
    config = CONFIG_NAMES[head[0] & 3]
    if head[0] & 4:
        stream = raw_hello() + stream
    step = head[1]
    cuts = list(range(step, len(stream), step)) if step else []
    pulls = (head[0] >> 4) & 3
    dt = DTS[head[2] % len(DTS)]
    return config, HostileInput(stream, cuts, pulls, dt, bool(head[0] & 8))


def test_one_input(data: bytes) -> None:
    config, inp = decode(data)
    check_session_inputs(config, [inp], PAYLOAD_A, PAYLOAD_B)


def seed_corpus(directory: Path, count: int = 64) -> None:
    rng = random.Random(1)
    for i in range(count):
        head = bytes([rng.randrange(256) | 4, rng.choice((0, 0, 1, 7, 16)), rng.randrange(5)])
        (directory / f"seed-{i:03d}").write_bytes(head + gen_frames(rng))


def main() -> None:
    for arg in sys.argv[1:]:
        path = Path(arg)
        if not arg.startswith("-") and path.is_dir() and not any(path.iterdir()):
            seed_corpus(path)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
