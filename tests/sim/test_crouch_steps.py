"""Go1-Velocity-Height-Steps: the block field, the base height measured from the floor under the body (a block's
top, not the spawn's floor), bad settings, and the flat crouch task left as it was."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from s2r.sim import make, task_config
from s2r.sim.tasks.crouch_steps import CrouchStepsConfig, StepFieldConfig, step_field
from s2r.sim.tasks.crouch_walk import CrouchWalkEnv

TASK = "Go1-Velocity-Height-Steps"


def test_the_field_is_flat_topped_blocks_of_the_configured_heights_fixed_by_the_seed() -> None:
    cfg = StepFieldConfig()
    g = step_field(cfg, 3)
    h = g.heights
    raised = h[h > 0]
    assert raised.min() >= cfg.step[0] and raised.max() <= cfg.step[1]
    assert 0.3 < (h > 0).mean() < 0.7  # step-ups and flat floor between them
    assert len(np.unique(raised)) > 20  # many block heights, not one
    assert not h[0].any() and not h[-1].any() and not h[:, 0].any() and not h[:, -1].any()  # meets the apron
    assert np.array_equal(step_field(cfg, 3).heights, h) and not np.array_equal(step_field(cfg, 4).heights, h)
    # Vertex (r, c) at (x0 + c res, y0 + r res): the lookup reads the grid there.
    r, c = np.argwhere(h > 0)[0]
    assert g.height_at(np.array([[g.x0 + c * cfg.resolution, g.y0 + r * cfg.resolution]]))[0] == pytest.approx(h[r, c])


def _block_centre(env: object, half: float = 0.35) -> tuple[np.ndarray, float]:
    """A point whose whole (2 half)-square around it is one block's flat top, and that block's height."""
    g = env.grid
    res = g.cfg.resolution
    k = round(half / res)
    h = g.heights
    for r, c in np.argwhere(h >= 0.1):
        patch = h[r - k : r + k + 1, c - k : c + k + 1]
        if patch.shape == (2 * k + 1, 2 * k + 1) and np.all(patch == h[r, c]):
            return np.array([g.x0 + c * res, g.y0 + r * res]), float(h[r, c])
    raise AssertionError("no block of 0.1 m or more with a flat top of 0.7 m in the field")


def test_on_a_block_the_base_height_is_measured_from_its_top_and_standing_there_is_no_fall() -> None:
    cfg = task_config(TASK)
    cfg = replace(cfg, randomization=replace(cfg.randomization, observation_noise=0.0, push_velocity=0.0))
    env = make(TASK, 2, cfg=cfg, seed=0)
    try:
        env.reset(seed=0)
        xy, top = _block_centre(env)
        qpos = env.backend.qpos
        qpos[:, :2] = xy
        qpos[:, 2] = top + 0.3
        qpos[:, 3:7] = [1.0, 0.0, 0.0, 0.0]
        env.backend.qvel[:] = 0.0
        env.backend.forward_sensors(np.arange(2))
        for _ in range(25):  # 0.5 s of holding the default pose
            obs, _, term, _, _ = env.step(np.zeros((2, 12)))
            assert not term.any()
        assert env.ground_z[0] == pytest.approx(top, abs=1e-9)
        base = env.backend.qpos[0, 2] - top
        assert 0.2 < base < 0.35  # standing on the block's top, measured from it
        terms = env.spec.obs_terms["privileged"]
        col = sum(t.size for t in terms[: [t.name for t in terms].index("base_height")])
        assert obs["privileged"][0, col] == pytest.approx(base, abs=1e-3)  # what the critic sees
    finally:
        env.close()


def test_bad_field_settings_are_named() -> None:
    with pytest.raises(ValueError, match=r"StepFieldConfig\.block_side"):
        StepFieldConfig(block_side=(2.0, 0.5))
    with pytest.raises(ValueError, match=r"StepFieldConfig\.step"):
        StepFieldConfig(step=(0.1, 0.05))
    with pytest.raises(ValueError, match=r"StepFieldConfig\.spawn"):
        StepFieldConfig(spawn=7.0)
    with pytest.raises(ValueError, match="above min_base_height"):  # the crouch walker's own checks still apply
        CrouchStepsConfig(body_height=(0.1, 0.3))


def test_the_flat_crouch_task_is_unchanged_flat_ground() -> None:
    """A new task id for the new ground: Go1-Velocity-Height-Flat keeps its class, config and plane floor."""
    assert type(task_config("Go1-Velocity-Height-Flat")) is not CrouchStepsConfig
    env = make("Go1-Velocity-Height-Flat", 1, seed=0)
    try:
        assert type(env) is CrouchWalkEnv and env.model.nhfield == 0
    finally:
        env.close()


def test_the_shipped_step_walker_walks_crouched_on_flat_ground() -> None:
    """tests/data/go1_crouch_steps_walk (issue 18 round 3's warm start) still walks at a crouch on flat ground."""
    from pathlib import Path

    from s2r.policies.evaluate import OnnxPolicy

    policy = OnnxPolicy(Path(__file__).resolve().parents[1] / "data" / "go1_crouch_steps_walk")
    cfg = task_config("Go1-Velocity-Height-Flat")
    cfg = replace(cfg, commands=replace(cfg.commands, resample_s=1e9),
                  randomization=replace(cfg.randomization, observation_noise=0.0, push_velocity=0.0))
    env = make("Go1-Velocity-Height-Flat", 4, cfg=cfg, seed=0)
    try:
        obs = env.reset(seed=0)
        start = env.backend.qpos[:, :2].copy()
        for _ in range(150):  # 3 s at 0.5 m/s, 0.22 m body height (at 0.20 m 1 of 16 fell in bench/crouch_walker.py)
            env.command[:] = [0.5, 0.0, 0.0]
            env.height_command[:] = 0.22
            obs, _, term, _, _ = env.step(policy(obs["policy"]))
            assert not term.any()
        walked = np.hypot(*(env.backend.qpos[:, :2] - start).T)
        assert walked.mean() > 1.0  # ~1.5 m asked; a walker that learned to stand still (see README) fails this
        assert (env.backend.qpos[:, 2] - env.ground_z).mean() < 0.24
    finally:
        env.close()
