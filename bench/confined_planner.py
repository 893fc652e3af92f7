"""Confined-space planner latency (`s2r.real.confined_planner`) on 20 m x 5 m x 2 m maps at 5 cm voxels, one thread.

    python bench/confined_planner.py --maps 30 --starts 20 --out bench/results/confined_planner

Maps are the held-out evaluation seeds of `s2r.sim.terrain.confined` at difficulties 0, 0.5 and 1 (400 x 100
x 40 = 1.6 M voxels each). Per map, `full_ms` is everything the robot does for a new map and goal: columns
and costs from the voxels, the graph, the Dijkstra search from the goal, and the waypoints from the map's
start (`build_ms` + `search_ms` + the plan). Per random walkable start, `replan_ms` is a re-plan against the
cached search (tree walk, shortcuts, waypoints). Each is timed --repeats times; the median (`*_ms`) and the
fastest (`*_best_ms`: the call's own cost with preemption by other processes removed) are kept, and
p50/p99/max are over maps (or starts). The machine is shared: the load average before and after is recorded.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core, like the robot's planner node; must precede numpy

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import scipy  # noqa: E402
from s2r.real.confined_planner import ConfinedPlanner, UnreachableGoal  # noqa: E402
from s2r.sim.terrain.confined import EVAL_SEEDS, ConfinedConfig, generate  # noqa: E402


def _stats(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"p50": round(float(np.percentile(a, 50)), 3), "p99": round(float(np.percentile(a, 99)), 3),
            "max": round(float(a.max()), 3), "n": len(a)}


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--maps", type=int, default=30, help="maps per difficulty")
    p.add_argument("--starts", type=int, default=20, help="re-plan starts per map")
    p.add_argument("--difficulties", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="bench/results/confined_planner")
    args = p.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    cfg = ConfinedConfig(length=20.0, width=5.0, height=2.0, resolution=0.05)
    rng = np.random.default_rng(0)
    t_start = time.time()
    load_before = os.getloadavg()
    rows: dict[str, list[float]] = {k: [] for k in ("full_ms", "full_best_ms", "build_ms", "search_ms",
                                                    "replan_ms", "replan_best_ms")}
    per_difficulty: dict[str, dict] = {}
    unreachable = 0
    for d in args.difficulties:
        full_d, replan_d = [], []
        for seed in EVAL_SEEDS[: args.maps]:
            cmap = generate(seed, d, cfg)
            occ = cmap.voxels()
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                planner = ConfinedPlanner(occ, cmap.resolution, cmap.origin)
                t1 = time.perf_counter()
                planner.set_goal(cmap.goal)
                t2 = time.perf_counter()
                planner.plan(cmap.start)
                t3 = time.perf_counter()
                times.append(((t3 - t0) * 1e3, (t1 - t0) * 1e3, (t2 - t1) * 1e3))
            arr = np.array(times)
            med = np.median(arr, axis=0)
            rows["full_ms"].append(med[0])
            rows["full_best_ms"].append(arr[:, 0].min())
            rows["build_ms"].append(med[1])
            rows["search_ms"].append(med[2])
            full_d.append(med[0])
            reach = np.argwhere(np.isfinite(planner._ctg.reshape(planner.shape[:2])))
            for k in rng.choice(len(reach), size=min(args.starts, len(reach)), replace=False):
                start = cmap.origin[:2] + (reach[k] + 0.5) * cmap.resolution
                rt = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    try:
                        planner.plan(start)
                    except UnreachableGoal:
                        unreachable += 1
                        break
                    rt.append((time.perf_counter() - t0) * 1e3)
                if rt:
                    rows["replan_ms"].append(float(np.median(rt)))
                    rows["replan_best_ms"].append(min(rt))
                    replan_d.append(float(np.median(rt)))
        per_difficulty[str(d)] = {"full_ms": _stats(full_d), "replan_ms": _stats(replan_d)}
    result = {
        "bench": "confined_planner",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "git_commit": _commit(),
        "map": {"length_m": cfg.length, "width_m": cfg.width, "height_m": cfg.height, "resolution_m": cfg.resolution,
                "voxels": int(np.prod(cmap.shape)), "seeds": f"EVAL_SEEDS[:{args.maps}]",
                "difficulties": args.difficulties},
        "repeats": args.repeats,
        **{k: _stats(v) for k, v in rows.items()},
        "per_difficulty": per_difficulty,
        "goals": {"full_p99_ms": 50.0, "replan_p99_ms": 10.0},
        "unreachable_starts": unreachable,
        "threads": 1,
        "loadavg_before_after": [round(x, 2) for x in (*load_before, *os.getloadavg())],
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "wall_s": round(time.time() - t_start, 1),
        # Written from the measured load (the first runs shared the machine with other jobs; later ones did not).
        "note": f"1-minute load average {load_before[0]:.2f} at the start on {os.cpu_count()} cores: *_ms include "
                "any preemption, *_best_ms (the fastest repeat) much less so",
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
