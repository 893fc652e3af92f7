"""Shared pieces of the HIL link tests: fast link settings, waiting, counting what an inbox holds."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from s2r.policies.hil_link_server import INBOX_SUFFIX
from s2r.real.hil_link import ActorLinkConfig, HilActorLink
from s2r.real.hil_wire import KIND_TRANSITION, decode, scan_records

# Short backoff and heartbeat so reconnects happen within a test's few seconds.
FAST = ActorLinkConfig(backoff_s=(0.02, 0.2), poll_s=0.005, heartbeat_s=0.1, stream_s=2.0)


def actor(port: int, spool: Path, actor_id: str = "arm", **kw: object) -> HilActorLink:
    return HilActorLink(f"127.0.0.1:{port}", spool_dir=spool, actor_id=actor_id, config=FAST, deadline_s=1.0, **kw)


def transition(i: int) -> dict:
    """A small transition whose content names its index (checked against the sequence number)."""
    return {"obs": np.full(8, i, np.float32), "action": np.zeros(3, np.float32), "reward": float(i % 3),
            "intervened": bool(i % 2), "i": i}


def wait_for(cond: Callable[[], bool], timeout_s: float = 10.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)


def inbox_counts(inbox: Path, actor_id: str = "arm") -> collections.Counter:
    """seq -> how many TRANSITION records of that number the raw inbox file holds (no de-duplication)."""
    path = inbox / f"{actor_id}{INBOX_SUFFIX}"
    if not path.exists():
        return collections.Counter()
    out: collections.Counter = collections.Counter()
    for rec in scan_records(path.read_bytes()):
        if rec.kind == KIND_TRANSITION:
            out[rec.seq] += 1
            assert decode(rec.payload)["i"] == rec.seq  # the content belongs to its number
    return out


def exactly_once(inbox: Path, n: int, actor_id: str = "arm") -> bool:
    counts = inbox_counts(inbox, actor_id)
    return sorted(counts) == list(range(n)) and set(counts.values()) == {1}
