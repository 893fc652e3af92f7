"""Go1-Velocity-Height-Flat: the crouch command's observation and reward, bad settings, and the shipped
crouching walker (tests/data/go1_crouch_walk) holding a lower body when asked to."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from s2r.sim import make, task_config
from s2r.sim.tasks.crouch_walk import CrouchWalkConfig

TASK = "Go1-Velocity-Height-Flat"
WALKER = Path(__file__).resolve().parents[1] / "data" / "go1_crouch_walk"


def _cfg() -> CrouchWalkConfig:
    cfg = task_config(TASK)
    return replace(cfg, commands=replace(cfg.commands, resample_s=1e9),
                   randomization=replace(cfg.randomization, observation_noise=0.0, push_velocity=0.0))


def test_observes_the_crouch_below_standing_and_pays_for_holding_the_height() -> None:
    env = make(TASK, 3, cfg=_cfg(), seed=0)
    try:
        obs = env.reset(seed=0)
        terms = env.spec.obs_terms["policy"]
        assert terms[-1].name == "crouch_command"
        env.height_command[:] = [0.28, 0.20, 0.25]
        obs, *_ = env.step(np.zeros((3, 12)))
        np.testing.assert_allclose(obs["policy"][:, -1], [0.0, 0.8, 0.3], atol=1e-5)  # 10 x (0.28 - h)
        from s2r.sim.tasks.confined import rew_track_body_height

        s = env._loco_state(env.backend.sensordata, np.zeros((3, 4), dtype=bool))
        got = rew_track_body_height(s, sigma=0.07)
        h = env.backend.qpos[:, 2] - env.ground_z
        np.testing.assert_allclose(got, np.exp(-(((h - [0.28, 0.20, 0.25]) / 0.07) ** 2)))
        assert got[0] > got[1]  # standing at ~0.3 m: the standing command is the one met
    finally:
        env.close()


def test_bad_heights_are_named() -> None:
    with pytest.raises(ValueError, match="above min_base_height"):
        CrouchWalkConfig(body_height=(0.12, 0.3))
    with pytest.raises(ValueError, match="stand_fraction"):
        CrouchWalkConfig(stand_fraction=1.5)


def test_the_shipped_crouching_walker_lowers_its_body_on_command() -> None:
    from s2r.policies.evaluate import OnnxPolicy

    policy = OnnxPolicy(WALKER)
    env = make(TASK, 4, cfg=_cfg(), seed=0)
    try:
        obs = env.reset(seed=0)
        want = np.array([0.28, 0.28, 0.20, 0.20])
        heights = []
        for k in range(200):  # 4 s walking forward at 0.5 m/s: 1 s standing first (no crouch from the drop)
            env.command[:] = [0.5, 0.0, 0.0]
            env.height_command[:] = want if k >= 50 else 0.28
            obs, _, term, _, _ = env.step(policy(obs["policy"]))
            assert not term.any()
            if k >= 125:
                heights.append(env.backend.qpos[:, 2] - env.ground_z)
        stand, crouch = np.mean(heights, axis=0).reshape(2, 2).mean(axis=1)
        # Crouched, the trunk's top (0.057 m above the base) fits under a 0.30 m ceiling; standing it does not.
        assert crouch < 0.225 < 0.235 < stand
    finally:
        env.close()
