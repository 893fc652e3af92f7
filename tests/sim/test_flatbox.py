"""Panda-Lift-FlatBox: the box needs a turn before any grasp, the scripted expert turns and lifts it, the
top-down grasp fails, the turn reward follows the turn, and the privileged columns stay out of the export."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from s2r.sim import make
from s2r.sim.tasks.experts import FlatBoxExpert, make_expert
from s2r.sim.tasks.manipulation import (
    FINGER_MAX,
    FlatBoxLiftEnv,
    FlatBoxRandomizationConfig,
    turn_angle,
    turn_term,
    yaw_quat,
)

TASK = "Panda-Lift-FlatBox"


def test_box_lies_pointing_at_the_ledge_too_long_for_the_hand() -> None:
    env = make(TASK, 8, seed=5)
    try:
        env.reset(seed=5)
        cfg = env.cfg
        length, width = 2 * env.half[:, 0], 2 * env.half[:, 1]
        assert ((length >= 0.11) & (length <= 0.12)).all() and ((width >= 0.044) & (width <= 0.052)).all()
        assert (length > 2 * FINGER_MAX).all() and (width < 2 * FINGER_MAX).all()  # only the short side fits the hand
        assert (turn_angle(env.backend.qpos[:, 12:16]) < 7.0).all()  # long axis points at the ledge
        # Its far end touches (or nearly) the ledge's inner face, and it lies flat.
        far_end = env.backend.qpos[:, 10] + env.half[:, 0] * np.abs(np.cos(turn_angle(env.backend.qpos[:, 12:16]) / 57.3))
        assert (np.abs(cfg.ledge_y - far_end) < 0.01).all()
        assert np.allclose(env.backend.qpos[:, 11], env.half[:, 2], atol=1e-3)
        # The box's sizes are declared to the privileged group, in PARAM_NAMES order.
        assert np.allclose(env.params[:, :3], env.half)
    finally:
        env.close()


def test_a_box_short_enough_to_grasp_without_turning_is_refused() -> None:
    with pytest.raises(ValueError, match="half_length"):
        FlatBoxRandomizationConfig(half_length=(0.03, 0.035))


def test_turn_reward_rises_as_the_box_turns() -> None:
    yaws = np.radians([90.0, 70.0, 45.0, 20.0, 0.0])
    q = yaw_quat(yaws)
    term = turn_term(q)
    assert (np.diff(term) > 0).all() and term[0] < 1e-6 and abs(term[-1] - 1.0) < 1e-6
    assert np.allclose(turn_angle(q), [0.0, 20.0, 45.0, 70.0, 90.0], atol=1e-6)
    # And in the env's reward: the same state, the box turned, earns the weight's worth more per step.
    env = make(TASK, 2, seed=0)
    try:
        env.reset(seed=0)
        env.backend.qpos[1, 12:16] = yaw_quat(np.zeros(1))[0]
        env.backend.qpos[1, 9:12] = env.backend.qpos[0, 9:12]
        env.backend.qpos[1, 10] -= 0.04  # clear of the ledge once turned
        env.backend.qpos[0, 10] -= 0.04
        _, reward, _, _, _ = env.step(np.zeros((2, 4)))
        gain = reward[1] - reward[0]
        assert gain == pytest.approx(env.cfg.reward.turn, abs=0.03)
    finally:
        env.close()


def _check_grasp_reward(env: FlatBoxLiftEnv, grasped: np.ndarray) -> None:
    """The optional grasp term adds its weight exactly where the hand holds the box."""
    state, no = env._state(), np.zeros(env.num_envs, bool)
    plain = env._reward(state, no)
    cfg = env.cfg
    env.cfg = replace(cfg, reward=replace(cfg.reward, grasp=0.3))
    try:
        np.testing.assert_allclose(env._reward(state, no) - plain, 0.3 * grasped, atol=1e-6)
    finally:
        env.cfg = cfg


def _run(expert: FlatBoxExpert, env: FlatBoxLiftEnv, seed: int, steps: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Up to one episode per env: success flags and the largest turn angle (deg); records `grasped` (ever held)."""
    n = env.num_envs
    obs = env.reset(seed=seed)
    done, success, turned = np.zeros(n, bool), np.zeros(n, bool), np.zeros(n)
    env.ever_grasped = np.zeros(n, bool)
    for _ in range(min(steps, env.cfg.max_episode_steps)):
        obs, _, term, trunc, info = env.step(expert.act(obs))
        ended = term | trunc
        live = ~done & ~ended
        b = env.behaviour()
        turned[live] = np.maximum(turned[live], b["turn_deg"][live])
        env.ever_grasped[live] |= b["grasped"][live]
        if b["grasped"].any():
            _check_grasp_reward(env, b["grasped"])
        success |= info["success"] & ~done
        done |= ended
        if done.all():
            break
    return success, turned


def test_expert_turns_the_box_then_lifts_it() -> None:
    env = make(TASK, 4, seed=11)
    try:
        success, turned = _run(make_expert(TASK, 4, seed=11), env, seed=11)
    finally:
        env.close()
    assert success.all(), f"expert failed on {np.flatnonzero(~success)}"
    assert (turned >= 80.0).all() and env.ever_grasped.all()


def test_top_down_grasp_without_the_turn_fails() -> None:
    env = make(TASK, 4, seed=11)
    try:
        baseline = FlatBoxExpert(env.cfg, FlatBoxLiftEnv, 4, 0.0, 0.0, 11, turn=False)
        # 45 steps: it has closed on the box's top and gone up (the same grasp lifts a turned box by step ~40).
        success, turned = _run(baseline, env, seed=11, steps=45)
    finally:
        env.close()
    assert not success.any() and (baseline.phase == baseline.LIFT).all()
    assert not env.ever_grasped.any()  # it closed on the top of the long side, not across the short side
    assert (turned < 30.0).all()


def test_privileged_actions_drop_out_of_the_export(tmp_path) -> None:
    import onnx
    import torch
    from s2r.policies.curriculum import task_actor
    from s2r.policies.networks import ActorCritic, ActorCriticConfig
    from s2r.policies.ppo import TrainConfig, export_model

    torch.manual_seed(0)
    env = make(TASK + "-Privileged", 2, seed=0)
    try:
        assert env.spec.action_dim == 10 and env.spec.extras["privileged_action_dims"] == 6
        # The expert drives the privileged variant too, its wrench columns at zero (demos for a warm start).
        a = make_expert(TASK + "-Privileged", 2).act(env.reset(seed=0))
        assert a.shape == (2, 10) and not a[:, 4:].any()
        cfg = ActorCriticConfig(actor_obs=("policy",), critic_obs=("policy",), actor_hidden=(16,), critic_hidden=(16,))
        full = ActorCritic(env.obs_dims, 10, cfg)
        cut = task_actor(full, env.obs_dims, 4)
        export_model(cut, TASK, env.cfg.without_privileges(), tmp_path, TrainConfig(export_parity_steps=2))
    finally:
        env.close()
    out = onnx.load(str(tmp_path / "policy.onnx")).graph.output[0]
    assert [d.dim_value or d.dim_param for d in out.type.tensor_type.shape.dim] == ["batch", 4]
