"""What the far half of `sockimux ssh` costs, measured against a private sshd.

    .venv/bin/python bench/ssh_far.py [--mib 512] [--repeat 3]

bootstrap
    Bytes the first connection writes before the subflow's own bytes, and
    the time from starting ssh to the far side's preamble: shipping the
    package (always) against an installed sockimux (the venv's python runs
    the far side directly) and a plain `ssh host echo` for scale.
relay vs hand-off
    CPU seconds on the far host per GiB carried each way (echoed back)
    through one ssh channel, counted over every far-host process (the sshd
    processes of the connection, the helper or the relay, the echo end):
    the helper hands its channel over (SCM_RIGHTS) and waits, against a
    relay `socat STDIO UNIX-CONNECT:PATH` per subflow in front of the same
    asyncio echo end (the far process run as a plain UNIX-socket echo).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from sockimux.remote import bootstrap  # noqa: E402
from sockimux.remote.handoff import helper_command, parse_preamble  # noqa: E402

HZ = os.sysconf("SC_CLK_TCK")
ECHO_SERVER = """\
import asyncio, os, sys
async def echo(r, w):
    while data := await r.read(1 << 16):
        w.write(data)
        await w.drain()
    w.close()
async def main():
    server = await asyncio.start_unix_server(echo, sys.argv[1])
    print("ready", flush=True)
    await server.serve_forever()
asyncio.run(main())
"""


def start_sshd(root: Path) -> tuple[subprocess.Popen[bytes], list[str]]:
    for name in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / name)], check=True)
    shutil.copy(root / "user_key.pub", root / "authorized_keys")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (root / "sshd_config").write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {root}/host_key\n"
        f"AuthorizedKeysFile {root}/authorized_keys\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nStrictModes no\nUsePAM no\n"
        "UseDNS no\nPidFile none\nMaxStartups 64:30:128\n")
    (root / "ssh_config").write_text(
        f"Host *\n User root\n Port {port}\n IdentityFile {root}/user_key\n IdentitiesOnly yes\n"
        " UserKnownHostsFile /dev/null\n StrictHostKeyChecking no\n BatchMode yes\n LogLevel ERROR\n"
        " ControlMaster no\n ControlPath none\n")
    os.makedirs("/run/sshd", exist_ok=True)
    sshd = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(root / "sshd_config")],
                            stderr=subprocess.DEVNULL)
    ssh = ["ssh", "-F", str(root / "ssh_config"), "127.0.0.1"]
    for _ in range(100):
        if subprocess.run([*ssh, "true"], capture_output=True).returncode == 0:
            return sshd, ssh
        time.sleep(0.1)
    raise SystemExit("sshd did not come up")


def cpu(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / HZ
    except OSError:
        return 0.0


def descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = set(), [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def pump(proc: subprocess.Popen[bytes], size: int) -> None:
    """Send `size` bytes and read the echo back."""
    assert proc.stdin is not None and proc.stdout is not None
    block = os.urandom(1 << 20)

    def send() -> None:
        assert proc.stdin is not None
        for _ in range(size >> 20):
            proc.stdin.write(block)
        proc.stdin.flush()

    t = threading.Thread(target=send)
    t.start()
    got = 0
    while got < size:
        chunk = os.read(proc.stdout.fileno(), 1 << 20)
        assert chunk
        got += len(chunk)
    t.join()


def comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def measure(ssh: list[str], sshd_pid: int, command: str, far_pids: list[int], size: int,
            preamble: bool) -> dict[str, float]:
    proc = subprocess.Popen([*ssh, command], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    assert proc.stdout is not None
    if preamble:
        line = b""
        while not line.endswith(b"\n"):
            line += os.read(proc.stdout.fileno(), 1)
    else:
        time.sleep(1.0)
    pids = descendants(sshd_pid) | set(far_pids)
    before = {p: cpu(p) for p in pids}
    pump(proc, size)
    pids2 = descendants(sshd_pid) | set(far_pids)
    by_name: dict[str, float] = {}
    for p in pids & pids2:
        name = "echo end" if p in far_pids else comm(p)
        by_name[name] = by_name.get(name, 0.0) + (cpu(p) - before[p]) / (size / (1 << 30))
    by_name["total"] = sum(by_name.values())
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait()
    return by_name


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    size = args.mib << 20
    root = Path(tempfile.mkdtemp(prefix="simxb"))
    sshd, ssh = start_sshd(root)
    try:
        payload = bootstrap.bootstrap_input()
        print(f"bootstrap: command {len(bootstrap.remote_command('sockimux.remote.far'))} bytes, "
              f"stage 2 {len(bootstrap.stage2())} bytes, package {len(bootstrap.package_payload())} "
              f"bytes ({len(bootstrap.package_sources())} modules), {len(payload)} bytes in all")
        # The same interpreter for both far sides (pyenv's shim alone adds ~100 ms).
        venv_python = str(Path(__file__).resolve().parents[1] / ".venv/bin/python")
        run_far = "import sys; from sockimux.remote.far import main; sys.exit(main(sys.argv[1:]))"
        installed = " ".join(shlex.quote(w) for w in [
            venv_python, "-c", run_far, "--loopback", "--idle-timeout", "2"])
        for label, command, data in [
                ("plain ssh echo", "echo sockimux-far", b""),
                ("installed far side", installed, b""),
                ("shipped far side", bootstrap.remote_command(
                    "sockimux.remote.far", ["--loopback", "--idle-timeout", "2"],
                    (os.path.realpath(venv_python),)), payload)]:
            times = []
            for _ in range(args.repeat):
                t0 = time.monotonic()
                p = subprocess.Popen([*ssh, command], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     bufsize=0)
                assert p.stdin is not None and p.stdout is not None
                p.stdin.write(data)
                line = b""
                while not line.endswith(b"\n"):
                    line += os.read(p.stdout.fileno(), 1)
                times.append(time.monotonic() - t0)
                p.stdin.close()
                p.wait()
            print(f"  {label:20s} to first line: median {sorted(times)[len(times) // 2] * 1000:.0f} ms")

        # The far side for the hand-off: a shipped loopback far process.
        first = subprocess.Popen([*ssh, bootstrap.remote_command(
            "sockimux.remote.far", ["--loopback", "--idle-timeout", "30"])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        assert first.stdin is not None and first.stdout is not None
        first.stdin.write(payload)
        line = b""
        while not line.endswith(b"\n"):
            line += os.read(first.stdout.fileno(), 1)
        info = parse_preamble(line)
        # The far side for the relay: the same asyncio echo, on a plain UNIX socket.
        echo_path = str(root / "echo.sock")
        echo = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, echo_path], stdout=subprocess.PIPE)
        assert echo.stdout is not None
        echo.stdout.readline()
        relay = f"socat STDIO UNIX-CONNECT:{echo_path}"
        print(f"far-host CPU per GiB each way ({args.mib} MiB echoed, {args.repeat} runs, median):")
        for label, command, pids, pre in [
                ("hand-off (helper)", helper_command(info.socket), [info.pid], True),
                ("relay (socat)", relay, [echo.pid], False)]:
            runs = sorted((measure(ssh, sshd.pid, command, pids, size, pre) for _ in range(args.repeat)),
                          key=lambda r: r["total"])
            mid = runs[len(runs) // 2]
            parts = ", ".join(f"{k} {v:.2f}" for k, v in sorted(mid.items()) if k != "total")
            totals = ", ".join(f"{r['total']:.2f}" for r in runs)
            print(f"  {label:20s} {mid['total']:.2f} s  ({parts}; totals {totals})")
        first.stdin.close()
        first.wait()
        echo.kill()
    finally:
        sshd.kill()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
