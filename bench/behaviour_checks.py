"""Behaviour checks for refactors, on whichever s2r this interpreter imports.

The committed walking policy on the walking criterion (100 episodes), and a BC lift base (10 noisy demos,
1000 updates, ensembling m = 0.1) over 100 episodes x 3 seeds. Run it with each checkout's python to compare:

    python bench/behaviour_checks.py <repo root>      # prints one JSON line
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path


def main(root: Path) -> dict:
    sys.path.insert(0, str(root))  # bench/ of the checkout being measured
    from s2r.policies.bc import BCConfig, train_bc
    from s2r.policies.demos import collect_demos
    from s2r.policies.evaluate import OnnxPolicy, evaluate_success
    from s2r.sim import task_config

    from bench.walk_eval import walk_eval

    out: dict = {}
    t = time.time()
    pol = OnnxPolicy(root / "bench/results/time_to_walk")
    out["walk"] = walk_eval(pol, "Go1-Velocity-Flat", task_config("Go1-Velocity-Flat"), episodes=100)
    out["walk_s"] = time.time() - t
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        d = collect_demos("Panda-Lift-Cube", work / "demos", 10, noise=0.3, seed=0, progress=False)
        b = train_bc("Panda-Lift-Cube", work / "demos", work / "bc", BCConfig(updates=1000, ensemble_m=0.1), progress=False)
        out["demos_success"] = d["success_rate"]
        out["bc_final_loss"] = b["final_loss"]
        out["bc_lift_success"] = [evaluate_success(work / "bc", episodes=100, seed=s)["success_rate"] for s in (1, 2, 3)]
    return out


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
