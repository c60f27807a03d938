"""What 128 subflows cost the core (issue 15 target 4): the work of an event
must not grow with the number of subflows that have nothing to do with it.

Measured with the fake clock as counts (exact, whatever the machine's load):
the pulls that find nothing to write, and the passes over every subflow to
pick the one for a stream-level ACK."""

from __future__ import annotations

from collections.abc import Callable

from sockimux.core import Session, SessionConfig
from sockimux.core.sender import Outgoing

from .link import Link
from .test_session import KB, finish, payload

SUBFLOWS = 128
WINDOW = SessionConfig(window=1024 * KB)  # credit-bound: credit comes back a little at a time


def transfer(seed: int) -> Link:
    """16 MiB from A to B over 128 fast subflows, through a 1 MiB window."""
    return Link.between(payload(16 * 1024 * KB, seed), b"", subflows=SUBFLOWS, seed=seed,
                        config=WINDOW, rate=(20e6, 50e6), latency=(0.001, 0.005))


def count_pulls(session: Session) -> dict[str, int]:
    counts = {"pulls": 0, "empty": 0}
    pull: Callable[..., list[Outgoing]] = session.pull

    def counted(sid: int, now: float, limit: int | None = None) -> list[Outgoing]:
        out = pull(sid, now, limit)
        counts["pulls"] += 1
        counts["empty"] += not out
        return out

    session.pull = counted  # type: ignore[method-assign]
    return counts


def test_a_bulk_transfer_over_128_subflows_pulls_only_those_with_work() -> None:
    """New credit wakes only the subflows that had room and nothing to send,
    and a timer pass only those it gave a frame to owe.  Before, each woke
    all 128: the sender's pulls that found nothing were 16,407 of 16,899
    here (1,092 of 1,543 after)."""
    link = transfer(3)
    sender = count_pulls(link.a.session)
    finish(link, until=120.0)
    assert sender["empty"] < 2000, sender


def test_a_stream_level_ack_takes_no_pass_over_every_subflow() -> None:
    """The receiver of the same transfer: each ACK goes on the subflow the
    data arrived on (nothing of ours in flight on it), not after comparing
    all 128 (each comparison is a call of the path's cap(): 15,469 calls
    here before, 583 after)."""
    link = transfer(3)
    b = link.b.session
    calls = {"cap": 0}
    for sub in b.subflows.values():
        cap = sub.path.cap

        def counted(cap: Callable[[], int] = cap) -> int:
            calls["cap"] += 1
            return cap()

        sub.path.cap = counted  # type: ignore[method-assign]
    finish(link, until=120.0)
    assert calls["cap"] < 10 * SUBFLOWS, calls
