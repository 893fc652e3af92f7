"""Sweeps and multi-seed runs as Ray tasks: every (setting, seed) is one ordinary run of the run driver.

    s2r sweep Go1-Velocity-Flat --seeds 0 1 2 --grid algo.learning_rate=1e-3,3e-4 --minutes 20
    s2r sweep ... --address ray://head:10001        # the same sweep on a Ray cluster

Each run gets its own folder (`<out>/<setting>/seed<k>/`, with config, checkpoints, TensorBoard and
policy.onnx, as `s2r train` writes them), so a finished run is resumed, exported or evaluated like any
other. Ray schedules the runs on the CPUs (or GPUs) it has: `--cpus-per-run` / `--gpus-per-run` size each
one, and a run's torch and physics threads are held to its CPUs. Ray is the only cluster code here: locally
`ray.init()` starts it on this machine; with `--address` the runs go to an existing cluster. The summary
(`sweep.json`) gives each setting's final statistics over seeds as mean and spread, best setting first.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, kw_only=True)
class SweepSpec:
    """What to run.

    Attributes:
        task_id: Registered task id.
        algo: Algorithm id.
        seeds: One run per seed per setting.
        grid: Algorithm config key -> values; every combination is a setting (`--train-set` keys).
        task_grid: Task config key -> values, combined with `grid` the same way (`--set` keys).
        steps, minutes: Each run's budget (as `s2r train`).
        num_envs: Envs per run (None: the algorithm's default).
        cpus_per_run, gpus_per_run: Ray resources of one run.
        metric: History key the summary ranks settings by (higher is better unless it names an error or a rate).
    """

    task_id: str
    algo: str = "ppo"
    seeds: tuple[int, ...] = (0, 1, 2)
    grid: dict[str, tuple[str, ...]] | None = None
    task_grid: dict[str, tuple[str, ...]] | None = None
    steps: int | None = None
    minutes: float | None = None
    num_envs: int | None = None
    cpus_per_run: float = 1.0
    gpus_per_run: float = 0.0
    metric: str = "mean_return"


def settings(spec: SweepSpec) -> list[tuple[str, dict[str, str], dict[str, str]]]:
    """Every combination of the grids: (name, algo overrides, task overrides); one unnamed setting without grids."""
    axes = [("algo", k, v) for k, v in (spec.grid or {}).items()] + [("task", k, v) for k, v in (spec.task_grid or {}).items()]
    out = []
    for combo in itertools.product(*[vals for _, _, vals in axes]):
        algo_kw = {k: v for (kind, k, _), v in zip(axes, combo, strict=True) if kind == "algo"}
        task_kw = {k: v for (kind, k, _), v in zip(axes, combo, strict=True) if kind == "task"}
        name = ",".join(f"{k}={v}" for (_, k, _), v in zip(axes, combo, strict=True)) or "default"
        out.append((name, algo_kw, task_kw))
    return out


def _one_run(spec: SweepSpec, algo_kw: dict[str, str], task_kw: dict[str, str], seed: int, run_dir: str,
             threads: int) -> dict[str, Any]:
    """Runs inside a Ray worker: build the spec like `s2r train` does, train, return the summary."""
    import torch
    from s2r.policies.driver import Budget, new_run_spec, train

    torch.set_num_threads(threads)
    task_kw = {**task_kw}
    if "backend.num_threads" not in task_kw:
        task_kw["backend.num_threads"] = str(threads)  # physics threads within this run's CPUs
    rs = new_run_spec(spec.algo, spec.task_id, task_overrides=task_kw, algo_overrides=algo_kw,
                      num_envs=spec.num_envs, seed=seed, budget=Budget(steps=spec.steps, minutes=spec.minutes))
    return train(rs, run_dir, progress=False)


def run_sweep(spec: SweepSpec, out: str | Path, *, address: str | None = None) -> dict[str, Any]:
    """Run every (setting, seed) as a Ray task, wait for all, write and return the summary.

    Raises:
        ValueError: a grid key or value the configs refuse (checked here for every setting before Ray starts).
    """
    import ray
    from s2r.policies.driver import new_run_spec

    out = Path(out)
    combos = settings(spec)
    for _name, algo_kw, task_kw in combos:  # a typo fails now, in one sentence, not in a worker an hour later
        new_run_spec(spec.algo, spec.task_id, task_overrides=task_kw, algo_overrides=algo_kw, num_envs=spec.num_envs)
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        remote = ray.remote(num_cpus=spec.cpus_per_run, num_gpus=spec.gpus_per_run)(_one_run)
        threads = max(1, math.floor(spec.cpus_per_run))
        jobs = {}
        for name, algo_kw, task_kw in combos:
            for seed in spec.seeds:
                run_dir = out / _folder(name) / f"seed{seed}"
                jobs[(name, seed)] = remote.remote(spec, algo_kw, task_kw, seed, str(run_dir.resolve()), threads)
        results = dict(zip(jobs, ray.get(list(jobs.values())), strict=True))
    finally:
        if started:
            ray.shutdown()
    summary = summarize(spec, results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    return summary


def _folder(name: str) -> str:
    return name.replace("=", "-").replace(",", "_").replace("/", "_")


def summarize(spec: SweepSpec, results: dict[tuple[str, int], dict[str, Any]]) -> dict[str, Any]:
    """Per setting: each seed's final metric, mean and standard deviation; best setting first."""
    import numpy as np

    lower_better = any(w in spec.metric for w in ("error", "rate", "loss"))
    rows = []
    for name in dict.fromkeys(n for n, _ in results):
        per_seed = {s: results[(n, s)] for n, s in results if n == name}
        vals = [float(r[spec.metric]) for r in per_seed.values() if isinstance(r.get(spec.metric), (int, float))]
        rows.append({"setting": name, "seeds": sorted(per_seed), "metric": spec.metric, "values": vals,
                     "mean": float(np.mean(vals)) if vals else None, "std": float(np.std(vals)) if vals else None,
                     "run_dirs": [r["run_dir"] for r in per_seed.values()],
                     "wall_time_s": [round(float(r["wall_time_s"]), 1) for r in per_seed.values()]})
    rows.sort(key=lambda r: (r["mean"] is None, (r["mean"] or 0.0) * (1 if lower_better else -1)))
    return {"task_id": spec.task_id, "algo": spec.algo, "metric": spec.metric, "lower_is_better": lower_better,
            "settings": rows}
