"""The stats views (runtime/observe.py): labels, JSON, the table with and without rich."""

from __future__ import annotations

import io
import json
import os
import random
import re
import socket
import sys

import pytest

from sockimux.core import Session
from sockimux.core.reopen import Failure, Reopener
from sockimux.runtime.observe import as_json, peer_label, plain_lines, show_table


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def snapshot() -> object:
    session = Session(b"A" * 16, 0.0)
    sid = session.open_subflow(0.0, b"n" * 16)
    session.label(sid, "pid 1 uid 0")
    return session.stats(1.5)


def test_an_unnamed_unix_socket_is_labelled_with_the_connecting_process() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        assert peer_label(a) == f"pid {os.getpid()} uid {os.getuid()}"
    assert peer_label(None) == ""


def test_json_is_one_line_with_event_and_pid() -> None:
    line = as_json(snapshot(), "signal")  # type: ignore[arg-type]
    assert "\n" not in line
    record = json.loads(line)
    assert record["event"] == "signal" and record["pid"] == os.getpid() and record["at"] == 1.5
    assert record["subflows"][0]["label"] == "pid 1 uid 0"
    assert record["subflows"][0]["state"] == "handshake" and record["subflows"][0]["age"] == 1.5


def test_terminal_without_rich_gets_plain_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "rich", None)  # as on a far host without it
    monkeypatch.setitem(sys.modules, "rich.console", None)
    out = Tty()
    show_table(snapshot(), "P: ", out)  # type: ignore[arg-type]
    assert out.getvalue().splitlines() == [f"P: {line}" for line in plain_lines(snapshot())]  # type: ignore[arg-type]
    assert out.getvalue().splitlines()[2].split()[1:5] == ["1", "handshake", "1.5", "pid"]


def test_terminal_with_rich_gets_a_table() -> None:
    out = Tty()
    show_table(snapshot(), "P: ", out)  # type: ignore[arg-type]
    text = out.getvalue()
    # rich's box and title (cells wrap to the 80 columns of a file "terminal").
    assert "P: " not in text and "│" in text and "└" in text
    assert "stats: subflows open 0" in text and "label" in text


def test_the_addresses_we_open_follow_the_subflows_in_plain_lines() -> None:
    policy = Reopener(random.Random(1))
    policy.add("EXEC:'socat STDIO UNIX-CONNECT:/b.sock'", 1, 0.0)
    policy.add("ssh far", 2, 0.0)
    for slot in policy.start_due(0.0):
        policy.ended(slot, 0.0, Failure.EXITED, "killed by SIGKILL")
    stats = Session(b"A" * 16, 0.0).stats(0.1, policy.snapshot(0.1))
    lines = plain_lines(stats)
    assert lines[1].split()[0] == "id" and len(lines) == 2 + 4  # no subflow; title, header, 2 rows
    assert lines[2] == "addresses we open (re-opened when their subflows end):"
    assert lines[3].split()[:9] == ["address", "up", "starting", "waiting", "attempts",
                                    "re-opens", "lost", "last", "end"]
    exec_row, ssh_row = lines[4], lines[5]
    assert exec_row.startswith("EXEC:'socat STDIO UNIX-CONNECT:/b.sock'  0/1  ")
    assert exec_row.split()[3:13] == ["0/1", "0", "1", "1", "0", "0", "command", "exited:",
                                      "killed", "by"]
    assert re.search(r" SIGKILL  in 0\.[1-4] s$", exec_row), exec_row  # 0.2-0.4 s after 0.0
    # Only one start was due at once (they are staggered): ssh's 2 wait for their first.
    assert ssh_row.split() == ["ssh", "far", "0/2", "0", "2", "0", "0", "0", "-", "in", "0.0", "s"]


def test_terminal_with_rich_gets_a_table_of_the_addresses_too() -> None:
    policy = Reopener(random.Random(1))
    policy.add("ssh far", 1, 0.0)
    (slot,) = policy.start_due(0.0)
    policy.established(slot, 0.0)
    out = Tty()
    show_table(Session(b"A" * 16, 0.0).stats(0.1, policy.snapshot(0.1)), "P: ", out)
    text = out.getvalue()
    assert "addresses we open" in text and "ssh" in text and "1/1" in text  # (cells wrap)
    assert text.count("└") == 2  # two tables
