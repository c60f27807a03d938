"""Real processes for the tests of --connect, --listen and --stream: sockimux
with any arguments, its input fed at a pace, free ports, a TCP relay that
can be cut, the children of a process."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from .harness import SOCKIMUX
from .launch import WITHOUT_UVLOOP

MB = 1 << 20


def free_port() -> int:
    """A TCP port nobody listens on now (the kernel picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class Imux:
    """One sockimux with ``args``; STDIN ``data`` written over ``seconds``
    (or a file), STDOUT to a file, STDERR to another."""

    def __init__(self, tmp: Path, name: str, *args: str, data: bytes | None = None,
                 seconds: float = 0.0, stdin: Path | None = None, asyncio_loop: bool = False) -> None:
        self.out = tmp / f"{name}.out"
        self.err = tmp / f"{name}.err"
        self._files = [open(self.out, "wb"), open(self.err, "wb")]
        source: int | object = subprocess.PIPE if data is not None else (
            open(stdin, "rb") if stdin is not None else subprocess.DEVNULL)
        command = WITHOUT_UVLOOP if asyncio_loop else [SOCKIMUX]
        self.proc = subprocess.Popen([*command, *args], stdin=source, stdout=self._files[0],
                                     stderr=self._files[1])
        if stdin is not None:
            source.close()  # type: ignore[union-attr]
        self.feeder: threading.Thread | None = None
        if data is not None:
            self.feeder = threading.Thread(target=self._feed, args=(data, seconds), daemon=True)
            self.feeder.start()

    def _feed(self, data: bytes, seconds: float) -> None:
        pipe = self.proc.stdin
        assert pipe is not None
        step = 256 * 1024
        pause = seconds / max(1, len(data) // step)
        try:
            for i in range(0, len(data), step):
                pipe.write(data[i:i + step])
                pipe.flush()
                time.sleep(pause)
        except BrokenPipeError:
            pass
        finally:
            with contextlib.suppress(BrokenPipeError):
                pipe.close()

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"sockimux {self.proc.args} did not exit within {timeout} s; "
                        f"stderr:\n{self.stderr()}")

    def stderr(self) -> str:
        self._files[1].flush()
        return self.err.read_text(errors="replace")

    def children(self) -> list[int]:
        """The pids of this process's children now."""
        pids: list[int] = []
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
                with contextlib.suppress(OSError):
                    pids += [int(p) for p in (task / "children").read_text().split()]
        return pids

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for f in self._files:
            f.close()


class TcpRelay:
    """Forwards every connection to 127.0.0.1:``port`` through this test
    process, and can cut all of them at once (each then closes at both ends)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.server.getsockname()[1]
        self.accepted = 0
        self.peers: list[tuple[str, int]] = []  # where each relayed connection came from
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._by_port: dict[int, tuple[socket.socket, socket.socket]] = {}  # by peers' port
        self._frozen: set[socket.socket] = set()
        self._cut: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                near, peer = self.server.accept()
            except OSError:
                return
            self.peers.append(peer)
            try:
                far = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                near.close()
                continue
            with self._lock:
                self.accepted += 1
                self._pairs.append((near, far))
                self._by_port[peer[1]] = (near, far)
            for a, b in ((near, far), (far, near)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                while src in self._frozen:  # black-holed: nothing moves, nothing closes
                    time.sleep(0.05)
                dst.sendall(data)
            if src not in self._cut:  # a cut sends no FIN, only the RST
                dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def freeze(self) -> int:
        """Stop forwarding on every connection relayed now, in both directions,
        leaving them open (a link that black-holes); how many there were."""
        with self._lock:
            for near, far in self._pairs:
                self._frozen.update((near, far))
            return len(self._pairs)

    def cut(self) -> int:
        """Reset every connection relayed now; how many there were."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
            self._by_port.clear()
        for pair in pairs:
            self._reset(pair)
        return len(pairs)

    def cut_from(self, port: int) -> bool:
        """Reset, at both ends, the one connection that came from local port
        ``port`` (e.g. one ssh's); whether there was one."""
        with self._lock:
            pair = self._by_port.pop(port, None)
            if pair is None:
                return False
            self._pairs.remove(pair)
        self._reset(pair)
        return True

    def _reset(self, pair: tuple[socket.socket, socket.socket]) -> None:
        """Close both sockets with SO_LINGER 0: each sends a TCP RST and
        nothing else, so both ends of the relayed connection see it reset
        (ECONNRESET), as when a connection is cut in the network.  SHUT_RD
        only wakes our pumps blocked in recv() (it sends nothing): the RST
        goes out once they let go of the socket."""
        self._cut.update(pair)
        for s in pair:
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                s.shutdown(socket.SHUT_RD)
            s.close()

    def close(self) -> None:
        self.server.close()
        self.cut()


class BlackHole:
    """A TCP port on 127.0.0.1 that never answers a SYN, as a link that
    black-holes: a listening socket whose accept queue (backlog 0: room
    for one) is full, so the kernel drops every SYN that arrives (with
    net.ipv4.tcp_abort_on_overflow 0, the default)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.port: int = self.sock.getsockname()[1]
        self._filler = socket.create_connection(("127.0.0.1", self.port), timeout=5)

    def close(self) -> None:
        self._filler.close()
        self.sock.close()


class Server:
    """A TCP server on 127.0.0.1 that serves each connection with
    ``serve(conn)`` in a thread, counting the connections."""

    def __init__(self, serve: object) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.accepted = 0
        self._serve = serve
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()  # type: ignore[arg-type]

    def close(self) -> None:
        self.sock.close()


def echo(conn: socket.socket) -> None:
    """Send back everything, half-close after the end."""
    with conn:
        try:
            while data := conn.recv(65536):
                conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass
