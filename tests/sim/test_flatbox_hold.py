"""`FlatBoxLiftEnv.pads_on_box` (the contact-based hold of the flat-box benchmarks): the scripted expert's grasp
counts, from the closing onwards; its open hand around the turned box, its closed hand pushing the box, and the
top-down grasp's pads closed on the unturned box's top face do not."""

from __future__ import annotations

import numpy as np
from s2r.sim import make
from s2r.sim.tasks.experts import FlatBoxExpert, make_expert
from s2r.sim.tasks.manipulation import FlatBoxLiftEnv

TASK = "Panda-Lift-FlatBox"



def throw_the_box_up(env, steps: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Push the box up with the virtual wrench alone (the hand still) for `steps`: (any success, highest lowest corner)
    per env. The env must declare a virtual wrench at scale > 0."""
    act = np.zeros((env.num_envs, env.spec.action_dim))
    act[:, 6] = 1.0  # +z force on the box, the hand still
    success, high = np.zeros(env.num_envs, bool), np.zeros(env.num_envs)
    for _ in range(steps):
        _, _, _, _, info = env.step(act)
        success |= info["success"]
        high = np.maximum(high, env._lowest(env._state()))
    return success, high

def test_expert_grasp_is_held_and_an_open_or_pushing_hand_is_not() -> None:
    n = 2
    env, expert = make(TASK, n, seed=11), make_expert(TASK, n, seed=11)
    try:
        obs = env.reset(seed=11)
        done = np.zeros(n, bool)
        held_before_success = np.zeros(n, bool)
        seen = {"open_around": 0, "push": 0, "lift": 0}
        for _ in range(env.cfg.max_episode_steps):
            phase = expert.phase.copy()  # the phase the next action comes from
            obs, _, term, trunc, info = env.step(expert.act(obs))
            ended = term | trunc
            live = ~done & ~ended
            s, b = env._state(), env.behaviour()
            pose = env.in_grasp_pose(s.obj_pos, s.ee_pos)
            # Open hand placed around the turned box (the pose holds, the pads 7+ cm apart): not held.
            open_around = live & pose & (s.gripper[:, 0] > 0.07)
            assert not b["held"][open_around].any()
            # The closed hand pushing one end of the box round: both pads may touch it, side by side; not held.
            push = live & (phase == expert.PUSH)
            assert not b["held"][push].any()
            # Lifting: the box between the pads, both touching it, and `_grasped` agrees.
            lift = live & (phase == expert.LIFT) & (b["lift"] > 0.005)
            assert b["held"][lift].all() and b["grasped"][lift].all()
            held_before_success[live] = b["held"][live]
            for key, mask in (("open_around", open_around), ("push", push), ("lift", lift)):
                seen[key] += int(mask.sum())
            first = ended & ~done
            assert np.asarray(info["success"])[first].all()
            assert held_before_success[first].all()  # the step before each success was a hold
            done |= ended
            if done.all():
                break
    finally:
        env.close()
    assert done.all() and min(seen.values()) > 0, seen  # every case above was met, in both episodes together


def test_pads_on_the_top_face_are_not_a_hold() -> None:
    env = make(TASK, 2, seed=11)
    try:
        baseline = FlatBoxExpert(env.cfg, FlatBoxLiftEnv, 2, 0.0, 0.0, 11, turn=False)
        obs = env.reset(seed=11)
        closed_on_top = 0
        for _ in range(45):  # it closes on the box's top and goes up (as in test_flatbox's top-down test)
            obs, *_ = env.step(baseline.act(obs))
            on_top = baseline.phase == baseline.LIFT
            assert not env.behaviour()["held"][on_top].any()
            closed_on_top += int(on_top.sum())
    finally:
        env.close()
    assert closed_on_top > 0


def test_a_box_thrown_up_without_a_hold_is_no_success_unless_the_instant_test_is_asked_for() -> None:
    """The ungated wrench throws the box above the success height with no pad on it: that was a success under the
    old instant test (`success_hold=0`), and is none now; the expert's held lift still is (test_flatbox.py)."""
    from dataclasses import replace

    from s2r.sim import task_config
    from s2r.sim.tasks.manipulation import VirtualWrench

    ends = {}
    for hold in (0, 5):
        cfg = replace(task_config(TASK, {"backend.num_threads": 1, "success_hold": hold}),
                      privileged=(VirtualWrench(max_force=1.5, reach_radius=0.0),))
        env = make(TASK, 2, cfg=cfg, seed=3)
        try:
            env.reset(seed=3)
            env.set_privilege_scale(1.0)
            ends[hold] = throw_the_box_up(env)
        finally:
            env.close()
    assert ends[0][0].all()  # the instant test counts the throw
    assert (ends[5][1] > 0.04).all() and not ends[5][0].any()  # up in the air, never held: no success


def test_success_hold_out_of_range_is_refused_in_one_sentence() -> None:
    import pytest
    from s2r.sim import task_config

    with pytest.raises(ValueError, match=r"FlatBoxLiftConfig\.success_hold must be 0"):
        task_config(TASK, {"success_hold": -1})
