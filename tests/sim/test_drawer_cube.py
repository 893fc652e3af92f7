"""Panda-Drawer-Cube on real MuJoCo: the drawer slides and stops at its range, a cube in the tray succeeds and one
on the table or the cabinet does not, the drawer force opens it only at scale > 0, the expert solves the task,
the one-stage baseline does not, bad configs fail in one sentence, and the export has no privileged columns."""

from __future__ import annotations

import json
from dataclasses import replace

import mujoco
import numpy as np
import pytest
from s2r.sim import make, task_config
from s2r.sim.config import from_dict, to_dict
from s2r.sim.tasks.drawer_expert import DrawerCubeExpert
from s2r.sim.tasks.experts import make_expert
from s2r.sim.tasks.manipulation import (
    CubeRandomizationConfig,
    DrawerCubeConfig,
    DrawerCubeEnv,
    FixtureForce,
    FlatBoxLiftConfig,
    TableCollisionOff,
    yaw_quat,
)
from s2r.sim.tasks.manipulation.drawer import FLOOR_Z, UNDER_TOP_Z, opening_term

TASK = "Panda-Drawer-Cube"


def _env(n: int, seed: int = 0, **cfg_changes) -> DrawerCubeEnv:
    cfg = replace(task_config(TASK, {"backend.num_threads": 1}), **cfg_changes)
    env = make(TASK, n, cfg=cfg, seed=seed)
    env.reset(seed=seed)
    return env


def test_drawer_force_opens_it_at_scale_one_not_zero_and_it_stops_at_its_range() -> None:
    env = _env(2, drawer_range=(0.0, 0.12), privileged=(FixtureForce(max_force=20.0, reach_radius=0.0),))
    try:
        assert env.spec.action_dim == 5 and env.spec.action_names[4:] == ("priv_fixture_f",)
        act = np.zeros((2, 5))
        act[:, 4] = 1.0  # pull the drawer open, nothing else
        env.set_privilege_scale(0.0)
        for _ in range(5):
            env.step(act)
        assert np.abs(env.opening).max() < 1e-4  # scale 0: the drawer stays shut (and nothing else moves it)
        env.set_privilege_scale(1.0)
        trace = []
        for _ in range(25):
            env.step(act)
            trace.append(env.opening.copy())
        trace = np.array(trace)  # (steps, 2)
        assert (trace[3] > 0.02).all()  # it slides
        assert (trace.max(axis=0) <= 0.12 + 2e-3).all() and (trace[-1] > 0.115).all()  # and stops at its range
        act[:, 4] = -1.0
        for _ in range(25):
            env.step(act)
        assert (env.opening < 2e-3).all()  # pushed shut, it stops at 0 (the cabinet)
    finally:
        env.close()


def test_drawer_force_acts_only_near_the_handle() -> None:
    env = _env(1, privileged=(FixtureForce(reach_radius=0.08),))
    try:
        assert env._fixture_distance()[0] > 0.15  # the hand starts well above the tab
        act = np.zeros((1, 5))
        act[0, 4] = 1.0
        for _ in range(5):
            env.step(act)
        assert env.opening[0] < 1e-4
    finally:
        env.close()


def _place_cube(env: DrawerCubeEnv, i: int, pos: np.ndarray) -> None:
    env.backend.qpos[i, 9:12] = pos
    env.backend.qpos[i, 12:16] = yaw_quat(np.zeros(1))[0]
    env.backend.qvel[i, 9:15] = 0.0


def test_cube_in_the_open_drawer_succeeds_on_the_table_or_the_cabinet_it_does_not() -> None:
    env = _env(3, seed=3)
    try:
        half = env.params[:, 0]
        env.backend.qpos[:2, 16] = 0.13  # drawers 0 and 1 open; 2 stays shut
        origin = env.drawer_origin()
        slot = origin + [env._slot_x, 0.0, FLOOR_Z]
        _place_cube(env, 0, slot[0] + [0.0, 0.0, half[0] + 1e-4])  # in the tray
        # env 1: the cube stays where it spawned, on the table; env 2: on the shut cabinet's top, over the tray.
        _place_cube(env, 2, slot[2] + [0.0, 0.0, UNDER_TOP_Z + 0.012 - FLOOR_Z + half[2] + 1e-4])
        rewards, success = [], np.zeros(3, bool)
        for _ in range(6):
            _, r, _, _, info = env.step(np.array([[0.0, 0.0, 0.0, -1.0]] * 3))
            success |= info["success"]
            rewards.append(r)
        assert success.tolist() == [True, False, False]
        # The first step's reward: env 0 has the open drawer, the cube in it and the bonus; env 1 the open drawer
        # only; env 2 nothing of those (the reach term is < 0.1 everywhere, the hand starts high).
        rw = env.cfg.reward
        assert rewards[0][0] > rw.success + rw.open + rw.inside
        assert rw.open < rewards[0][1] < rw.open + rw.over + rw.reach and rewards[0][2] < rw.reach
    finally:
        env.close()
    assert np.allclose(opening_term(np.array([0.0, 0.05, 0.2]), 0.1), [0.0, 0.5, 1.0])


def _episodes(env: DrawerCubeEnv, expert: DrawerCubeExpert, seed: int, steps: int) -> np.ndarray:
    obs = env.reset(seed=seed)
    expert.reset()
    success = np.zeros(env.num_envs, bool)
    done = np.zeros(env.num_envs, bool)
    for _ in range(steps):
        obs, _, term, trunc, info = env.step(expert.act(obs))
        success |= info["success"] & ~done
        done |= term | trunc
        if done.all():
            break
    return success


def test_expert_opens_the_drawer_and_puts_the_cube_in() -> None:
    env = _env(4, seed=11)
    try:
        success = _episodes(env, make_expert(TASK, 4, seed=11), seed=11, steps=env.cfg.max_episode_steps)
    finally:
        env.close()
    assert success.all(), f"expert failed on {np.flatnonzero(~success)}"


def test_one_stage_baseline_leaves_the_cube_on_the_shut_cabinet() -> None:
    env = _env(3, seed=12)
    try:
        baseline = DrawerCubeExpert(env.cfg, DrawerCubeEnv, 3, 0.0, 0.0, 12, one_stage=True)
        success = _episodes(env, baseline, seed=12, steps=90)
        assert (baseline.phase >= baseline.RELEASE).all()  # it carried the cube over and let go
        assert not success.any() and (env.opening < 1e-3).all()
        cube_bottom = env.backend.qpos[:, 11] - env.params[:, 0]
        assert (np.abs(cube_bottom - UNDER_TOP_Z - 0.012) < 0.005).all()  # on the cabinet's top
    finally:
        env.close()


@pytest.mark.parametrize("scale", [0.0, 1.0])
def test_relaxed_hand_passes_through_the_cabinet_only_at_scale_one(scale: float) -> None:
    env = _env(1, privileged=(TableCollisionOff(scale=scale),))
    try:
        over_top = env.cabinet_pos[0] + [0.12, 0.0, 0.0]  # over the cabinet's top, clear of the tab
        for _ in range(30):
            act = np.zeros((1, 4))
            act[0, :2] = (over_top[:2] - env.ee_pos[0, :2]) / env.cfg.arm.max_step
            act[0, 2] = -1.0 if np.linalg.norm(over_top[:2] - env.ee_pos[0, :2]) < 0.01 else 0.0
            act[0, 3] = -1.0
            env.step(np.clip(act, -1, 1))
        m = env.backend.models[0]
        d = mujoco.MjData(m)
        mujoco.mj_setState(m, d, env.backend.state[0], mujoco.mjtState.mjSTATE_FULLPHYSICS)
        mujoco.mj_forward(m, d)
        pads = [g for g in range(m.ngeom) if (mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_GEOM, g) or "").startswith("pad_")
                and m.geom_type[g] == mujoco.mjtGeom.mjGEOM_SPHERE]
        low = min(d.geom_xpos[g, 2] - m.geom_size[g, 0] for g in pads)
        top = UNDER_TOP_Z + 0.012
        if scale == 1.0:
            assert env.priv.relaxed[0] and low < top - 0.02, low  # the pads are inside the cabinet
        else:
            assert not env.priv.relaxed[0] and low > top - 0.003, low  # the top holds them
    finally:
        env.close()


def test_privileged_variant_and_export_without_its_columns(tmp_path) -> None:
    import onnx
    import torch
    from s2r.policies.curriculum import task_actor
    from s2r.policies.networks import ActorCritic, ActorCriticConfig
    from s2r.policies.ppo import TrainConfig, export_model

    torch.manual_seed(0)
    env = make(TASK + "-Privileged", 2, cfg=task_config(TASK + "-Privileged", {"backend.num_threads": 1}), seed=0)
    try:
        assert env.spec.action_dim == 11 and env.spec.extras["privileged_action_dims"] == 7
        assert env.spec.action_names[4:] == ("priv_fx", "priv_fy", "priv_fz", "priv_tx", "priv_ty", "priv_tz",
                                             "priv_fixture_f")
        a = make_expert(TASK + "-Privileged", 2).act(env.reset(seed=0))
        assert a.shape == (2, 11) and not a[:, 4:].any()
        cfg = ActorCriticConfig(actor_obs=("policy",), critic_obs=("policy",), actor_hidden=(16,), critic_hidden=(16,))
        cut = task_actor(ActorCritic(env.obs_dims, 11, cfg), env.obs_dims, 4)
        export_model(cut, TASK, env.cfg.without_privileges(), tmp_path, TrainConfig(export_parity_steps=2))
    finally:
        env.close()
    out = onnx.load(str(tmp_path / "policy.onnx")).graph.output[0]
    assert [d.dim_value or d.dim_param for d in out.type.tensor_type.shape.dim] == ["batch", 4]


def test_config_json_round_trip_keeps_the_drawer_privileges_typed() -> None:
    cfg = task_config(TASK + "-Privileged")
    back = from_dict(type(cfg), json.loads(json.dumps(to_dict(cfg))))
    assert back == cfg and any(isinstance(p, FixtureForce) for p in back.privileged)
    assert back.without_privileges().privileged == ()


def test_gymnasium_reaches_the_task() -> None:
    import gymnasium

    env = gymnasium.make(f"s2r/{TASK}-v0")
    try:
        obs, _ = env.reset(seed=0)
        assert env.action_space.shape == (4,)
        obs, r, _, _, _ = env.step(np.zeros(4, np.float32))
        assert np.isfinite(obs).all() and np.isfinite(r)
    finally:
        env.close()


def test_bad_configs_fail_with_one_sentence() -> None:
    with pytest.raises(ValueError, match=r"drawer_range \(-0.1, 0.2\) must run from 0 \(shut\)"):
        DrawerCubeConfig(drawer_range=(-0.1, 0.2))
    with pytest.raises(ValueError, match=r"open_distance 0.3 must lie in"):
        DrawerCubeConfig(open_distance=0.3)
    with pytest.raises(ValueError, match=r"cubes up to 4.6 cm, larger than the 4.4 cm of tray the drawer exposes"):
        DrawerCubeConfig(open_distance=0.05)
    with pytest.raises(ValueError, match=r"half_size \(0.02, 0.05\) gives cubes up to 10.0 cm, larger than the 6.5"):
        DrawerCubeConfig(randomization=CubeRandomizationConfig(center=(0.44, -0.3), half_size=(0.02, 0.05)))
    with pytest.raises(ValueError, match="onto the cabinet"):
        DrawerCubeConfig(randomization=CubeRandomizationConfig(center=(0.44, -0.05)))
    flat = replace(task_config("Panda-Lift-FlatBox", {"backend.num_threads": 1}), privileged=(FixtureForce(),))
    assert isinstance(flat, FlatBoxLiftConfig)
    with pytest.raises(ValueError, match=r"FlatBoxLiftConfig\.privileged declares 'fixture_force', but the task has no"):
        make("Panda-Lift-FlatBox", 1, cfg=flat)
