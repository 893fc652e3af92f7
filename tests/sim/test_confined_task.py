"""Go1-Waypoints-Confined: ray-cast height map, waypoints in the body frame, waypoint switching, re-planning
on straying, the `waypoints` command kind in the export, and one tiny PPO iteration end to end."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from s2r.sim import make, task_config
from s2r.sim.tasks.locomotion import _quat_rotate_inv
from s2r.sim.terrain.confined import EVAL_SEEDS, ConfinedMap, load_confined_model
from s2r.sim.terrain.heightmap import RayHeightMap

TASK = "Go1-Waypoints-Confined"


def test_height_map_sees_the_ceiling_and_the_step_and_only_the_map() -> None:
    # A ceiling 0.5 m up over x in [0.5, 1.5] and a 0.1 m step over x in [1, 2]; the robot stands at the origin.
    boxes = np.array([[1.0, 0.0, 0.55, 0.5, 1.0, 0.05], [1.5, 0.0, 0.05, 0.5, 1.0, 0.05]])
    cmap = ConfinedMap(boxes=boxes, kinds=("ceiling", "step"), origin=np.zeros(3), shape=(40, 40, 20),
                       resolution=0.05, start=np.zeros(3), goal=np.ones(3), seed=0, difficulty=0.0)
    h = RayHeightMap(load_confined_model(cmap))
    k = h.cfg.points
    sensor = np.array([[0.8, 0.0, 0.3], [0.8, 0.0, 0.3], [0.8, 0.0, 0.3]])
    out = h.cast(sensor, np.array([0.0, np.pi, 0.0]))
    ahead = 0.8 + h.offsets[:, 0]
    drop, head = out[0, :k], out[0, k:]
    # Down rays aimed at the nominal floor: 0.3 m drop to the ground, 0.2 m onto the step (x >= 1).
    np.testing.assert_allclose(drop[ahead < 1.0], 0.3, atol=1e-6)
    np.testing.assert_allclose(drop[ahead > 1.1], 0.2, atol=1e-6)
    np.testing.assert_allclose(head, 0.2, atol=1e-6)  # every up ray meets the ceiling's underside
    # Facing back (-x), up rays aimed at x < 0.3 rise to z = 0.5 only beyond the ceiling's end (x < 0.5): they
    # read open sky (max_range); the robot's own body is never hit.
    behind = 0.8 - h.offsets[:, 0]
    assert np.all(out[1, k:][behind < 0.3] == h.cfg.max_range)
    np.testing.assert_allclose(out[1, k:][behind > 0.6], 0.2, atol=1e-6)
    np.testing.assert_allclose(out[1, :k], 0.3, atol=1e-6)
    noisy = h.cast(sensor, np.array([0.0, np.pi, 0.0]), np.random.default_rng(0))
    assert 0 < np.abs(noisy - out).max() <= h.cfg.noise


@pytest.fixture()
def env():
    cfg = task_config(TASK)
    cfg = replace(cfg, map_seed=EVAL_SEEDS[0], difficulty=1.0,
                  randomization=replace(cfg.randomization, observation_noise=0.0, push_velocity=0.0))
    e = make(TASK, 3, cfg=cfg, seed=0)
    yield e
    e.close()


def test_observes_the_next_waypoints_in_the_body_frame(env) -> None:
    obs = env.reset(seed=0)
    terms = env.spec.obs_terms["policy"]
    names = [t.name for t in terms]
    assert "waypoints" in names and "height_map" in names and "velocity_command" not in names
    start = sum(t.size for t in terms[: names.index("waypoints")])
    seen = obs["policy"][:, start : start + 9].reshape(3, 3, 3) / 0.5
    q = env.backend.qpos
    for e in range(3):
        rel = env.waypoints[e, :3] - q[e, :3]
        want = _quat_rotate_inv(np.repeat(q[e : e + 1, 3:7], 3, axis=0), rel)
        np.testing.assert_allclose(seen[e], want, atol=1e-5)
    # The map is a held-out one at the hardest level, and the plan goes from the spawn to the goal.
    assert env.cmap.seed == EVAL_SEEDS[0]
    last = env.waypoints[np.arange(3), env.wp_count - 1, :2]
    np.testing.assert_allclose(last, np.broadcast_to(env.cmap.goal[:2], (3, 2)), atol=0.05)


def test_reaching_a_waypoint_pays_once_and_switches_to_the_next(env) -> None:
    env.reset(seed=0)
    zero = np.zeros((3, 12))
    env.step(zero)
    q = env.backend.qpos
    q[0, :2] = env.waypoints[0, 0, :2]  # env 0 is put on its current waypoint
    _, r, *_ = env.step(zero)
    assert env.wp_index[0] == 1 and (env.wp_index[1:] == 0).all()
    bonus = env.cfg.rewards.waypoint_reached.weight
    assert r[0] > r[1] + 0.5 * bonus
    _, r, *_ = env.step(zero)
    assert env.wp_index[0] == 1  # the next one is 0.4 m away: no second bonus
    assert r[0] < 0.5 * bonus


def test_an_env_that_strays_gets_a_new_plan_from_where_it_is(env) -> None:
    env.reset(seed=0)
    zero = np.zeros((3, 12))
    env.step(zero)
    old = env.waypoints[1, : env.wp_count[1]].copy()
    q = env.backend.qpos
    from s2r.real.confined_planner import distance_to_polyline

    # 0.6 m sideways from the middle, on the side farther from the path (the path may bend towards one side).
    q[1, 1] = max((0.6, -0.6), key=lambda y: distance_to_polyline(np.array([q[1, 0], y]), env.polylines[1]))
    before = env.replans
    env.step(zero)
    assert env.replans == before + 1
    assert np.hypot(*(env.polylines[1][0] - q[1, :2])) < 0.35
    assert not np.array_equal(old, env.waypoints[1, : env.wp_count[1]])


def test_ceiling_clearance_pays_for_a_lower_trunk_under_and_ahead_of_a_low_ceiling(env) -> None:
    from s2r.sim.tasks.confined import TRUNK_HALF_HEIGHT, rew_ceiling_clearance

    env.reset(seed=0)
    maps = env.maps
    # The first column along the tunnel's middle whose ceiling is under 0.40 m (the map is at difficulty 1).
    j = int(maps.column(np.zeros(1, dtype=int), np.array([[maps.origins[0, 0], 0.0]]))[1][0])
    free = maps.ceil_z[0, :, j] - maps.floor_z[0, :, j]
    i = int(np.flatnonzero((free > 0.1) & (free < 0.40))[0])  # (solid columns, walls and pillars, read 0)
    x_low = maps.origins[0, 0] + (i + 0.5) * maps.res
    q = env.backend.qpos
    # env 0 stands (0.28 m) under it, env 1 crouches (0.20 m) under it, env 2 stands 0.3 m before it facing it.
    q[:, 0] = [x_low + 0.3, x_low + 0.3, x_low - 0.3]
    q[:, 1] = 0.0
    q[:, 2] = maps.floor_z[0, i, j] + np.array([0.28, 0.20, 0.28])
    q[:, 3:7] = [1.0, 0.0, 0.0, 0.0]
    s = env._loco_state(env.backend.sensordata, np.zeros((3, 4), dtype=bool))
    r = rew_ceiling_clearance(s, margin=0.04, span=0.12)
    # Linear in the trunk top's distance below (ceiling - margin): every centimetre lower pays, up to 1.
    want = 1.0 - np.clip(0.04 - (free[i] - np.array([0.28, 0.20]) - TRUNK_HALF_HEIGHT), 0.0, 0.12) / 0.12
    np.testing.assert_allclose(r[:2], want, atol=1e-9)
    assert r[0] < 0.9 and r[1] == 1.0
    assert r[2] < 0.9  # the low ceiling 0.3 m ahead already counts: lower before the front edge meets it
    q[2, 3:7] = [0.0, 0.0, 0.0, 1.0]  # env 2 turned round (yaw pi): the ceiling is behind it now
    q[2, 0] = x_low - 0.45
    s = env._loco_state(env.backend.sensordata, np.zeros((3, 4), dtype=bool))
    assert rew_ceiling_clearance(s, margin=0.04, span=0.12)[2] == 1.0
    # Off in every registered task (bench/confined.py train --clearance-weight turns it on).
    for task in (TASK, "Go1-Skills-Confined", "Go1-Goal-Confined"):
        assert task_config(task).rewards.ceiling_clearance.weight == 0


def test_heading_term_pays_for_facing_the_current_waypoint(env) -> None:
    from s2r.sim.tasks.confined import rew_waypoint_heading

    env.reset(seed=0)
    q = env.backend.qpos
    target = env.waypoints[np.arange(3), env.wp_index, :2]
    # env 0 faces its waypoint, env 1 has it 90 degrees to its left, env 2 has it behind; all 0.5 m away.
    for e, bearing in enumerate((0.0, np.pi / 2, np.pi)):
        q[e, :2] = target[e] - 0.5 * np.array([1.0, 0.0])
        yaw = -bearing
        q[e, 3:7] = [np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]
    s = env._loco_state(env.backend.sensordata, np.zeros((3, 4), dtype=bool))
    np.testing.assert_allclose(rew_waypoint_heading(s, near=0.25), [1.0, 0.0, -1.0], atol=0.05)
    q[2, :2] = target[2] - [0.1, 0.0]  # within `near`: no heading to face, full marks
    s = env._loco_state(env.backend.sensordata, np.zeros((3, 4), dtype=bool))
    assert rew_waypoint_heading(s, near=0.25)[2] == 1.0
    for task in (TASK, "Go1-Skills-Confined", "Go1-Goal-Confined"):  # off as registered
        assert task_config(task).rewards.waypoint_heading.weight == 0


def test_spawn_on_path_starts_level_clear_and_along_the_tunnel() -> None:
    from s2r.sim.tasks.confined import SPAWN_CLEAR, held_out_config

    cfg = task_config(TASK)
    cfg = replace(cfg, spawn_on_path=1.0, maps_per_scene=4, difficulties=(0.0, 0.5, 1.0, 1.0),
                  randomization=replace(cfg.randomization, push_velocity=0.0))
    e = make(TASK, 16, cfg=cfg, seed=2)
    try:
        e.reset(seed=2)
        q = e.backend.qpos
        ahead = q[:, 0] - e.maps.starts[e.env_map, 0]
        assert ahead.max() > 2.0  # not all at the start: some begin well into the tunnel
        yaw = e._yaw()
        for k in range(e.num_envs):  # room to stand over the trunk and the legs' reach, on a level floor
            c, s_ = np.cos(yaw[k]), np.sin(yaw[k])
            pts = q[k, :2] + 0.9 * SPAWN_CLEAR @ np.array([[c, s_], [-s_, c]])
            slot = np.full(len(pts), e.env_map[k])
            ci, cj = e.maps.column(slot, pts)
            floor = e.maps.floor_z[slot, ci, cj]
            assert (e.maps.ceil_z[slot, ci, cj] - floor).min() >= 0.42 and np.ptp(floor) <= 0.03
        # Each env's plan starts where it stands, and a second of standing still topples none of them.
        for k in range(e.num_envs):
            assert np.hypot(*(e.polylines[k][0] - q[k, :2])) < 0.35
        zero = np.zeros((16, 12))
        for _ in range(50):
            _, _, term, _, _ = e.step(zero)
            assert not term.any()
    finally:
        e.close()
    with pytest.raises(ValueError, match="spawn_on_path"):
        replace(cfg, spawn_on_path=1.5)
    # Evaluation (bench, video, the ROS sim bridge) always starts at the map's start, on the named maps.
    held = held_out_config(cfg, EVAL_SEEDS[:2], 1.0)
    assert (held.spawn_on_path, held.map_seeds, held.difficulty, held.difficulties) == (0.0, EVAL_SEEDS[:2], 1.0, ())


def test_export_names_the_waypoints_command(env) -> None:
    from s2r.policies.export import command_spec
    from s2r.real.metadata import WaypointsCommand

    assert isinstance(command_spec(env.spec, TASK), WaypointsCommand)


def test_one_ppo_iteration_trains_and_exports(tmp_path: Path) -> None:
    import torch
    from s2r.policies.driver import RunDriver
    from s2r.policies.ppo import PPOConfig

    from tests.training_runs import tiny_run_spec

    torch.set_num_threads(1)
    # Warm-started from the flat walker, every iteration critic-only (4 of 96 steps): the exported actor is the walker's.
    walker = Path(__file__).resolve().parents[1] / "data" / "go1_walk" / "policy.onnx"
    spec = tiny_run_spec(iterations=1, task=TASK, num_envs=4, init_policy=str(walker), algo=PPOConfig(critic_warmup=8))
    driver = RunDriver(spec, tmp_path, progress=False)
    try:
        result = driver.learn()
    finally:
        driver.close()
    assert not result["interrupted"] and result["export"]["max_abs_diff"] <= 1e-5
    meta = json.loads((tmp_path / "policy.json").read_text())
    assert meta["task_id"] == TASK and meta["command"]["kind"] == "waypoints"
    (policy_input,) = [o for o in meta["observation"] if o["group"] == "policy"]
    assert {"waypoints", "height_map"} <= {t["name"] for t in policy_input["terms"]}
    import onnxruntime as ort
    from s2r.policies.networks import ActorCritic, ActorCriticConfig
    from s2r.policies.warm_start import warm_start_actor

    dim = sum(t["size"] for t in policy_input["terms"])
    fresh = ActorCritic({"policy": dim, "privileged": 12}, 12, ActorCriticConfig())
    warm_start_actor(fresh, walker, [(t["name"], t["size"]) for t in policy_input["terms"]])
    x = np.random.default_rng(1).normal(size=(8, dim)).astype(np.float32) * 0.2
    (out,) = ort.InferenceSession(str(tmp_path / "policy.onnx")).run(None, {"obs": x})
    with torch.no_grad():
        np.testing.assert_allclose(out, fresh.act_mean(torch.as_tensor(x)).numpy(), atol=1e-3)
