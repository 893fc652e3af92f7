"""Residual RL on a frozen BC base: the exported graph, resume after a kill, and every bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from s2r.policies.bc import BCConfig, train_bc
from s2r.policies.demos import collect_demos
from s2r.policies.evaluate import OnnxPolicy
from s2r.policies.offpolicy import NonFiniteLossError
from s2r.policies.residual import CHECKPOINT, ResidualConfig, ResidualRunner
from s2r.policies.runner import CheckpointError
from s2r.real.episodes import EpisodeFormatError

TASK = "Panda-Lift-Cube"


def _tiny(**kw) -> ResidualConfig:
    cfg = ResidualConfig(num_envs=4, max_env_steps=160, learning_starts=40, eval_every=10_000, eval_episodes=4,
                         checkpoint_every=80, buffer_capacity=10_000, torch_threads=1)
    learner = replace(cfg.learner, num_critics=3, critic_hidden=(32, 32), actor_hidden=(32, 32), batch_size=32,
                      critic_warmup_updates=10)
    return replace(cfg, learner=learner, **kw)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A small BC base cloned from a few expert demos (its quality does not matter here)."""
    root = tmp_path_factory.mktemp("residual")
    collect_demos(TASK, root / "demos", 4, noise=0.05, num_envs=4, progress=False)
    train_bc(TASK, root / "demos", root / "bc", BCConfig(updates=30, hidden=(32, 32)), progress=False)
    return root / "bc"


def test_untrained_residual_exports_the_base_and_learns_without_error(base, tmp_path):
    runner = ResidualRunner(TASK, base, tmp_path / "run", _tiny(), progress=False)
    try:
        # Zero-initialised residual: the combined graph must act exactly like the base graph.
        runner.export()
        obs = np.random.default_rng(0).normal(size=(6, runner.bc.obs_dim)).astype(np.float32)
        a_res, a_base = OnnxPolicy(tmp_path / "run"), OnnxPolicy(base)
        for _ in range(3):
            np.testing.assert_allclose(a_res(obs), a_base(obs), atol=1e-6)
        meta = json.loads((tmp_path / "run" / "policy.json").read_text())
        assert meta["residual"]["scale"] == runner.cfg.scale and meta["chunking"]["size"] == 4
        assert meta["algo"] == "residual" and meta["action"]["kind"] == "ee_delta" and meta["command"]["kind"] == "none"
        res = runner.learn()
    finally:
        runner.close()
    assert res["failed"] is None and res["env_steps"] == 160 and res["updates"] > 0
    assert (tmp_path / "run" / CHECKPOINT).is_file() and (tmp_path / "run" / "learning_curve.png").is_file()
    # After learning the residual is no longer zero, and stays inside its bound.
    a_res, a_base = OnnxPolicy(tmp_path / "run"), OnnxPolicy(base)
    diff = np.abs(a_res(obs) - a_base(obs))
    assert diff.max() > 0 and diff.max() <= runner.cfg.scale + 1e-6


def test_finetune_baseline_starts_at_the_bc_first_action(base, tmp_path):
    runner = ResidualRunner(TASK, base, tmp_path / "ft", _tiny(finetune=True), progress=False)
    try:
        obs = torch.randn(5, runner.bc.obs_dim)
        with torch.no_grad():
            want = runner.bc(obs)[:, 0]
            got = runner.learner.act({"policy": obs, "base_action": torch.zeros(5, 4)}, deterministic=True)
        torch.testing.assert_close(got, want)
        # The fine-tuned network is exported as a plain one-step graph (its first action, no chunk history).
        runner.export()
        policy = OnnxPolicy(tmp_path / "ft")
        assert policy.chunk is None and policy.meta.algo == "finetune" and policy.meta.residual.finetune
        np.testing.assert_allclose(policy(obs.numpy()), want.numpy(), atol=1e-5)
    finally:
        runner.close()


def test_killed_run_resumes_with_every_transition(base, tmp_path):
    run = tmp_path / "run"
    script = f"""
import sys
from dataclasses import replace
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_residual import _tiny
from s2r.policies.residual import ResidualRunner
r = ResidualRunner({TASK!r}, {str(base)!r}, {str(run)!r}, replace(_tiny(), max_env_steps=100_000, checkpoint_every=40),
                   progress=False)
r.learn()
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (run / CHECKPOINT).is_file():
        time.sleep(0.2)
    time.sleep(1.0)  # let it write more transitions after the checkpoint
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (run / CHECKPOINT).is_file(), proc.stderr.read().decode()[-2000:]
    with pytest.raises(CheckpointError, match="already holds a run"):
        ResidualRunner(TASK, base, run, _tiny(), progress=False)
    resumed = ResidualRunner(TASK, base, run, replace(_tiny(), max_env_steps=10_000), resume=True, progress=False)
    try:
        ckpt = torch.load(run / CHECKPOINT, weights_only=False)
        # Every transition added before the kill is back, including those after the last checkpoint.
        assert len(resumed.buffer) >= ckpt["env_steps"] > 0
        assert resumed.env_steps == ckpt["env_steps"] and resumed.learner.updates == ckpt["learner"]["updates"]
    finally:
        resumed.close()


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(base, tmp_path, monkeypatch):
    run = tmp_path / "run"
    runner = ResidualRunner(TASK, base, run, replace(_tiny(), max_env_steps=400, checkpoint_every=80), progress=False)
    calls = {"n": 0}
    real_update = runner.learner.update

    def poisoned(batch):
        calls["n"] += 1
        if calls["n"] > 60:
            batch = replace(batch, reward=batch.reward * float("nan"))
        return real_update(batch)

    monkeypatch.setattr(runner.learner, "update", poisoned)
    try:
        res = runner.learn()
    finally:
        runner.close()
    assert "critic loss is not finite" in res["failed"]
    ckpt = torch.load(run / CHECKPOINT, weights_only=False)
    assert 0 < ckpt["env_steps"] < 400
    for t in ckpt["learner"]["critic"].values():
        assert torch.isfinite(t).all()
    with pytest.raises(NonFiniteLossError):
        raise NonFiniteLossError("critic", 1)


def test_bad_inputs_are_refused_with_clear_messages(base, tmp_path):
    # A base cloned on another task (14 observations) cannot drive the insertion task (20).
    with pytest.raises((ValueError, CheckpointError), match="cloned on 'Panda-Lift-Cube', not 'Panda-Insert-Peg'"):
        ResidualRunner("Panda-Insert-Peg", base, tmp_path / "a", _tiny(), progress=False)
    with pytest.raises(FileNotFoundError, match="no behaviour-cloning checkpoint"):
        ResidualRunner(TASK, tmp_path / "nothing", tmp_path / "b", _tiny(), progress=False)
    # Demos that the base config points at, but recorded on another task.
    other = tmp_path / "other_demos"
    collect_demos("Panda-PickPlace-Cube", other, 1, num_envs=1, progress=False)
    fake = tmp_path / "fake_bc"
    fake.mkdir()
    (fake / "bc.pt").write_bytes((base / "bc.pt").read_bytes())
    (fake / "config.json").write_text(json.dumps({**json.loads((base / "config.json").read_text()), "demos": str(other)}))
    with pytest.raises(EpisodeFormatError, match="recorded on task 'Panda-PickPlace-Cube'"):
        ResidualRunner(TASK, fake, tmp_path / "c", _tiny(), progress=False)
    # A truncated demo file names the file.
    demos = json.loads((base / "config.json").read_text())["demos"]
    victim = sorted(Path(demos).glob("episode_*.npz"))[0]
    data = victim.read_bytes()
    try:
        victim.write_bytes(data[:100])
        with pytest.raises(EpisodeFormatError, match=f"{victim.name} is truncated"):
            ResidualRunner(TASK, base, tmp_path / "d", _tiny(), progress=False)
    finally:
        victim.write_bytes(data)
    assert not os.path.exists(tmp_path / "d" / CHECKPOINT)


@pytest.mark.slow
def test_residual_beats_its_base_on_lift(tmp_path):
    """Learning: a weak base (10 noisy demos, ~80% success) plus 10k env steps of residual RL succeeds clearly more."""
    collect_demos(TASK, tmp_path / "demos", 10, noise=0.3, progress=False)
    # ACT's older-first ensembling (m = 0.1) lags, which keeps this base weak enough to improve on.
    train_bc(TASK, tmp_path / "demos", tmp_path / "bc", BCConfig(updates=1000, ensemble_m=0.1), progress=False)
    cfg = ResidualConfig(max_env_steps=10_000, eval_every=10_000, eval_episodes=100, torch_threads=1)
    runner = ResidualRunner(TASK, tmp_path / "bc", tmp_path / "run", cfg, progress=False)
    try:
        res = runner.learn()
    finally:
        runner.close()
    base, final = runner.history[0]["success_rate"], res["final_success"]
    assert final >= base + 0.1 and final >= 0.9, (base, final)
