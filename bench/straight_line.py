"""Straight-line drift and the walking criterion of exported Go1 policies, side by side.

    python bench/straight_line.py tests/data/go1_walk [runs/<task>/<run> ...] [--out bench/results/straight_line.json]

For each policy: `s2r eval`'s straight-line check (0.5 m/s forward for 4 m, zero sideways and yaw command,
pushes off, 50 envs, seeds 1-3) and bench/walk_eval.py's criterion (100 episodes of 20 s, forward commands
in [-1, 1] m/s). Both run the exported ONNX file through onnxruntime.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from s2r.policies.evaluate import OnnxPolicy, evaluate_straight, run_task_config

sys.path.insert(0, str(Path(__file__).parent))
from walk_eval import walk_eval

SEEDS = (1, 2, 3)


def measure(run: Path, episodes: int, walk_episodes: int) -> dict[str, object]:
    """Straight-line numbers (mean over SEEDS) and the walking criterion of one exported policy."""
    t0 = time.perf_counter()
    rows = [evaluate_straight(run, speed=0.5, distance_m=4.0, episodes=episodes, seed=s).as_dict() for s in SEEDS]
    straight = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    straight["per_seed_lateral_drift_pct"] = [r["lateral_drift_pct"] for r in rows]
    straight["per_seed_heading_deg"] = [r["mean_abs_heading_deg"] for r in rows]
    t1 = time.perf_counter()
    task_id, cfg = run_task_config(run)
    walk = walk_eval(OnnxPolicy(run), task_id, cfg, episodes=walk_episodes)
    return {"run": str(run), "straight": straight, "walk": walk,
            "wall_s": {"straight": round(t1 - t0, 1), "walk": round(time.perf_counter() - t1, 1)}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="run folders (policy.onnx + policy.json)")
    p.add_argument("--episodes", type=int, default=50, help="envs per straight-line seed")
    p.add_argument("--walk-episodes", type=int, default=100)
    p.add_argument("--out", help="JSON file to write")
    args = p.parse_args()
    out = {"command": "python bench/" + " ".join([Path(__file__).name, *sys.argv[1:]]),
           "load_before": os.getloadavg(), "results": []}
    for run in args.runs:
        row = measure(Path(run), args.episodes, args.walk_episodes)
        print(json.dumps(row), flush=True)
        out["results"].append(row)
    out["load_after"] = os.getloadavg()
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
