"""Confined scenes with several maps, the fall check over the footprint, spawning on the floor, and the two
baselines of the same task (goal only; velocity + body-height skills)."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
from s2r.sim import make, task_config
from s2r.sim.tasks.confined import ConfinedWaypointConfig
from s2r.sim.tasks.locomotion import _quat_rotate_inv
from s2r.sim.terrain.confined import EVAL_SEEDS, generate

QUIET = {"observation_noise": 0.0, "push_velocity": 0.0, "action_latency_steps": (0, 0)}


def _make(task: str, n: int, **fields: object):
    cfg = task_config(task)
    cfg = replace(cfg, randomization=replace(cfg.randomization, **QUIET), **fields)
    return make(task, n, cfg=cfg, seed=3)


def test_a_scene_holds_several_training_maps_and_resets_draw_among_them() -> None:
    env = _make("Go1-Waypoints-Confined", 8, maps_per_scene=3, difficulties=(0.0, 1.0))
    try:
        seeds = [m.seed for m in env.maps.maps]
        assert len(set(seeds)) == 3 and not set(seeds) & set(EVAL_SEEDS)
        assert [m.difficulty for m in env.maps.maps] == [0.0, 1.0, 0.0]
        seen = set()
        for r in range(3):
            env.reset(seed=r)
            seen |= set(env.env_map.tolist())
            slots = env.env_map
            q = env.backend.qpos
            # Each env spawns at its own map's start and its plan ends at that map's goal.
            ahead = q[:, :2] - env.maps.starts[slots, :2]
            assert (ahead[:, 0] >= 0.1).all() and (ahead[:, 0] <= 0.25).all() and np.abs(ahead[:, 1]).max() <= 0.15
            last = env.waypoints[np.arange(8), env.wp_count - 1, :2]
            np.testing.assert_allclose(last, env.maps.goals[slots, :2], atol=0.05)
        assert seen == {0, 1, 2}
        # Maps sit side by side, apart: no two maps' boxes overlap in y.
        spans = [(m.origin[1], m.origin[1] + m.shape[1] * m.resolution) for m in env.maps.maps]
        assert all(a[1] < b[0] for a, b in itertools.pairwise(spans))
    finally:
        env.close()


def test_named_maps_pin_env_e_to_map_e_mod_their_number() -> None:
    env = _make("Go1-Waypoints-Confined", 4, map_seeds=EVAL_SEEDS[:2], difficulty=1.0)
    try:
        env.reset(seed=0)
        env.reset(seed=1)
        assert env.env_map.tolist() == [0, 1, 0, 1]
        assert [m.seed for m in env.maps.maps] == list(EVAL_SEEDS[:2])
    finally:
        env.close()


def test_spawns_standing_on_the_floor_and_stays_up() -> None:
    env = _make("Go1-Waypoints-Confined", 4, maps_per_scene=2, difficulty=1.0)
    try:
        env.reset(seed=0)
        z0 = env.backend.qpos[:, 2] - env.ground_z
        np.testing.assert_allclose(z0, env.cfg.spawn_height)
        hold = np.zeros((4, 12))
        touched = np.zeros((4, 4), dtype=bool)
        for k in range(25):
            _, _, term, _, _ = env.step(hold)
            assert not term.any()
            if k >= 15:
                touched |= env.backend.sensor_max[:, :4] > 0
        h = env.backend.qpos[:, 2] - env.ground_z
        assert ((h > 0.22) & (h < 0.33)).all(), h  # standing height of the default pose, feet on the floor
        assert touched.all()  # every foot rests on the floor (the random start pose may shift one briefly)
    finally:
        env.close()


def _step_map() -> tuple[int, np.ndarray]:
    """A held-out seed whose hardest map has a step, and that step's box."""
    for s in EVAL_SEEDS:
        m = generate(s, 1.0)
        steps = [b for b, k in zip(m.boxes, m.kinds, strict=True) if k == "step" and b[2] - b[5] < 1e-9]
        if steps:
            return s, steps[0]
    raise AssertionError("no held-out map with a step")


def test_fall_check_reads_the_lowest_floor_under_the_body_not_the_column_under_the_base() -> None:
    seed, box = _step_map()
    env = _make("Go1-Waypoints-Confined", 1, map_seed=seed, difficulty=1.0)
    try:
        env.reset(seed=0)
        q = env.backend.qpos
        front = box[0] - box[3]
        # The base 0.1 m past the step's front edge, hind feet still on the ground, yaw 0, at standing height.
        q[0, :3] = (front + 0.1, box[1], 0.27)
        q[0, 3:7] = (1.0, 0.0, 0.0, 0.0)
        env.step(np.zeros((1, 12)))
        xy = env.backend.qpos[:, :2]
        column = env.maps.floor_z[0][tuple(np.array(env.maps.column(np.zeros(1, dtype=int), xy)).ravel())]
        assert column == pytest.approx(2 * box[5], abs=0.051)  # the column under the base is on the step
        assert env.ground_z[0] == pytest.approx(0.0)  # ...but the hind feet stand on the ground
    finally:
        env.close()


def test_goal_only_baseline_sees_just_the_global_goal() -> None:
    env = _make("Go1-Goal-Confined", 2, maps_per_scene=2)
    try:
        obs = env.reset(seed=0)
        terms = env.spec.obs_terms["policy"]
        names = [t.name for t in terms]
        i = names.index("waypoints")
        assert terms[i].size == 3 and (env.wp_count == 1).all()
        start = sum(t.size for t in terms[:i])
        q = env.backend.qpos
        goal = env.maps.goals[env.env_map] + [0.0, 0.0, env.cfg.planner.stand_body_z]
        want = _quat_rotate_inv(q[:, 3:7], goal - q[:, :3])
        np.testing.assert_allclose(obs["policy"][:, start : start + 3] / 0.5, want, atol=1e-5)
    finally:
        env.close()


def test_skills_baseline_observes_velocity_and_body_height_commands_from_the_path() -> None:
    env = _make("Go1-Skills-Confined", 2, map_seed=EVAL_SEEDS[0], difficulty=1.0)
    try:
        env.reset(seed=0)
        names = [t.name for t in env.spec.obs_terms["policy"]]
        assert "velocity_command" in names and "crouch_command" in names and "waypoints" not in names
        env.step(np.zeros((2, 12)))
        q = env.backend.qpos
        to = env.waypoints[[0, 1], env.wp_index, :2] - q[:, :2]
        body = _quat_rotate_inv(q[:, 3:7], np.c_[to, np.zeros(2)])
        cos = (env.command[:, :2] * body[:, :2]).sum(1) / np.linalg.norm(body[:, :2], axis=1)
        np.testing.assert_allclose(cos, env.cfg.approach_speed, rtol=1e-3)  # towards the waypoint (body tilt aside)
        # Where the planner crouches, the height command is the crouch height.
        crouch = env.wp_body_z[0, : env.wp_count[0]]
        assert set(np.round(crouch, 3)) <= {env.cfg.planner.crouch_body_z, env.cfg.planner.stand_body_z}
        assert (crouch == env.cfg.planner.crouch_body_z).any()
        rewards = env.cfg.rewards
        assert rewards.waypoint_progress.weight == 0 and rewards.track_body_height.weight > 0
        # On the last leg the command still leads to the goal, and stops only within reach of it.
        last = env.wp_count - 1
        env.wp_index[:] = last
        q[:, :2] = env.waypoints[[0, 1], last, :2] - [[0.5, 0.0], [0.1, 0.0]]
        env.step(np.zeros((2, 12)))
        assert np.hypot(*env.command[0, :2]) > 0.4 and not env.command[1].any()
    finally:
        env.close()


def test_bad_settings_are_named() -> None:
    with pytest.raises(ValueError, match="command_mode 'skill' is not one of"):
        ConfinedWaypointConfig(command_mode="skill")
    with pytest.raises(ValueError, match="maps_per_scene must be >= 1"):
        ConfinedWaypointConfig(maps_per_scene=0)
    with pytest.raises(ValueError, match="difficulties must lie in"):
        ConfinedWaypointConfig(difficulties=(0.5, 1.5))
