"""`s2r hil learner` + `s2r hil actor` as a user runs them: two processes over gRPC, the learner SIGKILLed mid-run."""

from __future__ import annotations

import collections
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
from s2r.policies.hil_link_server import HilLearnerLink
from s2r.real.hil_actor import OnnxWeights

from tests.training_runs import cli_env, s2r_command

TASK = "Panda-Lift-Cube"
TINY = ["torch_threads=1", "num_demos=2", "learning_starts=50", "eval_episodes=2", "eval_every=1000000",
        "learner.batch_size=32", "learner.actor_hidden=(32,32)", "learner.critic_hidden=(32,32)", "publish_every_s=0.5"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _learner(run: Path, port: int, steps: int, resume: bool = False) -> subprocess.Popen:
    args = ["hil", "learner", "--resume", str(run)] if resume else ["hil", "learner", TASK, "--run-dir", str(run),
                                                                     "--bind", f"127.0.0.1:{port}"]
    for kv in TINY:
        args += ["--train-set", kv]
    return subprocess.Popen(s2r_command(*args, "--steps", str(steps), "--no-progress", "--checkpoint-minutes", "0.05"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())


def _wait_listening(p: subprocess.Popen, timeout_s: float = 120.0) -> None:
    end = time.monotonic() + timeout_s
    for line in p.stderr:
        if "listening on" in line:
            return
        if time.monotonic() > end:
            break
    raise AssertionError(f"the learner did not start listening: {p.poll()=}")


def test_learner_killed_and_resumed_keeps_every_actor_transition_once(tmp_path: Path) -> None:
    port, run, spool = _free_port(), tmp_path / "run", tmp_path / "spool"
    steps = 300
    learner = _learner(run, port, 10**6)
    actor = None
    try:
        _wait_listening(learner)
        actor = subprocess.Popen(s2r_command("hil", "actor", TASK, "--learner", f"127.0.0.1:{port}", "--steps", str(steps),
                                             "--rate-hz", "50", "--spool", str(spool), "--wait", "20",
                                             "--flush", "90"),  # a loaded machine restarts the learner slowly
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
        time.sleep(3.0)  # the actor is mid-run (6 s at 50 Hz)
        learner.send_signal(signal.SIGKILL)
        learner.wait(10)
        time.sleep(1.0)  # the link is down for a while: the actor keeps acting and spooling
        learner = _learner(run, port, steps, resume=True)
        out, err = actor.communicate(timeout=240)
        assert actor.returncode == 0, err
        m = re.search(r"sent (\d+), acknowledged (\d+), pending (\d+)", err)
        assert m and m.group(1) == str(steps) and m.group(3) == "0", err
        out, err = learner.communicate(timeout=180)
        assert learner.returncode == 0, err
    finally:
        for p in (actor, learner):
            if p is not None and p.poll() is None:
                p.kill()
    # Every sequence number the actor produced is in the inbox exactly once ...
    link = HilLearnerLink("127.0.0.1:0", inbox_dir=run / "inbox")
    seqs = collections.Counter(seq for _a, seq, _t in link.replay_inbox())
    assert sorted(seqs) == list(range(steps)) and set(seqs.values()) == {1}
    # ... and the resumed learner's buffer held each once: its final report counts them.
    assert '"transitions": 300.0' in out, out[-2000:]
    assert (run / "policy.onnx").is_file()


def test_actor_keeps_the_last_good_weights_when_new_ones_are_corrupt(tmp_path: Path) -> None:
    import torch

    net = torch.nn.Linear(3, 2)
    path = tmp_path / "p.onnx"
    torch.onnx.export(net, (torch.zeros(1, 3),), str(path), input_names=["obs"], output_names=["a"], dynamo=False)
    w = OnnxWeights()
    assert w(np.zeros((1, 3), np.float32)) is None  # nothing yet: the caller holds
    w.offer(1, path.read_bytes())
    w._building.join(10)
    out = w(np.ones((1, 3), np.float32))
    assert out.shape == (1, 2) and w.version == 1
    w.offer(2, b"not an onnx model")
    w._building.join(10)
    assert np.allclose(w(np.ones((1, 3), np.float32)), out) and w.version == 1
    assert w.errors == 1 and "version 2" in w.last_error
    w.offer(1, path.read_bytes())  # an older or equal version is ignored
    assert w._building is not None and not w._building.is_alive()
