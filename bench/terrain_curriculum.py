"""PPO on the terrain curriculum: mean terrain level and fall rate against env steps, then the walking check on
the middle level.

    OMP_NUM_THREADS=1 python bench/terrain_curriculum.py --minutes 30 --chunk 10 --out bench/results/terrain_curriculum

Trains `Go1-Velocity-Terrain` (curriculum, wide randomisation, privileged height scan for the critic) in chunks
of `--chunk` minutes (1 torch thread). After each chunk the exported policy is judged by the flat task's
walking criterion (bench/walk_eval.py: forward commands in [-1, 1] m/s, 20 s episodes, error <= 0.25 m/s and
falls < 5 %) with every env on level `--eval-level` (`curriculum.fixed_level`), spread over the six terrain
types. Only training time counts towards the budget. Writes <out>.json (per-iteration level and fall rate,
per-chunk evaluations, the first training minute at which it walked, or null) and <out>.png; the JSON is
rewritten after every chunk, so a run stopped early leaves its partial result.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def plot(history: list[dict], chunks: list[dict], path: Path) -> None:
    """Mean terrain level and fall rate against env steps, with the chunk evaluations marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["progress"] for r in history if "mean_terrain_level" in r]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    ax[0].plot(steps, [r["mean_terrain_level"] for r in history if "mean_terrain_level" in r])
    ax[0].set_ylabel("mean terrain level (finished episodes)")
    ax[1].plot(steps, [r.get("fall_rate", float("nan")) for r in history if "mean_terrain_level" in r],
               label="training (curriculum)")
    ax[1].plot([c["env_steps"] for c in chunks], [c["fall_rate"] for c in chunks], "o",
               label="eval, level 4, forward commands")
    ax[1].set_ylabel("fall rate")
    ax[1].legend()
    for a in ax:
        a.set_xlabel("env steps")
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_grid(path: Path) -> None:
    """Top view of the default terrain grid (heights in m), levels along x and types along y."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from s2r.sim.terrain.curriculum import TerrainGridConfig, build_grid

    grid = build_grid(TerrainGridConfig())
    c = grid.cfg
    ny, nx = grid.heights.shape
    extent = (grid.x0, grid.x0 + (nx - 1) * c.resolution, grid.y0, grid.y0 + (ny - 1) * c.resolution)
    fig, ax = plt.subplots(figsize=(9, 6.5))
    im = ax.imshow(grid.heights, origin="lower", extent=extent, cmap="terrain")
    fig.colorbar(im, ax=ax, label="height (m)")
    ticks = grid.tile_centre(np.arange(c.levels), np.zeros(c.levels, dtype=int))[:, 0]
    ax.set_xticks(ticks, [f"level {i}" for i in range(c.levels)], rotation=45)
    ticks = grid.tile_centre(np.zeros(len(c.types), dtype=int), np.arange(len(c.types)))[:, 1]
    ax.set_yticks(ticks, list(c.types))
    ax.set_title("Go1-Velocity-Terrain grid (tile 4 m, vertex spacing 5 cm)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="Go1-Velocity-Terrain")
    p.add_argument("--minutes", type=float, default=30.0, help="training minutes (evaluations not counted)")
    p.add_argument("--chunk", type=float, default=10.0, help="training minutes between evaluations")
    p.add_argument("--num-envs", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-level", type=int, default=4)
    p.add_argument("--episodes", type=int, default=60, help="evaluation episodes (spread over the terrain types)")
    p.add_argument("--out", default="bench/results/terrain_curriculum")
    p.add_argument("--run-dir", default="")
    p.add_argument("--grid-png", default="", help="only draw the terrain grid's top view to this PNG and exit")
    args = p.parse_args()
    if args.grid_png:
        plot_grid(Path(args.grid_png))
        return

    import torch

    torch.set_num_threads(1)
    from s2r.policies.driver import Budget, RunSpec, train
    from s2r.policies.evaluate import OnnxPolicy
    from s2r.policies.ppo import TrainConfig
    from s2r.sim import task_config
    from walk_eval import walk_eval

    run_dir = Path(args.run_dir or f"runs/bench/{args.task}-{time.strftime('%Y%m%d-%H%M%S')}")
    tcfg = task_config(args.task)
    eval_cfg = task_config(args.task, {"curriculum.fixed_level": args.eval_level})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    chunks: list[dict] = []
    first_walk = None
    trained = 0.0
    resume = False
    t_start = time.perf_counter()
    history: list[dict] = []
    while trained < args.minutes * 60 - 1:
        budget = min(args.chunk, args.minutes - trained / 60)
        cfg = TrainConfig(num_envs=args.num_envs, seed=args.seed, torch_threads=1)
        spec = RunSpec(algo="ppo", task_id=args.task, task_cfg=tcfg, cfg=cfg, seed=args.seed,
                       budget=Budget(steps=10**10, minutes=budget))
        res = train(spec, run_dir, resume=resume, progress=False)
        resume = True
        trained = res["wall_time_s"]
        t0 = time.perf_counter()
        ev = walk_eval(OnnxPolicy(run_dir), args.task, eval_cfg, episodes=args.episodes)
        history = json.loads((run_dir / "history.json").read_text())
        last = history[-1]
        row = {"train_minutes": round(trained / 60, 2), "env_steps": res["progress"],
               "train_mean_terrain_level": last.get("mean_terrain_level"), "train_fall_rate": last.get("fall_rate"),
               "eval_seconds": round(time.perf_counter() - t0, 1), **ev}
        chunks.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        if ev["walks"] and first_walk is None:
            first_walk = trained / 60
        keep = ("progress", "wall_time", "mean_terrain_level", "fall_rate", "mean_return", "mean_vel_error",
                "env_steps_per_s")
        result = {
            "bench": "terrain_curriculum", "task": args.task, "num_envs": args.num_envs, "seed": args.seed,
            "minutes_budget": args.minutes, "eval_level": args.eval_level, "eval_episodes": args.episodes,
            "criterion": "walk_eval: forward commands [-1, 1] m/s, mean error <= 0.25 m/s, falls < 5 %",
            "torch_threads": 1, "omp_num_threads": os.environ.get("OMP_NUM_THREADS", ""),
            "load_average_1min": os.getloadavg()[0], "first_walk_minutes": first_walk, "chunks": chunks,
            "wall_minutes_total": round((time.perf_counter() - t_start) / 60, 2), "run_dir": str(run_dir),
            "history": [{k: r[k] for k in keep if k in r} for r in history],
        }
        out.with_suffix(".json").write_text(json.dumps(result, indent=1))
        plot(history, chunks, out.with_suffix(".png"))
    print(json.dumps({k: v for k, v in result.items() if k != "history"}))


if __name__ == "__main__":
    main()
