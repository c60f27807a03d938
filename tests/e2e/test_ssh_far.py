"""The far half of `sockimux ssh`, against a real private sshd on 127.0.0.1:
the bootstrap that needs only python3 there, the detached far process, the
SCM_RIGHTS hand-off of each ssh channel, the idle timeout and the clean-up.

No sockimux session runs here: the far process runs with --loopback, which
echoes every byte of every channel it is handed.
"""

from __future__ import annotations

import contextlib
import os
import select
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from sockimux.remote import bootstrap
from sockimux.remote.handoff import HELPER, FarInfo, helper_command, parse_preamble
from sockimux.remote.sshcmd import ssh_argv

from .harness import require
from .test_ssh_example import Sshd, sshd  # noqa: F401 (the fixture)

PYENV = Path("/root/.pyenv/versions")
CLEAN_PYTHON = ("env", "-i", "/usr/bin/python3", "-I", "-S")  # no venv, no site, no environment
PREAMBLE_TIMEOUT = 20.0


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def _wait_until(cond: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def _read_line(proc: subprocess.Popen[bytes], timeout: float = PREAMBLE_TIMEOUT) -> bytes:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    line = b""
    deadline = time.monotonic() + timeout
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            pytest.fail(f"no preamble line within {timeout} s (got {line!r})")
        byte = os.read(fd, 1)
        if not byte:
            pytest.fail(f"the channel ended before its preamble (got {line!r}, ssh rc {proc.wait(5)})")
        line += byte
    return line


def _ssh(server: Sshd, command: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(server.ssh("127.0.0.1", command), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0,
                            start_new_session=True)


def _echo(proc: subprocess.Popen[bytes], size: int, seed: int) -> None:
    """Send `size` random bytes through a channel and get the same bytes back."""
    assert proc.stdin is not None and proc.stdout is not None
    data = os.urandom(size) if seed < 0 else bytes((seed + i) % 251 for i in range(size))
    writer = threading.Thread(target=proc.stdin.write, args=(data,))
    writer.start()
    got = bytearray()
    deadline = time.monotonic() + 30
    while len(got) < size:
        if time.monotonic() > deadline or not select.select([proc.stdout], [], [], 5)[0]:
            pytest.fail(f"echo stalled after {len(got)} of {size} bytes")
        chunk = os.read(proc.stdout.fileno(), 1 << 16)
        assert chunk, f"the channel ended after {len(got)} of {size} bytes echoed"
        got += chunk
    writer.join()
    assert bytes(got) == data


@contextlib.contextmanager
def _processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield procs
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)


def _start_far(server: Sshd, procs: list[subprocess.Popen[bytes]], args: Sequence[str],
               python: Sequence[str] = bootstrap.DEFAULT_PYTHON) -> tuple[subprocess.Popen[bytes], FarInfo]:
    """The first ssh connection: ships the package, starts the far process."""
    first = _ssh(server, bootstrap.remote_command("sockimux.remote.far", ["--loopback", *args], python))
    procs.append(first)
    assert first.stdin is not None
    first.stdin.write(bootstrap.bootstrap_input())
    info = parse_preamble(_read_line(first))
    return first, info


def _join(server: Sshd, procs: list[subprocess.Popen[bytes]], info: FarInfo) -> subprocess.Popen[bytes]:
    """A further ssh connection: the helper hands its channel to the far process."""
    proc = _ssh(server, helper_command(info.socket))
    procs.append(proc)
    assert parse_preamble(_read_line(proc)) == info
    return proc


def _close(proc: subprocess.Popen[bytes]) -> None:
    """End a channel from the near side: EOF in, the echo closes, ssh exits 0."""
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.close()
    assert proc.stdout.read() == b""
    assert proc.wait(15) == 0, proc.stderr.read() if proc.stderr else ""


def test_four_helpers_hand_their_channels_over_and_the_far_process_outlives_the_first_ssh(
        sshd: Sshd) -> None:  # noqa: F811
    idle = 4.0
    with _processes() as procs:
        first, info = _start_far(sshd, procs, ["--idle-timeout", str(idle)])
        assert os.getsid(info.pid) == info.pid, "the far process has no session of its own"
        # Its own fds 0-2 hold no channel: a stray write must not land in a subflow.
        assert [os.readlink(f"/proc/{info.pid}/fd/{fd}") for fd in (0, 1, 2)] == ["/dev/null"] * 3
        assert Path(info.socket).is_socket()
        assert os.stat(Path(info.socket).parent).st_mode & 0o777 == 0o700
        _echo(first, 1 << 20, seed=1)
        helpers = [_join(sshd, procs, info) for _ in range(4)]
        threads = [threading.Thread(target=_echo, args=(h, 4 << 20, 10 + i))
                   for i, h in enumerate(helpers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # The far process holds each channel's descriptors itself: the
        # helpers wait on their UNIX connection, copying nothing.
        far_fds = {os.readlink(f"/proc/{info.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{info.pid}/fd")}
        assert sum(1 for target in far_fds if target.startswith("pipe:")) >= 10, far_fds

        os.killpg(first.pid, signal.SIGKILL)  # the ssh that started it all
        first.wait(5)
        time.sleep(1.0)
        assert _alive(info.pid), "the far process died with the first ssh connection"
        for i, h in enumerate(helpers):
            _echo(h, 64 << 10, seed=50 + i)
        late = _join(sshd, procs, info)  # and it still takes new ones
        _echo(late, 64 << 10, seed=99)
        for h in [*helpers, late]:
            _close(h)
        closed_at = time.monotonic()
        time.sleep(idle / 2)
        assert _alive(info.pid), "the far process left before its idle timeout"
        _wait_until(lambda: not _alive(info.pid), idle + 10, "the far process to give up when idle")
        assert time.monotonic() - closed_at >= idle - 0.5
        assert not Path(info.socket).parent.exists(), "the far process left its directory behind"


def test_an_unused_far_process_gives_up_and_cleans_up(sshd: Sshd) -> None:  # noqa: F811
    with _processes() as procs:
        first, info = _start_far(sshd, procs, ["--idle-timeout", "1"])
        _close(first)
        _wait_until(lambda: not _alive(info.pid), 10, "the idle far process to exit")
        assert not Path(info.socket).parent.exists()
        # A helper that comes too late says so in one line and exits 3.
        late = _ssh(sshd, helper_command(info.socket))
        procs.append(late)
        out, err = late.communicate(timeout=20)
        assert late.returncode == 3 and out == b""
        assert err.decode().startswith("sockimux: no far sockimux at"), err
        assert len(err.decode().splitlines()) == 1, err


def _clean_python_cannot_import_sockimux(server: Sshd) -> None:
    probe = " ".join(shlex.quote(w) for w in [*CLEAN_PYTHON, "-c", "import sockimux"])
    check = subprocess.run(server.ssh("127.0.0.1", probe), capture_output=True, timeout=30,
                           stdin=subprocess.DEVNULL)
    assert check.returncode == 1 and b"No module named 'sockimux'" in check.stderr, check


def test_bootstrap_with_a_clean_python_leaves_nothing_behind(sshd: Sshd) -> None:  # noqa: F811
    _clean_python_cannot_import_sockimux(sshd)
    home = Path(tempfile.mkdtemp(prefix="simx-home"))
    tmp_before = set(os.listdir("/tmp"))
    try:
        python = ("env", "-i", f"HOME={home}", *CLEAN_PYTHON[2:])
        with _processes() as procs:
            first, info = _start_far(sshd, procs, ["--idle-timeout", "1"], python)
            assert info.socket.startswith("/tmp/sockimux-0-")
            helper = _join(sshd, procs, info)
            _echo(first, 256 << 10, seed=3)
            _echo(helper, 256 << 10, seed=4)
            _close(first)
            _close(helper)
            _wait_until(lambda: not _alive(info.pid), 10, "the far process to exit")
        assert list(home.rglob("*")) == [], "the far side wrote into $HOME"
        # Only names of the far side's kind: other sockimux tests and benches
        # may be running on this machine and using /tmp too.
        new = {name for name in set(os.listdir("/tmp")) - tmp_before
               if name.startswith(f"sockimux-{os.getuid()}-")}
        assert not Path(info.socket).parent.exists()
        assert new == set(), f"the far side left {new} in /tmp"
    finally:
        home.rmdir()


PROBE = """\
import importlib, sys
def main(argv):
    names = sorted(n for n in sys.meta_path[0]._modules if n.startswith("sockimux")
                   and n != "sockimux.__main__")  # that one runs the command line
    for name in names:
        assert importlib.import_module(name).__file__.startswith("<sockimux shipped>/"), name
    print(len(names), "uvloop" in sys.modules, sys.flags.isolated, sys.flags.no_site)
    return 0
"""


def test_every_shipped_module_imports_on_a_bare_python(sshd: Sshd) -> None:  # noqa: F811
    """Nothing imported on the far side may need a package beyond the stdlib."""
    cmd = bootstrap.remote_command("simx_probe", [], CLEAN_PYTHON)
    run = subprocess.run(sshd.ssh("127.0.0.1", cmd), input=bootstrap.bootstrap_input({"simx_probe": PROBE}),
                         capture_output=True, timeout=60)
    assert run.returncode == 0, run.stderr.decode()
    count, uvloop, isolated, no_site = run.stdout.decode().split()
    assert int(count) == len(bootstrap.package_sources()) - 1 and uvloop == "False"
    assert (isolated, no_site) == ("1", "1")


def test_a_channel_that_is_one_socket_is_handed_over_as_a_socket(tmp_path: Path) -> None:
    """sshd builds that give the command a socketpair, not pipes (here without ssh)."""
    near, far_end = socket.socketpair()
    cmd = bootstrap.remote_command("sockimux.remote.far", ["--loopback", "--idle-timeout", "1"],
                                   ("/usr/bin/python3", "-I", "-S"))
    proc = subprocess.Popen([require("sh"), "-c", cmd], stdin=far_end, stdout=far_end,
                            start_new_session=True)
    far_end.close()
    try:
        near.sendall(bootstrap.bootstrap_input())
        line = b""
        near.settimeout(20)
        while not line.endswith(b"\n"):
            line += near.recv(1)
        info = parse_preamble(line)
        fds = os.listdir(f"/proc/{info.pid}/fd")
        assert any(os.readlink(f"/proc/{info.pid}/fd/{fd}").startswith("socket:") for fd in fds)
        data = os.urandom(1 << 20)
        threading.Thread(target=near.sendall, args=(data,), daemon=True).start()
        got = bytearray()
        while len(got) < len(data):
            chunk = near.recv(1 << 16)
            assert chunk
            got += chunk
        assert got == data
        near.shutdown(socket.SHUT_WR)
        assert near.recv(1) == b""
        assert proc.wait(10) == 0
        _wait_until(lambda: not _alive(info.pid), 10, "the far process to exit")
        assert not Path(info.socket).parent.exists()
    finally:
        near.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def test_the_command_lines_survive_any_shell_quoting() -> None:
    """No single quote, backslash or newline: sh, bash, zsh, fish and csh all
    pass shlex.quote's single-quoted words through unchanged."""
    for code in (bootstrap.LOADER, HELPER):
        assert not set(code) & set("'\\\n"), code
    assert len(bootstrap.remote_command("sockimux.remote.far")) < 400
    assert len(helper_command("/tmp/sockimux-0-abcdefgh/s")) < 700


def _pyenv_python(version: str) -> str:
    """A python of that minor version: pyenv's (as on the test host), or pythonX.Y on PATH."""
    found = sorted(PYENV.glob(f"{version}.*/bin/python{version.split('.')[0]}"))
    on_path = shutil.which(f"python{version}")
    if not found and on_path:
        found.append(os.path.realpath(on_path))
    if not found:
        pytest.fail(f"no python {version} under {PYENV}: the test needs it")
    return str(found[-1])


@pytest.mark.parametrize("version", ["3.10", "3.12", "3.13"])
def test_the_bootstrap_runs_on_every_supported_python(version: str) -> None:
    python = _pyenv_python(version)
    cmd = bootstrap.remote_command("sockimux.remote.far", ["--loopback", "--idle-timeout", "1"],
                                   ("env", "-i", python, "-I", "-S"))
    proc = subprocess.Popen([require("sh"), "-c", cmd], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, bufsize=0, start_new_session=True)
    try:
        assert proc.stdin is not None
        proc.stdin.write(bootstrap.bootstrap_input())
        info = parse_preamble(_read_line(proc))
        _echo(proc, 256 << 10, seed=7)
        _close(proc)
        _wait_until(lambda: not _alive(info.pid), 10, "the far process to exit")
        assert not Path(info.socket).parent.exists()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


@pytest.mark.parametrize("version", ["3.6", "3.9"])
def test_a_python_too_old_is_one_line_and_exit_3(version: str) -> None:
    python = (_pyenv_python(version), "-I", "-S")
    cmd = bootstrap.remote_command("sockimux.remote.far", ["--loopback"], python)
    run = subprocess.run([require("sh"), "-c", cmd], input=bootstrap.bootstrap_input(), capture_output=True,
                         timeout=30)
    assert run.returncode == 3 and run.stdout == b""
    want = f"sockimux: python3 on this host is {version}; sockimux needs 3.10 or later\n"
    assert run.stderr.decode() == want


def _accepted(server: Sshd) -> int:
    return server.log.read_text(errors="replace").count("Accepted publickey")


def test_a_control_master_in_the_users_config_does_not_merge_the_connections(sshd: Sshd) -> None:  # noqa: F811
    """Four channels are four TCP connections (four logins at sshd), though
    the user's config asks for a ControlMaster; without our options it merges them."""
    config = sshd.root / "ssh_config_master"
    config.write_text(sshd.client_config.read_text().replace(
        "ControlMaster no", "ControlMaster auto").replace(
        "ControlPath none", f"ControlPath {sshd.root}/cm-%C\n  ControlPersist 30"))
    user = ["-F", str(config)]
    with contextlib.ExitStack() as cleanup, _processes() as procs:
        cleanup.callback(subprocess.run, [require("ssh"), *user, "-O", "exit", "127.0.0.1"],
                         timeout=10, capture_output=True)  # the control run's master, if still there
        # The control run: the user's config alone puts two sessions on one login.
        before = _accepted(sshd)
        for _ in range(2):
            plain = subprocess.run([require("ssh"), *user, "127.0.0.1", "true"], timeout=30,
                                   stdin=subprocess.DEVNULL, capture_output=True)
            assert plain.returncode == 0, plain
        _wait_until(lambda: _accepted(sshd) > before, 10, "the control run's login")
        time.sleep(0.5)
        assert _accepted(sshd) == before + 1, "the test's ControlMaster config does not merge sessions"

        before = _accepted(sshd)
        command = bootstrap.remote_command("sockimux.remote.far", ["--loopback", "--idle-timeout", "2"])
        first = subprocess.Popen(ssh_argv("127.0.0.1", command, user), stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, bufsize=0, start_new_session=True)
        procs.append(first)
        assert first.stdin is not None
        first.stdin.write(bootstrap.bootstrap_input())
        info = parse_preamble(_read_line(first))
        helpers = []
        for _ in range(3):
            h = subprocess.Popen(ssh_argv("127.0.0.1", helper_command(info.socket), user),
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0,
                                 start_new_session=True)
            procs.append(h)
            assert parse_preamble(_read_line(h)) == info
            helpers.append(h)
        for i, h in enumerate([first, *helpers]):
            _echo(h, 64 << 10, seed=20 + i)
        assert _accepted(sshd) - before == 4
        for h in [first, *helpers]:
            _close(h)
