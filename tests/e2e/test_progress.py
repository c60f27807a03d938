"""--progress: one live line on a terminal's stderr, gone after exit; nothing when not a terminal."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

from .harness import Peer, kill, random_file, require, sha256_file, socat_subflow
from .test_interactive import PROMPT, Terminal, term  # noqa: F401  (term: the fixture)

MB = 1 << 20
LIVE = re.compile(r"^sent [\d.]+ (?:B|KiB|MiB) \([\d.]+ (?:B|KiB|MiB)/s\)  received 0 B \(0 B/s\)  "
                  r"subflows 1 up / 1  (\d+)%  ETA \d+:\d\d *$", re.MULTILINE)


def test_progress_line_on_a_terminal_is_cleared_at_exit(term: Terminal, tmp_path: Path) -> None:  # noqa: F811
    require("socat")
    size = 24 * MB
    a_in = random_file(tmp_path / "a.in", size)
    b = Peer(tmp_path, "b", None, stdout_pipe=0, stdout_rate=6e6)  # about 4 s
    sock_a = tmp_path / "a.sock"
    term.type(f"./sockimux --progress {sock_a} < {a_in}; echo rc=$?")
    deadline = time.monotonic() + 10
    while not sock_a.is_socket():
        if time.monotonic() > deadline:
            term.fail("sockimux --progress did not listen")
        time.sleep(0.02)
    relay = subprocess.Popen([require("socat"), f"UNIX-CONNECT:{sock_a}", f"UNIX-CONNECT:{b.socket}"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        screen = term.wait_until(lambda s: LIVE.search(s) is not None and
                                 0 < int(LIVE.search(s).group(1)) < 100,  # type: ignore[union-attr]
                                 15, "the live progress line mid-transfer")
        assert "Traceback" not in screen
        screen = term.wait_until(lambda s: re.search(r"^rc=\d+$", s, re.MULTILINE) is not None,
                                 30, "sockimux to exit")
        assert b.wait(30) == 0, b.stderr()
    finally:
        b.close()
        kill(relay)
    assert re.search(r"^rc=0$", screen, re.MULTILINE), screen
    after = screen.split(f"{PROMPT}./sockimux --progress", 1)[1]
    # Cleared: nothing is left between the command line and its exit status.
    assert after.splitlines()[1:2] == ["rc=0"], after
    assert sha256_file(b.out) == sha256_file(a_in)


def test_progress_is_off_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    require("socat")
    a_in = random_file(tmp_path / "a.in", 4 * MB)
    a = Peer(tmp_path, "a", a_in, "--progress")
    b = Peer(tmp_path, "b", None)
    relay = socat_subflow(a, b)
    try:
        assert a.wait(60) == 0 and b.wait(60) == 0
    finally:
        a.close(), b.close()
        kill(relay)
    assert a.err.read_text() == ""
