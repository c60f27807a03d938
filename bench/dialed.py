"""Dialed: bulk with subflows sockimux opens itself, no relay processes.

The bulk section's 128 subflows are 128 socat relays started during the
run, and on 2 cores their fork, exec and start-up are a large part of what
128 subflows cost there.  Here sockimux A opens its own subflows, as
``--connect`` users do::

    sockimux --connect UNIX-CONNECT:B.sock,count=K < payload
    sockimux B.sock < /dev/null | sink

against socat's sender connecting itself::

    socat -b BLOCK -u OPEN:payload UNIX-CONNECT:b.sock
    socat -b BLOCK -u UNIX-LISTEN:b.sock STDOUT | sink

B listens before the clock; A is started after, so the time runs from the
first byte at the sink (not A's start-up, which the relayed topology has
before its clock too) to EOF.  A opens the K subflows 8 at a time as their
hellos complete: with K=128 most join after the first byte, inside the
time.  Same payload, sink, verification and alternation as bulk.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bulk
from procs import Payload

TARGET_128 = 0.85  # 128 subflows / 1 subflow, sockimux throughput


def describe(block: int) -> dict[str, str]:
    return {
        "sockimux": ("sockimux --connect UNIX-CONNECT:B.sock,count=K < payload; "
                     "sockimux B.sock < /dev/null | sink"),
        "reference": (f"socat -b{block} -u OPEN:payload UNIX-CONNECT:b.sock; "
                      f"socat -b{block} -u UNIX-LISTEN:b.sock STDOUT | sink"),
    }


def measure(tmp: Path, payload: Payload, subflow_counts: list[int], repeat: int, block: int,
            verify: bool, timeout: float, progress: Any) -> dict[str, Any]:
    r = bulk.measure(tmp, payload, subflow_counts, repeat, block, verify, timeout, progress,
                     tag="dialed", dialed=True)
    r["clock"] = "from the first byte at the sink to EOF"
    if "ratio_128_to_1" in r:
        r["target_128_to_1"] = TARGET_128
    return r
