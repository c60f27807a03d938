"""`sockimux ssh`, the one-command ssh mode, against the private sshd on
127.0.0.1 (test_ssh_example's fixture): the far side is started over ssh
by the first connection, the others hand their channels to it, and each
subflow is its own ssh, re-opened when it dies."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sockimux.remote.near import FAR_ENTRY
from sockimux.remote.sshcmd import CONNECT_TIMEOUT, default_options

from .dialing import BlackHole, TcpRelay, free_port
from .harness import SOCKIMUX, feed, random_file, require, sha256_file
from .test_ssh_example import Sshd, _read, _spawn, _stop, _strays, _wait, sshd  # noqa: F401 (the fixture)

MB = 1 << 20
SUBFLOWS = 4


def _ssh_mode(server: Sshd, *args: str) -> list[str]:
    """sockimux ssh with the test sshd's client config (its port, key, user)."""
    return [SOCKIMUX, "ssh", "-n", str(SUBFLOWS), "--idle-timeout", "30", "-F",
            str(server.client_config), *args]


def _ssh_children(pid: int) -> list[int]:
    """The ssh processes a sockimux started: one per subflow."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(k) for k in f.read().split()]
    except OSError:
        return []
    found = []
    for kid in kids:
        try:
            with open(f"/proc/{kid}/cmdline", "rb") as f:
                argv0 = f.read().split(b"\0")[0]
        except OSError:
            continue
        if os.path.basename(argv0) == b"ssh":
            found.append(kid)
    return found


def _far_processes(server: Sshd) -> list[int]:
    """The far sockimux processes started through ``server``: sshd put its
    own port at the end of their SSH_CONNECTION.  Not the near ssh's (their
    command lines name the far entry too), nor those of other test runs on
    this machine, each with an sshd of its own."""
    mine = f" {server.port}".encode()
    found = []
    for pid in _strays(FAR_ENTRY):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(var.startswith(b"SSH_CONNECTION=") and var.endswith(mine) for var in env):
            found.append(pid)
    return found


def test_proxycommand_one_liner_runs_a_remote_command(sshd: Sshd) -> None:  # noqa: F811
    d = sshd.root / "cmd1"
    d.mkdir()
    proxy = " ".join([sys.executable, str(sshd.wrapper), f"{d}/A.rc", f"{d}/A.err",
                      *_ssh_mode(sshd, "--far-port", str(sshd.port), "%h")])
    user = subprocess.run(sshd.ssh("-o", f"ProxyCommand {proxy}", "root@127.0.0.1",
                                   "echo remote-ok"),
                          capture_output=True, timeout=60, stdin=subprocess.DEVNULL)

    def logs() -> str:
        return f"ssh: {user!r}\n--- A.err\n{_read(d / 'A.err')}\n--- sshd\n{_read(sshd.log)}"

    assert user.returncode == 0 and user.stdout == b"remote-ok\n", logs()
    _wait(lambda: (d / "A.rc").exists(), 15, "the ProxyCommand to exit", logs)
    assert (d / "A.rc").read_text() == "0", logs()
    assert "Traceback" not in _read(d / "A.err"), logs()
    # The far sockimux ends with its session: nothing of ours is left on the "far host".
    _wait(lambda: not _far_processes(sshd), 15, "the far sockimux to exit", logs)


def _tcp_ports(pid: int) -> set[int]:
    """The local ports of the IPv4 TCP sockets process ``pid`` holds (an ssh's
    one connection), from /proc: its descriptors' inodes in /proc/net/tcp."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
    ports = set()
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].split(":")[1], 16))
    return ports


_LOST = re.compile(r"subflow (.+?) lost \((.+)\); re-opening it in ")


def _healed(log: str) -> bool:
    """Whether the log (-v) shows one subflow lost to the SIGKILL of its ssh
    and another lost to its cut connection, each back after that.  The cut
    one's ssh sees the reset and exits 255; should it take more than the
    dialer's EXIT_WAIT (a loaded machine), the end of its socket is the
    reason instead.  Other losses (a subflow dropped as stalled under load)
    may come on top: they do not count."""
    back = [(m[1], m[2]) for m in _LOST.finditer(log)
            if f"subflow {m[1]} back after " in log[m.end():]]
    killed = {label for label, why in back if why == "command exited: killed by SIGKILL"}
    cut = {label for label, why in back
           if why == "command exited: exit status 255" or why.startswith("connection lost")}
    return any(k != c for k in killed for c in cut)


@pytest.mark.parametrize("remote", ["cat", "cat | cat"])
def test_a_copy_both_ways_survives_a_killed_ssh_and_a_cut_connection(
        sshd: Sshd, remote: str) -> None:  # noqa: F811
    """50 MB up through COMMAND on the far host and back down.  Every ssh
    reaches sshd through a TCP relay in this test; half way, one subflow's
    ssh is killed and another's TCP connection is cut (reset at both ends:
    ssh and sshd each get a RST, as from a cut in the network).  Both are
    re-opened by themselves, the bytes arrive intact, both ends exit 0, and
    nothing is left running on the far host."""
    size = 50 * MB
    src = random_file(sshd.root / "src.bin", size, seed=13)
    out = sshd.root / "out.bin"
    err = sshd.root / "near.err"
    relay = TcpRelay(sshd.port)
    try:
        with open(out, "wb") as out_f, open(err, "wb") as err_f:
            near = subprocess.Popen(_ssh_mode(sshd, "-v", "-p", str(relay.port), "127.0.0.1",
                                              "--", remote),
                                    stdin=subprocess.PIPE, stdout=out_f, stderr=err_f,
                                    start_new_session=True)

        def logs() -> str:
            return f"--- near.err\n{_read(err)}\n--- sshd\n{_read(sshd.log)}"

        try:
            # All joined before the copy starts: the two hit below are subflows, not starts.
            _wait(lambda: len(_ssh_children(near.pid)) == SUBFLOWS and relay.accepted == SUBFLOWS
                  and _read(err).count(" joined (") == SUBFLOWS or near.poll() is not None, 60,
                  f"{SUBFLOWS} ssh subflows", logs)
            assert near.poll() is None, logs()
            assert near.stdin is not None
            half, healed = threading.Event(), threading.Event()

            def feed() -> None:
                assert near.stdin is not None
                with open(src, "rb") as f:
                    sent = 0
                    for block in iter(lambda: f.read(1 << 20), b""):
                        near.stdin.write(block)
                        sent += len(block)
                        if sent >= size // 2 and not half.is_set():
                            half.set()
                            healed.wait(60)  # the rest only once both subflows are back
                near.stdin.close()

            feeder = threading.Thread(target=feed)
            feeder.start()
            assert half.wait(60), logs()
            victim, cut = _ssh_children(near.pid)[:2]
            ports = _tcp_ports(cut)
            os.kill(victim, signal.SIGKILL)
            try:
                assert any(relay.cut_from(port) for port in ports), (ports, relay.peers, logs())
                _wait(lambda: _healed(_read(err, 100_000)), 30,
                      "the killed and the cut subflow to come back", logs)
                # The stats snapshot (SIGUSR1) has the ssh subflows' address: lost, back.
                near.send_signal(signal.SIGUSR1)
                _wait(lambda: '"event":"signal"' in _read(err, 100_000), 30, "the stats line", logs)
            finally:
                healed.set()
            feeder.join(120)
            rc = near.wait(120)
        finally:
            _stop(near)
        assert rc == 0, logs()
        text = _read(err, 100_000)
        assert _healed(text), logs()
        assert relay.accepted >= SUBFLOWS + 2, logs()  # each came back over a new connection
        (line,) = [json.loads(x) for x in text.splitlines() if x.startswith('{"event":"signal"')]
        (address,) = line["addresses"]
        assert (address["label"], address["count"]) == ("ssh 127.0.0.1", SUBFLOWS), line
        # Each loss logged, and the re-open attempts each took, are in the counters
        # (a loaded machine may add a stalled subflow: counted the same way).
        lost = [m[2] for m in _LOST.finditer(text[:text.index('{"event":"signal"')])]
        attempts = re.findall(r" back after (\d+) attempts? ", text[:text.index('{"event":"signal"')])
        assert address["lost"] == len(lost) >= 2, (line, lost)
        assert address["reopens"] == sum(map(int, attempts)), (line, attempts)
        assert address["stopped"] is None and address["last_end"] == lost[-1], (line, lost)
        assert sorted(s["label"] for s in line["subflows"]) == [
            f"ssh 127.0.0.1 ({n} of {SUBFLOWS})" for n in range(1, SUBFLOWS + 1)], line
        assert "Traceback" not in text, logs()
        assert out.stat().st_size == size and sha256_file(out) == sha256_file(src), logs()
        _wait(lambda: not _far_processes(sshd), 15, "the far sockimux to exit", logs)
    finally:
        relay.close()
        for path in (src, out):
            Path(path).unlink(missing_ok=True)


@pytest.mark.parametrize("options, timeout", [
    ([], CONNECT_TIMEOUT),  # sockimux's default
    (["-o", "ConnectTimeout=2"], 2),  # the user's own wins
])
def test_an_ssh_that_gets_no_answer_gives_up_at_its_connect_timeout(
        sshd: Sshd, options: list[str], timeout: int) -> None:  # noqa: F811
    """The ssh connects to a port that drops every SYN (a black-holed link),
    with an ssh config that sets no ConnectTimeout: the attempt fails after
    the connect timeout, not after the kernel's minutes of SYN retries, and
    the next one follows."""
    config = sshd.root / "ssh_config_no_timeout"
    config.write_text("".join(line for line in sshd.client_config.read_text().splitlines(True)
                              if "ConnectTimeout" not in line))
    hole = BlackHole()
    err = sshd.root / f"no-answer-{timeout}.err"
    started = time.monotonic()
    near = _spawn([SOCKIMUX, "ssh", "-n", "1", "-v", "-F", str(config), "-p", str(hole.port),
                   *options, "127.0.0.1", "--", "cat"], err)

    def logs() -> str:
        return f"--- {err.name}\n{_read(err)}"

    try:
        failed = "could not be opened (could not connect: ssh failed"
        _wait(lambda: failed in _read(err) or near.poll() is not None, timeout + 20,
              "the first ssh to fail", logs)
        assert time.monotonic() - started >= timeout, logs()
        assert "Connection timed out" in _read(err), logs()  # ssh's own line says why
        _wait(lambda: _read(err).count("opening subflow") >= 2 or near.poll() is not None, 15,
              "the next attempt", logs)
        assert near.poll() is None, logs()
        assert "Traceback" not in _read(err), logs()
    finally:
        _stop(near)
        hole.close()


@pytest.mark.parametrize("form", ["after the host", "bundled", "bundled and glued"])
def test_ssh_options_are_read_where_ssh_reads_them(sshd: Sshd, form: str) -> None:  # noqa: F811
    """``ssh host -p PORT cmd`` and ``ssh -Cp PORT host cmd`` are ssh's own
    command lines: the port is the one ssh connects to, not words of the
    remote command (the config here gives no port: only -p leads to sshd)."""
    config = sshd.root / "ssh_config_no_port"
    config.write_text("".join(line for line in sshd.client_config.read_text().splitlines(True)
                              if not line.strip().startswith("Port ")))
    port = str(sshd.port)
    argv = {"after the host": ["127.0.0.1", "-p", port, "echo", "ok"],
            "bundled": ["-Cp", port, "127.0.0.1", "echo", "ok"],
            "bundled and glued": ["-4Cp" + port, "127.0.0.1", "--", "echo", "ok"]}[form]
    try:
        run = subprocess.run([SOCKIMUX, "ssh", "-n", "2", "--idle-timeout", "30", "-F", str(config),
                              *argv], capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"no session within 30 s: {exc.stderr!r}")
    assert (run.returncode, run.stdout) == (0, b"ok\n"), run


def test_a_proxycommand_running_sockimux_ssh_for_the_same_host_is_not_a_loop(sshd: Sshd) -> None:  # noqa: F811
    """An ssh config whose ProxyCommand for HOST is ``sockimux ssh HOST``
    (the README's ProxyCommand, put in the config): each of our ssh
    connections to HOST would run it again, and each of those again, a
    chain of processes without end.  The one started by our own ssh says
    so in one line and starts nothing, which cannot heal: exit 8 at once."""
    config = sshd.root / "ssh_config_loop"
    config.write_text(f"Host loop\n  HostName 127.0.0.1\n"
                      f"  ProxyCommand {SOCKIMUX} ssh -n 1 -F {config} %n\n"
                      + sshd.client_config.read_text())
    err = sshd.root / "loop.err"
    near = _spawn([SOCKIMUX, "ssh", "-n", "1", "-F", str(config), "loop", "--", "echo", "hi"], err)

    def sockimuxes() -> int:  # ./sockimux ssh processes given this config (ours only)
        return sum(1 for pid in _strays(str(config)) if b"ssh\0-n" in _cmdline(pid))

    def logs() -> str:
        return f"--- {err.name}\n{_read(err)}\n{sockimuxes()} sockimux ssh processes"

    try:
        _wait(lambda: near.poll() is not None or sockimuxes() > 6, 30, "sockimux ssh to end", logs)
        assert near.returncode == 8, logs()
        assert "not starting it again" in _read(err), logs()
        assert "Traceback" not in _read(err), logs()
    finally:
        _stop(near)
        for _ in range(100):  # a loop's processes are each in a session of their own
            pids = _strays(str(config))
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def test_a_far_sshd_that_is_not_there_is_said(sshd: Sshd) -> None:  # noqa: F811
    """Without COMMAND the far stream is the far host's sshd at 127.0.0.1:22
    (--far-port for another port).  Nothing listening there is said, with
    the far side's reason, not only "the far sockimux is gone": exit 8."""
    port = free_port()  # nothing listens there
    run = subprocess.run(_ssh_mode(sshd, "--far-port", str(port), "127.0.0.1"), capture_output=True,
                         timeout=60, stdin=subprocess.DEVNULL)
    err = run.stderr.decode(errors="replace")
    assert run.returncode == 8, err
    assert f"cannot open the stream TCP:127.0.0.1:{port}: Connection refused" in err, err
    assert "the far side could not start" in err, err
    assert "Traceback" not in err, err


@pytest.mark.parametrize("stdout", ["closed", "/dev/full"])
def test_help_where_it_cannot_be_written_is_as_sockimux_help(stdout: str) -> None:
    """sockimux ssh --help with STDOUT closed or full: what sockimux --help
    does there (argparse's), never a traceback."""
    redirect = ">&-" if stdout == "closed" else ">/dev/full"
    runs = [subprocess.run(["sh", "-c", f'exec "$0" "$@" {redirect}', SOCKIMUX, *argv],
                           capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
            for argv in (["--help"], ["ssh", "--help"])]
    for run in runs:
        assert "Traceback" not in run.stderr, run.stderr
    assert runs[1].returncode == runs[0].returncode, runs
    if stdout == "closed":  # then both say it on STDERR
        assert runs[1].stderr.startswith("usage: sockimux ssh"), runs[1].stderr


def test_the_connect_timeout_is_only_a_default(tmp_path: Path) -> None:
    """ssh -G (the real ssh) decides: a ConnectTimeout from the user's -o or
    ssh config is kept, and only "none" gets ours."""
    require("ssh")
    plain = tmp_path / "plain"
    plain.write_text("Host *\n  User nobody\n")
    own = tmp_path / "own"
    own.write_text("Host *\n  ConnectTimeout 3\n")
    ours = ["-o", f"ConnectTimeout={CONNECT_TIMEOUT}"]
    assert default_options("h", ["-F", str(plain)]) == ours
    assert default_options("h", ["-F", str(own)]) == []
    assert default_options("h", ["-F", str(plain), "-o", "ConnectTimeout=5"]) == []
    assert default_options("h", ["-F", str(tmp_path / "missing")]) == []  # ssh itself will say
    assert default_options("h", [], ssh="no-such-ssh") == []


def test_no_python_on_the_far_host_is_one_line_and_exit_8(sshd: Sshd) -> None:  # noqa: F811
    """A far side that cannot start cannot heal: no retry loop, exit 8."""
    run = subprocess.run(_ssh_mode(sshd, "--python", "no-such-python3", "127.0.0.1", "--", "cat"),
                         capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    text = run.stderr.decode()
    assert run.returncode == 8, run
    assert "no python3 on the far host" in text and "Traceback" not in text, text
    assert text.count("no python3 on the far host") == 1, text


def test_bad_usage_is_one_line_and_exit_2() -> None:
    for argv in (["ssh"], ["ssh", "-n", "0", "host"], ["ssh", "--bogus", "host"]):
        run = subprocess.run([SOCKIMUX, *argv], capture_output=True, timeout=30,
                             stdin=subprocess.DEVNULL)
        assert run.returncode == 2 and run.stderr.decode().count("\n") == 1, run
        assert run.stderr.startswith(b"sockimux ssh: "), run
        with open("/dev/full", "wb") as full:  # a STDERR that cannot take the line: still 2
            code = subprocess.run([SOCKIMUX, *argv], stderr=full, timeout=30,
                                  stdin=subprocess.DEVNULL).returncode
        assert code == 2, (argv, code)


@pytest.mark.parametrize(("remote", "code"), [
    ("echo out; true", 0), ("echo out; exit 3", 3), ("echo out; false", 1),
    ("echo out; kill -9 $$", 128 + 9)])
def test_the_remote_commands_exit_status_is_ours(sshd: Sshd, remote: str, code: int) -> None:  # noqa: F811
    """As with ssh: once the session is done, the remote COMMAND's exit
    status (128 + N for a signal N) is the exit status of `sockimux ssh`,
    its output delivered in full all the same."""
    run = subprocess.run(_ssh_mode(sshd, "127.0.0.1", "--", remote), capture_output=True,
                         timeout=60, stdin=subprocess.DEVNULL)
    assert (run.returncode, run.stdout) == (code, b"out\n"), run
    assert b"Traceback" not in run.stderr, run


def _wrong_key_config(server: Sshd) -> Path:
    """The test sshd's client config with a key it does not accept (its host key)."""
    config = server.root / "wrong_key_config"
    config.write_text(re.sub(r"IdentityFile .*", f"IdentityFile {server.root}/host_key",
                             server.client_config.read_text()))
    return config


@pytest.mark.parametrize("case", ["authentication refused", "no such host name"])
def test_a_far_host_that_cannot_be_reached_for_good_is_exit_8_at_once(sshd: Sshd, case: str) -> None:  # noqa: F811
    """Refused for good before the far side was ever reached (as --help says
    of authentication): ssh's line once, one line of ours, exit 8, not N ssh
    re-opened for ever, each saying the same line again."""
    if case == "authentication refused":
        argv = [SOCKIMUX, "ssh", "-n", str(SUBFLOWS), "-F", str(_wrong_key_config(sshd)), "127.0.0.1"]
        said = "Permission denied"
    else:  # .invalid never resolves (RFC 6761)
        argv = _ssh_mode(sshd, "no-such-host.invalid")
        said = "Could not resolve hostname"
    try:
        run = subprocess.run([*argv, "--", "echo", "hi"], capture_output=True, timeout=30,
                             stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"still re-opening after 30 s: {e.stderr!r}")
    text = run.stderr.decode()
    assert run.returncode == 8, text
    assert "Traceback" not in text and "this cannot heal" in text, text
    assert text.count(said) <= 2, text  # ssh's line, and ours quoting it


def test_ssh_saying_the_same_thing_on_every_reopen_is_shown_once_per_10_s(sshd: Sshd) -> None:  # noqa: F811
    """Nothing listens at the port: that may heal (the far host reboots), so
    the subflows are re-opened, but ssh's "Connection refused" of each
    attempt is shown once, not 4 subflows x every attempt."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    err = sshd.root / "refused.err"
    with open(err, "wb") as err_f:
        near = subprocess.Popen(_ssh_mode(sshd, "-p", str(port), "127.0.0.1", "--", "cat"),
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err_f)
    try:
        time.sleep(8)  # 4 subflows re-opened at 0.2 s, 0.4 s, 0.8 s...: some 16 attempts
        assert near.poll() is None, _read(err)  # still waiting for the far host, as documented
        near.send_signal(signal.SIGTERM)
        assert near.wait(30) == 128 + signal.SIGTERM, _read(err)
    finally:
        if near.poll() is None:
            near.kill()
            near.wait()
    text = _read(err)
    assert "Traceback" not in text, text
    assert 1 <= text.count("Connection refused") <= 1, text  # 8 s < QUIET_FOR


@pytest.mark.parametrize(("command", "status", "said"), [
    ("sh -c 'echo to-err >&2; exit 3'", 3, "to-err"),
    ("no-such-command-q16", 127, "not found"),
])
def test_a_remote_commands_failure_comes_back_as_with_ssh(sshd: Sshd, command: str, status: int,  # noqa: F811
                                                          said: str) -> None:
    """As `ssh host -- COMMAND`: COMMAND's STDERR comes back (as records on
    the ssh connections' own STDERR) and its exit status is ours (the FIN
    carries it, sent after the last of its STDERR)."""
    run = subprocess.run(_ssh_mode(sshd, "127.0.0.1", "--", command), capture_output=True,
                         timeout=60, stdin=subprocess.DEVNULL)
    text = run.stderr.decode()
    assert run.returncode == status, text
    assert said in text, text


def test_a_remote_commands_stderr_comes_back_byte_for_byte_beside_its_output(
        sshd: Sshd) -> None:  # noqa: F811
    """3 MB of arbitrary bytes (every byte value, no newline at the end) on
    COMMAND's STDERR while 8 MB go through it both ways, then the same line
    five times: the near side's STDERR is those bytes, in order, and no
    repeated line is held back as ssh's repeated messages are; STDOUT is
    the input; the exit status is COMMAND's."""
    data = random_file(sshd.root / "err-both.bin", 8 * MB, seed=31).read_bytes()
    noise = random_file(sshd.root / "err-noise.bin", 3 * MB, seed=32).read_bytes()
    noise = noise[:-1] + b"x" + bytes(range(256)) * 4  # binary, repeated lines, no final newline
    (sshd.root / "err-noise.bin").write_bytes(noise)
    # The far COMMAND: its STDERR written in pieces while `cat` copies STDIN.
    command = (f"{sys.executable} -c 'import os,sys,time;d=open(sys.argv[1],\"rb\").read();"
               f"[(os.write(2,d[i:i+65536]),time.sleep(0.001)) for i in range(0,len(d),65536)];"
               f"[(os.write(2,b\"again\\n\"),time.sleep(0.02)) for i in range(5)]' "
               f"{sshd.root / 'err-noise.bin'} & cat; wait; exit 5")
    run = subprocess.run(_ssh_mode(sshd, "127.0.0.1", "--", command), input=data,
                         capture_output=True, timeout=120)
    assert run.returncode == 5, run.stderr[-2000:]
    assert run.stdout == data
    start = run.stderr.find(noise[:64])
    assert start >= 0, run.stderr[:2000]
    assert run.stderr[start:start + len(noise) + 30] == noise + b"again\n" * 5


def test_a_stderr_nobody_reads_holds_up_the_stderr_not_the_stream(sshd: Sshd) -> None:  # noqa: F811
    """Our STDERR a pipe nobody reads for now (a paused pager): COMMAND's
    300 KB of STDERR wait for it, while 32 MB go through COMMAND and back
    in full; once it is read, all of the STDERR is there, and the exit
    status is COMMAND's."""
    data = random_file(sshd.root / "held-err.bin", 32 * MB, seed=33).read_bytes()
    command = ("i=0; while [ $i -lt 10000 ]; do echo err-line-$i-........................ >&2; "
               "i=$((i+1)); done; cat; exit 6")
    near = subprocess.Popen(_ssh_mode(sshd, "127.0.0.1", "--", command), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert near.stdin is not None and near.stdout is not None and near.stderr is not None
    feeder = threading.Thread(target=lambda: (near.stdin.write(data), near.stdin.close()))  # type: ignore[union-attr]
    feeder.start()
    got = bytearray()

    def read_out() -> None:
        while len(got) < len(data):
            chunk = near.stdout.read1(1 << 20)  # type: ignore[union-attr]
            if not chunk:
                return
            got.extend(chunk)

    reader = threading.Thread(target=read_out, daemon=True)
    reader.start()
    reader.join(60)
    try:
        assert bytes(got) == data, len(got)  # with none of its STDERR read yet
        said = near.stderr.read().decode()
        assert near.wait(30) == 6, said[-2000:]
        lines = [line for line in said.splitlines() if line.startswith("err-line-")]
        assert lines == [f"err-line-{i}-........................" for i in range(10000)]
    finally:
        if near.poll() is None:
            near.kill()
        near.wait()
        feeder.join()
        near.stdout.close()
        near.stderr.close()


def test_the_session_ends_when_the_remote_command_does_though_stdin_stays_open(
        sshd: Sshd) -> None:  # noqa: F811
    """As ssh: COMMAND exits, its output is written, and we exit with its
    status while our STDIN is still open (git waits for its ssh to exit
    before it closes that STDIN: waiting for its EOF would wait for ever)."""
    near = subprocess.Popen(_ssh_mode(sshd, "127.0.0.1", "--", "echo out; echo err >&2; exit 3"),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert near.wait(20) == 3
        assert near.stdout is not None and near.stdout.read() == b"out\n"
        assert near.stderr is not None and near.stderr.read() == b"err\n"
    finally:
        if near.poll() is None:
            near.kill()
        near.communicate()


def test_sixteen_subflows_with_few_descriptors(sshd: Sshd) -> None:  # noqa: F811
    """`sockimux ssh -n 16` under `ulimit -n 32`, over 6 s so that all 16 are
    tried: the ssh processes beyond what the descriptors allow cannot be
    started now (EMFILE), which may pass: they are re-opened later, not
    stopped for good, and the copy completes over the subflows there are,
    with no traceback (uvloop's process handle reports an exception from its
    destructor after such a failed spawn)."""
    import resource

    data = random_file(sshd.root / "few-fds.bin", 4 * MB, seed=16).read_bytes()
    out = sshd.root / "few-fds.out"
    err = sshd.root / "few-fds.err"

    def few_fds() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (32, 32))

    with open(out, "wb") as out_f, open(err, "wb") as err_f:
        near = subprocess.Popen([SOCKIMUX, "ssh", "-n", "16", "--idle-timeout", "30", "-F",
                                 str(sshd.client_config), "127.0.0.1", "--", "cat"],
                                stdin=subprocess.PIPE, stdout=out_f, stderr=err_f,
                                preexec_fn=few_fds)
    try:
        feed(near, data, 6).join(60)
        code = near.wait(120)
    finally:
        if near.poll() is None:
            near.kill()
            near.wait()
    text = _read(err, 20000)
    assert code == 0, text
    assert out.read_bytes() == data, text
    for never in ("Traceback", "Exception ignored", "RuntimeError", "cannot heal"):
        assert never not in text, text
