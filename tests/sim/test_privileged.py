"""Privileged actions on the Panda tasks, in real MuJoCo: the wrench moves the object, the relaxed table lets
the fingers through, scales and declarations are checked, and config.json reads them back typed."""

from __future__ import annotations

import json
from dataclasses import replace

import mujoco
import numpy as np
import pytest
from s2r.sim import make, task_config
from s2r.sim.config import from_dict, to_dict
from s2r.sim.tasks.manipulation import (
    FlatBoxLiftConfig,
    ReducedGravity,
    TableCollisionOff,
    VirtualWrench,
    WiderJointLimits,
    parse_privileged,
)

TASK = "Panda-Lift-FlatBox"


def _env(privileged: tuple, n: int = 2, seed: int = 0):
    cfg = replace(task_config(TASK, {"backend.num_threads": 1}), privileged=privileged)
    env = make(TASK, n, cfg=cfg, seed=seed)
    env.reset(seed=seed)
    return env


def test_virtual_force_lifts_the_box_at_scale_one_and_not_at_zero() -> None:
    env = _env((VirtualWrench(max_force=3.0, reach_radius=0.0),))
    try:
        assert env.spec.action_dim == 10 and env.spec.action_names[4:] == ("priv_fx", "priv_fy", "priv_fz",
                                                                            "priv_tx", "priv_ty", "priv_tz")
        assert env.spec.extras["privileged_action_dims"] == 6
        act = np.zeros((2, 10))
        act[:, 6] = 1.0  # +z force on the box, nothing else
        z0 = env.backend.qpos[:, 11].copy()
        env.set_privilege_scale(0.0)
        for _ in range(5):
            env.step(act)
        assert np.abs(env.backend.qpos[:, 11] - z0).max() < 2e-3  # scale 0: the box stays on the table
        env.set_privilege_scale(1.0)
        rose = np.zeros(2)
        for _ in range(5):
            _, _, _, _, info = env.step(act)
            # A box that reached the success height ends its episode (and is reset): count that as risen.
            rose = np.maximum(rose, np.where(info["success"], 1.0, env.backend.qpos[:, 11] - z0))
        assert (rose > 0.03).all(), rose  # 3 N against ~1 N of weight: it rises
    finally:
        env.close()


def test_virtual_force_acts_only_near_the_hand() -> None:
    env = _env((VirtualWrench(max_force=3.0, reach_radius=0.08),))
    try:
        act = np.zeros((2, 10))
        act[:, 6] = 1.0
        z0 = env.backend.qpos[:, 11].copy()
        assert (np.linalg.norm(env.backend.qpos[:, 9:12] - env.ee_pos, axis=1) > 0.15).all()  # hand starts high
        for _ in range(5):
            env.step(act)
        assert np.abs(env.backend.qpos[:, 11] - z0).max() < 2e-3  # out of reach: no force
    finally:
        env.close()


def _lowest_pad_z(env, i: int) -> float:
    m = env.backend.models[i]
    d = mujoco.MjData(m)
    mujoco.mj_setState(m, d, env.backend.state[i], mujoco.mjtState.mjSTATE_FULLPHYSICS)
    mujoco.mj_forward(m, d)
    pads = [g for g in range(m.ngeom) if (mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_GEOM, g) or "").startswith("pad_")
            and m.geom_type[g] == mujoco.mjtGeom.mjGEOM_SPHERE]
    return float(min(d.geom_xpos[g, 2] - m.geom_size[g, 0] for g in pads))


@pytest.mark.parametrize("scale", [0.0, 1.0])
def test_table_relaxation_lets_the_fingers_through_only_at_scale_one(scale: float) -> None:
    env = _env((TableCollisionOff(scale=scale),), n=1)
    try:
        act = np.zeros((1, 4))
        act[0, 1] = -1.0  # away from the box (it lies at y > -0.06), then straight down
        for _ in range(12):
            env.step(act)
        act[0] = [0.0, 0.0, -1.0, -1.0]
        for _ in range(25):
            env.step(act)
        low = _lowest_pad_z(env, 0)
        if scale == 1.0:
            assert env.priv.relaxed[0] and low < -0.015, low  # the pads are well inside the table
        else:
            assert not env.priv.relaxed[0] and low > -0.003, low  # contact holds them at the surface
    finally:
        env.close()


def test_joint_limits_widen_with_the_scale_and_gravity_relief_is_an_upward_force() -> None:
    env = _env((WiderJointLimits(extra=0.2), ReducedGravity(max_reduction=0.5)))
    try:
        nominal = env.model.jnt_range[:7].copy()
        wide = env.backend.models[0].jnt_range[:7]
        assert np.allclose(nominal - [0.2, -0.2], wide)
        f = env.priv.wrench(np.zeros((2, 0)))
        body = env.priv.body
        mass = env.backend.models[1].body_mass[body]
        assert np.isclose(f[1, body, 2], 0.5 * mass * 9.81) and np.count_nonzero(f) == 2
        env.set_privilege_scale(0.0)
        assert np.allclose(env.backend.models[0].jnt_range[:7], nominal)
        assert env.priv.wrench(np.zeros((2, 0))) is None
    finally:
        env.close()


def test_plain_task_has_no_privileged_dims_and_names_the_columns_it_takes() -> None:
    env = make(TASK, 1, cfg=task_config(TASK, {"backend.num_threads": 1}))
    try:
        env.reset(seed=0)
        assert env.spec.action_dim == 4 and env.spec.extras["privileged_action_dims"] == 0
        with pytest.raises(ValueError, match=r"takes 4 \(ee_dx, ee_dy, ee_dz, gripper\)"):
            env.step(np.zeros((1, 10)))
    finally:
        env.close()


def test_bad_declarations_fail_with_one_sentence() -> None:
    with pytest.raises(ValueError, match=r"scale 1.5; a scale lies in \[0, 1\]"):
        FlatBoxLiftConfig(privileged=(VirtualWrench(scale=1.5),))
    with pytest.raises(ValueError, match="declares virtual_wrench more than once"):
        FlatBoxLiftConfig(privileged=(VirtualWrench(), VirtualWrench()))
    with pytest.raises(ValueError, match="known kinds: virtual_wrench"):
        parse_privileged([{"kind": "antigravity"}])
    with pytest.raises(ValueError, match=r"unknown keys \['force'\]"):
        parse_privileged([{"kind": "virtual_wrench", "force": 3}])
    with pytest.raises(ValueError, match=r"set backend\.name to 'cpu'"):
        FlatBoxLiftConfig(privileged=(VirtualWrench(),), backend=replace(FlatBoxLiftConfig().backend, name="warp"))
    env = _env((VirtualWrench(),), n=1)
    try:
        with pytest.raises(ValueError, match="'reduced_gravity' is not declared"):
            env.set_privilege_scale({"reduced_gravity": 0.5})
    finally:
        env.close()


def test_config_json_round_trip_keeps_the_privileges_typed() -> None:
    cfg = task_config("Panda-Lift-FlatBox-Privileged")
    back = from_dict(type(cfg), json.loads(json.dumps(to_dict(cfg))))
    assert back == cfg and isinstance(back.privileged[0], VirtualWrench)
    assert back.without_privileges().privileged == ()


def _descend_then_push_up(gate: str, yaw: float) -> tuple[np.ndarray, np.ndarray]:
    """The box put under the open hand at `yaw` (pi/2: as it lies, long side across the pads; 0: turned), the hand
    lowered onto it, then the wrench pushing up: (in grasp pose after the descent, how far the box rose)."""
    from s2r.sim.tasks.manipulation.kinematics import yaw_quat

    env = _env((VirtualWrench(max_force=3.0, gate=gate),))
    try:
        env.backend.qpos[:, 9:11] = env.ee_pos[:, :2]
        env.backend.qpos[:, 12:16] = yaw_quat(np.full(2, yaw))
        z0 = env.backend.qpos[:, 11].copy()
        act = np.zeros((2, 10))
        act[:, 2:4] = -1.0  # down, fingers open
        for _ in range(14):
            env.step(act)
        pose = env.in_grasp_pose(env.backend.qpos[:, 9:12], env.ee_pos)
        act[:, 2], act[:, 6] = 0.5, 1.0  # the hand rises slowly (it would press a box it stands on down), +z force
        rose = np.zeros(2)
        for _ in range(6):
            _, _, _, _, info = env.step(act)
            rose = np.maximum(rose, np.where(info["success"], 1.0, env.backend.qpos[:, 11] - z0))
        return pose, rose
    finally:
        env.close()


def test_grasp_pose_gate_lets_the_wrench_act_only_on_a_hand_placed_for_a_grasp() -> None:
    # As the box lies the open fingers land on its top: near enough for the "reach" gate, not a grasp pose.
    pose, rose = _descend_then_push_up("reach", np.pi / 2)
    assert not pose.any() and (rose > 0.005).all(), rose
    pose, rose = _descend_then_push_up("grasp_pose", np.pi / 2)
    assert not pose.any() and (rose < 2e-3).all(), rose
    # Turned, the open fingers pass beside its short side: a grasp pose, and the wrench lifts.
    pose, rose = _descend_then_push_up("grasp_pose", 0.0)
    assert pose.all() and (rose > 0.02).all(), rose


def test_grasp_pose_gate_is_refused_where_the_task_has_no_grasp_pose() -> None:
    with pytest.raises(ValueError, match=r"virtual_wrench\.gate is 'grip'; use one of reach, grasp_pose"):
        VirtualWrench(gate="grip")
    cfg = replace(task_config("Panda-Drawer-Cube", {"backend.num_threads": 1}),
                  privileged=(VirtualWrench(gate="grasp_pose"),))
    with pytest.raises(ValueError, match="gate 'grasp_pose' needs a task that defines a grasp pose"):
        make("Panda-Drawer-Cube", 1, cfg=cfg)
