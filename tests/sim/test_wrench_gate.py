"""The flat box's virtual wrench gated on a hand straddling the box (round 5 of issue 16), in real MuJoCo: the
"grasp_pose" gate let a *closed* hand pressed against the unturned box's long side push it (a step or two of 6 N
threw the light box); "straddle" asks for the pads open across the box as it lies between them, which the
unturned box (22-24 cm across the pads) never allows, while an open hand around a turned box still gets the force."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from s2r.sim import make, task_config
from s2r.sim.tasks.manipulation import TableCollisionOff, VirtualWrench
from s2r.sim.tasks.manipulation.kinematics import yaw_quat

TASK = "Panda-Lift-FlatBox"


def _env(gate: str, n: int = 1):
    cfg = replace(task_config(TASK, {"backend.num_threads": 1}), privileged=(VirtualWrench(gate=gate),))
    env = make(TASK, n, cfg=cfg, seed=0)
    env.reset(seed=0)
    return env


def _closed_hand_against_unturned_box(gate: str) -> tuple[bool, float]:
    """A closed hand lowered to the table away from the box, the box (as it lies, long side along the closing axis)
    then put with its centre 2.7 cm across from the TCP, as round 4's policy held it; one step with the wrench
    pushing up: (in grasp pose, the upward force applied to the box in that step, N)."""
    env = _env(gate)
    try:
        act = np.zeros((1, 10))
        act[0, 1] = -1.0  # away from the box (it lies at y > -0.06)
        for _ in range(12):
            env.step(act)
        act[0, :4] = [0.0, 0.0, -1.0, 1.0]  # down, fingers closed
        for _ in range(25):
            env.step(act)
        assert env._state().gripper[0, 0] < 0.015  # closed, as the leak's 0.2-1.4 cm
        env.backend.qpos[:, 9:12] = env.ee_pos + np.array([0.027, 0.0, 0.005])
        env.backend.qpos[:, 12:16] = yaw_quat(np.full(1, np.pi / 2))
        pose = bool(env.gate_mask("grasp_pose")[0])
        act[0, 2], act[0, 6] = 0.0, 1.0  # the wrench's +z at full scale
        env.step(act)  # the gate is read before the physics step; xfrc keeps what that step applied
        return pose, float(env.priv.xfrc[0, env.priv.body, 2])
    finally:
        env.close()


@pytest.mark.parametrize("gate, force", [("grasp_pose", 6.0), ("straddle", 0.0), ("grasped", 0.0)])
def test_closed_hand_against_the_unturned_box_gets_force_only_under_the_grasp_pose_gate(gate: str,
                                                                                         force: float) -> None:
    pose, fz = _closed_hand_against_unturned_box(gate)
    assert pose  # the leak: the grasp pose holds for it
    assert fz == pytest.approx(force), fz


def _open_hand_around_turned_box(gate: str) -> tuple[bool, float, float]:
    """The box put turned (short side across the pads) under the open hand, the hand lowered around it, then the
    wrench pushing up as the hand rises slowly: (straddles after the descent, force of the first push step, how far
    the box rose)."""
    env = _env(gate)
    try:
        env.backend.qpos[:, 9:11] = env.ee_pos[:, :2]
        env.backend.qpos[:, 12:16] = yaw_quat(np.zeros(1))
        z0 = float(env.backend.qpos[0, 11])
        act = np.zeros((1, 10))
        act[0, 2:4] = -1.0  # down, fingers open
        for _ in range(14):
            env.step(act)
        straddles = bool(env.gate_mask("straddle")[0])
        act[0, 2], act[0, 6] = 0.5, 1.0
        rose, first = 0.0, None
        for _ in range(6):
            _, _, _, _, info = env.step(act)
            first = float(env.priv.xfrc[0, env.priv.body, 2]) if first is None else first
            rose = max(rose, 1.0 if info["success"][0] else float(env.backend.qpos[0, 11]) - z0)
        return straddles, first, rose
    finally:
        env.close()


def test_open_hand_straddling_a_turned_box_gets_the_force_and_lifts_it() -> None:
    straddles, fz, rose = _open_hand_around_turned_box("straddle")
    assert straddles and fz == pytest.approx(6.0) and rose > 0.02, (straddles, fz, rose)
    # "grasped" wants the hand closed on the box: an open hand around it gets nothing.
    _, fz, rose = _open_hand_around_turned_box("grasped")
    assert fz == 0.0 and rose < 2e-3, (fz, rose)


def test_bad_gate_names_are_refused_in_one_sentence() -> None:
    with pytest.raises(ValueError, match=r"virtual_wrench\.gate is 'open'; use one of reach, grasp_pose, straddle, "
                                         r"grasped$"):
        VirtualWrench(gate="open")
    with pytest.raises(ValueError, match=r"table_collision_off\.gate is 'grasped'; use one of episode, grasp_pose, "
                                         r"straddle$"):
        TableCollisionOff(gate="grasped")
    cfg = replace(task_config("Panda-Drawer-Cube", {"backend.num_threads": 1}),
                  privileged=(VirtualWrench(gate="straddle"),))
    with pytest.raises(ValueError, match=r"virtual_wrench\.gate 'straddle' needs a task that defines a grasp pose"):
        make("Panda-Drawer-Cube", 1, cfg=cfg)


@pytest.mark.parametrize("turned", [True, False])
def test_table_gated_on_straddle_lets_open_fingers_through_only_around_a_turned_box(turned: bool) -> None:
    from tests.sim.test_table_gate import _descend
    from tests.sim.test_table_gate import _env as table_env

    env = table_env((TableCollisionOff(scale=1.0, gate="straddle"),))
    try:
        relaxed, _, low = _descend(env, around_box=True, turned=turned)
        if turned:
            assert relaxed and low < -0.01, low
        else:  # the open pads land on the unturned box's top: no straddle, the table stays solid
            assert not relaxed and low > -0.003, low
    finally:
        env.close()


def test_bench_straddle_arms_gate_wrench_and_table_on_the_straddle() -> None:
    from tests.bench_modules import load_bench

    arms = load_bench("privileged").ARMS
    for arm in ("curriculum_straddle", "all_at_once_timed_straddle"):
        assert arms[arm][4] == {"gate": "straddle"} and arms[arm][5] == {"gate": "straddle"}
