"""Round 8 of the flat-box curriculum: the held success as a privilege that fades (`RelaxedHold`) and the bridge
reward on a squeeze (`reward.squeeze`). At scale 1 a box thrown up with no pad on it succeeds, at scale 0 it does
not; the squeeze term is paid to the scripted expert's grasp and not to pads closed on the box's top face."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from s2r.sim import make, task_config
from s2r.sim.tasks.experts import FlatBoxExpert, make_expert
from s2r.sim.tasks.manipulation import FlatBoxLiftEnv, RelaxedHold, VirtualWrench
from s2r.sim.tasks.manipulation.privileged import relaxed_hold_steps

from tests.sim.test_flatbox_hold import throw_the_box_up

TASK = "Panda-Lift-FlatBox"


def test_hold_steps_fade_from_an_instant_lift_to_the_full_hold() -> None:
    assert [relaxed_hold_steps(5, s) for s in (1.0, 0.5, 0.25, 0.12, 0.06, 0.0)] == [0, 2, 4, 4, 5, 5]
    with pytest.raises(ValueError, match="scale"):
        relaxed_hold_steps(5, 1.5)


def test_a_throw_without_a_hold_succeeds_at_scale_1_and_not_at_0() -> None:
    """The ungated wrench throws the box above the success height with no pad on it (as in test_flatbox_hold)."""
    cfg = replace(task_config(TASK, {"backend.num_threads": 1}),
                  privileged=(VirtualWrench(max_force=1.5, reach_radius=0.0), RelaxedHold()))
    ends = {}
    for hold_scale in (1.0, 0.0):
        env = make(TASK, 2, cfg=cfg, seed=3)
        try:
            env.reset(seed=3)
            env.set_privilege_scale({"virtual_wrench": 1.0, "relaxed_hold": hold_scale})
            assert env.success_hold_now() == (0 if hold_scale else 5)
            ends[hold_scale] = throw_the_box_up(env)
        finally:
            env.close()
    assert ends[1.0][0].all()  # relaxed: the throw counts
    assert (ends[0.0][1] > 0.04).all() and not ends[0.0][0].any()  # the full hold: up, never squeezed, no success


def test_relaxed_hold_is_refused_where_there_is_no_hold() -> None:
    with pytest.raises(ValueError, match="relaxed_hold"):
        replace(task_config("Panda-Lift-Cube", {}), privileged=(RelaxedHold(),))
    with pytest.raises(ValueError, match="relaxed_hold"):
        replace(task_config(TASK, {"success_hold": 0}), privileged=(RelaxedHold(),))
    with pytest.raises(ValueError, match="squeeze"):
        task_config(TASK, {"reward.squeeze": -0.1})


SQUEEZE_ONLY = {"backend.num_threads": 1, "reward.reach": 0.0, "reward.turn": 0.0, "reward.lift": 0.0,
                "reward.success": 0.0, "reward.squeeze": 1.0}


def test_squeeze_reward_pays_the_experts_grasp() -> None:
    n = 2
    env = make(TASK, n, cfg=task_config(TASK, SQUEEZE_ONLY), seed=11)
    expert = make_expert(TASK, n, seed=11)
    try:
        obs = env.reset(seed=11)
        done, paid_lifting, paid_pushing = np.zeros(n, bool), 0, 0
        for _ in range(env.cfg.max_episode_steps):
            phase = expert.phase.copy()
            obs, reward, term, trunc, _ = env.step(expert.act(obs))
            live = ~done & ~(term | trunc)
            lifting = live & (phase == expert.LIFT) & (env.behaviour()["lift"] > 0.005)
            assert (reward[lifting] == 1.0).all()  # squeezed while it lifts: paid every step
            paid_lifting += int(lifting.sum())
            paid_pushing += int((reward[live & (phase == expert.PUSH)] > 0).sum())
            done |= term | trunc
            if done.all():
                break
    finally:
        env.close()
    assert paid_lifting > 0 and paid_pushing == 0


def test_squeeze_reward_is_not_paid_to_pads_on_the_top_face() -> None:
    env = make(TASK, 2, cfg=task_config(TASK, SQUEEZE_ONLY), seed=11)
    try:
        baseline = FlatBoxExpert(env.cfg, FlatBoxLiftEnv, 2, 0.0, 0.0, 11, turn=False)
        obs = env.reset(seed=11)
        closed_on_top = 0
        for _ in range(45):  # the top-down grasp closes on the unturned box's top face and goes up
            obs, reward, *_ = env.step(baseline.act(obs))
            on_top = baseline.phase == baseline.LIFT
            assert (reward[on_top] == 0.0).all()
            closed_on_top += int(on_top.sum())
    finally:
        env.close()
    assert closed_on_top > 0
