"""Behaviour checks for refactors, on whichever s2r this interpreter imports: the committed walking policy on
the walking criterion (100 episodes) and a BC lift base (10 noisy demos, 1000 updates) over 100 episodes x 3 seeds.

    python bench/behaviour_checks.py <repo root>      # prints one JSON line
"""
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, sys.argv[1])  # repo root for bench/
out = {}
# (a) the committed walking policy, walking criterion, 100 episodes
from s2r.policies.evaluate import OnnxPolicy
from s2r.sim import task_config

from bench.walk_eval import walk_eval

t = time.time()
pol = OnnxPolicy(Path(sys.argv[1]) / "bench/results/time_to_walk")
out["walk"] = walk_eval(pol, "Go1-Velocity-Flat", task_config("Go1-Velocity-Flat"), episodes=100)
out["walk_s"] = time.time() - t
# (c) BC lift base: 10 noisy demos, 1000 updates, m=0.1, success over 100 episodes, seeds 1-3
from s2r.policies.bc import BCConfig, train_bc
from s2r.policies.demos import collect_demos
from s2r.policies.evaluate import evaluate_success

with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    d = collect_demos("Panda-Lift-Cube", tmp / "demos", 10, noise=0.3, seed=0, progress=False)
    b = train_bc("Panda-Lift-Cube", tmp / "demos", tmp / "bc", BCConfig(updates=1000, ensemble_m=0.1), progress=False)
    out["demos_success"] = d["success_rate"]
    out["bc_final_loss"] = b["final_loss"]
    out["bc_lift_success"] = [evaluate_success(tmp / "bc", episodes=100, seed=s)["success_rate"] for s in (1, 2, 3)]
print(json.dumps(out))
