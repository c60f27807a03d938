"""An accepted peer that misbehaves (hostile_peer.py): whatever it makes us owe
or log stays bounded, and the session it impersonates is not hijacked."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

from .hostile_peer import PING, PONG, HostilePeer, frame, ready, rss_kib
from .test_hostile import finish, spawn, stop

MB = 1 << 20


def test_a_ping_flood_that_never_reads_stays_bounded(tmp_path: Path) -> None:
    """A peer floods PINGs and never reads our PONGs: our memory stays bounded
    (one PONG is owed, not one per PING), and another subflow is still answered
    meanwhile."""
    path = tmp_path / "a.sock"
    proc = spawn(path)
    try:
        ready(path)
        base = rss_kib(proc.pid)
        flooder = HostilePeer(path)
        flooder.open()
        result: dict[str, float] = {}

        def flood() -> None:
            start = time.monotonic()
            result["sent"] = flooder.flood(frame(PING, 7), seconds=6.0)
            result["took"] = time.monotonic() - start

        thread = threading.Thread(target=flood, daemon=True)
        thread.start()
        peak = base
        time.sleep(0.5)
        # A second subflow from the same peer is served while the flood goes on.
        polite = HostilePeer(path, flooder.instance)
        polite.open()
        asked = time.monotonic()
        polite.send(frame(PING, 42))
        pong = polite.expect(PONG, timeout=2.0)
        assert pong.value == 42
        answered = time.monotonic() - asked
        while thread.is_alive():
            peak = max(peak, rss_kib(proc.pid))
            thread.join(0.05)
        polite.close()
        flooder.close()
        assert proc.poll() is None, "the flood killed sockimux"
        assert result["sent"] > 10 * MB, f"the flood only sent {result['sent']} bytes"
        assert peak - base < 100 * 1024, f"RSS grew from {base} KiB to {peak} KiB under the flood"
        assert answered < 1.0, f"another subflow waited {answered:.2f} s for a PONG"
        proc.send_signal(signal.SIGTERM)
        code, err = finish(proc, 10)
        assert code == 128 + signal.SIGTERM, err
        assert "Traceback" not in err
    finally:
        stop(proc)
