"""Paths: bulk with each kind of STDIN and STDOUT, against socat with the same ends.

Users pipe into sockimux and redirect it to files, not only the bulk
section's file-in, pipe-out.  For each of the four combinations of

- STDIN of the sending end: ``file`` (``< payload``) or ``pipe``
  (``cat payload |``), and
- STDOUT of the receiving end: ``pipe`` (``| sink``) or ``file``
  (``> out``, a new file in tmpfs next to the payload),

this runs the bulk measurement (bulk.py: same payload, relays, clock,
verification and alternation) with 1 and 4 subflows (``--paths-subflows``),
against socat alone with the very same ends: socat reads ``OPEN:payload``
or the same kind of pipe from ``cat``, and writes ``STDOUT`` into the same
kind of pipe or file.  ends.py says how each end is made and how the end
of a run is seen (EOF at the sink, or the writer closing the file).

Target: sockimux at least as fast as socat (ratio >= 1.0) for each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bulk
from ends import KINDS
from procs import Payload

TARGET = 1.0  # sockimux/socat, each combination and subflow count
COMBINATIONS = [(stdin, stdout) for stdin in KINDS for stdout in reversed(KINDS)]  # file>pipe first


def describe(block: int) -> dict[str, str]:
    """The four combinations differ only in their ends: describe the shared topology once."""
    return {
        "stdin": "file: A.sock < payload (socat: OPEN:payload); pipe: cat payload | A (socat: STDIN)",
        "stdout": "pipe: B | sink (a 1 MiB pipe); file: B > out (a new file in tmpfs)",
        "relays": f"K x socat -b{block} UNIX-CONNECT:A.sock UNIX-CONNECT:B.sock; socat alone: "
                  f"socat -b{block} -u <stdin> UNIX-LISTEN:a.sock, one relay, "
                  f"socat -b{block} -u UNIX-LISTEN:b.sock STDOUT",
    }


def measure(tmp: Path, payload: Payload, subflow_counts: list[int], repeat: int, block: int,
            verify: bool, timeout: float, progress: Any) -> dict[str, Any]:
    combinations: dict[str, Any] = {}
    for stdin, stdout in COMBINATIONS:
        r = bulk.measure(tmp, payload, subflow_counts, repeat, block, verify, timeout, progress,
                         (stdin, stdout), tag=f"paths-{stdin}-{stdout}")
        for v in r["subflows"].values():
            v["target_met"] = v["ratio"] >= TARGET
        combinations[f"{stdin}>{stdout}"] = {
            "stdin": stdin, "stdout": stdout, "describe": bulk.describe(block, (stdin, stdout)), **r}
    return {"target_ratio": TARGET, "combinations": combinations}
