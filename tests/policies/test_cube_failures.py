"""bench/cube_failures.py: episodes traced from the policy observations fall into the right failure class."""

from __future__ import annotations

import numpy as np
from s2r.sim import make
from s2r.sim.tasks.experts import make_expert

from tests.bench_modules import load_bench


class _Expert:
    reads_groups = True  # the scripted expert reads the privileged group too

    def __init__(self, task: str, n: int) -> None:
        self.e = make_expert(task, n, seed=0)

    def __call__(self, obs: dict) -> np.ndarray:
        return self.e.act(obs)

    def reset(self, ids: np.ndarray) -> None:
        self.e.reset(ids)


def test_classify_separates_miss_drop_and_held() -> None:
    bench = load_bench("cube_failures")
    tr = {"success": np.array([True, False, False, False]), "rise_max": np.array([0.06, 0.004, 0.04, 0.03]),
          "rise_last": np.array([0.06, 0.0, 0.012, 0.025])}
    assert bench.classify(tr).tolist() == ["success", "never_raised", "dropped", "held_short"]


def test_idle_policy_never_raises_and_expert_lifts_on_the_real_env() -> None:
    bench = load_bench("cube_failures")
    env = make("Panda-Lift-Cube", 4, seed=3)
    try:
        idle = bench.trace_episodes(lambda o: np.zeros((len(o), 4), np.float32), env, seed=3)
        expert = _Expert("Panda-Lift-Cube", 4)
        good = bench.trace_episodes(expert, env, seed=3, reset=expert.reset)
    finally:
        env.close()
    assert bench.classify(idle).tolist() == ["never_raised"] * 4
    assert np.isnan(idle["target_dist_last"]).all() and np.isnan(idle["grip_cmd_raised"]).all()
    s = bench.summarise(good)
    assert s["success"]["count"] >= 3 and s["success"]["rise_max_mean"] >= 0.04
    # The expert closes the gripper while it holds the cube up (+1 is closed).
    assert s["success"]["grip_cmd_while_raised_mean"] > 0.5


def test_pick_place_reports_the_distance_to_the_target() -> None:
    bench = load_bench("cube_failures")
    env = make("Panda-PickPlace-Cube", 2, seed=0)
    try:
        tr = bench.trace_episodes(lambda o: np.zeros((len(o), 4), np.float32), env, seed=0)
    finally:
        env.close()
    assert np.isfinite(tr["target_dist_last"]).all() and (tr["target_dist_last"] > 0.0).all()
