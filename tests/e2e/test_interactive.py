"""The original README's first example, typed by a person into an interactive bash.

In an interactive shell with job control, a background job's STDIN is the
terminal. ``./sockimux /tmp/sockA > /tmp/out.txt &`` is such a job: if it read
that STDIN, the kernel would send it SIGTTIN and bash would report
``[1]+  Stopped``, and the example would hang. sockimux must not be stopped, and
must treat that STDIN as empty. The test drives a real bash under a private tmux
server and reads the result off the screen, as the person would.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .harness import ROOT, SOCKIMUX, require

PROMPT = "E2E$ "
# A job notice from bash: "[1]+  Stopped                 cat" (or "Stopped (tty input)" from jobs -l,
# which also prints the pid: "[1]+  5299 Stopped (tty input)     cat").
STOPPED_JOB = re.compile(r"^\[\d+\][+\- ] +(?:\d+ )?Stopped\b.*$", re.MULTILINE)


def stopped_jobs(screen: str) -> list[str]:
    """The lines on the screen where bash reports a stopped job."""
    return STOPPED_JOB.findall(screen)


class Terminal:
    """An interactive bash in a private tmux server, 200x50, driven by send-keys."""

    def __init__(self) -> None:
        self.tmux = require("tmux")
        self.server = f"sockimux-e2e-{os.getpid()}-{secrets.token_hex(4)}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TMUX")}
        env["HISTFILE"] = ""  # leave the user's ~/.bash_history alone
        self._run("-f", "/dev/null", "new-session", "-d", "-x", "200", "-y", "50", "-c", str(ROOT),
                  "bash --norc --noprofile -i", env=env)
        self.socket_path = self._run("display-message", "-p", "#{socket_path}").strip()
        self.prompts = 0

    def _run(self, *args: str, env: dict[str, str] | None = None) -> str:
        result = subprocess.run([self.tmux, "-L", self.server, *args], capture_output=True, text=True,
                                timeout=10, env=env)
        if result.returncode != 0:
            pytest.fail(f"tmux {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result.stdout

    def screen(self) -> str:
        """Everything bash has shown so far, wrapped lines joined back together."""
        return self._run("capture-pane", "-p", "-J", "-S", "-", "-t", "0")

    def type(self, line: str) -> None:
        """Type a line and press Enter (the line is sent literally, no key names)."""
        if line:
            self._run("send-keys", "-t", "0", "-l", line)
        self._run("send-keys", "-t", "0", "Enter")

    def fail(self, message: str) -> None:
        """Fail, showing the screen, with the shell's view of its jobs added to it."""
        try:
            self.type("jobs -l")
            time.sleep(0.5)
            screen = self.screen()
        except BaseException as e:  # the screen is the evidence; never lose the message
            screen = f"(could not capture the pane: {e})"
        pytest.fail(f"{message}\n--- tmux pane ---\n{screen.rstrip()}\n--- end of pane ---")

    def wait_until(self, cond: Callable[[str], bool], timeout: float, what: str) -> str:
        """Poll the screen until cond(screen) holds; the screen it held on."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if cond(screen):
                return screen
            if time.monotonic() > deadline:
                self.fail(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.05)

    def prompt_count(self, screen: str) -> int:
        return sum(1 for line in screen.splitlines() if line.startswith(PROMPT.rstrip()))

    def run(self, line: str, timeout: float = 5) -> str:
        """Type a command and wait for the next prompt; the screen then."""
        self.type(line)
        self.prompts += 1
        want = self.prompts + 1
        return self.wait_until(lambda s: self.prompt_count(s) >= want, timeout,
                               f"the prompt after `{line}`")

    def start(self) -> None:
        """Wait for bash, then give it a plain prompt and the repo root as its directory."""
        self.wait_until(lambda s: s.strip() != "", 5, "bash to start")
        self.type(f"PS1='{PROMPT}'; unset HISTFILE; cd {ROOT}")
        self.wait_until(lambda s: self.prompt_count(s) >= 1, 5, "the prompt")
        self.prompts = 0

    def kill(self) -> None:
        subprocess.run([self.tmux, "-L", self.server, "kill-server"], capture_output=True, timeout=10)
        if self.socket_path:  # tmux leaves its socket file behind
            Path(self.socket_path).unlink(missing_ok=True)


@pytest.fixture
def term() -> Iterator[Terminal]:
    t = Terminal()
    try:
        t.start()
        yield t
    finally:
        t.kill()


def _job_pid(term: Terminal, job: int, screen: str) -> str:
    m = re.search(rf"^\[{job}\] (\d+)$", screen, re.MULTILINE)
    if m is None:
        term.fail(f"bash did not print the pid of job [{job}]")
    assert m is not None
    return m.group(1)


def test_readme_example_typed_into_interactive_bash(term: Terminal, tmp_path: Path) -> None:
    """The README's first example, typed line by line: nothing is stopped, 'hello world' arrives."""
    require("socat")
    assert Path(SOCKIMUX) == ROOT / "sockimux"
    sock_a, sock_b, out = tmp_path / "sockA", tmp_path / "sockB", tmp_path / "out.txt"

    screen = term.run(f"./sockimux {sock_a} > {out} &")
    pid_a = _job_pid(term, 1, screen)
    screen = term.run(f"echo hello world | ./sockimux {sock_b} &")
    pid_b = _job_pid(term, 2, screen)

    # A person glances at the two sockets before joining them with socat.
    deadline = time.monotonic() + 5
    while not (sock_a.is_socket() and sock_b.is_socket()):
        if stopped_jobs(term.screen()):
            term.fail("bash stopped a job (SIGTTIN: a background job read the terminal)")
        if time.monotonic() > deadline:
            term.fail("timed out after 5 s waiting for both sockimux to listen")
        time.sleep(0.05)
    term.run(f"socat UNIX-CONNECT:{sock_a} UNIX-CONNECT:{sock_b} &")

    # ... and waits a moment, until out.txt has something in it, before typing cat.
    deadline = time.monotonic() + 8
    while not (out.exists() and out.stat().st_size > 0):
        if stopped_jobs(term.screen()):
            term.fail("bash stopped a job (SIGTTIN: a background job read the terminal)")
        if time.monotonic() > deadline:
            term.fail(f"timed out after 8 s waiting for {out} to have content")
        time.sleep(0.05)
    screen = term.run(f"cat {out}")
    cat_output = screen.split(f"{PROMPT}cat {out}\n", 1)[-1].splitlines()
    if not cat_output or cat_output[0] != "hello world":
        term.fail(f"`cat {out}` did not print 'hello world' first: {cat_output[:3]!r}")

    # Both jobs end, successfully. `wait PID` gives the status even after bash reported "Done".
    screen = term.run(f'wait {pid_a}; echo "rc1=$?"; wait {pid_b}; echo "rc2=$?"', timeout=10)
    rcs = re.findall(r"^(rc[12]=\d+)$", screen, re.MULTILINE)
    if rcs != ["rc1=0", "rc2=0"]:
        term.fail(f"the two sockimux jobs did not both exit 0: {rcs!r}")

    screen = term.run("jobs -l")
    if stopped_jobs(screen):
        term.fail(f"bash stopped a job: {stopped_jobs(screen)!r}")
    if "Traceback" in screen:
        term.fail("a Python traceback reached the terminal")
    if sock_a.exists() or sock_b.exists():
        term.fail(f"socket files left behind: {sorted(p.name for p in tmp_path.iterdir())!r}")
    assert out.read_text() == "hello world\n"


def test_control_a_background_reader_of_the_terminal_is_seen_stopped(term: Terminal) -> None:
    """The detection works: `cat &` reads the terminal, bash stops it, and the screen shows it."""
    term.run("cat &")
    deadline = time.monotonic() + 5
    while not stopped_jobs(term.screen()):
        if time.monotonic() > deadline:
            term.fail("timed out after 5 s waiting for bash to report `cat &` stopped")
        term.run("")  # a person presses Enter; bash reports job changes before the prompt
        time.sleep(0.1)
    stopped = stopped_jobs(term.screen())
    assert any(line.rstrip().endswith("cat") for line in stopped), stopped
    term.run("kill -KILL %1")
