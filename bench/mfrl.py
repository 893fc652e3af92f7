"""Multi-fidelity RL re-planning: train a planner, then score it on held-out waypoint sets.

    python bench/mfrl.py --rounds 40 --sets 200 --out bench/results/mfrl
    python bench/mfrl.py --quick          # 4 rounds, 40 sets: a smoke run in ~1 minute
    python bench/mfrl.py --run-dir RUN --eval-only --out bench/results/mfrl_s0   # score a trained run

Trains `s2r.policies.mfrl` on `Crazyflie-Replan-Waypoints` (the high-fidelity flights capped by --budget),
then runs `evaluate_planner` on --sets held-out waypoint sets (seeds disjoint from training): total time of
the planner's plans relative to minimum snap with the heuristic allocation and with the optimised one,
closed-loop success of all three in the high-fidelity simulator, low-fidelity feasibility, re-planning
latency (ONNX + min-snap, one thread, median of 3 per set) against the optimiser's, and the evaluations
used. Prints one JSON line; writes it to <out>.json with the learning curve as <out>_curve.png.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from s2r.policies.driver import Budget, RunSpec, train
from s2r.policies.mfrl import TASK_ID, MFRLConfig, evaluate_planner
from s2r.policies.mfrl.estimator import AcquisitionConfig
from s2r.sim import task_config


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--steps", type=int, default=150, help="policy gradient steps per round")
    p.add_argument("--budget", type=int, default=300, help="high-fidelity flights in the whole run")
    p.add_argument("--sets", type=int, default=200, help="held-out waypoint sets")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-seed", type=int, default=20_000)
    p.add_argument("--quick", action="store_true", help="4 rounds, 40 held-out sets")
    p.add_argument("--out", default="bench/results/mfrl", help="output prefix (.json, _curve.png)")
    p.add_argument("--run-dir", default="")
    p.add_argument("--eval-only", action="store_true", help="score the trained run in --run-dir, no training")
    args = p.parse_args()
    if args.quick:
        args.rounds, args.sets = 4, 40

    run_dir = Path(args.run_dir or f"runs/bench/mfrl-{time.strftime('%Y%m%d-%H%M%S')}")
    cfg = MFRLConfig(rounds=args.rounds, policy_steps=args.steps, seed=args.seed,
                     acquisition=AcquisitionConfig(high_budget=args.budget))
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    spec = RunSpec(algo="mfrl", task_id=TASK_ID, task_cfg=task_config(TASK_ID), cfg=cfg, seed=args.seed,
                   budget=Budget(steps=args.rounds))
    if args.eval_only:
        history = json.loads((run_dir / "history.json").read_text())
        trained = {"progress": history[-1]["progress"]}
        args.steps = int(json.loads((run_dir / "config.json").read_text())["algo_cfg"]["policy_steps"])
    else:
        trained = train(spec, run_dir, progress=False)
    train_s = 0.0 if args.eval_only else time.perf_counter() - t0
    t1 = time.perf_counter()
    ev = evaluate_planner(run_dir, n_sets=args.sets, seed=args.eval_seed)
    result = {
        "bench": "mfrl",
        "command": " ".join(["python", *sys.argv]),
        "task": TASK_ID,
        "rounds": trained["progress"],
        "policy_steps_per_round": args.steps,
        "high_fidelity_budget": args.budget,
        "train_minutes": round(train_s / 60, 2),
        "eval_minutes": round((time.perf_counter() - t1) / 60, 2),
        **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in ev.items()},
        "replan_speedup_vs_optimiser_p50": round(ev["optimiser_ms_p50"] / ev["replan_ms_p50"], 1),
        "loadavg_before_after": [round(x, 2) for x in (*load_before, *os.getloadavg())],
        "cpu_count": os.cpu_count(),
        "run_dir": str(run_dir),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    if (run_dir / "learning_curve.png").is_file():
        shutil.copy(run_dir / "learning_curve.png", out.parent / f"{out.name}_curve.png")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
