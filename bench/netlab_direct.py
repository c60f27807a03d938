"""One sockimux transfer over the lab's links with no socat: sockimux opens its TCP subflows itself.

Used by netlab_tcp.py.  The lab (../shared/lab/netlab) is loaded as a module, and
its building blocks do what they do for its own ``run``: the namespaces and
shaped links (Topology), the payload (make_payload), the checker of what
arrives (StreamReceiver: byte count, sha256, time of the first and of the last
byte), the per-link wire counters (LinkMeter), the faults (FaultSchedule) and
the CPU load (CpuTicks), all through TransferClock.  Only the two processes
differ from netlab's ImuxRun:

    RIGHT: sockimux --listen TCP-LISTEN:PORT            stdout -> checker
    LEFT:  sockimux --connect TCP:10.199.k.2:PORT,bind=10.199.k.1,connect-timeout=S
                    (once per link k)                   stdin  <- payload

t0 is when LEFT is started (it opens its subflows itself, as netlab's t0 is
when it starts opening socat pairs); the throughput is timed where the data
arrives (first to last byte), as netlab times it.

Congestion control: netlab sets ``--cc`` (default cubic) on every socket it
creates; the namespaces' default is bbr and cubic cannot be made the default
there (it is not in tcp_allowed_congestion_control).  sockimux has no option
for it, so with a --cc other than ``default`` both sockimux processes are
started through ``python bench/netlab_direct.py _cc CC ARGS``, which sets
TCP_CONGESTION on every TCP socket sockimux creates (connecting sockets, and
the listening one, whose accepted connections inherit it) and then runs
sockimux's own main().  Nothing else changes.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
NETLAB = ROOT.parent / "shared" / "lab" / "netlab"
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
PORT = 7000
CONNECT_TIMEOUT_S = 2.0  # a SYN into a black hole must not wait for the kernel's minutes


def load_netlab(path: Path = NETLAB) -> ModuleType:
    """The lab's script as a module (it has no .py suffix)."""
    loader = importlib.machinery.SourceFileLoader("netlab", str(path))
    spec = importlib.util.spec_from_loader("netlab", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["netlab"] = module  # its dataclasses look themselves up here
    loader.exec_module(module)
    return module


def sockimux_argv(cc: str | None, args: list[str]) -> list[str]:
    if cc is None:
        return [str(ROOT / "sockimux"), *args]
    return [str(VENV_PYTHON), str(Path(__file__).resolve()), "_cc", cc, *args]


class DirectRun:
    """One a2b transfer: LEFT sockimux with one ``--connect TCP:...,bind=`` per link,
    RIGHT sockimux with ``--listen TCP-LISTEN``; faults as netlab's (--fail/--restore)."""

    def __init__(self, nl: ModuleType, lab: Any, *, nbytes: int | None = None,
                 stats_interval: float = 0.5, extra_args: list[str] | None = None) -> None:
        self.nl = nl
        self.lab = lab
        self.topo = lab.topo
        self.dir = lab.new_dir("direct")
        self.capacity = self.topo.total_rate
        self.nbytes = nbytes or lab.transfer_bytes(self.capacity)
        self.timeout_s = lab.transfer_timeout(self.nbytes, self.capacity)
        self.stats_interval = stats_interval
        self.extra_args = extra_args or []
        self.port = PORT + lab.run_count  # a fresh port per run: no TIME_WAIT of the last one
        faults = nl.FaultSchedule(lab.opts.fail + lab.opts.restore, "blackhole", self.topo)
        self.clock = nl.TransferClock(self.topo, faults, self.timeout_s)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.stats_files = {side: os.path.join(self.dir, f"stats-{side}.jsonl") for side in "AB"}
        self.idle: Any = None  # the checker of LEFT's stdout, which must stay silent

    def left_args(self) -> list[str]:
        connects = []
        for link in self.topo.links:
            connects += ["--connect", f"TCP:{link.right_addr}:{self.port},bind={link.left_addr},"
                                      f"connect-timeout={CONNECT_TIMEOUT_S:g}"]
        return [*connects, *self._common("A")]

    def right_args(self) -> list[str]:
        return ["--listen", f"TCP-LISTEN:{self.port}", *self._common("B")]

    def _common(self, side: str) -> list[str]:
        return ["-v", f"--stats={self.stats_interval:g}", "--stats-file", self.stats_files[side],
                *self.extra_args]

    def execute(self) -> dict[str, Any]:
        nl = self.nl
        payload = nl.make_payload(os.path.join(self.dir, "payload.bin"), self.nbytes)
        nl.log.info(f"direct sockimux: {self.nbytes} bytes a2b over {len(self.topo.links)} links, "
                    f"timeout {self.timeout_s:g} s")
        receiver = None
        try:
            receiver = self._start_right(payload)
            self._wait_listening()
            in_time = self.clock.run(start=lambda: self._start_left(payload),
                                     finished=lambda: receiver.finished)
            killed = self._wind_down(receiver, in_time)
            return self._report(payload, receiver, in_time, killed)
        finally:
            self.lab.procs.stop(self.procs.values())
            self.topo.heal()

    def _start(self, side: str, argv: list[str], stdin: Any) -> subprocess.Popen[bytes]:
        netns = self.topo.left_ns if side == "A" else self.topo.right_ns
        cc = self.lab.cc
        with open(os.path.join(self.dir, f"sockimux-{side}.stderr"), "wb") as err:
            proc: subprocess.Popen[bytes] = self.lab.procs.start(
                sockimux_argv(cc, argv), netns=netns, stdin=stdin, stdout=subprocess.PIPE,
                stderr=err, bufsize=0, cwd=str(ROOT))
        self.procs[side] = proc
        return proc

    def _start_right(self, payload: Any) -> Any:
        proc = self._start("B", self.right_args(), subprocess.DEVNULL)
        receiver = self.nl.StreamReceiver("a2b", proc.stdout, payload,
                                          os.path.join(self.dir, "output-a2b.bin"))
        receiver.start()
        return receiver

    def _start_left(self, payload: Any) -> None:
        with open(payload.path, "rb") as stdin:
            proc = self._start("A", self.left_args(), stdin)
        self.idle = self.nl.StreamReceiver("b2a", proc.stdout, None,
                                           os.path.join(self.dir, "output-b2a.bin"))
        self.idle.start()

    def _wait_listening(self) -> None:
        def listening() -> bool:
            right = self.procs["B"]
            if right.poll() is not None:
                raise self.nl.LabError(f"sockimux B exited ({right.returncode}): {self.stderr_tail('B')}")
            out = self.nl.run_cmd(["ss", "-N", self.topo.right_ns, "-Hltn"], check=False)
            return f":{self.port} " in out
        if not self.nl.wait_until(listening, timeout_s=15.0):
            raise self.nl.LabError(f"sockimux B not listening on {self.port} after 15 s")

    def _wind_down(self, receiver: Any, in_time: bool) -> set[str]:
        if in_time:
            self.nl.wait_until(lambda: all(p.poll() is not None for p in self.procs.values())
                               and receiver.eof, timeout_s=self.lab.opts.grace, tick_s=0.05)
        killed = {side for side, p in self.procs.items() if p.poll() is None}
        self.lab.procs.stop(self.procs.values())
        receiver.join(timeout=5.0)
        if self.idle is not None:
            self.idle.join(timeout=5.0)
        return killed

    def _report(self, payload: Any, receiver: Any, in_time: bool, killed: set[str]) -> dict[str, Any]:
        nl = self.nl
        direction = nl.direction_result("a2b", payload, receiver.arrival(), self.clock.t0, self.capacity)
        direction["eof"] = receiver.eof
        reasons = [] if in_time else [f"timed out after {self.timeout_s:g} s"]
        if not receiver.intact:
            reasons.append(f"a2b: received {receiver.received} of {payload.size} bytes"
                           + (", sha256 differs" if receiver.received == payload.size else ""))
        if self.idle is not None and self.idle.received:
            reasons.append(f"b2a: {self.idle.received} bytes arrived although nothing was sent")
        exits = {side: nl.exit_status(p, side in killed) for side, p in self.procs.items()}
        reasons += [f"sockimux {side} exit status: {s}" for side, s in sorted(exits.items()) if s != "0"]
        return {
            "kind": "direct",
            "verdict": "FAIL" if reasons else "PASS",
            "reasons": reasons,
            "directions": [direction],
            "exit_status": exits,
            "argv": {"A": self.left_args(), "B": self.right_args()},
            "stats_files": self.stats_files,
            "stderr_tail": {side: self.stderr_tail(side) for side in self.procs},
            "stderr_path": {side: os.path.join(self.dir, f"sockimux-{side}.stderr") for side in "AB"},
            "t0": self.clock.t0,
            **self.clock.report(direction["duration_s"]),
        }

    def stderr_tail(self, side: str, lines: int = 5) -> str:
        try:
            with open(os.path.join(self.dir, f"sockimux-{side}.stderr"), "rb") as f:
                text = f.read()[-4000:].decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])


def _run_with_cc(cc: str, args: list[str]) -> int:
    """sockimux's main() with TCP_CONGESTION=cc on every TCP socket it creates."""
    base = socket.socket

    class CcSocket(base):  # type: ignore[misc,valid-type]
        def __init__(self, family: int = -1, type: int = -1, proto: int = -1,  # noqa: A002
                     fileno: int | None = None) -> None:
            super().__init__(family, type, proto, fileno)
            if fileno is None and self.family in (socket.AF_INET, socket.AF_INET6) \
                    and self.type == socket.SOCK_STREAM:
                with contextlib.suppress(OSError):
                    self.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cc.encode())

    socket.socket = CcSocket  # type: ignore[misc]
    from sockimux.cli import main
    return int(main(args))


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "_cc":
        sys.exit(_run_with_cc(sys.argv[2], sys.argv[3:]))
    sys.exit(f"usage: {sys.argv[0]} _cc CC SOCKIMUX-ARGS... (see bench/netlab_tcp.py)")
