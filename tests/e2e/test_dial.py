"""Subflows sockimux opens itself (--connect), more places to listen (--listen),
and a stream that is not STDIO (--stream): real processes, no socat between
the two sockimux processes unless an EXEC address runs it."""

from __future__ import annotations

import os
import random
import re
import shlex
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from .dialing import MB, Imux, Server, TcpRelay, echo, free_port, listening
from .harness import SOCKIMUX, require, wait_for


def _data(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _check(a: Imux, b: Imux, a_data: bytes, b_data: bytes, timeout: float = 90) -> None:
    assert a.wait(timeout) == 0, a.stderr()
    assert b.wait(timeout) == 0, b.stderr()
    assert a.out.read_bytes() == b_data, "B->A differs"
    assert b.out.read_bytes() == a_data, "A->B differs"
    assert "Traceback" not in a.stderr() + b.stderr()


def _tcp_pair(tmp: Path, a_data: bytes, b_data: bytes, seconds: float, count: int,
              via: int | None = None) -> tuple[Imux, Imux, int]:
    port = free_port()
    a = Imux(tmp, "a", "-v", "--listen", f"TCP-LISTEN:{port},bind=127.0.0.1", data=a_data,
             seconds=seconds)
    wait_for(lambda: listening(port) or a.proc.poll() is not None, 10, "A to listen")
    b = Imux(tmp, "b", "-v", "--connect", f"TCP:127.0.0.1:{via or port},count={count}",
             data=b_data, seconds=seconds)
    return a, b, port


def test_tcp_listen_and_tcp_connect_subflows(tmp_path: Path) -> None:
    """One sockimux listens on TCP, the other opens 3 subflows to it: 20 MB
    both ways, byte-exact, over 3 TCP connections and nothing else."""
    a_data, b_data = _data(20 * MB, 1), _data(20 * MB, 2)
    a, b, _ = _tcp_pair(tmp_path, a_data, b_data, 0.0, 3)
    try:
        _check(a, b, a_data, b_data)
        assert len(re.findall(r"subflow \d+ joined", a.stderr())) == 3, a.stderr()
        assert len(re.findall(r"opening subflow TCP:127\.0\.0\.1:\d+ \(. of 3\)", b.stderr())) == 3
    finally:
        a.close()
        b.close()


def test_unix_connect_to_a_plain_socket(tmp_path: Path) -> None:
    """--connect UNIX-CONNECT to today's `sockimux SOCKET`, 2 subflows."""
    sock = str(tmp_path / "a.sock")
    a_data, b_data = _data(4 * MB, 3), _data(3 * MB, 4)
    a = Imux(tmp_path, "a", "-v", sock, data=a_data)
    wait_for(lambda: os.path.exists(sock), 10, "A to listen")
    b = Imux(tmp_path, "b", "-v", "--connect", f"UNIX-CONNECT:{sock},count=2", data=b_data)
    try:
        _check(a, b, a_data, b_data)
        assert len(re.findall(r"subflow \d+ joined", a.stderr())) == 2, a.stderr()
    finally:
        a.close()
        b.close()


def test_one_process_listens_and_connects(tmp_path: Path) -> None:
    """B listens on a UNIX socket of its own and connects to A; a socat
    subflow to B's socket joins the two dialed ones."""
    a_sock, b_sock = str(tmp_path / "a.sock"), str(tmp_path / "b.sock")
    a_data, b_data = _data(2 * MB, 5), _data(2 * MB, 6)
    a = Imux(tmp_path, "a", "-v", a_sock, data=a_data, seconds=2)
    wait_for(lambda: os.path.exists(a_sock), 10, "A to listen")
    b = Imux(tmp_path, "b", "-v", "--listen", f"UNIX-LISTEN:{b_sock}", "--connect",
             f"UNIX-CONNECT:{a_sock},count=2", data=b_data, seconds=2)
    wait_for(lambda: os.path.exists(b_sock), 10, "B to listen")
    relay = subprocess.Popen([require("socat"), f"UNIX-CONNECT:{a_sock}", f"UNIX-CONNECT:{b_sock}"])
    try:
        _check(a, b, a_data, b_data)
        assert len(re.findall(r"subflow \d+ joined", b.stderr())) == 3, b.stderr()
        assert not os.path.exists(b_sock), "B's socket is removed on exit"
    finally:
        relay.kill()
        relay.wait()
        a.close()
        b.close()


def test_exec_subflows_come_back_when_their_commands_die(tmp_path: Path) -> None:
    """4 EXEC subflows (socat to A's socket); mid-transfer, twice, every
    child is killed: each slot is re-opened by itself, the bytes arrive
    intact, both exit 0; the log says lost and back, not every attempt."""
    require("socat")
    sock = str(tmp_path / "a.sock")
    a_data, b_data = _data(20 * MB, 7), _data(10 * MB, 8)
    a = Imux(tmp_path, "a", "-v", sock, data=a_data, seconds=6)
    wait_for(lambda: os.path.exists(sock), 10, "A to listen")
    b = Imux(tmp_path, "b", "--connect", f"EXEC:'socat STDIO UNIX-CONNECT:{sock}',count=4",
             data=b_data, seconds=6)
    try:
        killed = 0
        for _ in range(2):
            wait_for(lambda killed=killed: len(b.children()) == 4
                     and b.stderr().count("back after") >= killed, 20, "4 EXEC children")
            time.sleep(1.5)
            for pid in b.children():
                os.kill(pid, signal.SIGKILL)
            killed += 4
        _check(a, b, a_data, b_data)
        err = b.stderr()
        assert err.count(" lost (command exited: killed by SIGKILL)") == 8, err
        assert err.count(" back after ") == 8, err
        assert "opening subflow" not in err  # attempts only with -v
        assert len(re.findall(r"subflow \d+ joined", a.stderr())) >= 12, a.stderr()
    finally:
        a.close()
        b.close()


def _gone(pid: int) -> bool:
    """The process has exited (a zombie left to a parent that does not reap counts)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX"
    except (OSError, IndexError):
        return True


def test_exec_children_end_with_us(tmp_path: Path) -> None:
    """B, stopped by SIGTERM mid-transfer, tells the peer (exit 5 there),
    exits 143, and leaves none of its EXEC children behind, even one that
    ignores the end of its subflow."""
    require("socat")
    sock = str(tmp_path / "a.sock")
    a = Imux(tmp_path, "a", "-v", sock, data=_data(MB, 21), seconds=30)
    wait_for(lambda: os.path.exists(sock), 10, "A to listen")
    stubborn = f"sh -c 'trap \"\" TERM; socat STDIO UNIX-CONNECT:{sock}; exec sleep 60'"
    b = Imux(tmp_path, "b", "--connect", f"EXEC:'socat STDIO UNIX-CONNECT:{sock}',count=2",
             "--connect", f"EXEC:\"{stubborn}\"", data=_data(MB, 22), seconds=30)
    try:
        wait_for(lambda: len(b.children()) == 3, 10, "3 EXEC children")
        wait_for(lambda: "joined" in a.stderr() or a.proc.poll() is not None, 10, "a subflow")
        time.sleep(0.5)
        children = b.children()
        b.proc.send_signal(signal.SIGTERM)
        assert b.wait(20) == 143, b.stderr()
        assert a.wait(20) == 5, a.stderr()
        wait_for(lambda: all(_gone(pid) for pid in children), 5, "the children to end")
    finally:
        a.close()
        b.close()


def test_tcp_subflows_come_back_when_cut(tmp_path: Path) -> None:
    """3 TCP subflows through a relay in this test, which cuts (resets) them
    all mid-transfer, twice: they are re-opened by themselves, the bytes
    arrive intact, both exit 0."""
    a_data, b_data = _data(20 * MB, 9), _data(20 * MB, 10)
    port = free_port()
    a = Imux(tmp_path, "a", "-v", "--listen", f"TCP-LISTEN:{port},bind=127.0.0.1", data=a_data,
             seconds=6)
    wait_for(lambda: listening(port) or a.proc.poll() is not None, 10, "A to listen")
    relay = TcpRelay(port)
    b = Imux(tmp_path, "b", "-v", "--connect", f"TCP:127.0.0.1:{relay.port},count=3",
             data=b_data, seconds=6)
    try:
        for cuts in (1, 2):
            wait_for(lambda cuts=cuts: relay.accepted >= 3 * cuts,
                     20, "3 relayed subflows")
            time.sleep(1.5)
            assert relay.cut() == 3
        _check(a, b, a_data, b_data)
        err = b.stderr()
        assert err.count(" back after ") == 6, err
        assert relay.accepted >= 9
    finally:
        relay.close()
        a.close()
        b.close()


def test_stalled_tcp_subflows_are_dropped_and_reopened(tmp_path: Path) -> None:
    """The relay black-holes both TCP subflows mid-transfer (no error, no
    close): each is dropped as stalled and re-opened by itself."""
    a_data, b_data = _data(10 * MB, 15), _data(10 * MB, 16)
    port = free_port()
    a = Imux(tmp_path, "a", "-v", "--listen", f"TCP-LISTEN:{port},bind=127.0.0.1", "--stall-timeout",
             "1", data=a_data, seconds=5)
    wait_for(lambda: listening(port) or a.proc.poll() is not None, 10, "A to listen")
    relay = TcpRelay(port)
    b = Imux(tmp_path, "b", "-v", "--connect", f"TCP:127.0.0.1:{relay.port},count=2",
             "--stall-timeout", "1", data=b_data, seconds=5)
    try:
        wait_for(lambda: relay.accepted >= 2, 20, "2 relayed subflows")
        time.sleep(1)
        assert relay.freeze() == 2
        _check(a, b, a_data, b_data)
        err = b.stderr()
        assert err.count(" lost (stalled") == 2, err
        assert err.count(" back after ") == 2, err
    finally:
        relay.close()
        a.close()
        b.close()


def test_tcp_subflows_leave_from_the_address_and_interface_asked(tmp_path: Path) -> None:
    """bind= sets each subflow's source address, so-bindtodevice= its
    interface; IPv6 literals in brackets reach a TCP-LISTEN on every
    address (dual stack)."""
    port = free_port()
    a_data, b_data = _data(MB, 17), _data(MB, 18)
    a = Imux(tmp_path, "a", "-v", "--listen", f"TCP-LISTEN:{port}", data=a_data)
    wait_for(lambda: listening(port) or a.proc.poll() is not None, 10, "A to listen")
    relay = TcpRelay(port)
    b = Imux(tmp_path, "b", "-v", "--connect", f"TCP:127.0.0.1:{relay.port},bind=127.0.0.2,count=2",
             "--connect", f"TCP4:127.0.0.1:{relay.port},so-bindtodevice=lo",
             "--connect", f"TCP:[::1]:{port}", data=b_data, seconds=1)
    try:
        _check(a, b, a_data, b_data)
        assert len(re.findall(r"subflow \d+ joined", a.stderr())) == 4, a.stderr()
        assert sorted(host for host, _ in relay.peers) == ["127.0.0.1", "127.0.0.2", "127.0.0.2"]
    finally:
        relay.close()
        a.close()
        b.close()


def test_exec_starts_are_bounded_and_staggered(tmp_path: Path) -> None:
    """20 EXEC subflows whose command takes 0.5 s to log in (as ssh does):
    at most 8 start at once, at least 20 ms apart, so a MaxStartups of 10
    is never exceeded; all 20 open in the end."""
    require("socat")
    sock = str(tmp_path / "a.sock")
    starts = tmp_path / "starts"
    login = tmp_path / "login.sh"
    login.write_text(f"#!/bin/sh\ndate +%s.%N >> {starts}\nsleep 0.5\n"
                     f"exec socat STDIO UNIX-CONNECT:{sock}\n")
    login.chmod(0o755)
    a = Imux(tmp_path, "a", "-v", sock, data=b"a" * MB, seconds=3)
    wait_for(lambda: os.path.exists(sock), 10, "A to listen")
    b = Imux(tmp_path, "b", "--connect", f"EXEC:{login},count=20", data=b"b" * MB, seconds=3)
    try:
        wait_for(lambda: len(re.findall(r"subflow \d+ joined", a.stderr())) >= 20, 30,
                 "20 subflows")
        times = sorted(float(t) for t in starts.read_text().split())
        assert len(times) == 20
        # The 9th start waits for a hello: 0.5 s of login after the first.
        assert times[8] - times[0] >= 0.45, times
        assert times[7] - times[0] >= 7 * 0.02 * 0.8, times
        assert a.wait(60) == 0 and b.wait(60) == 0, a.stderr() + b.stderr()
    finally:
        a.close()
        b.close()


def _key(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_a_fatal_refusal_is_not_retried(tmp_path: Path) -> None:
    """A peer with another --psk-file refuses us: the address is stopped with
    one error line, never retried; with nothing else to connect to and no
    listener, B ends at once with exit 8."""
    sock = str(tmp_path / "a.sock")
    a = Imux(tmp_path, "a", "-v", "--psk-file", _key(tmp_path / "a.key", "k" * 32), sock)
    wait_for(lambda: os.path.exists(sock), 10, "A to listen")
    b = Imux(tmp_path, "b", "-v", "--psk-file", _key(tmp_path / "b.key", "x" * 32), "--connect",
             f"UNIX-CONNECT:{sock},count=2")
    try:
        assert b.wait(20) == 8, b.stderr()
        err = b.stderr()
        attempts = len(re.findall(r"opening subflow UNIX-CONNECT", err))
        assert 1 <= attempts <= 2, err  # both slots may start before the first refusal
        assert err.count("not retrying") == 1, err
        stopped = [line for line in err.splitlines() if "this cannot heal" in line]
        assert len(stopped) == 1 and "authentication failed" in stopped[0], err
        assert "every --connect address was refused for good" in err
        assert a.proc.poll() is None, "A waits for a peer that can prove the key"
    finally:
        a.close()
        b.close()


def test_a_restarted_peer_is_a_refusal_that_cannot_heal(tmp_path: Path) -> None:
    """The peer is killed and another sockimux starts on its socket: it cannot
    continue our stream, so the address is stopped with one error line and,
    nothing else being able to join, B ends with exit 8."""
    sock = str(tmp_path / "a.sock")
    first = Imux(tmp_path, "first", "-v", sock, data=_data(MB, 19), seconds=30)
    wait_for(lambda: os.path.exists(sock), 10, "the first peer to listen")
    b = Imux(tmp_path, "b", "-v", "--connect", f"UNIX-CONNECT:{sock},count=2", data=_data(MB, 20),
             seconds=30)
    second: Imux | None = None
    try:
        wait_for(lambda: first.stderr().count("joined") == 2, 10, "2 subflows")
        first.proc.kill()
        first.proc.wait()
        second = Imux(tmp_path, "second", "-v", sock)
        assert b.wait(30) == 8, b.stderr()
        err = b.stderr()
        stopped = [line for line in err.splitlines() if "this cannot heal" in line]
        assert len(stopped) == 1, err
        assert "another sockimux process than this session's peer" in stopped[0]
    finally:
        for proc in (first, b, second):
            if proc is not None:
                proc.close()


def test_an_echo_server_is_not_retried(tmp_path: Path) -> None:
    """What answers is not sockimux (an echo server: our own hello comes back):
    one connection, one error line, and while A's socket still lets the
    session go on, the echo server is never tried again."""
    server = Server(echo)
    sock = str(tmp_path / "b.sock")
    b = Imux(tmp_path, "b", "-v", "--listen", f"UNIX-LISTEN:{sock}", "--connect",
             f"TCP:127.0.0.1:{server.port}")
    try:
        wait_for(lambda: "not retrying" in b.stderr(), 10, "the address to be stopped")
        time.sleep(2)  # several backoff periods
        assert server.accepted == 1
        assert b.proc.poll() is None, "B still listens"
        err = b.stderr()
        assert len([line for line in err.splitlines() if "this cannot heal" in line]) == 1, err
        assert len(re.findall("opening subflow TCP", err)) == 1, err
    finally:
        server.close()
        b.close()


def test_a_refused_connection_is_retried_until_the_peer_is_up(tmp_path: Path) -> None:
    """Nothing listens yet: a transient failure, retried with backoff; once A
    listens, the subflow opens and the transfer completes."""
    port = free_port()
    a_data, b_data = _data(MB, 11), _data(MB, 12)
    b = Imux(tmp_path, "b", "-v", "--connect", f"TCP:127.0.0.1:{port}", data=b_data)
    try:
        wait_for(lambda: "could not be opened (could not connect" in b.stderr(), 10, "a failure")
        time.sleep(1.5)
        a = Imux(tmp_path, "a", "-v", "--listen", f"TCP-LISTEN:{port},bind=127.0.0.1", data=a_data)
        try:
            _check(a, b, a_data, b_data)
        finally:
            a.close()
        err = b.stderr()
        assert re.search(r"subflow TCP:127\.0\.0\.1:\d+ open after [2-9] attempts", err), err
        assert err.count("could not be opened") == 1, err  # once, not per attempt
    finally:
        b.close()


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


@pytest.mark.parametrize(("command", "far_code"), [("cat", 0), ("sh -c 'cat; exit 3'", 9)])
def test_stream_exec(tmp_path: Path, command: str, far_code: int) -> None:
    """--stream EXEC: the far side carries a command's STDIN/STDOUT; a
    command that fails makes the far side exit 9, naming its status."""
    sock = str(tmp_path / "far.sock")
    data = _data(8 * MB, 14)
    far = Imux(tmp_path, "far", sock, "--stream", f"EXEC:\"{command}\"")
    wait_for(lambda: os.path.exists(sock) or far.proc.poll() is not None, 10, "far to listen")
    near = Imux(tmp_path, "near", "--connect", f"UNIX-CONNECT:{sock},count=3", data=data)
    try:
        assert near.wait(60) == 0, near.stderr()
        assert far.wait(60) == far_code, far.stderr()
        assert near.out.read_bytes() == data
        if far_code:
            assert far.stderr().strip().endswith("the stream command ended with exit status 3")
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
