"""The stream end to end: many subflows, joining at any time, full duplex, end of stream."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from .harness import SOCKIMUX, Peer, random_file, require, sha256_file, socat_subflow, wait_for

MB = 1 << 20


def _pair(tmp: Path, a_in: Path | None, b_in: Path | None) -> tuple[Peer, Peer]:
    require("socat")
    return Peer(tmp, "a", a_in), Peer(tmp, "b", b_in)


def check_both_ways(a: Peer, b: Peer, a_in: Path, b_in: Path) -> None:
    """Both exit 0 having written each other's input exactly, with no traceback."""
    assert a.wait(120) == 0, a.stderr()
    assert b.wait(120) == 0, b.stderr()
    assert sha256_file(b.out) == sha256_file(a_in)
    assert sha256_file(a.out) == sha256_file(b_in)
    assert "Traceback" not in a.stderr() + b.stderr()


@pytest.mark.parametrize("subflows", [1, 24, 128])
def test_full_duplex_over_n_subflows(tmp_path: Path, subflows: int) -> None:
    size_a, size_b = (24 * MB, 16 * MB) if subflows == 24 else (8 * MB, 6 * MB)
    a_in = random_file(tmp_path / "a.in", size_a, seed=subflows)
    b_in = random_file(tmp_path / "b.in", size_b, seed=subflows + 1)
    a, b = _pair(tmp_path, a_in, b_in)
    relays = [socat_subflow(a, b) for _ in range(subflows)]
    try:
        check_both_ways(a, b, a_in, b_in)
    finally:
        a.close(), b.close()
        for r in relays:
            r.kill()


MOVED = re.compile(r"received (\d+) written \((\d+) of them moved straight to STDOUT, "
                   r"(\d+) held in pipes until their turn\)")


@pytest.mark.parametrize(("subflows", "pipe"), [(1, 1 << 20), (4, 1 << 20), (1, 0), (1, None)])
def test_stdout_pipe_gets_bodies_spliced_from_the_subflows(tmp_path: Path, subflows: int,
                                                         pipe: int | None) -> None:
    """STDOUT a pipe (made 1 MiB by the reader, or of the default 64 KiB,
    which sockimux grows) or a regular file (``pipe`` None, spliced through
    a pipe of sockimux's own): DATA bodies that continue the stream are
    spliced to it from the subflow sockets, the rest read as usual, and the
    stream is exact."""
    require("socat")
    a_in = random_file(tmp_path / "a.in", 64 * MB, seed=subflows)
    b_in = random_file(tmp_path / "b.in", 8 * MB, seed=subflows + 1)
    a = Peer(tmp_path, "a", a_in, "-v", stdout_pipe=pipe)
    b = Peer(tmp_path, "b", b_in, "-v", stdout_pipe=pipe)
    relays = [socat_subflow(a, b) for _ in range(subflows)]
    try:
        check_both_ways(a, b, a_in, b_in)
        found = MOVED.search(b.stderr())
        assert found, b.stderr()
        written, moved, parked = map(int, found.groups())
        assert written == 64 * MB
        if pipe != 0 and subflows == 1:
            assert moved > 0, b.stderr()
        if subflows > 1:  # bodies ahead of their turn wait in pipes, not in memory
            assert parked > 0, b.stderr()
        # Otherwise how much is spliced depends on timing (a full pipe hands the
        # rest of a body back to the usual reads), but the stream must be exact.
        assert moved + parked <= written
    finally:
        a.close(), b.close()
        for r in relays:
            r.kill()


@pytest.mark.parametrize("when", ["before_data", "while_flowing", "after_stdin_ended"])
def test_subflows_join_at_any_time(tmp_path: Path, when: str) -> None:
    require("socat")
    size = 12 * MB
    payload = random_file(tmp_path / "p.in", size, seed=7)
    a = Peer(tmp_path, "a", None, stdin_pipe=True)
    b = Peer(tmp_path, "b", None)
    relays = []
    assert a.proc.stdin is not None
    try:
        data = payload.read_bytes()
        if when == "before_data":
            relays.append(socat_subflow(a, b))
            time.sleep(0.2)
        if when == "while_flowing":
            relays.append(socat_subflow(a, b))
            a.proc.stdin.write(data[: size // 2])
            a.proc.stdin.flush()
            wait_for(lambda: b.out.stat().st_size > 0, 20, "data to flow")
            relays += [socat_subflow(a, b) for _ in range(3)]
            a.proc.stdin.write(data[size // 2 :])
        else:
            # Before any subflow exists (after_stdin_ended) the data waits for one.
            a.proc.stdin.write(data)
        a.proc.stdin.close()
        if when == "after_stdin_ended":
            time.sleep(0.3)
            assert b.out.stat().st_size == 0
            relays += [socat_subflow(a, b) for _ in range(2)]
        assert a.wait(60) == 0, a.stderr()
        assert b.wait(60) == 0, b.stderr()
        assert sha256_file(b.out) == sha256_file(payload)
    finally:
        a.close(), b.close()
        for r in relays:
            r.kill()


def test_half_close_keeps_receiving(tmp_path: Path) -> None:
    """A finishes sending at once; B keeps sending for a while; A receives it all."""
    a = Peer(tmp_path, "a", None)  # empty input: A's direction ends immediately
    b = Peer(tmp_path, "b", None, stdin_pipe=True)
    relays = [socat_subflow(a, b) for _ in range(3)]
    assert b.proc.stdin is not None
    try:
        chunks = [bytes([i]) * 100_000 for i in range(20)]
        for chunk in chunks:
            b.proc.stdin.write(chunk)
            b.proc.stdin.flush()
            time.sleep(0.02)
        wait_for(lambda: a.out.stat().st_size == 2_000_000, 20, "B's stream at A")
        assert a.proc.poll() is None  # A still running: B's stream has not ended
        b.proc.stdin.close()
        assert a.wait(20) == 0, a.stderr()
        assert b.wait(20) == 0, b.stderr()
        assert a.out.read_bytes() == b"".join(chunks)
        assert b.out.read_bytes() == b""
    finally:
        a.close(), b.close()
        for r in relays:
            r.kill()


def test_pipeline_consumer_sees_eof(tmp_path: Path) -> None:
    """`... | sha256sum` finishes: STDOUT is closed after the last byte."""
    payload = random_file(tmp_path / "p.in", 5 * MB, seed=3)
    a_sock, b_sock = tmp_path / "a.sock", tmp_path / "b.sock"
    script = (f"{SOCKIMUX} {a_sock} < {payload} > /dev/null & "
              f"{SOCKIMUX} {b_sock} < /dev/null | sha256sum & "
              f"while [ ! -S {a_sock} ] || [ ! -S {b_sock} ]; do sleep 0.05; done; "
              f"socat UNIX-CONNECT:{a_sock} UNIX-CONNECT:{b_sock} & wait")
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert result.stdout.split()[0] == sha256_file(payload), result.stderr


def test_consumer_closing_early_ends_both_sides(tmp_path: Path) -> None:
    """`| head -c 10`: both sides end with documented codes, no traceback, no hang."""
    payload = random_file(tmp_path / "p.in", 64 * MB, seed=4)
    a_sock, b_sock = tmp_path / "a.sock", tmp_path / "b.sock"
    script = (f"( {SOCKIMUX} {a_sock} < {payload} > /dev/null 2> {tmp_path}/a.err; "
              f"echo A=$? > {tmp_path}/a.rc ) & "
              f"{{ {SOCKIMUX} {b_sock} < /dev/null 2> {tmp_path}/b.err; echo B=$? > {tmp_path}/b.rc; }} "
              f"| head -c 10 > {tmp_path}/head.out & "
              f"while [ ! -S {a_sock} ] || [ ! -S {b_sock} ]; do sleep 0.05; done; "
              f"socat UNIX-CONNECT:{a_sock} UNIX-CONNECT:{b_sock} & wait")
    subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert (tmp_path / "head.out").read_bytes() == payload.read_bytes()[:10]
    assert (tmp_path / "b.rc").read_text().strip() == "B=4", (tmp_path / "b.err").read_text()
    assert (tmp_path / "a.rc").read_text().strip() == "A=5", (tmp_path / "a.err").read_text()
    errors = (tmp_path / "a.err").read_text() + (tmp_path / "b.err").read_text()
    assert "Traceback" not in errors
    assert "STDOUT closed" in (tmp_path / "b.err").read_text()
