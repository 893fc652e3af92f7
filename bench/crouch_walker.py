"""How well the crouching walker (Go1-Velocity-Height-Flat, the confined policies' warm start) holds a body height.

Runs an exported policy on flat ground with fixed commands, forward speed `--vx` and each body height of
`--heights` in turn, pushes and latency as trained, and reports per height the mean base height and forward
speed over the last `--settle`-free seconds, and the share of envs that fell. `--task
Go1-Velocity-Height-Steps` runs the policy on the step field instead of its own task (same inputs): each row
then also counts the step-ups climbed per env (uninterrupted rises of the floor under the body of more than
2.5 cm) and `step_up_success`, the share of envs that climbed at least one step-up and did not fall.

    OMP_NUM_THREADS=1 python bench/crouch_walker.py runs/walker/crouch_walker --out bench/results/crouch_walker.json
    OMP_NUM_THREADS=1 python bench/crouch_walker.py tests/data/go1_crouch_walk --task Go1-Velocity-Height-Steps
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

STEP_RISE = 0.025  # (m) a rise of the floor under the body larger than this counts as a step-up


def check(run: Path, heights: list[float], vx: float, seconds: float, settle: float, envs: int,
          task: str | None = None) -> dict:
    """Mean height, speed and fall share per commanded height (one batch of `envs` per height); on `task`
    (default: the run's own) if given."""
    from s2r.policies.evaluate import OnnxPolicy, run_task_config
    from s2r.sim import make, task_config

    policy = OnnxPolicy(run)
    own, cfg = run_task_config(run)
    if task is not None and task != own:
        cfg = task_config(task)
    task = task or own
    # Commands held fixed for the whole run (no resampling inside it), no pushes: a tracking measurement.
    cfg = replace(cfg, commands=replace(cfg.commands, resample_s=1e9), episode_s=seconds + 1.0,
                  randomization=replace(cfg.randomization, push_velocity=0.0))
    rows = []
    for h in heights:
        env = make(task, envs, cfg=cfg, seed=0)
        obs = env.reset(seed=0)
        env.command[:] = [vx, 0.0, 0.0]
        env.height_command[:] = h
        fell = np.zeros(envs, dtype=bool)
        climbs = np.zeros(envs, dtype=int)
        up = np.zeros(envs)  # floor rise (m) since the floor last stopped rising
        zs, vs = [], []
        for k in range(round(seconds / env.spec.control_dt)):
            env.command[:] = [vx, 0.0, 0.0]
            env.height_command[:] = h
            floor = env.ground_z.copy()
            obs, _, term, _, _ = env.step(policy(obs["policy"]))
            fell |= term
            # A step-up: one uninterrupted rise of the mean floor under the body by more than STEP_RISE (m); the
            # footprint mean rises gradually, over ~0.4 m of travel across an edge, so rises are summed.
            rise = env.ground_z - floor
            up[~fell] += rise[~fell]
            up[rise <= 0] = 0.0
            climbs += (~fell) & (up > STEP_RISE) & (up - rise <= STEP_RISE)
            if k * env.spec.control_dt >= settle:
                zs.append(np.where(fell, np.nan, env.backend.qpos[:, 2] - env.ground_z))
                yaw = env.planar_pose()[:, 2]  # forward speed along the heading (the spawn yaw is random)
                v = env.backend.qvel[:, 0] * np.cos(yaw) + env.backend.qvel[:, 1] * np.sin(yaw)
                vs.append(np.where(fell, np.nan, v))
        env.close()
        rows.append({"height_command": h, "mean_height": float(np.nanmean(zs)), "mean_vx": float(np.nanmean(vs)),
                     "fall_share": float(fell.mean()), "step_ups_per_env": float(climbs.mean()),
                     "step_up_success": float(((climbs > 0) & ~fell).mean())})
        print(json.dumps(rows[-1]))
    return {"run": str(run), "task": task, "vx": vx, "seconds": seconds, "settle": settle, "envs": envs, "rows": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="run folder with policy.onnx (Go1-Velocity-Height-Flat)")
    p.add_argument("--heights", default="0.18,0.2,0.22,0.25,0.28")
    p.add_argument("--vx", type=float, default=0.5)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--settle", type=float, default=3.0)
    p.add_argument("--envs", type=int, default=8)
    p.add_argument("--task", default=None, help="run on this task instead of the run's own (same inputs)")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    res = check(a.run, [float(h) for h in a.heights.split(",")], a.vx, a.seconds, a.settle, a.envs, a.task)
    if a.out:
        a.out.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
