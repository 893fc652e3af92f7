"""`ResidualConfig.dim_scale`: one residual bound per action dimension, in training and in the exported graph."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from s2r.policies.bc import BCConfig, train_bc
from s2r.policies.demos import collect_demos
from s2r.policies.driver import Budget, RunDriver, RunSpec
from s2r.policies.evaluate import OnnxPolicy
from s2r.policies.offpolicy import residual_compose
from s2r.policies.residual import ResidualConfig
from s2r.policies.residual_base import BasePolicy
from s2r.sim import task_config
from s2r.sim.config import apply_overrides

TASK = "Panda-Lift-Cube"
DIM_SCALE = (0.02, 0.02, 0.02, 0.5)  # arm steps kept tiny, the gripper command free to move far


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dim_scale")
    collect_demos(TASK, root / "demos", 4, noise=0.05, num_envs=4, progress=False)
    train_bc(TASK, root / "demos", root / "bc", BCConfig(updates=30, hidden=(32, 32)), progress=False)
    return root / "bc"


def _spec(base: Path, **kw) -> RunSpec:
    cfg = ResidualConfig(base=str(base), num_envs=4, learning_starts=40, eval_every=10_000, eval_episodes=4,
                         checkpoint_every=10_000, buffer_capacity=10_000, torch_threads=1, **kw)
    # A fast actor without the filter, so 160 steps grow a residual that reaches its bounds.
    learner = replace(cfg.learner, num_critics=3, critic_hidden=(32, 32), actor_hidden=(32, 32), batch_size=32,
                      critic_warmup_updates=10, actor_lr=3e-3, q_filter=None, q_filter_bc=0.0)
    return RunSpec(algo="residual", task_id=TASK, task_cfg=task_config(TASK), cfg=replace(cfg, learner=learner),
                   budget=Budget(steps=160))


def test_compose_scales_each_dimension_and_clips() -> None:
    compose = residual_compose(DIM_SCALE)
    base = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.99, 0.0, 0.0, 0.8]])
    out = compose(torch.ones(2, 4), {"base_action": base})
    torch.testing.assert_close(out, torch.tensor([[0.02, 0.02, 0.02, 0.5], [1.0, 0.02, 0.02, 1.0]]))


def test_dim_scale_from_the_command_line_and_bad_values_refused() -> None:
    cfg = apply_overrides(ResidualConfig(), {"dim_scale": "0.1,0.1,0.1,0.5"})
    assert cfg.dim_scale == (0.1, 0.1, 0.1, 0.5) and cfg.action_scale() == cfg.dim_scale
    assert ResidualConfig().action_scale() == 0.1  # empty: `scale` everywhere, as before
    with pytest.raises(ValueError, match=r"ResidualConfig.dim_scale must hold values in \(0, 2\]"):
        ResidualConfig(dim_scale=(0.1, 0.0, 0.1, 0.1))


@pytest.mark.slow  # builds a BC base: ~10 s on 2 loaded cores
def test_wrong_length_names_the_field_and_the_task(base, tmp_path) -> None:
    with pytest.raises(ValueError, match="dim_scale holds 3 values but task Panda-Lift-Cube has 4 actions"):
        RunDriver(_spec(base, dim_scale=(0.1, 0.1, 0.1)), tmp_path / "run", progress=False)


@pytest.mark.slow
def test_each_dimension_keeps_its_own_bound_in_the_exported_graph(base, tmp_path) -> None:
    driver = RunDriver(_spec(base, dim_scale=DIM_SCALE), tmp_path / "run", progress=False)
    algo = driver.algo
    try:
        driver.learn()
        obs = np.random.default_rng(2).normal(size=(128, algo.bc.obs_dim)).astype(np.float32)
        b = BasePolicy(algo.bc, algo.bc_cfg.ensemble_m, len(obs)).step(obs)
        want = algo.learner.act({"policy": obs, "base_action": b}, deterministic=True).numpy()
    finally:
        driver.close()
    policy = OnnxPolicy(tmp_path / "run")
    got = policy(obs)
    assert policy.meta.residual.dim_scale == DIM_SCALE
    np.testing.assert_allclose(got, want, atol=1e-5)  # the graph composes as the learner does
    diff = np.abs(got - np.clip(b, -1, 1))
    assert (diff <= np.array(DIM_SCALE) + 1e-6).all()
    # The gripper's residual has grown past the arm's bound: the larger bound is really applied to it alone.
    assert diff[:, 3].max() > 2 * DIM_SCALE[0] and diff[:, :3].max() > 0
