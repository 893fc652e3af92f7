"""bench/confined.py's FailureProbe: how an evaluation episode ended (stall, fall, success) and ceiling contact."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from s2r.sim import make, task_config
from s2r.sim.terrain.confined import EVAL_SEEDS

from tests.bench_modules import load_bench


def _bench():
    return load_bench("confined")


def test_a_standing_robot_stalls_and_one_pressed_into_a_ceiling_touches_it() -> None:
    bench = _bench()
    task = "Go1-Waypoints-Confined"
    cfg = task_config(task)
    cfg = replace(cfg, map_seed=EVAL_SEEDS[0], difficulty=1.0,
                  randomization=replace(cfg.randomization, push_velocity=0.0, observation_noise=0.0))
    env = make(task, 2, cfg=cfg, seed=0)
    try:
        env.reset(seed=0)
        probe = bench.FailureProbe(env)
        maps = env.maps
        j = int(maps.column(np.zeros(1, dtype=int), np.array([[maps.origins[0, 0], 0.0]]))[1][0])
        free = maps.ceil_z[0, :, j] - maps.floor_z[0, :, j]
        i = int(np.flatnonzero((free > 0.1) & (free < 0.40))[0])  # a low ceiling on the tunnel's middle line
        live = np.ones(2, dtype=bool)
        steps = round(bench.STALL_S / env.spec.control_dt) + 5
        for k in range(steps):
            env.step(np.zeros((2, 12)))  # both stand still at the start
            if k == steps - 1:
                # Env 1 is put under the ceiling with its trunk's top 1 cm into it, for the last step.
                q = env.backend.qpos
                q[1, 0] = maps.origins[0, 0] + (i + 4.5) * maps.res
                q[1, 1] = 0.0
                q[1, 2] = maps.ceil_z[0, i + 4, j] - 0.057 + 0.01
                q[1, 3:7] = [1.0, 0.0, 0.0, 0.0]
                env.ground_z[1] = maps.floor_z[0, i + 4, j]
            before = probe.ceiling_steps.copy()
            probe.record(live)
        out = probe.summary(np.array([False, False]), np.array([False, False]))
        assert out["per_episode"][0] == "stall"  # timed out, never moved
        # (Env 1's spawn is beside a hanging block of this map, which its head touched on its first steps.)
        assert (probe.ceiling_steps - before).tolist() == [0, 1] and probe.ceiling_steps[0] == 0
        assert out["ceiling_contact_episodes"] == 1 and out["under_low_ceiling_episodes"] == 1
        assert out["min_height_under_low_ceiling_m"][0] is None
        won = probe.summary(np.array([True, False]), np.array([False, True]))
        assert won["counts"] == {"success": 1, "fall": 1, "stall": 0, "slow": 0}
        assert won["fall_at_low_ceiling"] == 1  # env 1's last recorded pose was under the low ceiling
    finally:
        env.close()


def test_falls_are_counted_on_the_held_out_maps_with_a_step_up() -> None:
    from s2r.sim.terrain.confined import generate

    bench = _bench()
    steps = bench.step_maps(6)
    assert steps == ["step" in generate(s, 1.0).features for s in EVAL_SEEDS[:6]]  # the same at every level
    cls = np.where(steps, "fall", "success").tolist()
    other = np.where(steps, "stall", "fall").tolist()
    run = {"levels": [{"outcomes": {"per_episode": cls}}]}
    res = {"maps_per_level": 6, "levels": [1.0],
           "methods": {"waypoints": {"per_seed": [run, {"levels": [{"outcomes": {"per_episode": other}}]}]}}}
    row = bench.step_falls(res)["methods"]["waypoints"][0]
    k = sum(steps)
    assert row == {"level": 1.0, "falls": 6, "falls_on_step_maps": k, "successes_on_step_maps": 0,
                   "episodes_on_step_maps": 2 * k}
