"""The original README's first example, and the basics of the CLI."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from .harness import SOCKIMUX, Peer, require, socat_subflow


def test_readme_socat_example_verbatim(tmp_path: Path) -> None:
    """The example as written: two processes, one socat, 'hello world' arrives."""
    require("socat")
    script = f"""
    set -e
    cd {tmp_path}
    {SOCKIMUX} {tmp_path}/sockA > {tmp_path}/out.txt &
    A=$!
    echo hello world | {SOCKIMUX} {tmp_path}/sockB &
    B=$!
    while [ ! -S {tmp_path}/sockA ] || [ ! -S {tmp_path}/sockB ]; do sleep 0.05; done
    socat UNIX-CONNECT:{tmp_path}/sockA UNIX-CONNECT:{tmp_path}/sockB &
    wait $A; echo "A=$?"
    wait $B; echo "B=$?"
    cat {tmp_path}/out.txt
    """
    result = subprocess.run(["bash", "-c", script], capture_output=True, timeout=30, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["A=0", "B=0", "hello world"]
    assert not (tmp_path / "sockA").exists() and not (tmp_path / "sockB").exists()


def test_empty_streams_both_ways(tmp_path: Path) -> None:
    a = Peer(tmp_path, "a", None)
    b = Peer(tmp_path, "b", None)
    socat_subflow(a, b)
    assert a.wait(20) == 0, a.stderr()
    assert b.wait(20) == 0, b.stderr()
    assert a.out.read_bytes() == b"" and b.out.read_bytes() == b""


def test_help_teaches_usage_and_exit_codes() -> None:
    result = subprocess.run([SOCKIMUX, "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    for needle in ("SOCKET", "socat UNIX-CONNECT", "ProxyCommand", "exit codes", "--window",
                   "--stall-timeout"):
        assert needle in result.stdout


def test_version() -> None:
    result = subprocess.run([SOCKIMUX, "--version"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert result.stdout.startswith("sockimux ")


def test_bad_usage_is_one_line_and_exit_2(tmp_path: Path) -> None:
    for argv in ([], ["--window", "lots", str(tmp_path / "s")], ["--bogus", str(tmp_path / "s")],
                 ["--stall-timeout", "-1", str(tmp_path / "s")]):
        result = subprocess.run([SOCKIMUX, *argv], capture_output=True, text=True, timeout=30)
        assert result.returncode == 2, argv
        assert "Traceback" not in result.stderr
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("sockimux: "), result.stderr


@pytest.mark.parametrize("path", ["", "/tmp/" + "x" * 120])
def test_a_socket_path_that_cannot_be_one_is_bad_usage_as_with_listen(path: str) -> None:
    """SOCKET is --listen UNIX-LISTEN:SOCKET (--help): a path that cannot be
    a UNIX socket's (empty, over 107 bytes) is the same usage error, exit 2."""
    seen = []
    for argv in ([path], ["--listen", f"UNIX-LISTEN:{path}"]):
        result = subprocess.run([SOCKIMUX, *argv], capture_output=True, text=True, timeout=30,
                                stdin=subprocess.DEVNULL)
        assert result.returncode == 2, (argv, result.stderr)
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
        seen.append(result.stderr.rsplit(": ", 1)[-1])  # the reason, at the end of the line
    assert seen[0] == seen[1], seen
