"""Residual RL on a frozen BC base vs full fine-tuning vs SB3 SAC from scratch, same sparse reward and budget.

    python bench/residual.py --task Panda-Lift-Cube --steps 30000 --seeds 0 --out bench/results/residual

Per task: record scripted-expert demos (noisy), clone them (action chunking), then for each seed train
(a) base + residual (ours), (b) full fine-tuning of the BC network with the same learner, (c) SB3 SAC from
scratch on `gymnasium.make("s2r/<task>-v0")`, each for `--steps` env steps. Success rates are measured
on `--episodes` episodes (one per env of a batched eval env, deterministic policies); the base is measured
with three eval seeds. Prints one JSON line and writes <out>_<task>.json and a PNG of the curves.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np


def sac_baseline(task: str, steps: int, seed: int, episodes: int, eval_every: int, log: Path | None = None) -> dict:
    """SB3 SAC from scratch (default hyper-parameters, 256x256 nets) on the gym-registered task.

    `log`: the curve so far is rewritten there after every evaluation, so a run stopped at a deadline still
    leaves its evaluations (`--reuse --partial` picks them up).
    """
    import gymnasium as gym
    import torch
    from s2r.policies.evaluate import success_episodes
    from s2r.sim import gym_id, make
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback

    env = gym.make(gym_id(task))
    model = SAC("MlpPolicy", env, seed=seed, verbose=0, learning_starts=1000, batch_size=256,
                policy_kwargs={"net_arch": [256, 256]})
    eval_env = make(task, episodes, seed=seed + 10_000)
    curve = []

    def evaluate() -> float:
        def act(o: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return model.predict(o, deterministic=True)[0]

        return float(success_episodes(act, eval_env, seed=seed + 10_000)["success"].mean())

    def save() -> None:
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(json.dumps(curve))

    class Eval(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps % eval_every == 0:
                curve.append({"env_steps": self.num_timesteps, "success_rate": evaluate(),
                              "wall_s": round(time.perf_counter() - t0, 1)})
                save()
            return True

    t0 = time.perf_counter()
    curve.append({"env_steps": 0, "success_rate": evaluate(), "wall_s": 0.0})
    model.learn(total_timesteps=steps, callback=Eval())
    wall = time.perf_counter() - t0
    if curve[-1]["env_steps"] != steps:
        curve.append({"env_steps": steps, "success_rate": evaluate(), "wall_s": round(wall, 1)})
    save()
    eval_env.close()
    env.close()
    return {"final_success": curve[-1]["success_rate"], "wall_s": wall, "curve": curve}


def main() -> None:
    import torch
    from s2r.policies.bc import BCConfig, train_bc
    from s2r.policies.demos import collect_demos
    from s2r.policies.driver import Budget, RunDriver, RunSpec
    from s2r.policies.evaluate import evaluate_success
    from s2r.policies.residual import ResidualConfig
    from s2r.sim import task_config
    from s2r.sim.config import apply_overrides

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="Panda-Lift-Cube")
    p.add_argument("--steps", type=int, default=30_000)
    p.add_argument("--seeds", default="0", help="comma-separated training seeds")
    p.add_argument("--methods", default="residual,finetune,sac")
    p.add_argument("--demos", type=int, default=50)
    p.add_argument("--noise", type=float, default=0.1, help="expert action noise while recording demos")
    p.add_argument("--failure-rate", type=float, default=0.0)
    p.add_argument("--bc-updates", type=int, default=3000)
    p.add_argument("--bc-ensemble-m", type=float, default=None, help="BC temporal-ensembling weight (default: BCConfig's)")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=5000)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VAL", help="ResidualConfig override (both RL runs)")
    p.add_argument("--tag", default="", help="suffix of the run keys and the output file (e.g. an ablation's name), "
                   "so runs with other --set values never reuse each other")
    p.add_argument("--work", default="runs/bench_residual")
    p.add_argument("--out", default="bench/results/residual")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--partial", action="store_true",
                   help="with --reuse: also take RL runs that have not reached --steps (e.g. still running, or stopped "
                        "at a deadline) as they stand, marked partial, instead of running them")
    p.add_argument("--base-from", default=None, metavar="JSON",
                   help="take the base's success on eval seeds 1/2/3 from this result file (same BC policy) "
                        "instead of evaluating it again")
    p.add_argument("--merge", nargs="+", metavar="JSON", default=None,
                   help="only combine finished result files of one task (e.g. one per seed, run in parallel with their "
                        "own --work and --out) into <out>_<task>.json: runs united, summary and plot redone")
    p.add_argument("--reuse", action="store_true",
                   help="keep --work and reuse RL runs that already finished there (their history.json), e.g. after a crash")
    args = p.parse_args()
    if args.merge:
        path = merge_results([Path(m) for m in args.merge], args.out, args.tag)
        print(json.dumps({"merged": str(path), "summary": json.loads(path.read_text())["summary"]}))
        return
    torch.set_num_threads(args.threads)

    work = Path(args.work) / args.task
    if not args.reuse:
        shutil.rmtree(work, ignore_errors=True)
    t0 = time.perf_counter()
    if args.reuse and (work / "bc" / "policy.onnx").is_file():
        from s2r.real.episodes import read_episodes

        eps = read_episodes(work / "demos")[1]
        demos = {"episodes": len(eps), "successes": sum(e.success for e in eps), "reused": True}
        bc = {"reused": True}
    else:
        demos = collect_demos(args.task, work / "demos", args.demos, noise=args.noise, failure_rate=args.failure_rate,
                              progress=False)
        bc_cfg = BCConfig(updates=args.bc_updates)
        if args.bc_ensemble_m is not None:
            bc_cfg = replace(bc_cfg, ensemble_m=args.bc_ensemble_m)
        bc = train_bc(args.task, work / "demos", work / "bc", bc_cfg, progress=False)
    if args.base_from:
        # The same BC policy (same demos, settings and code) evaluated on the same eval seeds gives the same
        # numbers: reuse them instead of 3 x --episodes more episodes.
        base = json.loads(Path(args.base_from).read_text())["base_success"]
    else:
        base = [evaluate_success(work / "bc", episodes=args.episodes, seed=s)["success_rate"] for s in (1, 2, 3)]
    import subprocess

    here = Path(__file__).parent
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=here).stdout.strip()
    out: dict = {"task": args.task, "steps": args.steps, "command": " ".join(sys.argv), "git_commit": commit,
                 "base_from": args.base_from,
                 "loadavg_at_start": os.getloadavg(),
                 "demos": demos, "bc": {k: v for k, v in bc.items() if k != "export"},
                 "base_success": base, "base_success_mean": float(np.mean(base)), "episodes": args.episodes, "runs": {}}
    overrides = dict(kv.split("=", 1) for kv in args.set)
    for method in args.methods.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            key = f"{method}{'_' + args.tag if args.tag else ''}_seed{seed}"
            done = work / key / "history.json"
            rows = [r for r in json.loads(done.read_text()) if "success_rate" in r] if done.is_file() else []
            if args.reuse and method != "sac" and rows and (rows[-1]["progress"] >= args.steps or args.partial):
                curve = [{"env_steps": r["progress"], "wall_s": r["wall_time"], **r} for r in rows]
                lc = apply_overrides(ResidualConfig(), overrides)
                out["runs"][key] = {"final_success": curve[-1]["success_rate"], "curve": curve, "reused": True,
                                    "partial": rows[-1]["progress"] < args.steps,
                                    "actor_starts_at_env_step":
                                        lc.learning_starts + int(lc.learner.critic_warmup_updates / lc.learner.utd_ratio),
                                    "wall_s": rows[-1]["wall_time"], "method": method, "seed": seed}
                print(json.dumps({"progress": key, "reused": True, "final_success": rows[-1]["success_rate"]}), flush=True)
                continue
            sac_log = work / key / "sac_curve.json"
            if args.reuse and method == "sac" and sac_log.is_file() and args.partial:
                curve = json.loads(sac_log.read_text())
                out["runs"][key] = {"final_success": curve[-1]["success_rate"], "curve": curve, "reused": True,
                                    "partial": curve[-1]["env_steps"] < args.steps, "wall_s": curve[-1]["wall_s"],
                                    "method": method, "seed": seed}
                print(json.dumps({"progress": key, "reused": True, "final_success": curve[-1]["success_rate"]}), flush=True)
                continue
            if method == "sac":
                out["runs"][key] = {**sac_baseline(args.task, args.steps, seed, args.episodes, args.eval_every, sac_log),
                                    "method": method, "seed": seed}
            else:
                cfg = ResidualConfig(base=str(work / "bc"), finetune=method == "finetune", seed=seed,
                                     eval_every=args.eval_every, eval_episodes=args.episodes, checkpoint_every=args.steps)
                cfg = apply_overrides(cfg, overrides)
                spec = RunSpec(algo=method, task_id=args.task, task_cfg=task_config(args.task), cfg=cfg, seed=seed,
                               budget=Budget(steps=args.steps))
                driver = RunDriver(spec, work / key, progress=False)
                try:
                    res = driver.learn()
                finally:
                    driver.close()
                curve = [{"env_steps": r["progress"], "wall_s": r["wall_time"], **r} for r in driver.history
                         if "success_rate" in r]
                onnx = evaluate_success(work / key, episodes=args.episodes, seed=1)["success_rate"]
                lc = cfg.learner
                out["runs"][key] = {"final_success": curve[-1]["success_rate"], "onnx_success_eval_seed1": onnx,
                                    "wall_s": res["wall_time_s"], "updates": driver.algo.learner.updates, "curve": curve,
                                    "method": method, "seed": seed,
                                    "actor_starts_at_env_step":
                                        cfg.learning_starts + int(lc.critic_warmup_updates / lc.utd_ratio),
                                    "updates_per_s": driver.algo.learner.updates / max(res["wall_time_s"], 1e-9),
                                    "config": {"overrides": overrides, "num_critics": lc.num_critics, "utd_ratio": lc.utd_ratio,
                                               "policy_delay": lc.policy_delay, "scale": cfg.scale,
                                               "dim_scale": cfg.dim_scale, "actor": lc.actor,
                                               "actor_lr": lc.actor_lr, "critic_lr": lc.critic_lr,
                                               "critic_warmup_updates": lc.critic_warmup_updates,
                                               "learning_starts": cfg.learning_starts, "warmup_noise": cfg.warmup_noise,
                                               "exploration_noise": lc.exploration_noise,
                                               "q_filter": lc.q_filter, "q_filter_bc": lc.q_filter_bc}}
            print(json.dumps({"progress": key, "final_success": out["runs"][key]["final_success"]}), flush=True)
    out["total_wall_s"] = time.perf_counter() - t0
    out["loadavg"] = os.getloadavg()
    out["summary"] = summarise(out)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    path = Path(f"{args.out}_{args.task}{'_' + args.tag if args.tag else ''}.json")
    path.write_text(json.dumps(out, indent=1))
    _plot(out, path.with_suffix(".png"))
    summary = {"task": args.task, "steps": args.steps, "base": out["base_success_mean"],
               **{k: v["final_success"] for k, v in out["runs"].items()}, "total_wall_s": round(out["total_wall_s"]),
               "summary": out["summary"]}
    print(json.dumps(summary))


def merge_results(paths: list[Path], out: str, tag: str = "") -> Path:
    """Unite the runs of several result files of one task into `<out>_<task>[_<tag>].json` (+ PNG).

    Each file keeps its own base evaluation under `parts`; the merged `base_success_mean` is their mean (the
    same demos and BC settings give the same base, which `parts` lets a reader check).

    Raises:
        ValueError: the files are of different tasks or step budgets, or two of them hold the same run key.
    """
    parts = [json.loads(p.read_text()) for p in paths]
    tasks, steps = {d["task"] for d in parts}, {d["steps"] for d in parts}
    if len(tasks) != 1 or len(steps) != 1:
        raise ValueError(f"--merge: files {[str(p) for p in paths]} mix tasks {sorted(tasks)} / step budgets "
                         f"{sorted(steps)}; merge one task and budget at a time")
    runs: dict = {}
    for p, d in zip(paths, parts, strict=True):
        for key, run in d["runs"].items():
            if key in runs:
                raise ValueError(f"--merge: run '{key}' is in more than one file (again in {p}); give each seed "
                                 "its own run or drop one file")
            runs[key] = run
    merged = {"task": tasks.pop(), "steps": steps.pop(), "merged_from": [str(p) for p in paths],
              "parts": [{"file": str(p), "command": d.get("command"), "git_commit": d.get("git_commit"),
                         "base_success": d["base_success"], "loadavg": d.get("loadavg"),
                         "total_wall_s": d.get("total_wall_s")} for p, d in zip(paths, parts, strict=True)],
              "base_success_mean": float(np.mean([d["base_success_mean"] for d in parts])),
              "episodes": parts[0]["episodes"], "runs": runs}
    merged["summary"] = summarise(merged)
    path = Path(f"{out}_{merged['task']}{'_' + tag if tag else ''}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(merged, indent=1))
    _plot(merged, path.with_suffix(".png"))
    return path


def summarise(out: dict) -> dict:
    """Per method (and tag): final success over seeds (mean, min, max) and the worst dip below the base.

    Dips count the evaluations after the actor's first update (for runs without a residual learner, every
    evaluation after step 0), against two references: the run's own step-0 evaluation (the base alone on
    the very same eval episodes) and the base's mean over eval seeds 1/2/3. The issue's "no collapse" goal is
    a dip of at most 5 points on every seed.
    """
    groups: dict[str, list[dict]] = {}
    for key, run in out["runs"].items():
        groups.setdefault(key.rsplit("_seed", 1)[0], []).append(run)
    res = {}
    for name, runs in groups.items():
        finals = [r["final_success"] for r in runs]
        dips0, dips = [], []
        for r in runs:
            start = r.get("actor_starts_at_env_step", 0)
            after = [c["success_rate"] for c in r["curve"] if c["env_steps"] > start and c["env_steps"] > 0]
            if after:
                dips0.append(r["curve"][0]["success_rate"] - min(after))
                dips.append(out["base_success_mean"] - min(after))
        res[name] = {"seeds": len(runs), "steps": [r["curve"][-1]["env_steps"] for r in runs],
                     "final_mean": float(np.mean(finals)), "final_min": min(finals), "final_max": max(finals),
                     "final_std": float(np.std(finals)), "per_seed": {
                         "seed": [r.get("seed") for r in runs], "final": finals,
                         "dip_below_step0": dips0, "dip_below_base_mean": dips,
                         # The no-collapse goal, per seed: no evaluation after the actor starts more
                         # than 5 points below the base (its step-0 evaluation on the same episodes).
                         "no_collapse": [d <= 0.05 + 1e-9 for d in dips0]},
                     "best_mean": float(np.mean([max(c["success_rate"] for c in r["curve"]) for r in runs])),
                     "max_dip_below_step0": max(dips0, default=None),
                     "max_dip_below_base_mean": max(dips, default=None),
                     "wall_s_mean": float(np.mean([r["wall_s"] for r in runs]))}
    return res


def _plot(out: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.axhline(out["base_success_mean"], color="gray", ls="--", label="BC base")
    ax.axhspan(out["base_success_mean"] - 0.05, out["base_success_mean"], color="gray", alpha=0.12, lw=0)
    groups: dict[str, list[dict]] = {}
    for key, run in out["runs"].items():
        groups.setdefault(key.rsplit("_seed", 1)[0], []).append(run)
    for name, runs in groups.items():
        # Mean over seeds at the steps every seed evaluated, with the seeds' min-max band.
        steps = sorted(set.intersection(*({c["env_steps"] for c in r["curve"]} for r in runs)))
        vals = np.array([[next(c["success_rate"] for c in r["curve"] if c["env_steps"] == s) for s in steps] for r in runs])
        line, = ax.plot(steps, vals.mean(0), marker=".", label=f"{name} ({len(runs)} seed{'s' if len(runs) > 1 else ''})")
        if len(runs) > 1:
            ax.fill_between(steps, vals.min(0), vals.max(0), color=line.get_color(), alpha=0.2, lw=0)
            for r in runs:  # each seed thin, so steps not every seed reached (a partial run) still show
                ax.plot([c["env_steps"] for c in r["curve"]], [c["success_rate"] for c in r["curve"]],
                        color=line.get_color(), lw=0.6, alpha=0.45)
    ax.set_xlabel("env steps")
    ax.set_ylabel(f"success ({out['episodes']} episodes)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(out["task"])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
