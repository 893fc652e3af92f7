"""Reward terms as (function, weight, params) config entries, their overrides, and the shared velocity step."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from s2r.sim import make, task_config
from s2r.sim.config import ConfigError, from_dict, to_dict
from s2r.sim.tasks.locomotion import LocomotionConfig, LocomotionEnv, RewardConfig
from s2r.sim.tasks.puck import PuckConfig, PuckEnv
from s2r.sim.tasks.terms import RewardTerm, rew_action_rate
from s2r.sim.tasks.velocity import VelocityEnv

GO1, PUCK = "Go1-Velocity-Flat", "Puck-Velocity-Flat"


def test_reward_overrides_reach_weight_and_params() -> None:
    cfg = task_config(GO1, {"rewards.track_lin_vel_xy.weight": "2.5", "rewards.track_lin_vel_xy.params.sigma": "0.5",
                            "rewards.feet_air_time": "0.3"})  # the older shorthand sets the weight
    assert cfg.rewards.track_lin_vel_xy == RewardTerm(func="track_lin_vel_xy", weight=2.5, params={"sigma": 0.5})
    assert cfg.rewards.feet_air_time == RewardTerm(func="feet_air_time", weight=0.3, params={"target": 0.4})
    assert LocomotionConfig().rewards.track_lin_vel_xy.params == {"sigma": 0.25}  # defaults untouched


@pytest.mark.parametrize(("key", "suggestion"), [
    ("rewards.track_lin_vel_xy.params.sigmaa", "sigma"),
    ("rewards.track_lin_vel_xy.wieght", "weight"),
    ("rewards.feet_air_tme.weight", "feet_air_time"),
])
def test_reward_override_typos_name_the_key(key: str, suggestion: str) -> None:
    with pytest.raises(ConfigError) as err:
        task_config(GO1, {key: "1"})
    assert f"'{key}'" in str(err.value) and f"Did you mean: {suggestion}" in str(err.value)


def test_unknown_reward_function_is_refused_with_close_names() -> None:
    cfg = task_config(GO1, {"rewards.torques.func": "torque"})
    with pytest.raises(ValueError, match=r"rewards\.torques\.func 'torque' is not a reward term; did you mean torques"):
        make(GO1, 1, cfg=cfg)


def test_reward_is_the_weighted_sum_of_the_configured_terms() -> None:
    """Only action_rate on: the step's reward is rew_action_rate(state) * weight * control_dt."""
    cfg = task_config(PUCK, {"rewards.track_lin_vel_xy.weight": 0, "rewards.track_ang_vel_z.weight": 0,
                             "rewards.action_rate.weight": -0.5, "rewards.termination": 0.0})
    env = make(PUCK, 4, cfg=cfg, seed=0)
    try:
        env.reset(seed=0)
        rng = np.random.default_rng(0)
        prev = np.zeros((4, 3))
        for _ in range(3):
            a = rng.uniform(-1, 1, (4, 3))
            _, rew, *_ = env.step(a)
            state = dataclasses.replace(env._state(), action=a, action_prev=prev)
            np.testing.assert_allclose(rew, (rew_action_rate(state) * -0.5 * cfg.control_dt).astype(np.float32))
            prev = a
    finally:
        env.close()


def test_term_params_change_the_reward() -> None:
    rewards = []
    for sigma in (0.25, 1.0):
        env = make(PUCK, 4, cfg=task_config(PUCK, {"rewards.track_lin_vel_xy.params.sigma": sigma}), seed=3)
        try:
            env.reset(seed=3)
            rewards.append(env.step(np.full((4, 3), 0.5))[1])
        finally:
            env.close()
    assert not np.allclose(rewards[0], rewards[1])


def test_old_reward_sections_are_read_and_converted() -> None:
    """A run folder saved before RewardTerm: name -> weight plus shared tracking_sigma / air_time_target."""
    old = {**{f.name: getattr(RewardConfig(), f.name).weight for f in dataclasses.fields(RewardConfig)
              if f.name != "termination"}, "termination": -2.0, "tracking_sigma": 0.3, "air_time_target": 0.5}
    old["feet_air_time"] = 0.7
    saved = {**to_dict(LocomotionConfig()), "rewards": old}
    cfg = from_dict(LocomotionConfig, saved)
    assert cfg.rewards.track_lin_vel_xy.params == {"sigma": 0.3} and cfg.rewards.track_ang_vel_z.params == {"sigma": 0.3}
    assert cfg.rewards.feet_air_time == RewardTerm(func="feet_air_time", weight=0.7, params={"target": 0.5})
    assert cfg.rewards.torques == RewardConfig().torques
    assert from_dict(LocomotionConfig, to_dict(cfg)) == cfg  # today's layout passes through unchanged


def test_velocity_tasks_share_one_step() -> None:
    for cls, cfg in ((LocomotionEnv, LocomotionConfig()), (PuckEnv, PuckConfig())):
        assert issubclass(cls, VelocityEnv) and cls.step is VelocityEnv.step, cls
        assert "termination" in {f.name for f in dataclasses.fields(cfg.rewards)}
