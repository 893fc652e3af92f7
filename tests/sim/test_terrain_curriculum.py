"""The curriculum terrain in real MuJoCo: tile heights by level, promotion and demotion, the height scan
against ray casts, wide randomisation read back from the models, held-out ranges, the privileged group and
the OOD task."""

from __future__ import annotations

import dataclasses
import itertools

import mujoco
import numpy as np
import pytest
from s2r.sim import make, task_config
from s2r.sim.tasks.wide_randomization import (
    OOD_RANDOMIZATION,
    WIDE_PARAMS,
    WideRandomizationConfig,
)
from s2r.sim.terrain.curriculum import (
    CurriculumConfig,
    TerrainCurriculum,
    TerrainGridConfig,
    build_grid,
    tile_heights,
)

TASK = "Go1-Velocity-Terrain"
GRID = TerrainGridConfig()


@pytest.fixture(scope="module")
def env():
    e = make(TASK, 12, cfg=task_config(TASK, {"backend.num_threads": 1}), seed=3)
    e.reset(seed=3)
    yield e
    e.close()


def test_tiles_get_harder_with_the_level() -> None:
    rng = np.random.default_rng(0)
    rise = [np.ptp(tile_heights("stairs_up", GRID.difficulty(i), GRID, rng)) for i in range(GRID.levels)]
    assert all(b > a for a, b in itertools.pairwise(rise)), rise  # taller stairs at every level
    # Stair rise: the height jumps between neighbouring vertices are the level's step height.
    top = tile_heights("stairs_down", 1.0, GRID, rng)
    assert np.isclose(np.abs(np.diff(top, axis=1)).max(), GRID.step_height[1])
    slopes = [np.abs(np.diff(tile_heights("slope_up", GRID.difficulty(i), GRID, rng), axis=1)).max() / GRID.resolution
              for i in (0, GRID.levels - 1)]
    assert slopes[0] < 1e-9 and np.isclose(slopes[1], GRID.slope[1])
    rough = [np.ptp(tile_heights("rough", d, GRID, rng)) for d in (0.0, 1.0)]
    assert np.allclose(rough, GRID.roughness)
    assert (tile_heights("stepping_gaps", 0.0, GRID, rng) == 0).all()  # level 0: no gaps
    gaps = tile_heights("stepping_gaps", 1.0, GRID, rng)
    assert (gaps == -GRID.gap_depth).mean() > 0.2
    # Slopes and stairs up start in a pit at the centre; "down" starts on a summit; every tile's edge is at 0.
    up, down = tile_heights("stairs_up", 1.0, GRID, rng), tile_heights("stairs_down", 1.0, GRID, rng)
    c = up.shape[0] // 2
    assert up[c, c] < -0.5 and down[c, c] > 0.5 and up[0, 0] == 0 and down[-1, -1] == 0


def test_grid_places_each_tile_at_its_level_and_type() -> None:
    grid = build_grid(GRID)
    lv = np.repeat(np.arange(GRID.levels), len(GRID.types))
    ty = np.tile(np.arange(len(GRID.types)), GRID.levels)
    centre = grid.height_at(grid.tile_centre(lv, ty)).reshape(GRID.levels, -1)
    stairs_up = GRID.types.index("stairs_up")
    expected = -np.array([np.ptp(tile_heights("stairs_up", GRID.difficulty(i), GRID, np.random.default_rng(0)))
                          for i in range(GRID.levels)])
    assert np.allclose(centre[:, stairs_up], expected)
    assert np.allclose(centre[:, GRID.types.index("slope_down")], -centre[:, GRID.types.index("slope_up")])


def test_promote_demote_and_resample_beyond_the_top() -> None:
    cur = TerrainCurriculum(GRID, CurriculumConfig(init_max_level=3), 6, np.random.default_rng(0))
    cur.levels[:] = [3, 3, 3, 0, 7, 5]
    half_tile = GRID.tile_size / 2
    walked = np.array([half_tile + 0.1, 1.0, 0.5, 0.0, half_tile + 0.1, np.nan])
    commanded = np.array([10.0, 1.0, 10.0, 10.0, 10.0, 10.0])  # m asked for over a whole episode
    cur.update(np.arange(6), walked, commanded)
    # promoted; held (walked 1.0 >= half of 1.0); demoted; demoted but floored at 0; beyond the top: resampled;
    # a blown-up world (NaN) counts as nothing walked.
    assert cur.levels[:4].tolist() == [4, 3, 2, 0] and 0 <= cur.levels[4] < GRID.levels and cur.levels[5] == 4
    fixed = TerrainCurriculum(GRID, CurriculumConfig(fixed_level=4), 6, np.random.default_rng(0))
    fixed.update(np.arange(6), np.zeros(6), np.full(6, 10.0))
    assert (fixed.levels == 4).all() and fixed.types.tolist() == list(range(6))
    with pytest.raises(ValueError, match=r"curriculum\.fixed_level"):
        TerrainCurriculum(GRID, CurriculumConfig(fixed_level=8), 2, np.random.default_rng(0))


def test_env_moves_levels_at_episode_end_and_reports_them(env) -> None:
    env.curriculum.levels[:] = 2
    env.reset(seed=3)
    ids = np.arange(env.num_envs)
    # Force the distances: half the envs far from their spawn, half where they started with a fast command.
    env.backend.qpos[ids[:6], 0] = env._spawn_xy[ids[:6], 0] + GRID.tile_size
    env.command[ids[6:]] = [1.0, 0.0, 0.0]
    env.episode_step[:] = env.spec.max_episode_steps - 1  # every env times out on the next step
    env.steps_run[:] = env.spec.max_episode_steps - 1  # ... after a whole episode
    _, _, _, trunc, info = env.step(np.zeros((env.num_envs, 12)))
    assert trunc.all() or info["episode"]["env_ids"].size == env.num_envs
    assert env.curriculum.levels[:6].tolist() == [3] * 6 and env.curriculum.levels[6:].tolist() == [1] * 6
    assert np.array_equal(info["episode"]["terrain_level"], env.curriculum.levels[info["episode"]["env_ids"]])
    assert info["log"]["terrain_level"] == pytest.approx(2.0)
    # Respawned at the centres of their new tiles.
    centre = env.grid.tile_centre(env.curriculum.levels, env.curriculum.types)
    assert np.abs(env.backend.qpos[:, :2] - centre).max() <= env.cfg.curriculum.spawn_jitter + 1e-9


def test_a_shortened_first_episode_is_judged_on_the_time_it_ran(env) -> None:
    """Trainers start episodes at random steps (and a resumed run does it again): an env that kept pace with its
    command over the 0.5 s it ran keeps its level; one that stood still is demoted. (`steps_run` is the shared
    VelocityEnv counter, also behind the episode statistics.)"""
    env.curriculum.levels[:] = 2
    env.reset(seed=4)
    ids = np.arange(env.num_envs)
    ran = 25
    env.command[:] = [1.0, 0.0, 0.0]
    env.episode_step[:] = env.spec.max_episode_steps - ran  # a randomised start: `ran` steps left
    for _ in range(ran - 1):
        env.step(np.zeros((env.num_envs, 12)))
    assert env.steps_run.tolist() == [ran - 1] * env.num_envs
    # Half the envs where a 1 m/s walker would be after `ran` steps; under a whole episode's 20 m they would fall.
    env.backend.qpos[ids[:6], 0] = env._spawn_xy[ids[:6], 0] + 1.0 * ran * env.cfg.control_dt
    env.backend.qpos[ids[:6], 1] = env._spawn_xy[ids[:6], 1]
    env.backend.qpos[ids[6:], :2] = env._spawn_xy[ids[6:]]
    _, _, _, _, info = env.step(np.zeros((env.num_envs, 12)))
    assert sorted(info["episode"]["env_ids"].tolist()) == ids.tolist()
    assert info["episode"]["length"].tolist() == [ran] * env.num_envs  # the statistics count the steps run too
    assert env.curriculum.levels[:6].tolist() == [2] * 6 and env.curriculum.levels[6:].tolist() == [1] * 6
    assert env.steps_run.tolist() == [0] * env.num_envs  # respawned


def test_levels_round_trip_through_state_dict(env) -> None:
    """The trainer's checkpoint can carry the curriculum (a resume would otherwise restart it)."""
    env.curriculum.levels[:] = np.arange(env.num_envs) % GRID.levels
    state = env.state_dict()
    env.curriculum.levels[:] = 0
    env.load_state_dict(state)
    env.reset(seed=6)  # a full reset keeps the levels and spawns on their tiles
    assert env.curriculum.levels.tolist() == [i % GRID.levels for i in range(env.num_envs)]
    centre = env.grid.tile_centre(env.curriculum.levels, env.curriculum.types)
    assert np.abs(env.backend.qpos[:, :2] - centre).max() <= env.cfg.curriculum.spawn_jitter + 1e-9
    with pytest.raises(ValueError, match=r"terrain_levels in the checkpoint hold 3 levels"):
        env.load_state_dict({"terrain_levels": [0, 1, 2]})


def test_height_scan_matches_ray_casts_under_the_robot(env) -> None:
    priv = env.reset(seed=4)["privileged"]
    scan = env.height_scan()
    npts = env.cfg.height_scan.points
    assert priv.shape == (env.num_envs, 3 + 1 + 4 + len(WIDE_PARAMS) + npts)
    assert np.allclose(priv[:, -npts:], scan, atol=1e-6)
    m = env.model
    data = mujoco.MjData(m)
    mujoco.mj_kinematics(m, data)
    terrain = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "terrain")
    group = np.array([1, 0, 0, 0, 0, 0], dtype=np.uint8)  # the terrain only, not the robot's own geoms
    qpos = env.backend.qpos
    w, z = qpos[:, 3], qpos[:, 6]
    yaw = 2 * np.arctan2(z, w)  # spawn orientation is a pure yaw
    gid = np.zeros(1, dtype=np.int32)
    errors = []
    for e in range(env.num_envs):
        c, s = np.cos(yaw[e]), np.sin(yaw[e])
        for k, (ox, oy) in enumerate(env.scan_offsets):
            p = np.array([qpos[e, 0] + c * ox - s * oy, qpos[e, 1] + s * ox + c * oy, 5.0])
            dist = mujoco.mj_ray(m, data, p, np.array([0.0, 0.0, -1.0]), group, 1, -1, gid)
            assert gid[0] == terrain
            errors.append(abs((qpos[e, 2] - (5.0 - dist)) - scan[e, k]))
    errors = np.array(errors)
    # Exact on planar faces; only a point on a one-cell stair or gap edge may differ (triangle split vs bilinear).
    assert np.median(errors) < 1e-6 and (errors < 1e-3).mean() > 0.95, np.percentile(errors, [50, 95, 100])


def test_wide_randomisation_writes_each_field_within_its_range(env) -> None:
    env.reset(seed=5)
    r = env.cfg.randomization
    base = env.backend.base_model
    trunk, p = env._trunk, env.dr_params
    col = {n: i for i, n in enumerate(WIDE_PARAMS)}
    for name, (lo, hi) in r.ranges().items():
        assert (p[:, col[name]] >= lo).all() and (p[:, col[name]] <= hi).all(), name
    assert np.ptp(p, axis=0).min() > 0  # every value varies across the 12 envs
    for e, m in enumerate(env.backend.models):
        row = p[e]
        assert np.allclose(m.geom_friction[:, 0], base.geom_friction[:, 0] * row[col["friction"]])
        assert np.allclose(m.geom_solref[:, 1], row[col["restitution"]])
        assert np.isclose(m.body_mass[trunk], base.body_mass[trunk] + row[col["added_mass"]])
        assert np.allclose(m.body_ipos[trunk], base.body_ipos[trunk] + row[[col["com_x"], col["com_y"], col["com_z"]]])
        s, kp, kd = row[col["motor_strength"]], row[col["kp"]], row[col["kd"]]
        assert np.allclose(m.actuator_gainprm[:, 0], base.actuator_gainprm[:, 0] * s * kp)
        assert np.allclose(m.actuator_biasprm[:, 1], base.actuator_biasprm[:, 1] * s * kp)
        assert np.allclose(m.actuator_biasprm[:, 2], base.actuator_biasprm[:, 2] * s * kd)
        assert np.allclose(m.actuator_forcerange, base.actuator_forcerange * s)
        assert env.latency[e] == row[col["latency"]]
    # The IMU biases reach the policy's gyro and gravity terms (observation noise off: exact).
    cfg = task_config(TASK, {"backend.num_threads": 1, "randomization.observation_noise": 0.0})
    quiet = make(TASK, 4, cfg=cfg, seed=5)
    try:
        pol = quiet.reset(seed=5)["policy"]
        bias = quiet.dr_params[:, col["gravity_bias_x"] : col["gravity_bias_z"] + 1]
        # Spawned upright (a pure yaw): the true gravity direction in the body frame is (0, 0, -1).
        assert np.allclose(pol[:, 3:6] - bias, np.tile([0.0, 0.0, -1.0], (4, 1)), atol=1e-5)
    finally:
        quiet.close()


def test_ood_ranges_lie_outside_the_training_ranges() -> None:
    train, ood = WideRandomizationConfig().ranges(), OOD_RANDOMIZATION.ranges()
    for name in WIDE_PARAMS:
        (a, b), (c, d) = train[name], ood[name]
        assert d < a or c > b, (name, train[name], ood[name])
    assert task_config("Go1-Velocity-Terrain-OOD").randomization.ranges() == ood
    with pytest.raises(ValueError, match=r"randomization\.kp .* low > high"):
        dataclasses.replace(WideRandomizationConfig(), kp=(1.2, 0.8))
    with pytest.raises(ValueError, match=r"randomization\.model_pool is not supported"):
        WideRandomizationConfig(model_pool=8)


def test_bad_grid_settings_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"TerrainGridConfig\.types .* must name one or more of slope_up"):
        TerrainGridConfig(types=("stairs",))
    with pytest.raises(ValueError, match=r"TerrainGridConfig\.tile_size \(4\.03\) must be a multiple of resolution"):
        TerrainGridConfig(tile_size=4.03)
    with pytest.raises(ValueError, match=r"unknown config key 'grid\.levelz'"):
        task_config(TASK, {"grid.levelz": 4})


def test_ood_task_builds_and_draws_held_out_dynamics() -> None:
    e = make("Go1-Velocity-Terrain-OOD", 4, cfg=task_config("Go1-Velocity-Terrain-OOD", {"backend.num_threads": 1}),
             seed=0)
    try:
        obs = e.reset(seed=0)
        assert obs["privileged"].shape == (4, e.obs_dims["privileged"]) and np.isfinite(obs["privileged"]).all()
        lat = e.dr_params[:, WIDE_PARAMS.index("latency")]
        assert (lat >= 3).all() and (e.latency >= 3).all()
        obs, rew, *_ = e.step(np.zeros((4, 12)))
        assert np.isfinite(rew).all()
    finally:
        e.close()


@pytest.mark.slow
def test_ppo_trains_on_terrain_and_its_actor_export_matches_onnxruntime(tmp_path) -> None:
    """The critic reads the privileged scan and draws; the exported actor reads only `policy` (~25 s)."""
    import json

    from s2r.policies.driver import Budget, new_run_spec, train
    from s2r.policies.evaluate import OnnxPolicy

    spec = new_run_spec("ppo", TASK, task_overrides={"backend.num_threads": 1},
                        algo_overrides={"torch_threads": 1}, num_envs=16, seed=0, budget=Budget(steps=16 * 24 * 2))
    run = tmp_path / "run"
    summary = train(spec, run, progress=False)
    assert summary["export"]["max_abs_diff"] < 1e-5
    assert "mean_terrain_level" in json.loads((run / "history.json").read_text())[-1]
    # The checkpoint keeps every env's terrain level, so a resumed run continues the curriculum.
    import torch

    ckpt = torch.load(run / "checkpoint.pt", weights_only=False)
    found = [v for v in _walk(ckpt) if isinstance(v, dict) and "terrain_levels" in v]
    assert found and len(found[0]["terrain_levels"]) == 16
    policy = OnnxPolicy(run)
    e = make(TASK, 4, cfg=spec.task_cfg, seed=1)
    try:
        obs = e.reset(seed=1)
        act = policy(obs["policy"])
        assert act.shape == (4, 12) and np.isfinite(act).all()
    finally:
        e.close()


def _walk(obj):
    """Every value nested in a checkpoint's dicts."""
    yield obj
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _walk(v)
