"""The HIL actor/learner link over real gRPC on loopback: restarts of either side, outages, joins, weights."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from s2r.policies.hil_link_server import HilLearnerLink

from tests.real.hil_link_helpers import actor, exactly_once, inbox_counts, transition, wait_for

REPO = Path(__file__).resolve().parents[2]

LEARNER = r"""
import sys, time
from pathlib import Path
from s2r.policies.hil_link_server import HilLearnerLink
link = HilLearnerLink(sys.argv[1], inbox_dir=Path(sys.argv[2]))
print(link.start(), flush=True)
while True:
    time.sleep(1)
"""

ACTOR = r"""
import sys, time
from pathlib import Path
from tests.real.hil_link_helpers import actor, transition
link = actor(int(sys.argv[1]), Path(sys.argv[2]))
i = 0
while True:
    print(link.send(transition(i)), flush=True)
    i += 1
    time.sleep(0.002)
"""


def _spawn(script: str, *args: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)], stdout=subprocess.PIPE, text=True,
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.fixture
def learner(tmp_path: Path):
    link = HilLearnerLink(inbox_dir=tmp_path / "inbox")
    link.start_port = link.start()
    yield link
    link.stop(0)


def test_transitions_arrive_once_with_their_content(learner: HilLearnerLink, tmp_path: Path) -> None:
    with actor(learner.start_port, tmp_path / "spool") as a:
        seqs = [a.send(transition(i)) for i in range(300)]
        assert seqs == list(range(300))
        assert a.flush(10)
        assert a.connected and a.stats().acked == 300 and a.stats().pending == 0
    got = learner.drain()
    assert [(aid, s) for aid, s, _ in got] == [("arm", i) for i in range(300)]
    assert all(int(tr["i"]) == s and tr["obs"][0] == s and tr["intervened"] == bool(s % 2) for _, s, tr in got)
    assert learner.drain() == []
    assert [s for _, s, _ in learner.replay_inbox()] == list(range(300))
    (info,) = learner.actors()
    assert (info.actor_id, info.acked, info.stored, info.duplicates) == ("arm", 299, 300, 0)
    # acknowledged segments are trimmed: what is left on the actor's disk is the newest (empty-ish) segment
    assert len(list((tmp_path / "spool").glob("seg_*.bin"))) == 1


def test_learner_restarted_in_process_mid_run(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    first = HilLearnerLink(inbox_dir=inbox)
    port = first.start()
    with actor(port, tmp_path / "spool") as a:
        for i in range(200):
            a.send(transition(i))
            time.sleep(0.001)
            if i == 100:
                wait_for(lambda: len(inbox_counts(inbox)) > 0, 5, "the first upload")
                first.stop(0)  # mid-upload: some batches acknowledged, some not
        assert 0 < len(inbox_counts(inbox)) < 200
        second = HilLearnerLink(f"127.0.0.1:{port}", inbox_dir=inbox)
        second.start()
        try:
            for i in range(200, 300):
                a.send(transition(i))
            assert a.flush(10), a.stats()
            assert a.stats().reconnects >= 1
        finally:
            second.stop(0)
    assert exactly_once(inbox, 300)
    rebuilt = HilLearnerLink(inbox_dir=inbox)
    assert [s for _, s, _ in rebuilt.replay_inbox()] == list(range(300))


def test_learner_sigkilled_mid_run(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    proc = _spawn(LEARNER, "127.0.0.1:0", inbox)
    port = int(proc.stdout.readline())
    second = None
    try:
        with actor(port, tmp_path / "spool") as a:
            for i in range(400):
                a.send(transition(i))
                time.sleep(0.001)
                if i == 200:
                    wait_for(lambda: len(inbox_counts(inbox)) > 0, 5, "the first upload")
                    os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)
            assert 0 < len(inbox_counts(inbox)) < 400  # the kill came mid-run
            second = HilLearnerLink(f"127.0.0.1:{port}", inbox_dir=inbox)
            second.start()
            assert a.flush(10), a.stats()
        assert exactly_once(inbox, 400)
        assert sorted(s for _, s, _ in second.replay_inbox()) == list(range(400))
    finally:
        proc.kill()
        if second is not None:
            second.stop(0)


def test_actor_sigkilled_and_restarted_continues_its_sequence(learner: HilLearnerLink, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    proc = _spawn(ACTOR, learner.start_port, spool)
    try:
        printed = [int(proc.stdout.readline()) for _ in range(150)]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
    finally:
        proc.kill()
    assert printed == list(range(150))
    with actor(learner.start_port, spool) as a:
        first = a.send(transition(a.stats().next_seq))
        assert first >= 150  # every number the killed actor handed out stays taken
        for i in range(first + 1, first + 50):
            assert a.send(transition(i)) == i
        assert a.flush(10), a.stats()
    assert exactly_once(learner.inbox_dir, first + 50)  # nothing lost, nothing twice, no gap


@pytest.mark.parametrize("outage_s", [0.3, 1.5, pytest.param(30.0, marks=pytest.mark.slow)])
def test_link_dropped_then_back(tmp_path: Path, outage_s: float) -> None:
    inbox = tmp_path / "inbox"
    first = HilLearnerLink(inbox_dir=inbox)
    port = first.start()
    with actor(port, tmp_path / "spool") as a:
        for i in range(50):
            a.send(transition(i))
        assert a.flush(5)
        first.stop(0)
        wait_for(lambda: not a.connected, 5, "the actor to notice the outage")
        t0, i = time.monotonic(), 50
        while time.monotonic() - t0 < outage_s:  # the control loop keeps running and spooling
            a.send(transition(i))
            i += 1
            time.sleep(0.005)
        assert a.stats().pending > 0
        second = HilLearnerLink(f"127.0.0.1:{port}", inbox_dir=inbox)
        second.start()
        try:
            assert a.flush(10), a.stats()
            assert a.connected and a.stats().reconnects >= 1
        finally:
            second.stop(0)
    assert exactly_once(inbox, i)


def test_second_actor_joins_a_running_learner(learner: HilLearnerLink, tmp_path: Path) -> None:
    learner.publish_weights(1, b"w1" * 1000, {"step": 1})
    with actor(learner.start_port, tmp_path / "s1", "arm") as a:
        for i in range(100):
            a.send(transition(i))
        assert a.flush(5)
        with actor(learner.start_port, tmp_path / "s2", "arm2") as b:
            wait_for(lambda: b.latest_weights() is not None, 5, "the joining actor's weights")
            for i in range(100, 160):
                a.send(transition(i))
            for i in range(80):
                b.send(transition(i))
            assert a.flush(5) and b.flush(5)
            learner.publish_weights(2, b"w2" * 1000, {"step": 2})
            wait_for(lambda: a.stats().weights_version == 2 and b.stats().weights_version == 2, 5, "version 2")
    assert exactly_once(learner.inbox_dir, 160, "arm") and exactly_once(learner.inbox_dir, 80, "arm2")
    assert {x.actor_id: x.stored for x in learner.actors()} == {"arm": 160, "arm2": 80}


def test_weights_versions_only_increase_and_survive_learner_death(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    srv = HilLearnerLink(inbox_dir=inbox)
    port = srv.start()
    big = np.random.default_rng(0).integers(0, 256, 6 << 20, np.uint8).tobytes()  # over gRPC's 4 MB default
    seen = []
    with actor(port, tmp_path / "spool") as a:
        assert a.latest_weights() is None
        for v in range(1, 6):
            srv.publish_weights(v, big[: (1 << 20) * v] if v < 5 else big, {"version": v})
            for _ in range(20):
                w = a.latest_weights()
                if w is not None and (not seen or seen[-1] != w[0]):
                    seen.append(w[0])
                time.sleep(0.005)
        wait_for(lambda: a.stats().weights_version == 5, 10, "version 5")
        seen += [5] if seen[-1] != 5 else []
        assert seen == sorted(set(seen)) and seen[-1] == 5  # only ever newer versions
        assert a.latest_weights()[0] == 5
        _, data, meta = a.latest_weights()
        assert data == big and meta == {"version": 5}
        with pytest.raises(ValueError, match="not above"):
            srv.publish_weights(5, b"x", {})
        srv.stop(0)
        time.sleep(0.5)
        assert a.latest_weights()[0] == 5 and a.latest_weights()[1] == big  # the last good version stays
    with actor(port, tmp_path / "spool") as a:  # restarted while the learner is away: starts with version 5
        assert a.latest_weights()[0] == 5 and a.latest_weights()[1] == big
        srv2 = HilLearnerLink(f"127.0.0.1:{port}", inbox_dir=inbox)
        srv2.start()
        try:
            srv2.publish_weights(3, b"old", {})  # below what the actor holds: never replaces it
            srv2.publish_weights(6, b"new", {"version": 6})
            wait_for(lambda: a.stats().weights_version == 6, 10, "version 6 after the restart")
            assert a.latest_weights()[1:] == (b"new", {"version": 6})
        finally:
            srv2.stop(0)
    assert [p.name for p in (tmp_path / "spool").glob("weights_*.onnx")] == ["weights_000000000006.onnx"]
