"""Hostile and careless neighbours: junk on the socket, idle connections, other users,
wrong keys, and whatever already sits at the socket path.

Every test drives the real program over real UNIX sockets.  Wire bytes come
from hostile_peer.py, built from the documented format (docs/PROTOCOL.md), not
with the program's own encoder, so a change to the format shows up here.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import os
import random
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .harness import SOCKIMUX, Peer, kill, random_file, require, sha256_file, socat_subflow, wait_for
from .hostile_peer import (
    ACK,
    AUTH,
    AUTH_FAILED,
    BAD_VERSION,
    DATA,
    FLOW_CONTROL,
    FOREIGN_INSTANCE,
    HANDSHAKE_TIMEOUT,
    HEADER,
    HELLO,
    HELLO_AUTH,
    MAGIC,
    NOT_SOCKIMUX,
    PROTOCOL_ERROR,
    REFUSE,
    SELF_CONNECT,
    TOO_MANY_SUBFLOWS,
    connect,
    drain,
    frame,
    hello,
    instance_of,
    ready,
    recv_at_least,
    refusal,
    send,
)

MB = 1 << 20

REFUSED = re.compile(r"subflow \d+ refused: (.*)")
NOBODY = 65534


def refusals(stderr: str) -> list[str]:
    return REFUSED.findall(stderr)


# -- processes ------------------------------------------------------------------

def spawn(path: str | Path, *args: str,
          preexec_fn: Callable[[], object] | None = None) -> subprocess.Popen[bytes]:
    """A sockimux with no input and no consumer; its stderr is piped."""
    return subprocess.Popen([SOCKIMUX, *args, str(path)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=preexec_fn)


def finish(proc: subprocess.Popen[bytes], timeout: float) -> tuple[int, str]:
    """Wait for the process to exit: (exit status, stderr)."""
    try:
        _out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _out, err = proc.communicate()
        pytest.fail(f"sockimux did not exit within {timeout} s; stderr:\n{err.decode(errors='replace')}")
    return proc.returncode, err.decode(errors="replace")


def stop(*procs: subprocess.Popen[bytes]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def run(*args: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SOCKIMUX, *args], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout)


def key_file(path: Path) -> str:
    path.write_bytes(base64.b64encode(os.urandom(32)) + b"\n")
    path.chmod(0o600)
    return str(path)


class Transfer:
    """Two -v peers sending paced random payloads both ways.  Neither STDIN ends
    before release(), so the session stays live for as long as a test needs."""

    def __init__(self, tmp: Path, size: int, seconds: float, seed: int, args: tuple[str, ...] = ()) -> None:
        require("socat")
        self.a_in = random_file(tmp / "a.in", size, seed=seed)
        self.b_in = random_file(tmp / "b.in", size // 2, seed=seed + 1)
        self.released = threading.Event()
        self.relays: list[subprocess.Popen[bytes]] = []
        self.peers: list[Peer] = []
        try:
            self.a = Peer(tmp, "a", None, "-v", *args, stdin_pipe=True)
            self.peers.append(self.a)
            self.b = Peer(tmp, "b", None, "-v", *args, stdin_pipe=True)
            self.peers.append(self.b)
            for peer, payload in ((self.a, self.a_in), (self.b, self.b_in)):
                threading.Thread(target=self._feed, args=(peer.proc, payload.read_bytes(), seconds),
                                 daemon=True).start()
            ready(self.a.socket)
            ready(self.b.socket)
        except BaseException:
            self.close()
            raise

    def _feed(self, proc: subprocess.Popen[bytes], data: bytes, seconds: float) -> None:
        assert proc.stdin is not None
        step = 64 * 1024
        pause = seconds / max(1, len(data) // step)
        try:
            for i in range(0, len(data), step):
                proc.stdin.write(data[i : i + step])
                proc.stdin.flush()
                time.sleep(pause)
            self.released.wait(60)
        except (OSError, ValueError):
            pass  # the test is tearing the process down
        finally:
            with contextlib.suppress(OSError, ValueError):
                proc.stdin.close()

    def add(self, count: int = 1) -> None:
        self.relays += [socat_subflow(self.a, self.b) for _ in range(count)]

    def release(self) -> None:
        self.released.set()

    def check(self, timeout: float = 30) -> None:
        self.release()
        assert self.a.wait(timeout) == 0, self.a.stderr()
        assert self.b.wait(timeout) == 0, self.b.stderr()
        assert sha256_file(self.b.out) == sha256_file(self.a_in), "A->B differs"
        assert sha256_file(self.a.out) == sha256_file(self.b_in), "B->A differs"
        assert "Traceback" not in self.a.stderr() + self.b.stderr()

    def close(self) -> None:
        self.release()
        for r in self.relays:
            kill(r)
        for p in self.peers:
            p.close()


# -- 1. junk on the socket of a live session ---------------------------------------

def test_junk_connections_during_a_live_transfer(tmp_path: Path) -> None:
    """Garbage, strangers and forged frames on A's socket while a transfer runs over two
    subflows: each connection is refused with one log line naming the reason and closed,
    and the transfer completes intact both ways."""
    t = Transfer(tmp_path, size=2 * MB, seconds=1.0, seed=11)
    try:
        t.add(2)
        wait_for(lambda: t.a.stderr().count(" joined") >= 2 and t.b.stderr().count(" joined") >= 2,
                 10, "both subflows to join")
        wait_for(lambda: t.a.out.stat().st_size > 0 and t.b.out.stat().st_size > 0, 10,
                 "data to flow both ways")
        b_instance = instance_of(t.b.socket)  # what a man in the middle learns from B's hello
        foreign = [os.urandom(16), os.urandom(16)]
        junk = b"\x00" + random.Random(5).randbytes(4095)

        # (what, bytes sent right away, bytes sent once the subflow is open, close code, log text)
        cases: list[tuple[str, bytes, bytes | None, int, str]] = [
            ("random bytes", junk, None, NOT_SOCKIMUX, "not a sockimux peer"),
            ("an HTTP request", b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", None, NOT_SOCKIMUX,
             "not a sockimux peer"),
            ("wrong magic", hello(magic=b"SOCKIMUZ"), None, NOT_SOCKIMUX, "not a sockimux peer"),
            ("wrong version", hello(version=2), None, BAD_VERSION, "protocol version 2"),
            ("a foreign instance", hello(foreign[0]), None, FOREIGN_INSTANCE,
             f"hello from instance {foreign[0].hex()[:12]}"),
            ("a foreign instance, then an oversize DATA header",
             hello(foreign[1]) + HEADER.pack(DATA, 0, 0, 2**31, 0), None, FOREIGN_INSTANCE,
             f"hello from instance {foreign[1].hex()[:12]}"),
            # A man in the middle replays B's instance, so A opens the subflow, then forges frames.
            ("an oversize DATA length", hello(b_instance), HEADER.pack(DATA, 0, 0, 2**31, 0),
             PROTOCOL_ERROR, "DATA frame with body length 2147483648"),
            ("an unknown frame type", hello(b_instance), frame(99), PROTOCOL_ERROR,
             "unknown frame type 99"),
            ("an ACK beyond what was sent", hello(b_instance),
             frame(ACK, 0, struct.pack("!QQ", 0, 1 << 40)), PROTOCOL_ERROR,
             f"peer reports {1 << 40} bytes received"),
            ("DATA beyond the credit", hello(b_instance), frame(DATA, 1 << 40, b"x"), FLOW_CONTROL,
             "beyond the credit limit"),
            ("an AUTH frame on an open subflow", hello(b_instance), frame(AUTH, 0, os.urandom(32)),
             PROTOCOL_ERROR, "AUTH frame not allowed"),
        ]
        for what, first, then, code, text in cases:
            with connect(t.a.socket) as s:
                send(s, first)
                head = b""
                if then is not None:
                    head = recv_at_least(s, HELLO.size + HEADER.size)  # A's hello and a frame: open
                    assert refusal(head) is None, f"{what}: refused before the forged frame"
                    send(s, then)
                received, reset = drain(s)
            if not reset:
                got = refusal(head + received)
                assert got is not None, f"{what}: no REFUSE before the close"
                assert got[0] == code and text in got[1], f"{what}: refused with {got}"

        # Our own hello reflected back to us: a subflow that leads to the same process.
        with connect(t.a.socket) as s:
            head = recv_at_least(s, HELLO.size)
            send(s, head[: HELLO.size])
            received, reset = drain(s)
        if not reset:
            assert refusal(head + received) == (SELF_CONNECT, "subflow leads back to this same process")

        # A truncated hello, then our half of the connection closed: A closes its half too.
        with connect(t.a.socket) as s:
            send(s, hello()[:20])
            s.shutdown(socket.SHUT_WR)
            received, _reset = drain(s)
            assert len(received) <= HELLO.size
        # ... or fully closed at once, and a connection that sends nothing at all.
        for data in (hello()[:20], b""):
            with connect(t.a.socket) as s:
                send(s, data)

        assert t.a.proc.poll() is None and t.b.proc.poll() is None
        t.check()
        logged = refusals(t.a.stderr())
        expected = [text for *_x, text in cases] + ["leads back to this same process"]
        assert len(logged) == len(expected), t.a.stderr()
        for line, text in zip(logged, expected, strict=True):
            assert text in line, f"expected {text!r} in the refusal line {line!r}"
        assert refusals(t.b.stderr()) == [], t.b.stderr()
    finally:
        t.close()


# -- 2. idle connections ------------------------------------------------------------

def test_idle_connections_time_out_and_handshakes_are_capped(tmp_path: Path) -> None:
    a = Peer(tmp_path, "a", None, "-v", "--handshake-timeout", "1", "--max-handshakes", "2")
    conns: list[socket.socket] = []
    try:
        start = time.monotonic()
        heads = []
        for prefix in (b"", MAGIC[:5]):  # silent, and a hello begun but never finished
            conns.append(connect(a.socket))
            send(conns[-1], prefix)
            heads.append(recv_at_least(conns[-1], HELLO.size))  # accepted; now in handshake
        conns.append(connect(a.socket))
        received, reset = drain(conns[2], timeout=0.8)  # refused at once, not after a timeout
        if not reset:
            assert refusal(received) == (TOO_MANY_SUBFLOWS, "already 2 connections in handshake")
        # The first two are still waiting for their hello ...
        if time.monotonic() - start < 0.7:
            for c in conns[:2]:
                c.settimeout(0.05)
                with pytest.raises(TimeoutError):
                    c.recv(1)
        # ... until the handshake timeout closes them.
        for c, head in zip(conns[:2], heads, strict=True):
            received, reset = drain(c, timeout=3)
            if not reset:
                assert refusal(head + received) == (HANDSHAKE_TIMEOUT, "handshake not completed within 1 s")
        elapsed = time.monotonic() - start
        assert 0.9 <= elapsed <= 2.5, f"idle connections closed after {elapsed:.2f} s"
        # The cap counts only pending handshakes: there is room again.
        with connect(a.socket) as s:
            recv_at_least(s, HELLO.size)
            s.settimeout(0.3)
            with pytest.raises(TimeoutError):
                s.recv(1)
        kill(a.proc, signal.SIGTERM)
        assert a.wait(10) == 128 + signal.SIGTERM
        err = a.stderr()
        assert refusals(err) == ["already 2 connections in handshake",
                                 "handshake not completed within 1 s",
                                 "handshake not completed within 1 s"], err
        assert "Traceback" not in err
    finally:
        for c in conns:
            c.close()
        a.close()


# -- 3. the socket path ---------------------------------------------------------------

@pytest.mark.parametrize(("mode", "umask", "expected"),
                         [(None, 0o000, 0o600), ("0660", 0o000, 0o660), ("0660", 0o077, 0o660)])
def test_socket_mode_whatever_the_umask(tmp_path: Path, mode: str | None, umask: int,
                                        expected: int) -> None:
    path = tmp_path / "s.sock"
    args = ["--socket-mode", mode] if mode else []
    proc = spawn(path, *args, preexec_fn=lambda: os.umask(umask))
    try:
        ready(path)
        st = os.lstat(path)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == expected, oct(st.st_mode)
        proc.send_signal(signal.SIGTERM)
        code, err = finish(proc, 10)
        assert code == 128 + signal.SIGTERM, err
        assert not path.exists()
    finally:
        stop(proc)


@pytest.mark.parametrize("kind", ["file", "symlink", "directory"])
def test_an_existing_non_socket_is_never_touched(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "s.sock"
    precious = tmp_path / "precious.txt"
    precious.write_bytes(b"do not delete me\n")
    if kind == "file":
        shutil.copy(precious, path)
    elif kind == "symlink":
        path.symlink_to(precious)
    else:
        path.mkdir()
        shutil.copy(precious, path / "inside.txt")
    before = os.lstat(path)
    result = run(str(path))
    assert result.returncode == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "not a socket" in lines[0] and str(path) in lines[0], result.stderr
    after = os.lstat(path)
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)
    assert precious.read_bytes() == b"do not delete me\n"
    if kind == "file":
        assert path.read_bytes() == b"do not delete me\n"
    if kind == "directory":
        assert (path / "inside.txt").read_bytes() == b"do not delete me\n"


def test_a_live_socket_is_not_taken_over(tmp_path: Path) -> None:
    require("socat")
    a_in = random_file(tmp_path / "a.in", 256 * 1024, seed=31)
    b_in = random_file(tmp_path / "b.in", 128 * 1024, seed=32)
    a = Peer(tmp_path, "a", a_in)
    b: Peer | None = None
    relay: subprocess.Popen[bytes] | None = None
    try:
        ready(a.socket)
        inode = os.lstat(a.socket).st_ino
        second = run(a.socket)
        assert second.returncode == 3, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "another process is listening" in lines[0], second.stderr
        assert os.lstat(a.socket).st_ino == inode, "the live socket was replaced"
        assert a.proc.poll() is None
        # The first process still works: a transfer through it completes.
        b = Peer(tmp_path, "b", b_in)
        ready(b.socket)
        relay = socat_subflow(a, b)
        assert a.wait(20) == 0, a.stderr()
        assert b.wait(20) == 0, b.stderr()
        assert sha256_file(b.out) == sha256_file(a_in)
        assert sha256_file(a.out) == sha256_file(b_in)
        assert "Traceback" not in a.stderr() + b.stderr()
        # A normal exit removes the socket file.
        assert not os.path.lexists(a.socket) and not os.path.lexists(b.socket)
    finally:
        if relay is not None:
            kill(relay)
        a.close()
        if b is not None:
            b.close()


def test_a_stale_socket_is_replaced(tmp_path: Path) -> None:
    require("socat")
    a_in = random_file(tmp_path / "a.in", 128 * 1024, seed=41)
    path = tmp_path / "a.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(path))  # closed without unlinking: what a killed process leaves behind
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    a = Peer(tmp_path, "a", a_in)
    b: Peer | None = None
    relay: subprocess.Popen[bytes] | None = None
    try:
        ready(a.socket)
        assert stat.S_ISSOCK(os.lstat(a.socket).st_mode)  # and it serves: ready() got a hello
        b = Peer(tmp_path, "b", None)
        ready(b.socket)
        relay = socat_subflow(a, b)
        assert a.wait(20) == 0, a.stderr()
        assert b.wait(20) == 0, b.stderr()
        assert sha256_file(b.out) == sha256_file(a_in)
        assert not path.exists()
    finally:
        if relay is not None:
            kill(relay)
        a.close()
        if b is not None:
            b.close()


def test_signals_remove_the_socket(tmp_path: Path) -> None:
    """SIGINT and SIGTERM stop at once (130, 143); SIGHUP lets the session finish but,
    as no subflow ever joined, it cannot: 129 after the 5 s grace."""
    sigs = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]
    paths = {sig: tmp_path / f"{sig.name}.sock" for sig in sigs}
    procs = {sig: spawn(paths[sig], "-v") for sig in sigs}
    try:
        for sig in sigs:
            ready(paths[sig])
        sent = time.monotonic()
        for sig in sigs:
            procs[sig].send_signal(sig)
        for sig in sigs:
            code, err = finish(procs[sig], 10)
            took = time.monotonic() - sent
            assert code == 128 + sig, f"{sig.name}: exit {code}\n{err}"
            assert "Traceback" not in err, err
            assert not os.path.lexists(paths[sig]), f"{sig.name} left the socket file behind"
            if sig == signal.SIGHUP:
                assert 4.5 <= took <= 7.0, f"SIGHUP: exit after {took:.1f} s"
                assert "SIGHUP" in err
            else:
                assert took < 3, f"{sig.name}: exit after {took:.1f} s"
    finally:
        stop(*procs.values())


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_as_soon_as_the_socket_exists(tmp_path: Path, sig: signal.Signals) -> None:
    """A signal in the first milliseconds (the socket file exists, the event loop is
    not running yet) still removes the socket file and prints no traceback."""
    path = tmp_path / "s.sock"
    proc = spawn(path)
    try:
        deadline = time.monotonic() + 10
        while not os.path.lexists(path) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.0005)
        assert os.path.lexists(path), "the socket did not appear"
        proc.send_signal(sig)
        code, err = finish(proc, 10)
        assert "Traceback" not in err, err
        assert not os.path.lexists(path), f"exit {code} left the socket file behind; stderr: {err!r}"
        assert code in (128 + sig, -sig), err
    finally:
        stop(proc)


# -- 4. other users ---------------------------------------------------------------

CLIENT = r"""
import json, os, socket, sys
out = {"pid": os.getpid(), "uid": os.getuid()}
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(5)
try:
    s.connect(sys.argv[1])
except OSError as exc:
    out["connect"] = exc.errno
else:
    out["connect"] = 0
    got = b""
    try:
        s.sendall(bytes.fromhex(sys.argv[2]))
        while len(got) < 48:
            chunk = s.recv(48 - len(got))
            if not chunk:
                break
            got += chunk
    except OSError as exc:
        out["error"] = exc.errno
    out["received"] = got.hex()
print(json.dumps(out))
"""


def _become_nobody() -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory other users may traverse (pytest's tmp_path is private to root)."""
    if os.geteuid() != 0:
        pytest.fail("these tests need root, to run a client as uid 65534")
    path = Path(tempfile.mkdtemp(prefix="sockimux-uid-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("case", ["refused", "allow-uid", "allow-any-user", "mode-0600"])
def test_connections_from_another_user(shared_dir: Path, case: str) -> None:
    path = shared_dir / "s.sock"
    args = {"refused": ["--socket-mode", "0666"],
            "allow-uid": ["--socket-mode", "0666", "--allow-uid", str(NOBODY)],
            "allow-any-user": ["--socket-mode", "0666", "--allow-any-user"],
            "mode-0600": []}[case]
    proc = spawn(path, "-v", *args)
    try:
        ready(path)
        python = shutil.which("python3", path="/usr/bin:/usr/local/bin:/bin") or "python3"
        client = subprocess.run([python, "-I", "-c", CLIENT, str(path), hello().hex()],
                                capture_output=True, text=True, timeout=15, preexec_fn=_become_nobody)
        assert client.returncode == 0, client.stderr
        result = json.loads(client.stdout)
        assert result["uid"] == NOBODY
        time.sleep(0.2)  # let the log line out
        proc.send_signal(signal.SIGTERM)
        code, err = finish(proc, 10)
        assert code == 128 + signal.SIGTERM, err
        assert "Traceback" not in err, err
        if case == "mode-0600":
            assert result["connect"] == errno.EACCES, result
            assert "uid" not in err, err
        elif case == "refused":
            assert result["connect"] == 0, result
            assert result["received"] == "", f"a refused user got {result['received']}"
            line = f"refused a connection from uid {NOBODY} (pid {result['pid']})"
            assert err.count(line) == 1, err
        else:
            assert result["connect"] == 0, result
            assert bytes.fromhex(result["received"])[: len(MAGIC)] == MAGIC, result
            assert f"uid {NOBODY}" not in err, err
            assert "subflow 2 joined" in err, err  # subflow 1 was ready()'s probe
    finally:
        stop(proc)


# -- 5. shared key ------------------------------------------------------------------

def test_psk_same_key_transfer_and_unauthenticated_frames(tmp_path: Path) -> None:
    """Both sides prove the same key: a transfer over 3 subflows works.  A connection
    that knows B's instance id but not the key cannot get a frame in."""
    key = key_file(tmp_path / "key")
    t = Transfer(tmp_path, size=1 * MB, seconds=0.5, seed=51, args=("--psk-file", key))
    try:
        t.add(3)
        wait_for(lambda: t.a.stderr().count(" joined") >= 3 and t.b.stderr().count(" joined") >= 3,
                 10, "three subflows to join")
        b_instance = instance_of(t.b.socket)
        cases = [
            (frame(DATA, 0, b"forged"), "DATA frame not allowed in state auth"),
            (frame(AUTH, 0, os.urandom(32)), "wrong proof of the shared key"),
        ]
        for forged, _text in cases:
            with connect(t.a.socket) as s:
                send(s, hello(b_instance, flags=HELLO_AUTH) + forged)
                received, reset = drain(s)
            if not reset:
                got = refusal(received)
                assert got is not None and got[0] in (PROTOCOL_ERROR, AUTH_FAILED), got
        t.check()
        assert [line for line in refusals(t.a.stderr())] == [
            "DATA frame not allowed in state auth", "wrong proof of the shared key"], t.a.stderr()
    finally:
        t.close()


@pytest.mark.parametrize("case", ["different-keys", "one-side-only"])
def test_psk_mismatch_refuses_every_subflow(tmp_path: Path, case: str) -> None:
    require("socat")
    a_in = random_file(tmp_path / "a.in", 64 * 1024, seed=61)
    b_in = random_file(tmp_path / "b.in", 64 * 1024, seed=62)
    a_key = ["--psk-file", key_file(tmp_path / "a.key")]
    b_key = ["--psk-file", key_file(tmp_path / "b.key")] if case == "different-keys" else []
    common = ["-v", "--no-subflow-timeout", "3"]
    a = Peer(tmp_path, "a", a_in, *common, *a_key)
    b = Peer(tmp_path, "b", b_in, *common, *b_key)
    relays: list[subprocess.Popen[bytes]] = []
    try:
        ready(a.socket)
        ready(b.socket)
        relays = [socat_subflow(a, b) for _ in range(3)]
        assert a.wait(15) == 6, a.stderr()
        assert b.wait(15) == 6, b.stderr()
        assert a.out.read_bytes() == b"" and b.out.read_bytes() == b""
        a_err, b_err = a.stderr(), b.stderr()
        assert "Traceback" not in a_err + b_err
        assert " joined" not in a_err + b_err
        if case == "different-keys":
            for err in (a_err, b_err):
                lines = refusals(err)
                assert lines and all(line == "wrong proof of the shared key" for line in lines), err
        else:
            lines = refusals(b_err)
            assert lines and all(line == "peer requires a shared key (--psk-file) and we have none"
                                 for line in lines), b_err
            assert "peer refused it: peer requires a shared key" in a_err, a_err
    finally:
        for r in relays:
            kill(r)
        a.close()
        b.close()


@pytest.mark.parametrize("case", ["short", "empty", "missing"])
def test_psk_bad_key_file_is_a_usage_error(tmp_path: Path, case: str) -> None:
    key = tmp_path / "key"
    if case == "short":
        key.write_bytes(b"0123456789\n")
    elif case == "empty":
        key.write_bytes(b"")
    path = tmp_path / "s.sock"
    result = run("--psk-file", str(key), str(path))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert ("cannot read the key file" if case == "missing" else "too short") in lines[0], result.stderr
    assert not os.path.lexists(path)


def test_psk_a_connection_that_never_proves_the_key_times_out(tmp_path: Path) -> None:
    """A hello, then no proof: the connection does not hold its slot past the handshake timeout."""
    key = key_file(tmp_path / "key")
    proc = spawn(tmp_path / "a.sock", "--psk-file", key, "--handshake-timeout", "1")
    try:
        ready(tmp_path / "a.sock")
        with connect(tmp_path / "a.sock") as s:
            start = time.monotonic()
            send(s, hello(flags=HELLO_AUTH))
            head = recv_at_least(s, HELLO.size + HEADER.size)
            assert HELLO.unpack_from(head)[2] & HELLO_AUTH, "the hello does not ask for a key"
            assert HEADER.unpack_from(head, HELLO.size)[0] == AUTH, "no proof after the hello"
            received, reset = drain(s, timeout=3)
            took = time.monotonic() - start
        assert 0.9 <= took <= 2.5, f"closed after {took:.2f} s"
        if not reset:
            assert refusal(head + received) == (HANDSHAKE_TIMEOUT, "handshake not completed within 1 s")
        proc.send_signal(signal.SIGTERM)
        code, err = finish(proc, 10)
        assert code == 128 + signal.SIGTERM, err
        assert refusals(err) == ["handshake not completed within 1 s"], err
    finally:
        stop(proc)


def test_an_unauthenticated_reason_cannot_forge_log_lines(tmp_path: Path) -> None:
    """A REFUSE from a connection that has not proved the key is logged, but its
    attacker-chosen reason must not start new log lines or carry terminal escapes."""
    key = key_file(tmp_path / "key")
    proc = spawn(tmp_path / "a.sock", "-v", "--psk-file", key)
    try:
        ready(tmp_path / "a.sock")
        with connect(tmp_path / "a.sock") as s:
            reason = b"bye\nsockimux[1]: session over: forged\x1b[2J"
            send(s, hello(flags=HELLO_AUTH) + frame(REFUSE, PROTOCOL_ERROR, reason))
            drain(s)
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        code, err = finish(proc, 10)
        assert code == 128 + signal.SIGTERM, err
        assert "bye" in err, err
        assert "\x1b" not in err, repr(err)
        assert all(line.startswith("sockimux[") for line in err.splitlines()), repr(err)
    finally:
        stop(proc)
