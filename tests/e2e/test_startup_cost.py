"""What a start costs: a plain ``sockimux SOCKET`` imports only what its path
uses (every short command, a git fetch over ssh, a ProxyCommand per login,
pays for each import), and the fast exit (no interpreter teardown) still
writes everything out.

The real program (./sockimux) runs; Python's own import profile
(PYTHONPROFILEIMPORTTIME) says which modules it imported.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

from .harness import SOCKIMUX, random_file, require, sha256_file, wait_for

# Modules a plain listening sockimux (no address option, no key, no ssh,
# no --stats-file) has no use for.
NOT_ON_THE_PLAIN_PATH = (
    "sockimux.api",             # the Python API
    "sockimux.sshmode",         # sockimux ssh ...
    "sockimux.remote.near",     # ssh subflows
    "sockimux.remote.handoff",
    "sockimux.core.address_parser",  # --listen/--connect/--stream
    "json",                     # --stats-file, SIGUSR1
    "hmac",                     # --psk-file
)


def imported(stderr: str) -> set[str]:
    return set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)$", stderr, re.MULTILINE))


def test_a_plain_start_imports_only_what_it_uses(tmp_path: Path) -> None:
    sock, err = tmp_path / "s.sock", tmp_path / "err"
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    with open(err, "wb") as e:
        proc = subprocess.Popen([SOCKIMUX, str(sock)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=e, env=env)
    try:
        wait_for(sock.exists, 20.0, "sockimux listening")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20.0) == 128 + signal.SIGTERM
    modules = imported(err.read_text())
    assert "sockimux.runtime.runner" in modules, "no import profile: the check would see nothing"
    assert sorted(m for m in NOT_ON_THE_PLAIN_PATH if m in modules) == []


def test_the_api_names_are_there_at_first_use() -> None:
    """``import sockimux`` no longer imports the API: its names come at first use."""
    code = ("import sys, sockimux\n"
            "assert 'sockimux.api' not in sys.modules\n"
            "from sockimux import SessionError, Stream, open_session\n"
            "import sockimux.api as api\n"
            "assert (SessionError, Stream, open_session) == \\\n"
            "    (api.SessionError, api.Stream, api.open_session)\n"
            "try:\n    sockimux.nothing_such\nexcept AttributeError:\n    print('ok')\n")
    python = str(Path(SOCKIMUX).parent / ".venv" / "bin" / "python")
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout == "ok\n", out.stderr


def test_the_fast_exit_writes_everything_out(tmp_path: Path) -> None:
    """Both ends exit without the interpreter's teardown: the stream, the file
    and the last log lines (-v's summary) are all there, exit status 0."""
    socat = require("socat")
    payload = random_file(tmp_path / "payload", 3 << 20, seed=5)
    a_sock, b_sock, out = tmp_path / "a.sock", tmp_path / "b.sock", tmp_path / "out"
    with open(payload, "rb") as i, open(out, "wb") as o, \
            open(tmp_path / "a.err", "wb") as ae, open(tmp_path / "b.err", "wb") as be:
        b = subprocess.Popen([SOCKIMUX, "-v", str(b_sock)], stdin=subprocess.DEVNULL, stdout=o, stderr=be)
        a = subprocess.Popen([SOCKIMUX, "-v", str(a_sock)], stdin=i, stdout=subprocess.DEVNULL, stderr=ae)
    wait_for(lambda: a_sock.exists() and b_sock.exists(), 20.0, "both listening")
    relay = subprocess.Popen([socat, f"UNIX-CONNECT:{a_sock}", f"UNIX-CONNECT:{b_sock}"])
    try:
        assert a.wait(60.0) == 0 and b.wait(60.0) == 0
    finally:
        relay.wait(20.0)
    assert sha256_file(out) == sha256_file(payload)
    for name in ("a.err", "b.err"):
        text = (tmp_path / name).read_text()
        # the summary, and the last line logged before the exit
        assert "subflows established: 1" in text and text.endswith("0 open\n"), text


def test_exit_now_flushes_and_waits_for_a_working_thread(tmp_path: Path) -> None:
    """exit_now: the exit status, stdout and a log line flushed; a non-daemon
    thread still working is waited for (the normal exit), not cut off."""
    python = str(Path(SOCKIMUX).parent / ".venv" / "bin" / "python")
    done = tmp_path / "done"
    code = ("import logging, sys, threading, time\n"
            "from sockimux.runtime.process import exit_now\n"
            "logging.basicConfig(stream=sys.stderr)\n"
            "def work():\n"
            "    time.sleep(0.3)\n"
            f"    open({str(done)!r}, 'w').write('yes')\n"
            "if sys.argv[1] == 'thread':\n"
            "    threading.Thread(target=work).start()\n"
            "print('out', end='')\n"
            "logging.getLogger('x').error('last words')\n"
            "exit_now(5)\n")
    for case in ("plain", "thread"):
        out = subprocess.run([python, "-c", code, case], capture_output=True, text=True, timeout=60)
        assert (out.returncode, out.stdout) == (5, "out"), out.stderr
        assert "last words" in out.stderr
        assert done.exists() == (case == "thread")
