"""Warm start from the shipped flat walker, and PPO's critic warm-up (only the critic learns at first)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from s2r.policies.networks import ActorCritic, ActorCriticConfig
from s2r.policies.ppo import PPO, PPOConfig
from s2r.policies.warm_start import TURN_GAIN, WALK_GAIN, WarmStartError, warm_start_actor

WALK = Path(__file__).resolve().parents[1] / "data" / "go1_walk" / "policy.onnx"
# The confined follower's policy terms (Go1-Waypoints-Confined: 3 waypoints, a 5 x 3 height map).
TERMS = [("base_ang_vel", 3), ("projected_gravity", 3), ("waypoints", 9), ("joint_pos", 12), ("joint_vel", 12),
         ("last_action", 12), ("height_map", 30)]


def test_actor_starts_as_the_walker_with_new_inputs_ignored() -> None:
    torch.manual_seed(0)
    dim = sum(s for _, s in TERMS)
    model = ActorCritic({"policy": dim, "privileged": 12}, 12, ActorCriticConfig())
    report = warm_start_actor(model, WALK, TERMS)
    assert report["matched"] == ["base_ang_vel", "projected_gravity", "joint_pos", "joint_vel", "last_action"]
    assert report["new"] == ["waypoints", "height_map"] and report["dropped"] == ["velocity_command"]
    x = np.random.default_rng(0).normal(size=(16, dim)).astype(np.float32)
    x[:, 6:15] *= 0.15  # waypoints within ~0.6 m (scaled by 0.5): commands inside the walker's range, unclipped
    with torch.no_grad():
        ours = model.act_mean(torch.as_tensor(x)).numpy()
    # The walker on the same proprioception.
    sess = ort.InferenceSession(str(WALK))
    meta = json.loads(WALK.with_suffix(".json").read_text())
    src = np.zeros((16, 45), dtype=np.float32)
    at, col = {}, 0
    for name, size in TERMS:
        at[name] = slice(col, col + size)
        col += size
    # Its velocity command comes from the first waypoint (dx, dy in the body frame; the input holds 0.5 x metres).
    dx, dy = x[:, at["waypoints"].start] / 0.5, x[:, at["waypoints"].start + 1] / 0.5
    command = np.stack([WALK_GAIN * dx, 0 * dy, TURN_GAIN * dy], axis=1) * [2.0, 2.0, 0.25]
    for t in meta["obs_terms"]:
        dst = slice(t["start"], t["start"] + t["size"])
        src[:, dst] = x[:, at[t["name"]]] if t["name"] in at else command
    assert report["command_from_waypoints"]
    (theirs,) = sess.run(None, {"obs": src})
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    assert np.abs(ours).max() > 0.05  # a real gait, not the near-zero output of a fresh actor
    assert model.actor_norm.mean[at["height_map"]].abs().max() == 0
    # A goal-only actor (one far waypoint) gets no command map: its goal input starts ignored.
    goal_terms = [(n, 3 if n == "waypoints" else s) for n, s in TERMS]
    goal = ActorCritic({"policy": dim - 6, "privileged": 12}, 12, ActorCriticConfig())
    assert not warm_start_actor(goal, WALK, goal_terms)["command_from_waypoints"]
    assert goal.actor[0].weight[:, 6:9].abs().max() == 0


def test_a_source_that_does_not_fit_is_refused_with_the_fix(tmp_path: Path) -> None:
    dim = sum(s for _, s in TERMS)
    small = ActorCritic({"policy": dim, "privileged": 12}, 12, ActorCriticConfig(actor_hidden=(64, 64)))
    with pytest.raises(WarmStartError, match=r"set algo\.policy\.actor_hidden to the source's hidden sizes"):
        warm_start_actor(small, WALK, TERMS)
    shutil.copy(WALK, tmp_path / "lonely.onnx")
    with pytest.raises(WarmStartError, match=r"needs the \.onnx file and its metadata lonely\.json"):
        warm_start_actor(small, tmp_path / "lonely.onnx", TERMS)


def test_critic_warmup_updates_only_the_critic_first() -> None:
    torch.manual_seed(0)
    ppo = PPO({"policy": 4, "privileged": 2}, 2, 8, PPOConfig(steps_per_env=6, critic_warmup=1, epochs=2))
    actor0 = [p.detach().clone() for p in (*ppo.model.actor.parameters(), ppo.model.log_std)]
    critic0 = [p.detach().clone() for p in ppo.model.critic.parameters()]
    g = torch.Generator().manual_seed(1)

    def rollout() -> None:
        for _ in range(6):
            obs = {"policy": torch.randn(8, 4, generator=g), "privileged": torch.randn(8, 2, generator=g)}
            a = ppo.act(obs)
            ppo.process_step(a.sum(-1), torch.zeros(8, dtype=torch.bool), torch.zeros(8, dtype=torch.bool), None)
        ppo.compute_returns(obs)

    rollout()
    stats = ppo.update()
    actor1 = [p.detach().clone() for p in (*ppo.model.actor.parameters(), ppo.model.log_std)]
    assert all(torch.equal(a, b) for a, b in zip(actor0, actor1, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(critic0, ppo.model.critic.parameters(), strict=True))
    assert stats["learning_rate"] == ppo.cfg.learning_rate  # no KL adaptation while the actor is frozen
    rollout()
    ppo.update()
    assert not all(torch.equal(a, b) for a, b in zip(actor1, ppo.model.actor.parameters(), strict=True))
    assert ppo.state_dict()["updates"] == 2


CROUCH = Path(__file__).resolve().parents[1] / "data" / "go1_crouch_walk" / "policy.onnx"


def test_the_crouching_walkers_height_input_is_fed_from_the_first_waypoint_and_the_height_map() -> None:
    from s2r.policies.warm_start import HEIGHT_POINTS
    from s2r.real.waypoint_follow import GRID_XS, GRID_YS

    torch.manual_seed(0)
    dim = sum(s for _, s in TERMS)
    model = ActorCritic({"policy": dim, "privileged": 12}, 12, ActorCriticConfig())
    report = warm_start_actor(model, CROUCH, TERMS)
    assert report["command_from_waypoints"] and report["height_from_waypoints"]
    assert set(report["dropped"]) == {"velocity_command", "crouch_command"}
    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, dim)).astype(np.float32)
    at, col = {}, 0
    for name, size in TERMS:
        at[name] = slice(col, col + size)
        col += size
    wp, hm = at["waypoints"].start, at["height_map"].start
    x[:, wp : wp + 9] *= 0.15
    x[:, wp + 2] = rng.uniform(-0.1, 0.02, 16) * 0.5  # first waypoint 0-10 cm below the base (0.5 x metres)
    x[:, hm : hm + 30] = rng.uniform(0.2, 0.3, (16, 30)) * 2.0  # drops and headroom (2 x metres)
    with torch.no_grad():
        ours = model.act_mean(torch.as_tensor(x)).numpy()
    sess = ort.InferenceSession(str(CROUCH))
    meta = json.loads(CROUCH.with_suffix(".json").read_text())
    terms = next(o["terms"] for o in meta["observation"] if o["group"] == "policy")
    src = np.zeros((16, sum(t["size"] for t in terms)), dtype=np.float32)
    dx, dy = x[:, wp] / 0.5, x[:, wp + 1] / 0.5
    drops = [x[:, hm + GRID_XS.index(px) * len(GRID_YS) + GRID_YS.index(py)] / 2.0 for px, py in HEIGHT_POINTS]
    height = x[:, wp + 2] / 0.5 + np.mean(drops, axis=0)  # the waypoint's height above the floor
    assert height.min() > 0.1 and height.max() < 0.33
    col = 0
    for t in terms:
        dst = slice(col, col + t["size"])
        col += t["size"]
        if t["name"] == "velocity_command":
            src[:, dst] = np.stack([WALK_GAIN * dx, 0 * dy, TURN_GAIN * dy], axis=1) * [2.0, 2.0, 0.25]
        elif t["name"] == "crouch_command":
            src[:, dst] = (0.28 - height[:, None]) * 10.0
        else:
            src[:, dst] = x[:, at[t["name"]]]
    (theirs,) = sess.run(None, {"obs": src})
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    # Lower waypoints change what the actor does (the posture input is live, not ignored).
    x2 = x.copy()
    x2[:, wp + 2] -= 0.08 * 0.5
    with torch.no_grad():
        lower = model.act_mean(torch.as_tensor(x2)).numpy()
    assert np.abs(lower - ours).max() > 0.05
