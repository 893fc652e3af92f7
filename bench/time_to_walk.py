"""Time to walk on this machine: train our PPO in chunks, judge each export by the walking criterion.

    python bench/time_to_walk.py --minutes 30 --chunk 5 --out bench/results/time_to_walk

Prints one JSON line: per-chunk (training wall-clock minutes, env steps, tracking error, fall rate) and the
first training time at which the criterion (error <= 0.25 m/s, falls < 5%) held. Only training time is
counted; evaluation between chunks is not. Copies the learning curve PNG and the final policy to --out.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from s2r.policies.driver import Budget, RunSpec, train
from s2r.policies.evaluate import OnnxPolicy
from s2r.policies.ppo import TrainConfig
from s2r.sim import task_config
from walk_eval import walk_eval


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="Go1-Velocity-Flat")
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--chunk", type=float, default=5.0, help="minutes of training between evaluations")
    p.add_argument("--num-envs", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--out", default="bench/results/time_to_walk")
    p.add_argument("--run-dir", default="")
    p.add_argument("--backend", default="cpu", help="physics backend (cpu, warp)")
    p.add_argument("--device", default="", help="warp backend device (default: first GPU)")
    args = p.parse_args()

    run_dir = Path(args.run_dir or f"runs/bench/{args.task}-{time.strftime('%Y%m%d-%H%M%S')}")
    tcfg = task_config(args.task, {"backend.name": args.backend, "backend.device": args.device})
    chunks = []
    first_walk = None
    trained = 0.0
    resume = False
    while trained < args.minutes * 60 - 1:
        budget = min(args.chunk, args.minutes - trained / 60)
        cfg = TrainConfig(num_envs=args.num_envs, seed=args.seed)
        spec = RunSpec(algo="ppo", task_id=args.task, task_cfg=tcfg, cfg=cfg, seed=args.seed,
                       budget=Budget(steps=10**10, minutes=budget))
        res = train(spec, run_dir, resume=resume, progress=False)
        resume = True
        trained = res["wall_time_s"]
        policy = OnnxPolicy(run_dir)
        ev = walk_eval(policy, args.task, tcfg, episodes=args.episodes)
        row = {"train_minutes": round(trained / 60, 2), "env_steps": res["progress"], **ev}
        chunks.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        if ev["walks"] and first_walk is None:
            first_walk = trained / 60
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("learning_curve.png", "policy.onnx", "policy.json", "config.json", "history.json"):
        if (run_dir / name).is_file():
            shutil.copy(run_dir / name, out / name)
    result = {"bench": "time_to_walk", "task": args.task, "num_envs": args.num_envs, "seed": args.seed,
              "minutes_budget": args.minutes, "first_walk_minutes": first_walk, "chunks": chunks,
              "final": chunks[-1] if chunks else None, "run_dir": str(run_dir)}
    (out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
