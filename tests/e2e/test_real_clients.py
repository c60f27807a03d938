"""Real ssh clients through the one-command ssh mode: scp, sftp, rsync and git.

Each runs ssh with ``ProxyCommand sockimux ssh -n 4 %h`` against the
private sshd on 127.0.0.1 (test_ssh_example's fixture), so its whole
session (its own protocol: scp's, sftp's, rsync's, git's pack protocol)
travels as one stream over four ssh subflows.  What each tool moved is
checked byte for byte on the "far host", and the ProxyCommand must exit 0
once the tool is done, leaving no far process behind.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from .harness import SOCKIMUX, random_file, require, sha256_file
from .test_ssh_example import Sshd, _read, _strays, _wait, sshd  # noqa: F401 (the fixture)

MB = 1 << 20
SUBFLOWS = 4
TOOL_TIMEOUT = 120.0


class Proxy:
    """The ProxyCommand of one client run, with its exit status and stderr kept."""

    def __init__(self, server: Sshd, name: str) -> None:
        self.dir = server.root / name
        self.dir.mkdir()
        self.rc = self.dir / "proxy.rc"
        self.err = self.dir / "proxy.err"
        self.command = " ".join([
            sys.executable, str(server.wrapper), str(self.rc), str(self.err), SOCKIMUX, "ssh",
            "-n", str(SUBFLOWS), "--idle-timeout", "30", "-F", str(server.client_config),
            "--far-port", str(server.port), "%h"])
        self.server = server

    def ssh_command(self) -> str:
        """An ssh command line for the clients' -e / GIT_SSH_COMMAND."""
        return (f"{require('ssh')} -F {self.server.client_config} "
                f"-o 'ProxyCommand {self.command}'")

    def logs(self, run: subprocess.CompletedProcess[bytes] | None = None) -> Callable[[], str]:
        return lambda: (f"client: {run!r}\n--- proxy.err\n{_read(self.err)}"
                        f"\n--- sshd\n{_read(self.server.log)}")

    def assert_clean_exit(self, run: subprocess.CompletedProcess[bytes]) -> None:
        logs = self.logs(run)
        assert run.returncode == 0, logs()
        _wait(self.rc.exists, 20, "the ProxyCommand to exit", logs)
        assert self.rc.read_text() == "0", logs()
        assert "Traceback" not in _read(self.err), logs()
        _wait(lambda: not _strays("sockimux.remote.far"), 20, "the far sockimux to exit", logs)


def _run(argv: list[str], cwd: Path | None = None,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, timeout=TOOL_TIMEOUT,
                          stdin=subprocess.DEVNULL)


def _tree(root: Path) -> dict[str, str]:
    """Every regular file under root (a .git directory aside): relative path -> sha256."""
    return {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*"))
            if p.is_file() and ".git" not in p.relative_to(root).parts}


def _touch_later(path: Path) -> None:
    """A changed file's mtime moved on: rsync's quick check (size and mtime)
    would skip a change made within the second of the first copy."""
    stamp = path.stat().st_mtime + 10
    os.utime(path, (stamp, stamp))


def test_scp_up_and_down(sshd: Sshd) -> None:  # noqa: F811
    proxy = Proxy(sshd, "scp")
    src = random_file(proxy.dir / "src.bin", 12 * MB, seed=41)
    remote = proxy.dir / "remote.bin"
    back = proxy.dir / "back.bin"
    up = _run([require("scp"), "-q", "-F", str(sshd.client_config),
               "-o", f"ProxyCommand {proxy.command}", str(src), f"root@127.0.0.1:{remote}"])
    proxy.assert_clean_exit(up)
    assert sha256_file(remote) == sha256_file(src)
    proxy.rc.unlink()
    down = _run([require("scp"), "-q", "-F", str(sshd.client_config),
                 "-o", f"ProxyCommand {proxy.command}", f"root@127.0.0.1:{remote}", str(back)])
    proxy.assert_clean_exit(down)
    assert sha256_file(back) == sha256_file(src)


def test_sftp_batch(sshd: Sshd) -> None:  # noqa: F811
    proxy = Proxy(sshd, "sftp")
    src = random_file(proxy.dir / "src.bin", 6 * MB, seed=42)
    batch = proxy.dir / "batch"
    batch.write_text(f"put {src} {proxy.dir}/up.bin\nget {proxy.dir}/up.bin {proxy.dir}/down.bin\n"
                     f"ls -l {proxy.dir}\n")
    run = _run([require("sftp"), "-q", "-b", str(batch), "-F", str(sshd.client_config),
                "-o", f"ProxyCommand {proxy.command}", "root@127.0.0.1"])
    proxy.assert_clean_exit(run)
    assert sha256_file(proxy.dir / "up.bin") == sha256_file(src)
    assert sha256_file(proxy.dir / "down.bin") == sha256_file(src)


def test_rsync_a_tree_then_an_update(sshd: Sshd) -> None:  # noqa: F811
    """rsync's own protocol both ways: a first copy, then a delta after a change."""
    proxy = Proxy(sshd, "rsync")
    src = proxy.dir / "src"
    for i in range(40):
        sub = src / f"d{i % 5}"
        sub.mkdir(parents=True, exist_ok=True)
        random_file(sub / f"f{i}.bin", (i * 37_171) % (300 * 1024) + 1, seed=100 + i)
    random_file(src / "big.bin", 8 * MB, seed=7)
    (src / "empty").write_bytes(b"")
    dst = proxy.dir / "dst"
    rsync = require("rsync")
    first = _run([rsync, "-a", "-e", proxy.ssh_command(), f"{src}/", f"root@127.0.0.1:{dst}/"])
    proxy.assert_clean_exit(first)
    assert _tree(dst) == _tree(src)
    # Change the middle of the big file: the second run sends a delta over the same protocol.
    with open(src / "big.bin", "r+b") as f:
        f.seek(4 * MB)
        f.write(b"changed" * 1000)
    _touch_later(src / "big.bin")
    (src / "d1" / "f1.bin").unlink()
    proxy.rc.unlink()
    second = _run([rsync, "-a", "--delete", "--stats", "-e", proxy.ssh_command(), f"{src}/",
                   f"root@127.0.0.1:{dst}/"])
    proxy.assert_clean_exit(second)
    assert _tree(dst) == _tree(src)
    assert b"Number of deleted files: 1" in second.stdout, second.stdout
    # Pull it back the other way.
    back = proxy.dir / "back"
    proxy.rc.unlink()
    third = _run([rsync, "-a", "-e", proxy.ssh_command(), f"root@127.0.0.1:{dst}/", f"{back}/"])
    proxy.assert_clean_exit(third)
    assert _tree(back) == _tree(src)


def test_git_clone_and_push(sshd: Sshd) -> None:  # noqa: F811
    proxy = Proxy(sshd, "git")
    git = require("git")
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(proxy.dir),
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid",
           "GIT_CONFIG_NOSYSTEM": "1", "GIT_SSH_COMMAND": proxy.ssh_command()}
    origin = proxy.dir / "origin.git"
    seed = proxy.dir / "seed"
    for argv, cwd in (([git, "init", "-q", "--bare", str(origin)], None),
                      ([git, "init", "-q", str(seed)], None)):
        assert _run(argv, cwd, env).returncode == 0
    for i in range(5):  # commits with incompressible content: a pack of a few MB
        random_file(seed / f"blob{i}.bin", 700 * 1024, seed=200 + i)
        (seed / "log.txt").write_text(f"commit {i}\n" * (i + 1))
        assert _run([git, "add", "-A"], seed, env).returncode == 0
        assert _run([git, "commit", "-q", "-m", f"c{i}"], seed, env).returncode == 0
    assert _run([git, "push", "-q", str(origin), "HEAD:refs/heads/main"], seed, env).returncode == 0
    clone = proxy.dir / "clone"
    cloned = _run([git, "clone", "-q", "-b", "main", f"root@127.0.0.1:{origin}", str(clone)],
                  None, env)
    proxy.assert_clean_exit(cloned)
    assert _tree(clone) == _tree(seed) and len(_tree(seed)) == 6
    fsck = _run([git, "fsck", "--full"], clone, env)
    assert fsck.returncode == 0, fsck
    head = _run([git, "rev-parse", "HEAD"], seed, env).stdout
    assert _run([git, "rev-parse", "HEAD"], clone, env).stdout == head
    # A commit made in the clone goes back through the same kind of session.
    random_file(clone / "new.bin", 900 * 1024, seed=300)
    assert _run([git, "add", "-A"], clone, env).returncode == 0
    assert _run([git, "commit", "-q", "-m", "from the clone"], clone, env).returncode == 0
    proxy.rc.unlink()
    pushed = _run([git, "push", "-q", "origin", "main"], clone, env)
    proxy.assert_clean_exit(pushed)
    assert (_run([git, "rev-parse", "main"], origin, env).stdout
            == _run([git, "rev-parse", "HEAD"], clone, env).stdout)
    fsck = _run([git, "fsck", "--full"], origin, env)
    assert fsck.returncode == 0, fsck


# -- sockimux ssh as the clients' ssh: HOST -- COMMAND, no sshd in the stream ------------


def _as_ssh(server: Sshd) -> str:
    """`sockimux ssh` as a client's ssh command (rsync -e, GIT_SSH_COMMAND):
    the client adds [-l USER] HOST COMMAND... after it."""
    return f"{SOCKIMUX} ssh -n {SUBFLOWS} --idle-timeout 30 -F {server.client_config}"


def _no_far_left(logs: Callable[[], str]) -> None:
    _wait(lambda: not _strays("sockimux.remote.far"), 20, "the far sockimux to exit", logs)


def test_rsync_with_sockimux_ssh_as_its_ssh(sshd: Sshd) -> None:  # noqa: F811
    """rsync -e 'sockimux ssh': rsync's server runs as the far COMMAND; a copy
    and a delta both ways, then a source that does not exist, whose error
    (the far rsync's STDERR) and exit code 23 come back as with ssh."""
    root = sshd.root / "rsync-command"
    src = root / "src"
    for i in range(20):
        (src / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
        random_file(src / f"d{i % 3}" / f"f{i}.bin", (i * 53_113) % (400 * 1024) + 1, seed=400 + i)
    random_file(src / "big.bin", 6 * MB, seed=8)
    rsync = require("rsync")
    first = _run([rsync, "-a", "-e", _as_ssh(sshd), f"{src}/", f"root@127.0.0.1:{root}/dst/"])
    assert first.returncode == 0, first
    assert _tree(root / "dst") == _tree(src)
    with open(src / "big.bin", "r+b") as f:
        f.seek(3 * MB)
        f.write(b"delta" * 2000)
    _touch_later(src / "big.bin")
    back = _run([rsync, "-a", "-e", _as_ssh(sshd), f"{src}/", f"root@127.0.0.1:{root}/dst/"])
    assert back.returncode == 0, back
    pulled = _run([rsync, "-a", "-e", _as_ssh(sshd), f"root@127.0.0.1:{root}/dst/", f"{root}/back/"])
    assert pulled.returncode == 0, pulled
    assert _tree(root / "back") == _tree(src)
    missing = _run([rsync, "-a", "-e", _as_ssh(sshd), "root@127.0.0.1:/no/such/dir/", f"{root}/x/"])
    assert missing.returncode == 23, missing
    assert b'change_dir "/no/such/dir" failed' in missing.stderr, missing.stderr
    assert b"Traceback" not in missing.stderr
    _no_far_left(lambda: f"{missing!r}\n--- sshd\n{_read(sshd.log)}")


def test_git_with_sockimux_ssh_as_its_ssh(sshd: Sshd) -> None:  # noqa: F811
    """GIT_SSH_COMMAND='sockimux ssh': clone and push run git-upload-pack and
    git-receive-pack as the far COMMAND.  A repository that does not exist:
    git's own ssh waits for the ssh process to exit while it holds its STDIN
    open, so sockimux must end when the far command does (as ssh does), and
    bring back the far git's message."""
    root = sshd.root / "git-command"
    root.mkdir()
    git = require("git")
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(root),
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid",
           "GIT_CONFIG_NOSYSTEM": "1", "GIT_SSH_COMMAND": _as_ssh(sshd)}
    origin, seed = root / "origin.git", root / "seed"
    for argv in ([git, "init", "-q", "--bare", str(origin)], [git, "init", "-q", str(seed)]):
        assert _run(argv, None, env).returncode == 0
    random_file(seed / "blob.bin", 2 * MB, seed=500)
    for argv in ([git, "add", "-A"], [git, "commit", "-q", "-m", "c"]):
        assert _run(argv, seed, env).returncode == 0
    pushed = _run([git, "push", "-q", f"root@127.0.0.1:{origin}", "HEAD:refs/heads/main"], seed, env)
    assert pushed.returncode == 0, pushed
    cloned = _run([git, "clone", "-q", "-b", "main", f"root@127.0.0.1:{origin}",
                   str(root / "clone")], None, env)
    assert cloned.returncode == 0, cloned
    assert _tree(root / "clone") == _tree(seed)
    started = time.monotonic()
    missing = _run([git, "clone", "-q", "root@127.0.0.1:/no/such/repo.git", str(root / "x")],
                   None, env)
    assert time.monotonic() - started < 20, missing  # (it used to wait for ever)
    assert missing.returncode == 128, missing
    assert b"does not appear to be a git repository" in missing.stderr, missing.stderr
    _no_far_left(lambda: f"{missing!r}\n--- sshd\n{_read(sshd.log)}")


def _ssh_program(server: Sshd, root: Path) -> Path:
    """scp's and sftp's -S PROGRAM: a script that is `sockimux ssh`."""
    program = root / "sockimux-ssh"
    program.write_text(f"#!/bin/sh\nexec {_as_ssh(server)} \"$@\"\n")
    program.chmod(0o755)
    return program


def test_scp_and_sftp_with_sockimux_ssh_as_their_ssh(sshd: Sshd) -> None:  # noqa: F811
    """scp -S / sftp -S: since OpenSSH 9.0 scp speaks SFTP, asking its ssh for
    the sftp subsystem (-s ... HOST sftp); the far side runs the sftp-server
    for it.  Legacy scp (-O) runs `scp -t` as a plain COMMAND."""
    root = sshd.root / "scp-command"
    root.mkdir()
    program = str(_ssh_program(sshd, root))
    src = random_file(root / "src.bin", 5 * MB, seed=43)
    scp, sftp = require("scp"), require("sftp")
    for argv, made in (
            ([scp, "-q", "-S", program, str(src), f"root@127.0.0.1:{root}/up.bin"], "up.bin"),
            ([scp, "-q", "-S", program, f"root@127.0.0.1:{root}/up.bin", str(root / "down.bin")],
             "down.bin"),
            ([scp, "-q", "-O", "-S", program, str(src), f"root@127.0.0.1:{root}/legacy.bin"],
             "legacy.bin")):
        run = _run(argv)
        assert run.returncode == 0, run
        assert sha256_file(root / made) == sha256_file(src), argv
    batch = subprocess.run([sftp, "-q", "-S", program, "-b", "-", "root@127.0.0.1"],
                           input=f"put {src} {root}/sftp.bin\n".encode(), capture_output=True,
                           timeout=TOOL_TIMEOUT)
    assert batch.returncode == 0, batch
    assert sha256_file(root / "sftp.bin") == sha256_file(src)
    _no_far_left(lambda: f"--- sshd\n{_read(sshd.log)}")


def test_a_subsystem_the_far_host_does_not_serve_is_one_line_and_exit_8(sshd: Sshd) -> None:  # noqa: F811
    """The far side says it once (its line, then ours quoting it), and no
    other subflow starts another far side to be told the same."""
    run = subprocess.run([*_as_ssh(sshd).split(), "-s", "127.0.0.1", "no-such-subsystem"],
                         capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    text = run.stderr.decode()
    assert run.returncode == 8, text
    assert "no program for the ssh subsystem 'no-such-subsystem'" in text, text
    assert "Traceback" not in text, text
    assert len(re.findall(r"^sockimux\[\d+\]: no program for", text, re.M)) == 1, text
