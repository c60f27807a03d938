"""The stats views (runtime/observe.py): labels, JSON, the table with and without rich."""

from __future__ import annotations

import io
import json
import os
import socket
import sys

import pytest

from sockimux.core import Session
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
