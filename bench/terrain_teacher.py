"""Time to a walking privileged teacher on the terrain curriculum, warm-started from the flat walker.

    OMP_NUM_THREADS=1 python bench/terrain_teacher.py --minutes 50 --chunk 10 --out bench/results/terrain_teacher

Trains `--algo ppo-teacher` on `Go1-Velocity-Terrain` (curriculum, wide randomisation; the actor reads the
policy group plus an 8-d latent of the privileged group, height scan included), its policy path started from
the shipped walking PPO policy of the flat task (`--init`, bench/results/time_to_walk: the terrain task's
`policy` group is the flat one, so the actor fits as is), in chunks of `--chunk` minutes of training. After each
chunk the teacher (torch: it reads privileged inputs) is judged by the flat task's walking criterion
(bench/walk_eval.py: forward commands in [-1, 1] m/s, 20 s episodes, error <= 0.25 m/s and falls < 5 %) with
every env on level `--eval-level` (`curriculum.fixed_level`, the grid's middle), spread over the six terrain types;
the per-type numbers are kept too. Each chunk's teacher.pt is copied to `<run>/chunks/c<N>/` so students can be
distilled from a mid-run teacher. Only training time counts. Writes <out>.json after every chunk (a run stopped
early leaves its partial result) and <out>.png.

On a GPU (`--backend warp --device cuda:0 --threads 16 --num-envs 4096 --no-eval`): the physics runs in MuJoCo Warp
on the device (the numpy task, one host copy each way per control step), PPO on `--threads` CPU threads, and the
chunks are only trained and snapshotted; `--eval-chunks` judges the snapshots afterwards on any machine (CPU
backend, the same criterion), so a short device lease is spent on training alone.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

TASK = "Go1-Velocity-Terrain"


def teacher_walk_eval(run: Path, task_cfg: object, episodes: int, seed: int = 777) -> dict:
    """walk_eval's criterion for a teacher: one 20 s episode per env, forward commands, fixed level."""
    from hib import teacher_episodes
    from s2r.sim.config import apply_overrides
    from walk_eval import FORWARD_ONLY, MAX_ERROR, MAX_FALL_RATE

    types = list(task_cfg.grid.types)
    ep = teacher_episodes(run, apply_overrides(task_cfg, FORWARD_ONLY), episodes, seed, task=TASK)
    out = {"mean_vel_error": float(ep["vel_error"].mean()), "fall_rate": float(ep["fell"].mean()),
           "mean_return": float(ep["return"].mean())}
    out["walks"] = float(out["mean_vel_error"] <= MAX_ERROR and out["fall_rate"] < MAX_FALL_RATE)
    # Envs get types round-robin (TerrainCurriculum: env i has type i % len(types)).
    if types:
        ids = np.arange(episodes) % len(types)
        out["per_type"] = {name: {"vel_error": float(ep["vel_error"][ids == k].mean()),
                                  "fall_rate": float(ep["fell"][ids == k].mean())}
                           for k, name in enumerate(types)}
    return out


def init_eval(args: argparse.Namespace) -> dict:
    """The starting point: the flat walker the teacher's policy path starts from (ONNX), by the same criterion."""
    from s2r.policies.evaluate import OnnxPolicy, one_episode_each
    from s2r.sim import make, task_config
    from s2r.sim.config import apply_overrides
    from walk_eval import FORWARD_ONLY, MAX_ERROR, MAX_FALL_RATE

    cfg = task_config(TASK, {"curriculum.fixed_level": args.eval_level, "backend.num_threads": 1})
    env = make(TASK, args.episodes, cfg=apply_overrides(cfg, FORWARD_ONLY), seed=777)
    try:
        ep = one_episode_each(OnnxPolicy(Path(args.init)), env, 777)
    finally:
        env.close()
    ids = np.arange(args.episodes) % len(cfg.grid.types)
    out = {"policy": args.init, "mean_vel_error": float(ep["vel_error"].mean()), "fall_rate": float(ep["fell"].mean()),
           "mean_return": float(ep["return"].mean()),
           "per_type": {k: {"vel_error": float(ep["vel_error"][ids == i].mean()), "fall_rate": float(ep["fell"][ids == i].mean())}
                        for i, k in enumerate(cfg.grid.types)}}
    out["walks"] = float(out["mean_vel_error"] <= MAX_ERROR and out["fall_rate"] < MAX_FALL_RATE)
    return out


def plot(chunks: list[dict], history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    rows = [r for r in history if "mean_terrain_level" in r]
    ax[0].plot([r["progress"] for r in rows], [r["mean_terrain_level"] for r in rows])
    ax[0].set_ylabel("mean terrain level (finished episodes)")
    ax[1].plot([c["env_steps"] for c in chunks], [c["mean_vel_error"] for c in chunks], "o-", label="vel error (m/s)")
    ax[1].plot([c["env_steps"] for c in chunks], [c["fall_rate"] for c in chunks], "s-", label="fall rate")
    ax[1].axhline(0.25, color="grey", ls=":")
    ax[1].legend()
    ax[1].set_title("teacher on the middle level, forward commands")
    for a in ax:
        a.set_xlabel("env steps")
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def machine() -> dict:
    """Where the run trained: cores, load, and the GPU if torch sees one."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""
    return {"cores": os.cpu_count(), "load_average_1min": os.getloadavg()[0], "gpu": gpu}


def train_ranks(args: argparse.Namespace, task_overrides: dict, warm: dict, minutes: float, run_dir: Path,
                resume: bool) -> dict:
    """One chunk as `--ranks` data-parallel processes (torchrun, gloo): each rank runs `--num-envs` envs of the
    numpy task (on a GPU machine: its own Warp batch on the same device) and `--threads` torch threads; rank 0
    writes the run folder and prints the result line this returns."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(args.ranks), "--master-port", str(port),
           "-m", "s2r.policies.cli", "train", "--steps", str(10**10), "--minutes", str(minutes), "--no-progress",
           "--train-set", f"torch_threads={args.threads}"]
    if resume:  # a resumed run keeps the settings it started with
        cmd += ["--resume", str(run_dir)]
    else:
        cmd += [TASK, "--algo", "ppo-teacher", "--num-envs", str(args.num_envs), "--seed", str(args.seed),
                "--run-dir", str(run_dir)]
        cmd += [a for k, v in warm.items() for a in ("--train-set", f"{k}={v}")]
        cmd += [a for k, v in task_overrides.items() for a in ("--set", f"{k}={v}")]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"--ranks {args.ranks}: torchrun exited with {out.returncode}: {out.stderr[-2000:]}")
    return json.loads(lines[-1])


def eval_chunks(args: argparse.Namespace) -> None:
    """Judge each snapshot in <out>.json that has no evaluation yet (`--no-eval` runs), by the usual criterion."""
    from s2r.sim import task_config

    out = Path(args.out).with_suffix(".json")
    if not out.is_file():
        raise SystemExit(f"--eval-chunks: {out} does not exist; pass the --out of a terrain_teacher run")
    result = json.loads(out.read_text())
    eval_cfg = task_config(TASK, {"curriculum.fixed_level": args.eval_level, "backend.num_threads": 1})
    base = Path(args.run_dir)
    for row in result["chunks"]:
        if "walks" in row:
            continue
        snap = base / "chunks" / Path(row["teacher"]).name  # the snapshot folders travel with the run folder
        if not (snap / "teacher.pt").is_file():
            raise SystemExit(f"--eval-chunks: no teacher.pt in {snap}; pass the run folder as --run-dir")
        t0 = time.perf_counter()
        row.update(teacher_walk_eval(snap, eval_cfg, args.episodes))
        row["eval_seconds"] = round(time.perf_counter() - t0, 1)
        row["eval_load_average_1min"] = os.getloadavg()[0]
        print(json.dumps({k: row[k] for k in ("train_minutes", "env_steps", "mean_vel_error", "fall_rate", "walks")}),
              file=sys.stderr, flush=True)
        result["first_walk_minutes"] = next((c["train_minutes"] for c in result["chunks"] if c.get("walks")), None)
        result["eval_command"] = "OMP_NUM_THREADS=1 python " + " ".join(sys.argv)
        out.write_text(json.dumps(result, indent=1))
    plot(result["chunks"], result["history"], out.with_suffix(".png"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=50.0, help="training minutes (evaluations not counted)")
    p.add_argument("--chunk", type=float, default=10.0)
    p.add_argument("--num-envs", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", default="bench/results/time_to_walk", help="ppo run whose actor starts the teacher")
    p.add_argument("--init-std", type=float, default=0.27)
    p.add_argument("--eval-level", type=int, default=4)
    p.add_argument("--episodes", type=int, default=60)
    p.add_argument("--run-dir", default="runs/bench/terrain_teacher")
    p.add_argument("--out", default="bench/results/terrain_teacher")
    p.add_argument("--backend", default="cpu", choices=("cpu", "warp"), help="physics backend for training")
    p.add_argument("--device", default="", help="warp device (default: Warp's first GPU, else the CPU)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (and CPU-backend physics threads)")
    p.add_argument("--ranks", type=int, default=1,
                   help="data-parallel processes per chunk (torchrun); --num-envs and --threads are per rank")
    p.add_argument("--no-eval", action="store_true", help="train and snapshot chunks only (see --eval-chunks)")
    p.add_argument("--eval-chunks", action="store_true",
                   help="judge the snapshots listed in <out>.json that have no evaluation yet, and rewrite it")
    p.add_argument("--eval-init", action="store_true",
                   help="only evaluate the --init policy (minute 0) and add it to <out>.json as init_policy_eval")
    args = p.parse_args()
    if args.ranks < 1 or args.threads < 1:
        p.error(f"--ranks ({args.ranks}) and --threads ({args.threads}) must be at least 1")
    if args.eval_init:
        path = Path(args.out).with_suffix(".json")
        result = json.loads(path.read_text()) if path.is_file() else {}
        result["init_policy_eval"] = {**init_eval(args), "command": "OMP_NUM_THREADS=1 python " + " ".join(sys.argv),
                                      "load_average_1min": os.getloadavg()[0]}
        path.write_text(json.dumps(result, indent=1))
        print(json.dumps(result["init_policy_eval"]))
        return

    import torch

    torch.set_num_threads(args.threads)
    from s2r.policies.driver import Budget, new_run_spec, train
    from s2r.sim import task_config

    if args.eval_chunks:
        eval_chunks(args)
        return
    train_overrides: dict = {"backend.num_threads": args.threads}
    if args.backend == "warp":
        train_overrides = {"backend.name": "warp", **({"backend.device": args.device} if args.device else {})}

    run_dir, out = Path(args.run_dir), Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    eval_cfg = task_config(TASK, {"curriculum.fixed_level": args.eval_level, "backend.num_threads": 1})
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    chunks: list[dict] = []
    first_walk = None
    trained = 0.0
    resume = (run_dir / "checkpoint.pt").is_file()
    t_start = time.perf_counter()
    while trained < args.minutes * 60 - 1:
        budget = min(args.chunk, args.minutes - trained / 60)
        warm = {"init_from": args.init, "algo.policy.init_std": args.init_std} if args.init else {}
        spec = new_run_spec("ppo-teacher", TASK, task_overrides=train_overrides,
                            algo_overrides={"torch_threads": args.threads, **warm},
                            num_envs=args.num_envs, seed=args.seed, budget=Budget(steps=10**10, minutes=budget))
        load0 = os.getloadavg()[0]
        if args.ranks > 1:
            res = train_ranks(args, train_overrides, warm, budget, run_dir, resume)
        else:
            res = train(spec, run_dir, resume=resume, progress=False)
        resume = True
        trained = res["wall_time_s"]
        snap = run_dir / "chunks" / f"c{len(chunks)}"
        snap.mkdir(parents=True, exist_ok=True)
        shutil.copy(run_dir / "teacher.pt", snap / "teacher.pt")
        shutil.copy(run_dir / "config.json", snap / "config.json")
        t0 = time.perf_counter()
        ev = {} if args.no_eval else teacher_walk_eval(run_dir, eval_cfg, args.episodes)
        history = json.loads((run_dir / "history.json").read_text())
        last = next((r for r in reversed(history) if "mean_terrain_level" in r), history[-1])
        row = {"train_minutes": round(trained / 60, 2), "env_steps": res["progress"], "teacher": str(snap),
               "train_mean_terrain_level": last.get("mean_terrain_level"), "train_fall_rate": last.get("fall_rate"),
               "load_average_1min": [load0, os.getloadavg()[0]], "eval_seconds": round(time.perf_counter() - t0, 1),
               **ev}
        chunks.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        if ev.get("walks") and first_walk is None:
            first_walk = trained / 60
        keep = ("progress", "wall_time", "mean_terrain_level", "fall_rate", "mean_return", "mean_vel_error",
                "env_steps_per_s")
        result = {
            "bench": "terrain_teacher", "task": TASK, "algo": "ppo-teacher", "init_from": args.init,
            "init_std": args.init_std, "num_envs": args.num_envs, "seed": args.seed, "minutes_budget": args.minutes,
            "eval_level": args.eval_level, "eval_episodes": args.episodes, "commit": commit,
            "command": "OMP_NUM_THREADS=1 python " + " ".join(sys.argv),
            "criterion": "walk_eval: forward commands [-1, 1] m/s, mean error <= 0.25 m/s, falls < 5 %",
            "backend": args.backend, "device": args.device, "ranks": args.ranks, "machine": machine(),
            "torch_threads": args.threads, "omp_num_threads": os.environ.get("OMP_NUM_THREADS", ""),
            "first_walk_minutes": first_walk, "chunks": chunks,
            "wall_minutes_total": round((time.perf_counter() - t_start) / 60, 2), "run_dir": str(run_dir),
            "history": [{k: r[k] for k in keep if k in r} for r in history],
        }
        out.with_suffix(".json").write_text(json.dumps(result, indent=1))
        if not args.no_eval:
            plot(chunks, history, out.with_suffix(".png"))
    print(json.dumps({k: v for k, v in result.items() if k != "history"}))


if __name__ == "__main__":
    main()
