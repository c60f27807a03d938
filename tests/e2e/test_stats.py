"""What sockimux shows of itself: --stats-file JSON Lines, SIGUSR1, --stats tables."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from .dialing import Imux
from .harness import SOCKIMUX, Peer, kill, random_file, require, sha256_file, socat_subflow, wait_for

MB = 1 << 20


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_stats_file_counts_the_bytes_moved_with_a_subflow_killed(tmp_path: Path) -> None:
    """A sends 16 MiB to B, whose STDOUT is read at 8 MB/s, over two subflows;
    one is killed mid-way.  Both JSON Lines files add up to what moved."""
    require("socat")
    size = 16 * MB
    a_in = random_file(tmp_path / "a.in", size)
    a = Peer(tmp_path, "a", a_in, "--stats=0.2", "--stats-file", str(tmp_path / "a.jsonl"))
    b = Peer(tmp_path, "b", None, "--stats-file", str(tmp_path / "b.jsonl"),
             stdout_pipe=0, stdout_rate=8e6)
    victim, kept = socat_subflow(a, b), socat_subflow(a, b)
    try:
        wait_for(lambda: (tmp_path / "a.jsonl").exists()
                 and any(r["open"] == 2 for r in records(tmp_path / "a.jsonl")), 10,
                 "both subflows in the stats")
        time.sleep(0.3)
        kill(victim)
        assert a.wait(60) == 0, a.stderr()
        assert b.wait(60) == 0, b.stderr()
        assert sha256_file(b.out) == sha256_file(a_in)
    finally:
        a.close(), b.close()
        kill(kept)
    ours, theirs = records(tmp_path / "a.jsonl"), records(tmp_path / "b.jsonl")
    assert [r["event"] for r in theirs] == ["exit"]  # no interval: one line, at exit
    assert ours[-1]["event"] == "exit" and {r["event"] for r in ours[:-1]} == {"interval"}
    assert len(ours) >= 5  # every 0.2 s over two seconds
    acked = [r["acked"] for r in ours]
    assert acked == sorted(acked) and 0 < min(a for a in acked if a) < size
    # Each subflow is named after the socat that made it; the victim's is gone at the end.
    labels = {s["label"] for r in ours for s in r["subflows"]}
    assert f"pid {victim.pid} uid" in " ".join(labels) and f"pid {kept.pid} uid" in " ".join(labels)
    end_a, end_b = ours[-1], theirs[-1]
    # (The peer, done first, may have closed the kept one too by then.)
    assert [s["label"].split()[1] for s in end_a["subflows"]] in ([str(kept.pid)], [])
    assert end_a["outcome"] == end_b["outcome"] == "done"
    assert end_a["input"] == end_a["sent"] == end_a["acked"] == size and end_a["input_ended"]
    assert end_b["received"] == end_b["written"] == size
    assert end_a["established"] == 2 and end_a["closed"] + end_a["open"] == 2
    assert end_a["open"] == len(end_a["subflows"])
    # What the killed subflow held unacknowledged went again on the other
    # (B's STDOUT is slow: it had received more than it had written).
    assert end_a["resent"] > 0
    # Every duplicate B dropped was a byte A sent again (for the lost subflow,
    # as a head-of-line copy, or as a probe copy: a subflow quiet under load);
    # every DATA byte B got, A sent (A's extra: lost in the killed socat).
    assert end_b["duplicates"] <= end_a["resent"] + end_a["head_copies"] + end_a["probe_copies"]
    assert end_a["data_out"] >= end_b["data_in"] > size
    assert end_b["data_out"] == end_a["data_in"] == 0


def test_sigusr1_writes_one_json_line_mid_transfer(tmp_path: Path) -> None:
    require("socat")
    size = 16 * MB
    a_in = random_file(tmp_path / "a.in", size)
    a = Peer(tmp_path, "a", a_in)
    b = Peer(tmp_path, "b", None, stdout_pipe=0, stdout_rate=8e6)
    relay = socat_subflow(a, b)
    try:
        wait_for(lambda: b.out.stat().st_size > MB, 10, "the transfer to start")
        b.proc.send_signal(signal.SIGUSR1)
        assert a.wait(60) == 0, a.stderr()
        assert b.wait(60) == 0, b.stderr()
        assert sha256_file(b.out) == sha256_file(a_in)
    finally:
        a.close(), b.close()
        kill(relay)
    err = b.err.read_text()
    lines = [line for line in err.splitlines() if line.startswith("{")]
    assert len(lines) == 1, err
    snap = json.loads(lines[0])
    assert snap["event"] == "signal" and snap["outcome"] is None and snap["pid"] == b.proc.pid
    assert MB < snap["written"] <= snap["received"] < size
    (sub,) = snap["subflows"]
    assert sub["state"] == "open" and sub["data_in"] >= snap["received"]
    assert "Traceback" not in err


def test_stats_table_at_exit_as_plain_lines(tmp_path: Path) -> None:
    require("socat")
    a_in = random_file(tmp_path / "a.in", 2 * MB)
    a = Peer(tmp_path, "a", a_in, "--stats")
    b = Peer(tmp_path, "b", None)
    relay = socat_subflow(a, b)
    try:
        assert a.wait(60) == 0, a.stderr()
        assert b.wait(60) == 0, b.stderr()
    finally:
        a.close(), b.close()
        kill(relay)
    lines = a.err.read_text().splitlines()
    pid = a.proc.pid
    # The subflow is still open at the end, or the peer (done first) closed it.
    still_open = len(lines) == 3
    assert lines[0].startswith(f"sockimux[{pid}]: stats: subflows open {int(still_open)} (1 "
                               f"established, {int(not still_open)} closed); sent {2 * MB} bytes, "
                               f"{2 * MB} acknowledged, 0 re-sent"), lines
    assert lines[1].split()[1:] == ["id", "state", "age", "label", "sent", "received", "rate",
                                    "out", "rate", "in", "rtt", "re-sent", "head", "copies"]
    if still_open:
        assert lines[2].split()[1:3] == ["1", "open"] and f"pid {relay.pid} uid" in lines[2]
    else:
        assert len(lines) == 2, lines


def test_a_stats_file_that_cannot_be_opened_is_bad_usage(tmp_path: Path) -> None:
    proc = subprocess.run([SOCKIMUX, "--stats-file", str(tmp_path / "no" / "such.jsonl"),
                           str(tmp_path / "s.sock")], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert re.fullmatch(rf"sockimux\[\d+\]: cannot open the stats file {tmp_path}/no/such.jsonl: "
                        "No such file or directory\n", proc.stderr), proc.stderr
    assert not (tmp_path / "s.sock").exists()


def test_stats_interval_out_of_range_is_bad_usage(tmp_path: Path) -> None:
    proc = subprocess.run([SOCKIMUX, "--stats=0.01", str(tmp_path / "s.sock")],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert proc.stderr == ("sockimux: argument --stats: must be from 0.1 to 86400 seconds: '0.01' "
                           "(see --help)\n")


def _address(path: Path) -> dict[str, Any] | None:
    """The one --connect address in the last line of a stats file, if any yet."""
    lines = records(path) if path.exists() else []
    return lines[-1]["addresses"][0] if lines else None


def test_stats_file_counts_the_reopens_of_an_exec_address(tmp_path: Path) -> None:
    """A opens its one subflow itself (EXEC: socat to B's socket); its child
    is killed twice mid-transfer.  The JSON Lines show each loss and re-open
    with the reason, and the line at exit agrees with A's -v log."""
    require("socat")
    sock, stats = str(tmp_path / "b.sock"), tmp_path / "a.jsonl"
    a_data, b_data = random.Random(41).randbytes(8 * MB), random.Random(42).randbytes(MB)
    # Fed over 8 s: both kills and re-opens (about 2 s of backoff) happen
    # while data still flows, even on a loaded machine.
    b = Imux(tmp_path, "b", sock, data=b_data, seconds=8)
    wait_for(lambda: os.path.exists(sock), 10, "B to listen")
    command = f"socat STDIO UNIX-CONNECT:{sock}"
    a = Imux(tmp_path, "a", "-v", "--stats=0.2", "--stats-file", str(stats),
             "--connect", f"EXEC:'{command}'", data=a_data, seconds=8)
    try:
        for kills in range(2):
            # Up (again), as the stats say, and carrying data: kill its child.
            wait_for(lambda kills=kills: (_address(stats) or {}).get("established") == kills + 1
                     and (_address(stats) or {}).get("open") == 1 and len(a.children()) == 1,
                     20, f"the subflow up {kills + 1} times")
            (child,) = a.children()
            os.kill(child, signal.SIGKILL)
        wait_for(lambda: (_address(stats) or {}).get("established") == 3, 20, "it back again")
        back = _address(stats)
        assert back is not None
        assert back == {"label": f"EXEC:'{command}'", "count": 1, "open": 1, "starting": 0,
                        "waiting": 0, "attempts": 3, "reopens": 2, "established": 3, "lost": 2,
                        "last_end": "command exited: killed by SIGKILL", "next_attempt_in": None,
                        "stopped": None}
        # The subflow is named after the address it was opened to (not "pid P"
        # of a socketpair's creator: ourselves).
        assert [s["label"] for s in records(stats)[-1]["subflows"]] == [f"EXEC:'{command}'"]
        assert a.wait(60) == 0, a.stderr()
        assert b.wait(60) == 0, b.stderr()
        assert a.out.read_bytes() == b_data and b.out.read_bytes() == a_data
    finally:
        a.close(), b.close()
    log, lines = a.err.read_text(), records(stats)
    assert "Traceback" not in log
    # A lost line names the kill; the reason of the last one is the JSON's last_end.
    losses = re.findall(r"subflow EXEC:'[^']*' lost \(([^)]*)\); re-opening it", log)
    assert losses == ["command exited: killed by SIGKILL"] * 2, log
    # Before the first kill, nothing was lost; after the last, every line says why.
    assert [r["addresses"][0]["last_end"] for r in lines if r["addresses"][0]["lost"] == 0] \
        == [None] * sum(r["addresses"][0]["lost"] == 0 for r in lines)
    end = lines[-1]
    assert end["event"] == "exit" and end["outcome"] == "done"
    (address,) = end["addresses"]
    assert address["attempts"] == log.count("opening subflow EXEC:")
    assert address["reopens"] == sum(int(n) for n in re.findall(r" back after (\d+) attempts?", log))
    assert address["lost"] == len(losses) and address["last_end"] == losses[-1]
    assert address["established"] == len(re.findall(r"subflow \d+ joined \(", log)) == 3
    assert address["stopped"] is None and end["established"] == 3
    # The --stats table at exit (plain lines: stderr is a file) says the same.
    rows = [line for line in log.splitlines() if f"]: EXEC:'{command}'  " in line]
    assert re.search(r"'  1/1  +0  +0  +3  +2  +2  command exited: killed by SIGKILL  -$", rows[-1]), rows
