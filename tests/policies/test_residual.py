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
from s2r.policies.algorithm import AlgorithmTaskMismatch
from s2r.policies.bc import BCConfig, train_bc
from s2r.policies.demos import collect_demos
from s2r.policies.driver import Budget, CheckpointError, RunDriver, RunSpec, resume_run_spec, train
from s2r.policies.evaluate import OnnxPolicy
from s2r.policies.offpolicy import NonFiniteLossError
from s2r.policies.residual import ResidualConfig
from s2r.real.episodes import EpisodeFormatError
from s2r.sim import task_config

TASK = "Panda-Lift-Cube"
CHECKPOINT = "checkpoint.pt"


def _tiny(**kw) -> ResidualConfig:
    cfg = ResidualConfig(num_envs=4, learning_starts=40, eval_every=10_000, eval_episodes=4, checkpoint_every=80,
                         buffer_capacity=10_000, torch_threads=1)
    learner = replace(cfg.learner, num_critics=3, critic_hidden=(32, 32), actor_hidden=(32, 32), batch_size=32,
                      critic_warmup_updates=10)
    return replace(cfg, learner=learner, **kw)


def _spec(base: Path, steps: int = 160, task: str = TASK, checkpoint_minutes: float = 5.0, **kw) -> RunSpec:
    cfg = _tiny(base=str(base), **kw)
    return RunSpec(algo="finetune" if cfg.finetune else "residual", task_id=task, task_cfg=task_config(task), cfg=cfg,
                   budget=Budget(steps=steps), checkpoint_minutes=checkpoint_minutes)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A small BC base cloned from a few expert demos (its quality does not matter here)."""
    root = tmp_path_factory.mktemp("residual")
    collect_demos(TASK, root / "demos", 4, noise=0.05, num_envs=4, progress=False)
    train_bc(TASK, root / "demos", root / "bc", BCConfig(updates=30, hidden=(32, 32)), progress=False)
    return root / "bc"


def test_untrained_residual_exports_the_base_and_learns_without_error(base, tmp_path):
    driver = RunDriver(_spec(base), tmp_path / "run", progress=False)
    algo = driver.algo
    try:
        # Zero-initialised residual: the combined graph must act exactly like the base graph.
        algo.export()
        obs = np.random.default_rng(0).normal(size=(6, algo.bc.obs_dim)).astype(np.float32)
        a_res, a_base = OnnxPolicy(tmp_path / "run"), OnnxPolicy(base)
        for _ in range(3):
            np.testing.assert_allclose(a_res(obs), a_base(obs), atol=1e-6)
        meta = json.loads((tmp_path / "run" / "policy.json").read_text())
        assert meta["residual"]["scale"] == algo.cfg.scale and meta["chunking"]["size"] == 4
        assert meta["algo"] == "residual" and meta["action"]["kind"] == "ee_delta" and meta["command"]["kind"] == "none"
        res = driver.learn()
        evals = [r for r in driver.history if "success_rate" in r]
    finally:
        driver.close()
    assert res["algo"] == "residual" and res["progress"] == 160 and algo.learner.updates > 0
    # The Q-filter is on by default: each evaluation also reports the unfiltered policy (what is exported).
    assert evals and all("success_rate_unfiltered" in r and 0.0 <= r["filter_keep_eval"] <= 1.0 for r in evals)
    assert (tmp_path / "run" / CHECKPOINT).is_file() and (tmp_path / "run" / "learning_curve.png").is_file()
    assert torch.load(tmp_path / "run" / CHECKPOINT, weights_only=False)["algo"] == "residual"
    # After learning the residual is no longer zero, and stays inside its bound.
    a_res, a_base = OnnxPolicy(tmp_path / "run"), OnnxPolicy(base)
    diff = np.abs(a_res(obs) - a_base(obs))
    assert diff.max() > 0 and diff.max() <= algo.cfg.scale + 1e-6


def test_finetune_baseline_starts_at_the_bc_first_action(base, tmp_path):
    driver = RunDriver(_spec(base, finetune=True), tmp_path / "ft", progress=False)
    algo = driver.algo
    try:
        obs = torch.randn(5, algo.bc.obs_dim)
        with torch.no_grad():
            want = algo.bc(obs)[:, 0]
            got = algo.learner.act({"policy": obs, "base_action": torch.zeros(5, 4)}, deterministic=True)
        torch.testing.assert_close(got, want)
        # The fine-tuned network is exported as a plain one-step graph (its first action, no chunk history).
        algo.export()
        policy = OnnxPolicy(tmp_path / "ft")
        assert policy.chunk is None and policy.meta.algo == "finetune" and policy.meta.residual.finetune
        np.testing.assert_allclose(policy(obs.numpy()), want.numpy(), atol=1e-5)
    finally:
        driver.close()


def _start_and_kill(base: Path, run: Path, until: str, **kw) -> None:
    """Start a long residual run in a subprocess and SIGKILL it once `until` exists in the run folder (+1 s)."""
    script = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_residual import _spec
from s2r.policies.driver import train
train(_spec({str(base)!r}, steps=100_000, **{kw!r}), {str(run)!r}, progress=False)
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (run / until).exists() and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(1.5)  # let it write more transitions
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (run / until).exists(), proc.stderr.read().decode()[-2000:]


def _transitions_on_disk(run: Path) -> int:
    meta = json.loads((run / "replay" / "meta.json").read_text())
    records = sum(p.stat().st_size // meta["record_bytes"] for p in (run / "replay").glob("chunk_*.bin"))
    return records * meta["num_envs"]


def test_killed_run_resumes_with_every_transition(base, tmp_path):
    run = tmp_path / "run"
    _start_and_kill(base, run, CHECKPOINT, checkpoint_every=40)
    with pytest.raises(CheckpointError, match="already holds a run"):
        RunDriver(_spec(base), run, progress=False)
    resumed = RunDriver(resume_run_spec(run, budget=Budget(steps=10_000)), run, resume=True, progress=False)
    try:
        ckpt = torch.load(run / CHECKPOINT, weights_only=False)
        # Every transition added before the kill is back, including those after the last checkpoint.
        assert len(resumed.algo.buffer) >= ckpt["progress"] > 0
        assert resumed.algo.progress == ckpt["progress"]
        assert resumed.algo.learner.updates == ckpt["state"]["learner"]["updates"]
    finally:
        resumed.close()


def test_run_killed_before_its_first_checkpoint_resumes_from_scratch_with_its_transitions(base, tmp_path):
    run = tmp_path / "run"
    # No checkpoint by steps or by time before the kill: only the replay on disk survives.
    _start_and_kill(base, run, "replay/chunk_00000000.bin", checkpoint_every=10**9, checkpoint_minutes=600.0)
    assert not (run / CHECKPOINT).exists()
    on_disk = _transitions_on_disk(run)
    assert on_disk > 0
    driver = RunDriver(resume_run_spec(run, budget=Budget(steps=on_disk + 80)), run, resume=True, progress=False)
    try:
        assert len(driver.algo.buffer) == on_disk  # each transition exactly once
        assert driver.algo.progress == on_disk
        assert f"resumed from scratch (no checkpoint) with {on_disk:,} transitions already on disk" in driver.resumed_from
        res = driver.learn()
    finally:
        driver.close()
    assert res["progress"] >= on_disk + 80 and (run / CHECKPOINT).is_file()
    assert _transitions_on_disk(run) >= on_disk + 80


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(base, tmp_path, monkeypatch):
    run = tmp_path / "run"
    driver = RunDriver(_spec(base, steps=400, checkpoint_every=80), run, progress=False)
    calls = {"n": 0}
    real_update = driver.algo.learner.update

    def poisoned(batch):
        calls["n"] += 1
        if calls["n"] > 60:
            batch = replace(batch, reward=batch.reward * float("nan"))
        return real_update(batch)

    monkeypatch.setattr(driver.algo.learner, "update", poisoned)
    try:
        with pytest.raises(NonFiniteLossError, match="critic loss is not finite"):
            driver.learn()
    finally:
        driver.close()
    ckpt = torch.load(run / CHECKPOINT, weights_only=False)
    assert 0 < ckpt["progress"] < 400
    for t in ckpt["state"]["learner"]["critic"].values():
        assert torch.isfinite(t).all()


def test_bad_inputs_are_refused_with_clear_messages(base, tmp_path):
    # A base cloned on another task (14 observations) cannot drive the insertion task (20).
    with pytest.raises(AlgorithmTaskMismatch, match="cloned on 'Panda-Lift-Cube', not 'Panda-Insert-Peg'"):
        RunDriver(_spec(base, task="Panda-Insert-Peg"), tmp_path / "a", progress=False)
    assert not (tmp_path / "a").exists()
    with pytest.raises(FileNotFoundError, match="no behaviour-cloning checkpoint"):
        RunDriver(_spec(tmp_path / "nothing"), tmp_path / "b", progress=False)
    with pytest.raises(AlgorithmTaskMismatch, match="needs --base"):
        RunDriver(_spec(""), tmp_path / "b", progress=False)
    # A base whose demos were recorded on another task.
    other = tmp_path / "other_demos"
    collect_demos("Panda-PickPlace-Cube", other, 1, num_envs=1, progress=False)
    fake = tmp_path / "fake_bc"
    fake.mkdir()
    ckpt = torch.load(base / "bc.pt", weights_only=False)
    torch.save({**ckpt, "demos": str(other)}, fake / "bc.pt")
    with pytest.raises(EpisodeFormatError, match="recorded on task 'Panda-PickPlace-Cube'"):
        RunDriver(_spec(fake), tmp_path / "c", progress=False)
    # A truncated demo file names the file.
    victim = sorted(Path(ckpt["demos"]).glob("episode_*.npz"))[0]
    data = victim.read_bytes()
    try:
        victim.write_bytes(data[:100])
        with pytest.raises(EpisodeFormatError, match=f"{victim.name} is truncated"):
            RunDriver(_spec(base), tmp_path / "d", progress=False)
    finally:
        victim.write_bytes(data)
    assert not os.path.exists(tmp_path / "d" / CHECKPOINT)
    # A new run into a folder holding transitions is refused; so is resuming them against another base.
    train(_spec(base, steps=40), tmp_path / "e", progress=False)
    (tmp_path / "e" / CHECKPOINT).unlink()
    with pytest.raises(CheckpointError, match="already holds transitions of a run"):
        RunDriver(_spec(base), tmp_path / "e", progress=False)
    other_base = tmp_path / "other_bc"
    other_base.mkdir()
    (other_base / "bc.pt").write_bytes((base / "bc.pt").read_bytes())
    cfg = json.loads((tmp_path / "e" / "config.json").read_text())
    cfg["algo_cfg"]["base"] = str(other_base)
    (tmp_path / "e" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(AlgorithmTaskMismatch, match="holds transitions of base"):
        RunDriver(resume_run_spec(tmp_path / "e"), tmp_path / "e", resume=True, progress=False)
    cfg["algo_cfg"]["base"] = str(base)
    (tmp_path / "e" / "config.json").write_text(json.dumps(cfg))
    # A checkpoint of one algorithm resumed as another.
    with pytest.raises(CheckpointError, match="is a 'residual' run, not 'finetune'"):  # one algorithm resumed as another
        resume_run_spec(tmp_path / "e", algo="finetune")


@pytest.mark.slow
def test_residual_beats_its_base_on_lift(tmp_path):
    """Learning: a weak base (10 noisy demos, ~80% success) plus 30k env steps of residual RL succeeds clearly more.

    30k, not 10k as before issue 13: with the default safeguards the actor's first update comes at 10k steps
    (5k env-step warm-up around the base, then 2.5k critic-only updates); its bench run reached 0.91 at 30k.
    """
    collect_demos(TASK, tmp_path / "demos", 10, noise=0.3, progress=False)
    # ACT's older-first ensembling (m = 0.1) lags, which keeps this base weak enough to improve on.
    train_bc(TASK, tmp_path / "demos", tmp_path / "bc", BCConfig(updates=1000, ensemble_m=0.1), progress=False)
    cfg = ResidualConfig(base=str(tmp_path / "bc"), eval_every=10_000, eval_episodes=100, torch_threads=1)
    spec = RunSpec(algo="residual", task_id=TASK, task_cfg=task_config(TASK), cfg=cfg, budget=Budget(steps=30_000))
    driver = RunDriver(spec, tmp_path / "run", progress=False)
    try:
        driver.learn()
    finally:
        driver.close()
    rows = [r for r in driver.history if "success_rate" in r]
    base, final = rows[0]["success_rate"], rows[-1]["success_rate"]
    assert final >= base + 0.1 and final >= 0.9, (base, final)


def test_critics_on_the_robots_inputs_put_the_q_filter_into_the_exported_graph(base, tmp_path):
    """`learner.critic_obs` without `privileged`: the exported ONNX acts as the learner's filtered policy does."""
    from s2r.policies.residual_base import BasePolicy

    spec = _spec(base)
    # A fast actor, so that 160 steps grow a residual the filter visibly keeps or drops.
    cfg = replace(spec.cfg, learner=replace(spec.cfg.learner, critic_obs=("policy", "base_action"), actor_lr=1e-3))
    driver = RunDriver(replace(spec, cfg=cfg), tmp_path / "run", progress=False)
    algo = driver.algo
    try:
        driver.learn()
        obs = np.random.default_rng(1).normal(size=(64, algo.bc.obs_dim)).astype(np.float32)
        b = BasePolicy(algo.bc, algo.bc_cfg.ensemble_m, len(obs)).step(obs)
        want = algo.learner.act({"policy": obs, "base_action": b}, deterministic=True).numpy()
        keep = algo.learner.last_filter_keep
        unfiltered = algo.learner.act({"policy": obs, "base_action": b}, deterministic=True, filtered=False).numpy()
    finally:
        driver.close()
    policy = OnnxPolicy(tmp_path / "run")
    got = policy(obs)
    assert policy.meta.residual.q_filter == 1.0
    # Nearly every row is the learner's filtered action; the rest are decisions at mean - k*std ~ 0 that flip
    # between float kernels, so they are the base or base + residual.
    same = np.abs(got - want).max(-1) <= 1e-5
    other = np.minimum(np.abs(got - unfiltered).max(-1), np.abs(got - np.clip(b, -1, 1)).max(-1))
    assert same.mean() >= 0.9 and (other[~same] <= 1e-5).all()
    # The filter really acts here (some states keep the residual, some fall back to the base), so the match is not
    # the unfiltered graph's by accident.
    assert 0.0 < keep < 1.0 and np.abs(want - unfiltered).max() > 1e-3
