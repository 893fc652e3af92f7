"""Residual size and Q-filter keep-rate of a finished residual run on its demo states (nothing is trained).

    python bench/residual_probe.py <run folder> <task> [--k 1.0]

Resumes the run folder given (pass a copy: resuming opens its replay), samples 4096 demo states and prints one
JSON line: the residual in env units (mean per dimension, mean and max |r|), the share the paired Q-filter with
`--k` keeps, and the critics' mean advantage of the residual over the base against their per-head spread.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def main() -> None:
    from s2r.policies.driver import Budget, RunDriver, RunSpec
    from s2r.policies.residual import ResidualConfig
    from s2r.sim import task_config
    from s2r.sim.config import from_dict

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("task")
    p.add_argument("--k", type=float, default=None, help="filter k (default: the run's own, else 1)")
    args = p.parse_args()
    torch.set_num_threads(1)
    run = Path(args.run)
    saved = json.loads((run / "config.json").read_text())
    cfg = from_dict(ResidualConfig, saved["algo_cfg"])
    spec = RunSpec(algo="residual", task_id=args.task, task_cfg=task_config(args.task), cfg=cfg,
                   budget=Budget(steps=saved["budget"]["steps"]))
    driver = RunDriver(spec, run, resume=True, progress=False)
    try:
        learner = driver.algo.learner
        k = args.k if args.k is not None else (learner.cfg.q_filter if learner.cfg.q_filter is not None else 1.0)
        batch = driver.algo.demos.sample(4096, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            r, _ = learner.policy(batch.obs, sample=False)
            q_r, q_b = learner.q_pair(batch.obs, r)
        d = q_r - q_b  # (heads, states)
        env_r = torch.as_tensor(cfg.action_scale(), dtype=r.dtype) * r
        print(json.dumps({"run": str(run), "updates": learner.updates, "mean_r_env": env_r.mean(0).tolist(),
                          "mean_abs_r_env": float(env_r.abs().mean()), "max_abs_r_env": float(env_r.abs().max()),
                          "k": k, "kept": float((d.mean(0) - k * d.std(0) > 0).float().mean()),
                          "advantage_mean": float(d.mean()), "advantage_head_std": float(d.std(0).mean())}))
    finally:
        driver.close()


if __name__ == "__main__":
    main()
