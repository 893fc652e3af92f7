"""The table relaxation gated on the grasp pose, in real MuJoCo: a relaxed episode's hand passes the table only
while it is placed around the box for a grasp, so it cannot scoop an unturned box from below; and the success
bonus of the multi-stage tasks outweighs what their shaping pays for not succeeding."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from s2r.sim import make, task_config
from s2r.sim.tasks.manipulation import TableCollisionOff
from s2r.sim.tasks.manipulation.kinematics import yaw_quat

from tests.sim.test_privileged import _lowest_pad_z

TASK = "Panda-Lift-FlatBox"
GAMMA = 0.99  # PPO's and SAC's default discount (importing them would load torch into this sim test)


def _env(privileged: tuple, n: int = 1, seed: int = 0):
    cfg = replace(task_config(TASK, {"backend.num_threads": 1}), privileged=privileged)
    env = make(TASK, n, cfg=cfg, seed=seed)
    env.reset(seed=seed)
    return env


def _descend(env, around_box: bool, turned: bool = True) -> tuple[bool, bool, float]:
    """The hand (open) straight down, beside the box or around it: (ever relaxed, ever in grasp pose, lowest pad z)."""
    act = np.zeros((1, 4))
    if around_box:  # the box put under the hand, turned (its short side across the pads) or as it lies
        env.backend.qpos[:, 9:11] = env.ee_pos[:, :2]
        env.backend.qpos[:, 12:16] = yaw_quat(np.full(1, 0.0 if turned else np.pi / 2))
    else:
        act[0, 1] = -1.0  # away from the box (it lies at y > -0.06)
        for _ in range(12):
            env.step(act)
    act[0] = [0.0, 0.0, -1.0, -1.0]  # down, fingers open
    relaxed = pose = False
    for _ in range(30):
        env.step(act)
        relaxed |= bool(env.priv.relaxed[0])
        pose |= bool(env.in_grasp_pose(env.backend.qpos[:, 9:12], env.ee_pos)[0])
    return relaxed, pose, _lowest_pad_z(env, 0)


def test_gated_relaxation_holds_a_hand_beside_the_box_at_the_table_even_at_scale_one() -> None:
    env = _env((TableCollisionOff(scale=1.0, gate="grasp_pose"),))
    try:
        assert env.priv.drawn[0]  # the episode has the relaxation, but the hand is never placed for a grasp
        relaxed, pose, low = _descend(env, around_box=False)
        assert not pose and not relaxed and low > -0.003, low
    finally:
        env.close()


@pytest.mark.parametrize("scale", [0.0, 1.0])
def test_gated_relaxation_lets_the_fingers_through_around_a_turned_box_only_at_scale_one(scale: float) -> None:
    env = _env((TableCollisionOff(scale=scale, gate="grasp_pose"),))
    try:
        relaxed, pose, low = _descend(env, around_box=True)
        assert pose  # the open pads straddle the turned box's short side
        if scale == 1.0:
            assert relaxed and low < -0.01, low
        else:
            assert not relaxed and low > -0.003, low
    finally:
        env.close()


def test_gated_relaxation_does_not_let_a_hand_on_an_unturned_box_through() -> None:
    # As the box lies the open pads land on its top: no grasp pose, so the table stays solid (the scoop's way in).
    env = _env((TableCollisionOff(scale=1.0, gate="grasp_pose"),))
    try:
        relaxed, pose, low = _descend(env, around_box=True, turned=False)
        assert not pose and not relaxed and low > -0.003, low
    finally:
        env.close()


def test_bad_table_gate_fails_with_one_sentence() -> None:
    with pytest.raises(ValueError, match=r"table_collision_off\.gate is 'grasp'; use one of episode, grasp_pose"):
        TableCollisionOff(gate="grasp")
    cfg = replace(task_config("Panda-Drawer-Cube", {"backend.num_threads": 1}),
                  privileged=(TableCollisionOff(gate="grasp_pose"),))
    with pytest.raises(ValueError, match=r"table_collision_off\.gate 'grasp_pose' needs a task that defines a grasp"):
        make("Panda-Drawer-Cube", 1, cfg=cfg)


@pytest.mark.parametrize("task, shaping", [("Panda-Lift-FlatBox", ("reach", "turn", "grasp", "lift")),
                                           ("Panda-Drawer-Cube", ("reach", "open", "over", "inside"))])
def test_success_bonus_outweighs_what_the_shaping_pays_without_success(task: str, shaping: tuple[str, ...]) -> None:
    # A time-out bootstraps from the value, so never succeeding is worth up to the per-step shaping / (1 - gamma);
    # a bonus below that taught the flat-box runs to stay just short of success.
    rw = task_config(task).reward
    assert rw.success > sum(getattr(rw, k) for k in shaping) / (1.0 - GAMMA)
