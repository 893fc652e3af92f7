"""Panda-Drawer-Cube scripted references: the two-stage expert, and the one-stage baseline that skips the drawer.

    OMP_NUM_THREADS=1 python bench/drawer_cube.py --episodes 100 --seeds 0 1 --out bench/results/drawer_cube

`DrawerCubeExpert` pulls the drawer open by its tab, then picks the cube up and puts it in the tray; the
baseline (`one_stage=True`) goes straight for the cube and lets go of it over the slot with the drawer still
shut, i.e. on the cabinet's top. Each seed runs `--episodes` envs for one episode each at privilege scale 0
(the plain task). Per episode it records success, the largest drawer opening, whether the drawer reached
`open_distance`, whether the cube was ever in the tray, and the episode length; the JSON holds the rates.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

TASK = "Panda-Drawer-Cube"


def episodes(env, expert, seed: int) -> dict[str, np.ndarray]:
    """One episode per env; per episode "success", "max_opening" (m), "in_tray" (ever) and "length" (steps)."""
    n = env.num_envs
    obs = env.reset(seed=seed)
    expert.reset()
    done = np.zeros(n, dtype=bool)
    out = {"success": np.zeros(n, bool), "max_opening": np.zeros(n), "in_tray": np.zeros(n, bool),
           "length": np.zeros(n, np.int64)}
    while not done.all():
        obs, _, term, trunc, info = env.step(expert.act(obs))
        live = ~done
        b = env.behaviour()
        out["max_opening"][live] = np.maximum(out["max_opening"][live], b["opening"][live])
        out["in_tray"][live] |= b["in_tray"][live] | info["success"][live]
        out["success"][live] |= info["success"][live]
        out["length"][live] += 1
        done |= term | trunc
    return out


def run(name: str, one_stage: bool, seed: int, n: int) -> dict:
    from s2r.sim import make, task_config
    from s2r.sim.tasks.drawer_expert import DrawerCubeExpert
    from s2r.sim.tasks.manipulation import DrawerCubeEnv

    cfg = task_config(TASK, {"backend.num_threads": 1})
    env = make(TASK, n, cfg=cfg, seed=seed)
    try:
        t0 = time.perf_counter()
        ex = DrawerCubeExpert(cfg, DrawerCubeEnv, n, 0.0, 0.0, seed, one_stage=one_stage)
        r = episodes(env, ex, seed)
        wall = time.perf_counter() - t0
    finally:
        env.close()
    ok = r["success"]
    return {"policy": name, "seed": seed, "episodes": n, "success_rate": float(ok.mean()),
            "opened_rate": float((r["max_opening"] >= cfg.open_distance).mean()),
            "in_tray_rate": float(r["in_tray"].mean()), "mean_max_opening_m": round(float(r["max_opening"].mean()), 4),
            "mean_success_length": float(r["length"][ok].mean()) if ok.any() else None,
            "max_success_length": int(r["length"][ok].max()) if ok.any() else None,
            "failed_envs": np.flatnonzero(~ok).tolist(), "wall_s": round(wall, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--out", default="bench/results/drawer_cube")
    args = p.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    load_before = os.getloadavg()
    results = []
    for seed in args.seeds:
        for name, one_stage in (("DrawerCubeExpert", False), ("one_stage_baseline", True)):
            res = run(name, one_stage, seed, args.episodes)
            print(json.dumps(res), flush=True)
            results.append(res)
    doc = {"command": " ".join([sys.executable, *sys.argv]), "git_commit": commit, "task": TASK,
           "loadavg_before": load_before, "loadavg_after": os.getloadavg(), "cpu_threads": 1,
           "note": "shared 2-core machine; privilege scale 0 (the plain task); one episode per env",
           "goal": "expert >= 90% over 100 episodes on 2 seeds; one-stage baseline fails", "results": results}
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
