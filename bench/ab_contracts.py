"""Interleaved A/B of the contracts refactor: the same measurements on an older checkout and on this one.

Each measurement runs in a fresh interpreter of the tree it measures (so each side imports its own code),
the two sides alternate round by round, and the median of the rounds is reported:

- `env`: env-steps/s of Go1-Velocity-Flat, 256 envs, random actions (task code + CPU backend);
- `ppo`: env-steps/s of PPO training on Go1-Velocity-Flat, 256 envs, one torch thread: iterations 2-5 of a
  5-iteration run, as each run's history records them (the old `OnPolicyRunner` vs the run driver + `PPOTrainer`);
- `learner`: updates/s of the off-policy learner (10-critic LayerNorm ensemble, batch 256, hidden 256,
  one torch thread), the residual learner's hot path.

    python bench/ab_contracts.py --old-python /work/wt-old/.venv/bin/python --old-commit 9965f5b
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

MEASURE = r'''
import json, sys, time, tempfile
import numpy as np, torch
what, seconds = sys.argv[1], float(sys.argv[2])
if what == "env":
    from s2r.sim import make
    env = make("Go1-Velocity-Flat", 256, seed=0)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    act = lambda: rng.uniform(-1, 1, (256, env.spec.action_dim)).astype(np.float32)
    for _ in range(20):
        env.step(act())
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        env.step(act())
        n += 256
    print(json.dumps(n / (time.perf_counter() - t0)))
    env.close()
elif what == "ppo":
    from s2r.sim import task_config
    tcfg = task_config("Go1-Velocity-Flat")
    per_iter = 256 * 24
    with tempfile.TemporaryDirectory() as tmp:
        try:
            from s2r.policies.driver import Budget, RunSpec, RunDriver
            from s2r.policies.ppo import TrainConfig
            spec = RunSpec(algo="ppo", task_id="Go1-Velocity-Flat", task_cfg=tcfg,
                           cfg=TrainConfig(num_envs=256, save_every=1000, torch_threads=1), budget=Budget(steps=5 * per_iter))
            drv = RunDriver(spec, tmp, progress=False)
            drv.learn()
            h = drv.history
            print(json.dumps(4 * per_iter / sum(r["env_steps_per_s"] ** -1 * per_iter for r in h[1:])))
            drv.close()
        except ImportError:
            from s2r.policies.runner import OnPolicyRunner, TrainConfig
            cfg = TrainConfig(num_envs=256, max_env_steps=5 * per_iter, save_every=1000, torch_threads=1)
            runner = OnPolicyRunner("Go1-Velocity-Flat", tcfg, cfg, tmp, progress=False)
            runner.learn()
            h = runner.history
            print(json.dumps(4 * per_iter / sum(r["env_steps_per_s"] ** -1 * per_iter for r in h[1:])))
            runner.close()
elif what == "learner":
    torch.set_num_threads(1)
    from s2r.policies.offpolicy import OffPolicyConfig, OffPolicyLearner
    from s2r.policies.replay import ReplayBuffer
    cfg = OffPolicyConfig(actor="deterministic", num_critics=10, critic_hidden=(256, 256), actor_hidden=(256, 256),
                          batch_size=256, critic_warmup_updates=0)
    torch.manual_seed(0)
    learner = OffPolicyLearner({"policy": 32}, 8, cfg)
    buf = ReplayBuffer({"policy": 32}, 8, 20_000, num_envs=16)
    rng = np.random.default_rng(0)
    for _ in range(20_000 // 16):
        buf.add({"policy": rng.normal(size=(16, 32)).astype(np.float32)}, rng.uniform(-1, 1, (16, 8)).astype(np.float32),
                rng.normal(size=16).astype(np.float32), {"policy": rng.normal(size=(16, 32)).astype(np.float32)},
                rng.random(16) < 0.01, rng.random(16) < 0.01)
    gen = torch.Generator().manual_seed(0)
    learner.update_from(buf, num_updates=20, generator=gen)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        learner.update_from(buf, num_updates=10, generator=gen)
        n += 10
    print(json.dumps(n / (time.perf_counter() - t0)))
'''


def run(python: str, what: str, seconds: float) -> float:
    out = subprocess.run([python, "-c", MEASURE, what, str(seconds)], capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "2"})
    return float(out.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--old-python", required=True, help="python of a venv whose editable s2r is the older checkout")
    p.add_argument("--old-commit", required=True)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--what", default="env,ppo,learner", help="comma-separated measurements")
    p.add_argument("--out", default="bench/results/ab_contracts.json")
    args = p.parse_args()
    sides = {"old": args.old_python, "new": sys.executable}
    load0 = os.getloadavg()
    rows: dict[str, dict[str, list[float]]] = {}
    for r in range(args.rounds):
        for what in args.what.split(","):
            order = ("old", "new") if r % 2 == 0 else ("new", "old")
            for side in order:
                v = run(sides[side], what, args.seconds)
                rows.setdefault(what, {}).setdefault(side, []).append(round(v, 1))
                print(json.dumps({"round": r, "what": what, "side": side, "value": round(v, 1)}), flush=True)
    summary = {w: {"old_median": statistics.median(s["old"]), "new_median": statistics.median(s["new"]),
                   "new_over_old": round(statistics.median(s["new"]) / statistics.median(s["old"]), 3), **s}
               for w, s in rows.items()}
    new_commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    result = {"bench": "ab_contracts", "command": " ".join(["python", *sys.argv]), "old_commit": args.old_commit,
              "new_commit": new_commit, "units": {"env": "env steps/s", "ppo": "env steps/s", "learner": "updates/s"},
              "results": summary, "loadavg_before_after": [*load0, *os.getloadavg()], "cpu_count": os.cpu_count(),
              "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({w: s["new_over_old"] for w, s in summary.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
