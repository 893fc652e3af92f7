"""Robot-side planner latency: `s2r.real.planner.Planner.plan` and the re-plan alone, one thread.

    python bench/planner_latency.py runs/Crazyflie-Replan-Waypoints/mfrl_<stamp> --sets 500 \
        --out bench/results/planner_latency

Draws --sets waypoint sets of 3-6 waypoints with the task's own sampler (seeds disjoint from training), then
times each with one onnxruntime thread and one BLAS thread (set before numpy loads): `plan_ms` the whole robot
call (checks, heuristic allocation, ONNX, min-snap, feasibility check, stretch or fallback), `replan_ms` the
ONNX + min-snap part, `heuristic_ms` the heuristic allocation alone. Each set is timed --repeats times; the
median per set (`*_ms`) and the fastest (`*_best_ms`: the call's own cost with preemption by other processes
removed, the figure that carries over to an unloaded robot core) are kept; p50/p99/max are over sets. Prints
one JSON line and writes it to <out>.json.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core, like the robot's planner node; must precede numpy

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from s2r.real.planner import Planner, PlannerConfig  # noqa: E402
from s2r.real.trajectory import heuristic_durations, min_snap  # noqa: E402


def _stats(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"p50": round(float(np.percentile(a, 50)), 4), "p99": round(float(np.percentile(a, 99)), 4),
            "max": round(float(a.max()), 4)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("policy", help="planner run folder (policy.onnx + policy.json)")
    p.add_argument("--sets", type=int, default=500)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=30_000)
    p.add_argument("--out", default="bench/results/planner_latency")
    args = p.parse_args()

    from s2r.sim.tasks.quadrotor import ReplanConfig, sample_waypoints

    task = ReplanConfig()
    planner = Planner(args.policy, PlannerConfig(threads=1))
    st = planner.settings
    rng = np.random.default_rng(args.seed)
    sets = [sample_waypoints(rng, int(rng.integers(task.min_waypoints, task.max_waypoints + 1)), task)
            for _ in range(args.sets)]
    load_before = os.getloadavg()
    rows: dict[str, list[float]] = {f"{k}{s}": [] for k in ("plan", "replan", "heuristic") for s in ("_ms", "_best_ms")}
    outcome = {"feasible": 0, "stretched": 0, "used_heuristic": 0}
    for w in sets:
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            heuristic_durations(w, st.limits, dt=st.feasibility_dt, **st.heuristic)
            t1 = time.perf_counter()
            res = planner.plan(w)
            t2 = time.perf_counter()
            min_snap(w, res.durations)
            t3 = time.perf_counter()
            times.append(((t1 - t0) * 1e3, (t2 - t1) * 1e3, (res.infer_s + t3 - t2) * 1e3))
        for stat, suffix in ((np.median, "_ms"), (np.min, "_best_ms")):
            for name, value in zip(("heuristic", "plan", "replan"), stat(np.array(times), axis=0), strict=True):
                rows[name + suffix].append(value)
        outcome["feasible"] += res.feasible
        outcome["stretched"] += res.stretched
        outcome["used_heuristic"] += res.used_heuristic
    result = {
        "bench": "planner_latency",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "policy": args.policy,
        "sets": args.sets,
        "repeats": args.repeats,
        **{k: _stats(v) for k, v in rows.items()},
        "outcomes": outcome,
        "loadavg_before_after": [round(x, 2) for x in (*load_before, *os.getloadavg())],
        "cpu_count": os.cpu_count(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
