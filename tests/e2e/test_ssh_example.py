"""The original README's "One SSH session over multiple TCP sessions" example, for real.

Everything runs on this machine: a throwaway sshd on 127.0.0.1 plays `somehost`.
Each ssh session through the ProxyCommand is its own sockimux pair, set up
exactly as the README does it:

    ssh -o "ProxyCommand sockimux A" root@127.0.0.1 CMD                # the user's ssh
    ssh 127.0.0.1 "socat EXEC:'sockimux B' TCP:127.0.0.1:PORT" &       # the far side
    socat UNIX-CONNECT:A EXEC:"ssh 127.0.0.1 socat STDIO UNIX-CONNECT\\:B" &   # x4 subflows

The one addition: the ProxyCommand runs sockimux under a tiny wrapper that
forwards signals to it and writes down its exit code and stderr (ssh starts
the ProxyCommand itself, so the test cannot wait for it directly).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .harness import SOCKIMUX, random_file, require, sha256_file

MB = 1 << 20
SUBFLOWS = 4
SESSION_TIMEOUT = 45.0  # one ssh session through the ProxyCommand, 20 MB included
EXIT_TIMEOUT = 15.0  # for everything else to go once that ssh is done

# ssh starts the ProxyCommand as `sh -c "exec CMD"` and sends it SIGHUP as it
# exits; this wrapper passes every such signal on to sockimux unchanged, so
# sockimux sees just what it would see as the ProxyCommand itself.
PROXY_WRAPPER = """\
import os, signal, subprocess, sys
rc_path, err_path, *cmd = sys.argv[1:]
child = None
def forward(signo, frame):
    if child is not None and child.poll() is None:
        child.send_signal(signo)
for signo in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
    signal.signal(signo, forward)
with open(err_path, "wb") as err:
    child = subprocess.Popen(cmd, stderr=err)
    rc = child.wait()
with open(rc_path + ".tmp", "w") as f:
    f.write(str(rc))
os.replace(rc_path + ".tmp", rc_path)
sys.exit(rc if rc >= 0 else 128 - rc)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _read(path: Path, limit: int = 4000) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(missing)"
    return text if len(text) <= limit else "...\n" + text[-limit:]


def _wait(cond: Callable[[], bool], timeout: float, what: str, logs: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}\n{logs()}")
        time.sleep(0.02)


def _strays(marker: str) -> list[int]:
    """Live processes whose command line names our private directory: only ours do."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{entry}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != b"Z" and marker.encode() in cmdline:
            pids.append(int(entry))
    return pids


def _kill_pids(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Kill a process we started in a session of its own, with whatever it started there."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def _spawn(argv: list[str], err: Path, stdin: Path | None = None,
           stdout: Path | None = None) -> subprocess.Popen[bytes]:
    """Start argv in its own session, stderr (and STDIN/STDOUT if given) in files."""
    with contextlib.ExitStack() as files:
        stdin_f = files.enter_context(open(stdin or os.devnull, "rb"))
        stdout_f = files.enter_context(open(stdout or os.devnull, "wb"))
        err_f = files.enter_context(open(err, "wb"))
        return subprocess.Popen(argv, stdin=stdin_f, stdout=stdout_f, stderr=err_f,
                                start_new_session=True)


@dataclass
class Sshd:
    root: Path  # a short private directory: keys, configs, sockets, logs
    port: int
    client_config: Path
    log: Path
    wrapper: Path
    sessions: int = 0

    def ssh(self, *args: str) -> list[str]:
        return [require("ssh"), "-F", str(self.client_config), *args]


@pytest.fixture(scope="module")
def sshd() -> Iterator[Sshd]:
    sshd_bin = require("sshd")
    keygen = require("ssh-keygen")
    require("ssh")
    require("socat")
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation dir
    # Short, plain paths: UNIX socket paths are limited to 108 bytes, and socat's
    # EXEC: parser must not meet any of its special characters in them.
    root = Path(tempfile.mkdtemp(prefix="simx"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        for name in ("host_key", "user_key"):
            subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", "sockimux-test",
                            "-f", str(root / name)], check=True, timeout=30,
                           stdin=subprocess.DEVNULL, capture_output=True)
        shutil.copy(root / "user_key.pub", root / "authorized_keys")
        port = _free_port()
        (root / "sshd_config").write_text(f"""\
ListenAddress 127.0.0.1
Port {port}
HostKey {root}/host_key
AuthorizedKeysFile {root}/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes no
UsePAM no
UseDNS no
PidFile none
PrintMotd no
PrintLastLog no
X11Forwarding no
Subsystem sftp internal-sftp
MaxStartups 64:30:128
LogLevel INFO
""")
        client_config = root / "ssh_config"
        client_config.write_text(f"""\
Host *
  User root
  Port {port}
  IdentityFile {root}/user_key
  IdentitiesOnly yes
  UserKnownHostsFile /dev/null
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking no
  BatchMode yes
  LogLevel ERROR
  ConnectTimeout 10
  ControlMaster no
  ControlPath none
  ForwardAgent no
""")
        wrapper = root / "proxywrap.py"
        wrapper.write_text(PROXY_WRAPPER)
        log = root / "sshd.err"
        proc = _spawn([sshd_bin, "-D", "-e", "-f", str(root / "sshd_config")], log)
        sshd_proc = proc

        def listening() -> bool:
            if sshd_proc.poll() is not None:
                pytest.fail(f"sshd exited with {sshd_proc.returncode}:\n{_read(log)}")
            return "Server listening on" in _read(log)

        _wait(listening, 10, "sshd to listen", lambda: _read(log))
        server = Sshd(root, port, client_config, log, wrapper)
        check = subprocess.run(server.ssh("127.0.0.1", "echo login-ok"), capture_output=True,
                               timeout=30, stdin=subprocess.DEVNULL)
        assert check.returncode == 0 and check.stdout == b"login-ok\n", (
            f"plain ssh to the test sshd fails: {check!r}\nsshd:\n{_read(log)}")
        yield server
    finally:
        if proc is not None:
            _stop(proc)
        _kill_pids(_strays(str(root)))
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Session:
    """The outcome of one ssh session through `ProxyCommand sockimux`."""

    dir: Path
    returncode: int  # the user's ssh
    stdout: bytes
    proxy_rc: int  # sockimux A, the ProxyCommand
    far_rc: int  # the far side's ssh: socat's exit code, which runs sockimux B
    logs: str

    def stderr_texts(self) -> dict[str, str]:
        return {p.name: p.read_text(errors="replace") for p in sorted(self.dir.glob("*.err"))}


def run_session(server: Sshd, remote_cmd: str, stdin: Path | None = None,
                stdout: Path | None = None) -> Session:
    """One ssh login through the README's topology, from start until every process is gone."""
    server.sessions += 1
    d = server.root / f"s{server.sessions}"
    d.mkdir()
    sock_a, sock_b = d / "A", d / "B"
    out = stdout or d / "ssh.out"
    procs: list[subprocess.Popen[bytes]] = []

    def logs() -> str:
        parts = [f"--- {p.name}\n{_read(p)}" for p in sorted(d.glob("*.err"))]
        parts.append(f"--- sshd.err\n{_read(server.log)}")
        return "\n".join(parts)

    try:
        proxy = f"{sys.executable} {server.wrapper} {d}/A.rc {d}/sockimux-A.err {SOCKIMUX} {sock_a}"
        user = _spawn(server.ssh("-o", f"ProxyCommand {proxy}", "root@127.0.0.1", remote_cmd),
                      d / "ssh-user.err", stdin=stdin, stdout=out)
        procs.append(user)
        far = _spawn(server.ssh("127.0.0.1",
                                f"socat EXEC:'{SOCKIMUX} {sock_b}' TCP:127.0.0.1:{server.port}"),
                     d / "far-side.err")
        procs.append(far)

        def both_listen() -> bool:
            for name, p in (("the user's ssh", user), ("the far side", far)):
                if p.poll() is not None:
                    pytest.fail(f"{name} exited with {p.returncode} before sockets A and B "
                                f"both existed\n{logs()}")
            return sock_a.is_socket() and sock_b.is_socket()

        _wait(both_listen, 20, "sockets A and B", logs)
        subflows = []
        for i in range(SUBFLOWS):
            sub = _spawn([require("socat"), f"UNIX-CONNECT:{sock_a}",
                          f"EXEC:ssh -F {server.client_config} 127.0.0.1 "
                          f"socat STDIO UNIX-CONNECT\\:{sock_b}"],
                         d / f"subflow{i}.err")
            procs.append(sub)
            subflows.append(sub)

        try:
            returncode = user.wait(SESSION_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the ssh session did not end within {SESSION_TIMEOUT} s\n{logs()}")
        _wait(lambda: (d / "A.rc").exists(), EXIT_TIMEOUT, "the ProxyCommand sockimux to exit",
              logs)
        deadline = time.monotonic() + EXIT_TIMEOUT
        for name, p in [("the far side (sockimux B)", far)] + [
                (f"subflow {i}", s) for i, s in enumerate(subflows)]:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"{name} did not exit within {EXIT_TIMEOUT} s after ssh\n{logs()}")
        # Nothing of this session may be left, on either side of sshd.
        _wait(lambda: not _strays(str(d)), EXIT_TIMEOUT, f"every process of session {d.name} to exit",
              logs)
        assert far.returncode is not None
        return Session(d, returncode, out.read_bytes() if stdout is None else b"",
                       int((d / "A.rc").read_text()), far.returncode, logs())
    finally:
        for p in procs:
            _stop(p)
        _kill_pids(_strays(str(d)))


def assert_clean(session: Session) -> None:
    """The ssh session worked end to end, and nothing crashed along the way."""
    assert session.returncode == 0, f"ssh exited with {session.returncode}\n{session.logs}"
    for name, text in session.stderr_texts().items():
        assert "Traceback" not in text, f"a Python traceback in {name}\n{session.logs}"


def test_remote_command_over_four_ssh_subflows(sshd: Sshd) -> None:
    session = run_session(sshd, "echo remote-ok; hostname")
    assert_clean(session)
    assert session.stdout.decode().splitlines() == ["remote-ok", socket.gethostname()], session.logs


def test_20mb_file_both_ways(sshd: Sshd) -> None:
    src = random_file(sshd.root / "src.bin", 20 * MB, seed=22)
    want = sha256_file(src)
    try:
        up = sshd.root / "up.bin"
        session = run_session(sshd, f"cat > {up}", stdin=src)
        assert_clean(session)
        assert up.stat().st_size == 20 * MB and sha256_file(up) == want, session.logs

        down = sshd.root / "down.bin"
        session = run_session(sshd, f"cat {src}", stdout=down)
        assert_clean(session)
        assert down.stat().st_size == 20 * MB and sha256_file(down) == want, session.logs
    finally:
        for name in ("src.bin", "up.bin", "down.bin"):
            (sshd.root / name).unlink(missing_ok=True)


def test_proxycommand_sockimux_exits_0_when_ssh_is_done(sshd: Sshd) -> None:
    """ssh sends its ProxyCommand SIGHUP as it exits: a finished session is still a success."""
    session = run_session(sshd, "echo bye")
    assert_clean(session)
    assert session.stdout == b"bye\n", session.logs
    assert session.proxy_rc == 0, (
        f"the ProxyCommand sockimux exited with {session.proxy_rc} (far side: "
        f"{session.far_rc})\n{session.logs}")
