"""How well the crouching walker (Go1-Velocity-Height-Flat, the confined policies' warm start) holds a body height.

Runs an exported policy on flat ground with fixed commands, forward speed `--vx` and each body height of
`--heights` in turn, pushes and latency as trained, and reports per height the mean base height and forward
speed over the last `--settle`-free seconds, and the share of envs that fell.

    OMP_NUM_THREADS=1 python bench/crouch_walker.py runs/walker/crouch_walker --out bench/results/crouch_walker.json
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np


def check(run: Path, heights: list[float], vx: float, seconds: float, settle: float, envs: int) -> dict:
    """Mean height, speed and fall share per commanded height (one batch of `envs` per height)."""
    from s2r.policies.evaluate import OnnxPolicy, run_task_config
    from s2r.sim import make

    policy = OnnxPolicy(run)
    task, cfg = run_task_config(run)
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
        zs, vs = [], []
        for k in range(round(seconds / env.spec.control_dt)):
            env.command[:] = [vx, 0.0, 0.0]
            env.height_command[:] = h
            obs, _, term, _, _ = env.step(policy(obs["policy"]))
            fell |= term
            if k * env.spec.control_dt >= settle:
                zs.append(np.where(fell, np.nan, env.backend.qpos[:, 2] - env.ground_z))
                yaw = env.planar_pose()[:, 2]  # forward speed along the heading (the spawn yaw is random)
                v = env.backend.qvel[:, 0] * np.cos(yaw) + env.backend.qvel[:, 1] * np.sin(yaw)
                vs.append(np.where(fell, np.nan, v))
        env.close()
        rows.append({"height_command": h, "mean_height": float(np.nanmean(zs)), "mean_vx": float(np.nanmean(vs)),
                     "fall_share": float(fell.mean())})
        print(json.dumps(rows[-1]))
    return {"run": str(run), "vx": vx, "seconds": seconds, "settle": settle, "envs": envs, "rows": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="run folder with policy.onnx (Go1-Velocity-Height-Flat)")
    p.add_argument("--heights", default="0.18,0.2,0.22,0.25,0.28")
    p.add_argument("--vx", type=float, default=0.5)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--settle", type=float, default=3.0)
    p.add_argument("--envs", type=int, default=8)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    res = check(a.run, [float(h) for h in a.heights.split(",")], a.vx, a.seconds, a.settle, a.envs)
    if a.out:
        a.out.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
