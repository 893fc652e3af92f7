"""Bit-for-bit behaviour fingerprint of the tasks: refactors of sim/ must leave these hashes unchanged.

Steps each task with 8 envs, seed 2, uniform random actions from a fixed generator, and hashes every
observation group, reward, terminated and truncated array of 300 control steps (fewer for the slow tasks).
A changed hash means the numbers changed: say why in the commit, or find the bug.

    python bench/behaviour_hash.py            # prints one line per task and writes bench/results/behaviour_hash.json
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

STEPS = {"Go1-Velocity-Flat": 300, "Go1-Velocity-Rough": 100, "Puck-Velocity-Flat": 300, "Panda-Lift-Cube": 100,
         "Panda-Insert-Peg": 60, "Crazyflie-Replan-Waypoints": 3, "Go1-Velocity-Terrain": 100}


def task_hash(task_id: str, steps: int, num_envs: int = 8, seed: int = 2) -> str:
    from s2r.sim import make

    env = make(task_id, num_envs, seed=seed)
    h = hashlib.sha256()
    try:
        rng = np.random.default_rng(seed)
        obs = env.reset(seed=seed)
        for _ in range(steps):
            for g in sorted(obs):
                h.update(np.ascontiguousarray(np.asarray(obs[g], dtype=np.float64)).tobytes())
            act = rng.uniform(-1.0, 1.0, (num_envs, env.spec.action_dim)).astype(np.float32)
            obs, rew, term, trunc, _ = env.step(act)
            for a in (rew, term, trunc):
                h.update(np.ascontiguousarray(np.asarray(a, dtype=np.float64)).tobytes())
    finally:
        env.close()
    return h.hexdigest()[:16]


def main() -> int:
    only = sys.argv[1:]
    out = {}
    for task, steps in STEPS.items():
        if only and task not in only:
            continue
        out[task] = task_hash(task, steps)
        print(f"{task:28s} {out[task]}", flush=True)
    if not only:
        path = Path(__file__).parent / "results" / "behaviour_hash.json"
        path.write_text(json.dumps({"command": "python bench/behaviour_hash.py", "hashes": out}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
