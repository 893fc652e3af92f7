"""Robot-side inputs of the waypoint follower against the training task: the same body-frame waypoints and
switching, a map-based height map close to the simulator's ray casts, and refusals that name the fix."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from s2r.real.metadata import MetadataError
from s2r.real.observation import RobotState
from s2r.real.waypoint_follow import MapHeights, WaypointInputs, WaypointTracker
from s2r.sim import make, task_config
from s2r.sim.terrain.confined import EVAL_SEEDS

TASK = "Go1-Waypoints-Confined"


@pytest.fixture(scope="module")
def env():
    cfg = task_config(TASK)
    cfg = replace(cfg, map_seed=EVAL_SEEDS[3], difficulty=1.0,
                  randomization=replace(cfg.randomization, observation_noise=0.0, push_velocity=0.0))
    e = make(TASK, 1, cfg=cfg, seed=0)
    yield e
    e.close()


def test_tracker_gives_the_tasks_waypoint_observation_and_switches_as_it_does(env) -> None:
    obs = env.reset(seed=0)
    terms = env.spec.obs_terms["policy"]
    names = [t.name for t in terms]
    start = sum(t.size for t in terms[: names.index("waypoints")])
    tracker = WaypointTracker(env.cfg.waypoints_observed, env.cfg.reach_radius)
    tracker.set_path(env.waypoints[0, : env.wp_count[0]])
    q = env.backend.qpos[0]
    np.testing.assert_allclose(tracker.observe(q[:3], q[3:7]), obs["policy"][0, start : start + 9] / 0.5, atol=1e-5)
    # Teleport onto the current waypoint: both switch to the next one on that step.
    env.backend.qpos[0, :2] = env.waypoints[0, 0, :2]
    obs, *_ = env.step(np.zeros((1, 12)))
    q = env.backend.qpos[0]
    np.testing.assert_allclose(tracker.observe(q[:3], q[3:7]), obs["policy"][0, start : start + 9] / 0.5, atol=1e-5)
    assert tracker.index == env.wp_index[0] == 1


def test_map_heights_match_the_ray_casts_where_floor_and_ceiling_are_flat(env) -> None:
    env.reset(seed=0)
    cmap = env.cmap
    heights = MapHeights(cmap.voxels(), cmap.resolution, cmap.origin)
    assert heights.size == 2 * env.heights.cfg.points
    path = env.waypoints[0, : env.wp_count[0]]
    diffs = []
    for w in path:
        pose = np.array([w[0], w[1], w[2]])
        yaw = 0.2
        quat = np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])
        sim = env.heights.cast(pose[None], np.array([yaw]))[0]
        diffs.append(np.abs(heights.observe(pose, quat) - sim))
    d = np.concatenate(diffs)
    # Fans of slanted rays hit box edges a little earlier than columns straight down and up; most values agree.
    assert np.mean(d < 0.03) > 0.8 and np.median(d) < 1e-6, (np.mean(d < 0.03), np.median(d))


def test_inputs_fill_the_state_and_refuse_a_policy_they_cannot_serve(env) -> None:
    from types import SimpleNamespace

    from s2r.real.metadata import TermSpec

    def meta(*terms: tuple[str, int]) -> SimpleNamespace:
        specs, start = [], 0
        for name, size in terms:
            specs.append(TermSpec(name=name, start=start, size=size, scale=(1.0,)))
            start += size
        return SimpleNamespace(obs=SimpleNamespace(terms=specs), task_id=TASK,
                               command=SimpleNamespace(kind="waypoints"))

    cmap = env.cmap
    heights = MapHeights(cmap.voxels(), cmap.resolution, cmap.origin)
    inputs = WaypointInputs(meta(("waypoints", 6), ("height_map", 30)), heights)
    state = RobotState(np.zeros(12), np.zeros(12), np.array([1.0, 0, 0, 0]), np.zeros(3))
    inputs.fill(state)
    assert state.waypoints.shape == (6,) and not state.waypoints.any()  # no path yet: target where it stands
    inputs.tracker.set_path(np.array([[1.0, 0.0, 0.3], [2.0, 0.0, 0.3]]))
    inputs.on_pose(np.array([0.5, 0.0, 0.3]), np.array([1.0, 0, 0, 0]), 0.0)
    inputs.fill(state)
    np.testing.assert_allclose(state.waypoints, [0.5, 0, 0, 1.5, 0, 0])
    assert state.height_map.shape == (30,)
    with pytest.raises(MetadataError, match="give the voxel map"):
        WaypointInputs(meta(("waypoints", 9), ("height_map", 30)))
    with pytest.raises(MetadataError, match="reads a height_map of 8 values"):
        WaypointInputs(meta(("waypoints", 9), ("height_map", 8)), heights)
    with pytest.raises(MetadataError, match="no waypoints term"):
        WaypointInputs(meta(("velocity_command", 3)))


POSE = np.array([0.05, 0.8, -1.5] * 4)


def _follower(env) -> tuple:
    """The shipped confined follower behind the robot-side controller, activated at t = 0, and a step(t) that
    feeds it one fresh joint state + IMU sample standing in POSE."""
    from s2r.real.controller import PolicyController
    from s2r.real.robot import load_robot_config
    from s2r.real.runner import PolicyRunner
    from s2r.real.safety import SafetyLayer

    from tests.policy_files import GO1_ROBOT, REPO

    robot = load_robot_config(str(GO1_ROBOT))
    runner = PolicyRunner(str(REPO / "tests" / "data" / "go1_confined" / "policy.onnx"), robot)
    safety = SafetyLayer(robot)
    heights = MapHeights(env.cmap.voxels(), env.cmap.resolution, env.cmap.origin)
    ctl = PolicyController(runner, safety, waypoints=WaypointInputs(runner.meta, heights))
    ctl.activate(0.0)

    def step(t: float) -> np.ndarray:
        ctl.on_imu(np.array([1.0, 0, 0, 0]), np.zeros(3), t, t)
        ctl.on_joint_state(POSE, np.zeros(12), t, t)
        return ctl.step(t)

    return ctl, safety, step


def test_controller_holds_until_it_has_a_path_and_a_pose(env) -> None:
    """Zero waypoints at the map origin are nothing the follower was trained on: it holds, then ramps in."""
    from s2r.real.safety import Mode

    ctl, safety, step = _follower(env)
    pose = POSE

    np.testing.assert_array_equal(step(0.0), pose)  # no path: held where it stands
    ctl.on_path(np.array([[1.0, 0.0, 0.3], [2.0, 0.0, 0.3]]))
    np.testing.assert_array_equal(step(0.02), pose)  # a path but no odometry yet: still held
    assert safety.counters["waypoint_holds"] == 2 and safety.counters["steps_run"] == 0
    assert ctl.mode is Mode.RUN  # a hold for missing inputs, not a fault
    ctl.on_pose(np.array([0.2, 0.0, 0.3]), np.array([1.0, 0, 0, 0]), 0.03)
    step(0.04)
    assert safety.counters["steps_run"] + safety.counters["steps_ramp"] == 1 and safety.counters["waypoint_holds"] == 2


def test_controller_holds_when_odometry_goes_stale(env) -> None:
    """Waypoints in the frame of a pose the robot has left steer it blind: stale odometry holds, fresh ramps in."""
    from s2r.real.safety import Mode

    ctl, safety, step = _follower(env)
    pose = POSE
    ctl.on_path(np.array([[1.0, 0.0, 0.3], [2.0, 0.0, 0.3]]))
    limit = safety.cfg.pose_timeout_s

    ctl.on_pose(np.array([0.2, 0.0, 0.3]), np.array([1.0, 0, 0, 0]), 0.0)
    step(0.02)
    assert safety.counters["waypoint_holds"] == 0
    np.testing.assert_array_equal(step(limit + 0.05), pose)  # the last odometry is older than the limit: held
    assert safety.counters["waypoint_holds"] == 1 and ctl.mode is Mode.RUN
    ctl.on_pose(np.array([0.25, 0.0, 0.3]), np.array([1.0, 0, 0, 0]), limit + 0.06)
    step(limit + 0.07)
    assert safety.counters["waypoint_holds"] == 1 and ctl.runner.ramping  # fresh again: ramps in from the pose
