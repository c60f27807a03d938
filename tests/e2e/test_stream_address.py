"""The stream when it is not STDIO (--stream EXEC, TCP), what the new
options refuse (exit 2) or cannot open (exit 3), and the examples of
--help and README.md, as a shell passes them on."""

from __future__ import annotations

import os
import random
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sockimux.runtime.stream_address import EXIT_WAIT

from .dialing import MB, Imux, Server, echo, free_port
from .harness import SOCKIMUX, wait_for


def _data(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def test_stream_tcp(tmp_path: Path) -> None:
    """--stream TCP: the far side carries a TCP connection (an echo server)
    instead of its STDIO; the end of our input reaches the server as a
    half close, and its end comes back."""
    server = Server(echo)
    sock = str(tmp_path / "far.sock")
    data = _data(8 * MB, 13)
    far = Imux(tmp_path, "far", "-v", sock, "--stream", f"TCP:127.0.0.1:{server.port}")
    wait_for(lambda: os.path.exists(sock) or far.proc.poll() is not None, 10, "far to listen")
    near = Imux(tmp_path, "near", "-v", "--connect", f"UNIX-CONNECT:{sock},count=2", data=data)
    try:
        assert near.wait(60) == 0, near.stderr()
        assert far.wait(60) == 0, far.stderr()
        assert near.out.read_bytes() == data
        assert far.out.read_bytes() == b""  # our STDOUT is not the stream
        assert server.accepted == 1
    finally:
        server.close()
        far.close()
        near.close()


def _exec_pair(tmp_path: Path, command: str, data: bytes) -> tuple[Imux, Imux]:
    """A far side carrying `--stream EXEC:"command"`, and a near side sending
    ``data`` to it over 3 subflows."""
    sock = str(tmp_path / "far.sock")
    far = Imux(tmp_path, "far", sock, "--stream", f"EXEC:\"{command}\"")
    wait_for(lambda: os.path.exists(sock) or far.proc.poll() is not None, 10, "far to listen")
    return far, Imux(tmp_path, "near", "--connect", f"UNIX-CONNECT:{sock},count=3", data=data)


@pytest.mark.parametrize(("command", "far_code", "said"), [
    ("cat", 0, ""),
    ("sh -c 'cat; exit 3'", 9, "the stream command ended with exit status 3"),
    ("sh -c 'cat; kill -9 $$'", 9, "the stream command was killed by signal 9"),
])
def test_stream_exec(tmp_path: Path, command: str, far_code: int, said: str) -> None:
    """--stream EXEC: the far side carries a command's STDIN/STDOUT; a
    command that fails makes the far side exit 9, naming its status, and
    the near side too, told by the FIN (all bytes delivered all the same)."""
    data = _data(8 * MB, 14)
    far, near = _exec_pair(tmp_path, command, data)
    try:
        assert near.wait(60) == far_code, near.stderr()
        assert far.wait(60) == far_code, far.stderr()
        assert near.out.read_bytes() == data
        if far_code:
            assert far.stderr().strip().endswith(said), far.stderr()
            peer_said = said.replace("the stream command", "the peer's stream command")
            assert near.stderr().strip().endswith(peer_said), near.stderr()
    finally:
        far.close()
        near.close()


@pytest.mark.parametrize(("command", "expected"), [
    ("head -c 100", lambda data: data[:100]),
    ("sh -c 'exec 0<&-; sleep 0.5; echo done'", lambda data: b"done\n"),
])
def test_a_stream_command_that_stops_reading_is_carried_to_its_end(
        tmp_path: Path, command: str, expected: Callable[[bytes], bytes]) -> None:
    """As with `ssh host COMMAND`: a command that reads only part of its input
    (or closes it at once) and then writes is no error.  What it writes after
    that comes back, and its exit ends the session on both sides (exit 0)
    though the near side's 64 MB are not all sent."""
    data = _data(64 * MB, 15)
    far, near = _exec_pair(tmp_path, command, data)
    try:
        assert near.wait(60) == 0, near.stderr()
        assert far.wait(60) == 0, far.stderr()
        assert near.out.read_bytes() == expected(data)
        assert near.stderr() == "" and far.stderr() == ""
    finally:
        far.close()
        near.close()


@pytest.mark.parametrize("command", ["sleep 60", "cat /dev/zero"])
def test_a_failed_session_ends_its_stream_command_at_once(tmp_path: Path, command: str) -> None:
    """The session fails (the peer is stopped by SIGTERM): nothing more goes
    to the command or comes from it, so it is terminated at once, not
    waited for the EXIT_WAIT s a command that was carried has to exit
    (sleep never exits by itself; cat is blocked writing to us); its
    status is not reported, the session's failure is (exit 5)."""
    sock = str(tmp_path / "far.sock")
    far = Imux(tmp_path, "far", "-v", sock, "--stream", f"EXEC:\"{command}\"")
    wait_for(lambda: os.path.exists(sock) or far.proc.poll() is not None, 10, "far to listen")
    near = Imux(tmp_path, "near", "--connect", f"UNIX-CONNECT:{sock}")
    try:
        # The subflow up (the near side's end must reach the far side as an abort).
        wait_for(lambda: "subflow 1 joined" in far.stderr() or far.proc.poll() is not None, 20,
                 "the subflow to join")
        near.proc.send_signal(signal.SIGTERM)
        assert near.wait(20) == 128 + signal.SIGTERM, near.stderr()
        ended = time.monotonic()
        assert far.wait(20) == 5, far.stderr()
        assert time.monotonic() - ended < EXIT_WAIT, far.stderr()
        assert "stream command" not in far.stderr(), far.stderr()  # (we ended it)
    finally:
        far.close()
        near.close()


@pytest.mark.parametrize(("args", "message"), [
    (["--connect", "TCP:127.0.0.1:70000"], "port must be 1-65535"),
    (["--connect", "TCP-LISTEN:7000"], "TCP-LISTEN cannot open a subflow"),
    (["--listen", "TCP:127.0.0.1:7000"], "TCP cannot listen"),
    (["--stream", "UNIX-LISTEN:/tmp/x"], "UNIX-LISTEN cannot be the stream"),
    (["--stream", "EXEC:cat,count=2"], "count= is for subflows"),
    (["--connect", "EXEC:'unclosed"], "unclosed ' quote"),
    (["--connect", "/tmp/sock"], "a UNIX socket is UNIX-CONNECT:PATH"),
    ([], "give a SOCKET to listen on, or --listen or --connect"),
])
def test_bad_addresses_are_usage_errors(args: list[str], message: str) -> None:
    run = subprocess.run([SOCKIMUX, *args], capture_output=True, text=True, timeout=20,
                         stdin=subprocess.DEVNULL)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and message in lines[0], run.stderr


def test_what_cannot_be_opened_at_start_is_exit_3(tmp_path: Path) -> None:
    """A stream that cannot be opened, a port in use, a UNIX-LISTEN path that
    is not a socket (never touched): one line, exit 3."""
    closed = free_port()
    busy = socket.create_server(("127.0.0.1", 0))
    plain = tmp_path / "file"
    plain.write_text("keep me")
    cases = [
        (["--connect", "UNIX-CONNECT:/nonexistent", "--stream", f"TCP:127.0.0.1:{closed}"],
         "cannot open the stream"),
        (["--connect", "UNIX-CONNECT:/nonexistent", "--stream", "EXEC:/nonexistent/program"],
         "cannot run the stream command"),
        (["--listen", f"TCP-LISTEN:{busy.getsockname()[1]},bind=127.0.0.1"], "cannot listen on TCP"),
        (["--listen", f"UNIX-LISTEN:{plain}"], "exists and is not a socket"),
    ]
    try:
        for args, message in cases:
            run = subprocess.run([SOCKIMUX, *args], capture_output=True, text=True, timeout=20,
                                 stdin=subprocess.DEVNULL)
            assert run.returncode == 3, (args, run.stderr)
            lines = run.stderr.splitlines()
            assert len(lines) == 1 and message in lines[0], (args, run.stderr)
        assert plain.read_text() == "keep me"
    finally:
        busy.close()


def _examples(text: str) -> list[tuple[str, str]]:
    """(option, address) of every --connect/--listen/--stream in the sockimux
    command lines of ``text``, as a shell splits them (a ProxyCommand: twice)."""
    found: list[tuple[str, str]] = []
    lines: list[str] = []
    for line in text.splitlines():
        # Inline code in the README: the command is what the backquotes hold.
        lines += line.split("`")[1::2] if "`" in line else [line]
    for line in lines:
        if "sockimux --" not in line and "sockimux /" not in line:
            continue
        words = shlex.split(line.split("#")[0].lstrip("$ "))
        for word in list(words):
            if word.startswith("ProxyCommand sockimux"):
                words += shlex.split(word.removeprefix("ProxyCommand "))
        found += [(w, words[i + 1]) for i, w in enumerate(words[:-1])
                  if w in ("--connect", "--listen", "--stream")]
    return found


def test_every_address_example_in_help_and_readme_is_valid() -> None:
    """The examples in --help and README.md, typed into a shell as they are
    written, give sockimux addresses it accepts where they are given."""
    from sockimux.core.address_parser import parse_address
    from sockimux.core.addresses import Role

    roles = {"--connect": Role.SUBFLOW, "--listen": Role.LISTEN, "--stream": Role.STREAM}
    help_text = subprocess.run([SOCKIMUX, "--help"], capture_output=True, text=True, check=True).stdout
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    examples = _examples(help_text) + _examples(readme)
    assert len(examples) >= 10, examples
    for option, text in examples:
        parse_address(text, roles[option])
