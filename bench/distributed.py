"""Data-parallel PPO on CPU ranks (gloo): env-steps/s with 1 and 2 ranks, and equal weights after the run.

    python bench/distributed.py --steps 200000 --num-envs 256

Each configuration is a real `torchrun ... -m s2r.policies.cli train Go1-Velocity-Flat` run (one torch and one
physics thread per rank, so two ranks use the two cores that one rank's physics pool would otherwise use).
Equal weights across ranks are asserted by tests/policies/test_distributed.py. Writes bench/results/distributed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(ranks: int, steps: int, num_envs: int, task: str, root: Path) -> dict:
    run_dir = root / f"ranks{ranks}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks), "--master-port", str(_port()),
           "-m", "s2r.policies.cli", "train", task, "--num-envs", str(num_envs), "--steps", str(steps),
           "--run-dir", str(run_dir), "--no-progress", "--train-set", "torch_threads=1",
           "--set", "backend.num_threads=1"]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    res = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")][-1]
    hist = json.loads((run_dir / "history.json").read_text())
    sps = [h["env_steps_per_s"] for h in hist[2:] if "env_steps_per_s" in h]  # skip warm-up iterations
    return {"ranks": ranks, "num_envs_per_rank": num_envs, "steps": res["progress"], "wall_s": round(wall, 1),
            "env_steps_per_s_median": round(sorted(sps)[len(sps) // 2], 1) if sps else None,
            "mean_return": res.get("mean_return"), "command": " ".join(cmd[1:])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=200_000)
    ap.add_argument("--num-envs", type=int, default=256, help="envs per rank")
    ap.add_argument("--task", default="Go1-Velocity-Flat")
    ap.add_argument("--out", default="bench/results/distributed.json")
    args = ap.parse_args()
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        one = run(1, args.steps, args.num_envs, args.task, Path(tmp))
        two = run(2, args.steps, args.num_envs, args.task, Path(tmp))
    res = {"bench": "distributed", "command": "python " + " ".join(sys.argv), "cores": os.cpu_count(),
           "load_avg_1min_start": round(load0, 2), "load_avg_1min_end": round(os.getloadavg()[0], 2),
           "one_rank": one, "two_ranks": two,
           "scaling": round(two["env_steps_per_s_median"] / one["env_steps_per_s_median"], 3)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
