"""Privileged-action curriculum vs no privileges vs privileges removed all at once, on the flat-box lift
(or, with `--task drawer`, on Panda-Drawer-Cube: open the drawer, then put the cube in it).

    OMP_NUM_THREADS=1 python bench/privileged.py --steps 600000 --jobs 2 --out bench/results/privileged

Three arms, the same PPO learner (fixed learning rate `--lr` by default: the adaptive one sank to its floor),
reward and budget per seed:
(a) curriculum: `ppo-privileged` on Panda-Lift-FlatBox-Privileged, the default stage schedule;
(b) none: plain `ppo` on Panda-Lift-FlatBox (no privileged actions at any time);
(c) all at once: `ppo-privileged` with stages (1.0, 0.0), every privilege removed in one step;
(`--task drawer` runs the same arms on Panda-Drawer-Cube(-Privileged));
and on request (`--arms`) (d) curriculum_grasp_reward: (a) plus a reward for holding the box (reward.grasp 0.3);
(e) curriculum_grasp_gate: (a) with the wrench acting only on a hand placed for a grasp (`gate="grasp_pose"`) and
the table / joint relaxations faded out by stage scale 0.5 (`curriculum.fades`); (f) all_at_once_grasp_gate;
(g) curriculum_gated: (e) with the table relaxation gated on the grasp pose too; (h) all_at_once_gated;
(i) curriculum_table_first: (e) with the table relaxation removed at a first stage of its own, before the wrench;
(j) all_at_once_timed: (h) on a clock: scale 1 for `--switch-share` of the budget, then scale 0 (resumed; with
`--resume`, an existing scale-1 run folder is switched to 0 from where it stands); (k) curriculum_straddle and
(l) all_at_once_timed_straddle: (g) and (j) with wrench and table gated on an open hand straddling the box
(`gate="straddle"`: the grasp pose let a closed hand against the unturned box's long side throw it);
(m) curriculum_relaxed_hold: (k) plus the success test itself as a privilege (`RelaxedHold`: at scale s the held
lift needs round(success_hold * (1 - s)) steps, an instant lift at scale 1), so the curriculum has successes to
advance on (round 7: none in a million steps against the held lift). The bridge reward on a squeeze
(`reward.squeeze`) is a task setting for every arm: `--task-set reward.squeeze=0.2`.
(n) all_at_once_relaxed_hold: (m)'s privileges, gates and hold removed in one stage (stages 1.0, 0.0; it falls back
to 1 below `--fall-back-below`, as every arm with stages does); (o) all_at_once_timed_relaxed_hold: the same on a clock
as (j), scale 1 for `--switch-share` of the budget, then 0 for good.
`--jobs 2` trains two arms at once (one process each, one torch thread each); `--resume` continues each
arm's run folder under `--runs` to the new budget (with `--steps`, the total env steps). Each run's exported
ONNX policy (no privileged dims) is evaluated at scale 0 on `--episodes` episodes of the plain task.
Writes <out>.json (command line, git commit, load average, wall time, per arm: success, env steps, env
steps to each curriculum stage, final stage) and <out>.png (training success / scale curves).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

# --task -> the plain task id (the arms with privileges use its "-Privileged" variant)
TASKS = {"flatbox": "Panda-Lift-FlatBox", "drawer": "Panda-Drawer-Cube"}
# arm -> (algorithm, task id suffix, algorithm overrides, task overrides, virtual-wrench fields replaced
#         [, table-relaxation fields replaced])
ARMS = {
    "curriculum": ("ppo-privileged", "-Privileged", {}, {}, {}),
    "none": ("ppo", "", {}, {}, {}),
    "all_at_once": ("ppo-privileged", "-Privileged", {"curriculum.stages": "1.0,0.0"}, {}, {}),
    # An idea for the flat-box lift (not one of the arms): the curriculum plus a reward for holding the box.
    "curriculum_grasp_reward": ("ppo-privileged", "-Privileged", {}, {"reward.grasp": 0.3}, {}),
    # The flat box's wrench acting only on a hand placed for a grasp (a hovering hand lifted the box with the
    # "reach" gate down to scale ~0.1), the table and joint relaxations gone by stage scale 0.5 (they carried
    # nothing at 0.25), the wrench and the lighter box fading over every stage.
    "curriculum_grasp_gate": ("ppo-privileged", "-Privileged",
                              {"curriculum.fades": "table_collision_off:0.5:1,wider_joint_limits:0.5:1"}, {},
                              {"gate": "grasp_pose"}),
    "all_at_once_grasp_gate": ("ppo-privileged", "-Privileged", {"curriculum.stages": "1.0,0.0"}, {},
                               {"gate": "grasp_pose"}),
    # Round 4: (e) with the table relaxation also gated on the grasp pose (ungated, the hand scooped the unturned
    # box from below through the table once the wrench was gated), and its all-at-once twin.
    "curriculum_gated": ("ppo-privileged", "-Privileged",
                         {"curriculum.fades": "table_collision_off:0.5:1,wider_joint_limits:0.5:1"}, {},
                         {"gate": "grasp_pose"}, {"gate": "grasp_pose"}),
    "all_at_once_gated": ("ppo-privileged", "-Privileged", {"curriculum.stages": "1.0,0.0"}, {},
                          {"gate": "grasp_pose"}, {"gate": "grasp_pose"}),
    # All at once on a clock, not on success: the gated privileges at scale 1 (one stage, so no advance) for
    # `--switch-share` of the budget, then resumed with every privilege at 0 (one stage, so no fall-back).
    "all_at_once_timed": ("ppo-privileged", "-Privileged",
                          {"curriculum.stages": "1.0"}, {},
                          {"gate": "grasp_pose"}, {"gate": "grasp_pose"}),
    # Round 5: (g) and (j) with wrench and table gated on a hand open across the box (or closed on it), not on the
    # grasp pose alone: a closed hand pressed against the unturned box's long side passed that gate.
    "curriculum_straddle": ("ppo-privileged", "-Privileged",
                            {"curriculum.fades": "table_collision_off:0.5:1,wider_joint_limits:0.5:1"}, {},
                            {"gate": "straddle"}, {"gate": "straddle"}),
    # Round 8: (k) with the held success relaxed at high scale (RelaxedHold, declared below in EXTRA_PRIVILEGES).
    "curriculum_relaxed_hold": ("ppo-privileged", "-Privileged",
                                {"curriculum.fades": "table_collision_off:0.5:1,wider_joint_limits:0.5:1"}, {},
                                {"gate": "straddle"}, {"gate": "straddle"}),
    # Its twin for the all-at-once baseline: the same privileges, gates, hold and reward, removed in one stage.
    "all_at_once_relaxed_hold": ("ppo-privileged", "-Privileged", {"curriculum.stages": "1.0,0.0"}, {},
                                 {"gate": "straddle"}, {"gate": "straddle"}),
    # The same on a clock (as (j)): scale 1 for `--switch-share` of the budget, then 0 for good (no fall-back).
    "all_at_once_timed_relaxed_hold": ("ppo-privileged", "-Privileged", {"curriculum.stages": "1.0"}, {},
                                       {"gate": "straddle"}, {"gate": "straddle"}),
    "all_at_once_timed_straddle": ("ppo-privileged", "-Privileged",
                                   {"curriculum.stages": "1.0"}, {},
                                   {"gate": "straddle"}, {"gate": "straddle"}),
    # The other way to close the scoop: the table relaxation (and the wider joints) removed first, at a stage of
    # its own (0.9), while the wrench and the lighter box stay whole; they fade over the stages after it.
    "curriculum_table_first": ("ppo-privileged", "-Privileged",
                               {"curriculum.stages": "1.0,0.9,0.5,0.25,0.12,0.06,0.03,0.015,0.0",
                                "curriculum.fades": "table_collision_off:0.9:1,wider_joint_limits:0.9:1,"
                                                    "virtual_wrench:0:0.9,reduced_gravity:0:0.9"}, {},
                               {"gate": "grasp_pose"}),
}
# Fields of the table relaxation replaced, per arm (the arms above without an entry keep the task's).
TABLE = {arm: spec[5] for arm, spec in ARMS.items() if len(spec) > 5}
# Privileges an arm declares on top of the task's (by kind name; `privileged.KINDS` builds them).
EXTRA_PRIVILEGES = {"curriculum_relaxed_hold": ("relaxed_hold",), "all_at_once_relaxed_hold": ("relaxed_hold",),
                    "all_at_once_timed_relaxed_hold": ("relaxed_hold",)}
# Arms that change the flat box's own reward, gates or success test (the drawer task has none of them): read off
# the tables above, so a new arm cannot be forgotten here.
FLAT_ONLY = frozenset(arm for arm, spec in ARMS.items() if spec[3] or spec[4] or arm in TABLE or arm in EXTRA_PRIVILEGES)


def curriculum_thresholds(args: argparse.Namespace) -> dict[str, float]:
    """The curriculum overrides given on the command line (--window, --advance-at, --fall-back-below; 0: the config's)."""
    given = {"curriculum.window": args.window, "curriculum.advance_at": args.advance_at,
             "curriculum.fall_back_below": args.fall_back_below}
    return {k: v for k, v in given.items() if v}


def reward_changes(task_cfg, task_id: str) -> dict[str, str]:
    """The reward fields a run's task config sets away from the task's defaults, as `--task-set` keys.

    A resumed run keeps the reward it was started with (its config.json), whatever this call's `--task-set` says, so
    its result records these; before, a resumed squeeze run was written down (and labelled) as one without it.
    """
    from dataclasses import asdict

    from s2r.sim import task_config

    if getattr(task_cfg, "reward", None) is None:
        return {}
    default = asdict(task_config(task_id).reward)
    return {f"reward.{k}": str(v) for k, v in asdict(task_cfg.reward).items() if default.get(k) != v}


def run_arm(arm: str, seed: int, args: argparse.Namespace, root: Path) -> dict:
    """Train one arm for the budget (or continue its run with `--resume`), then evaluate its export at scale 0."""
    import torch
    from s2r.policies.driver import Budget, load_checkpoint, new_run_spec, resume_run_spec, train
    from s2r.policies.evaluate import evaluate_success

    torch.set_num_threads(1)
    algo, suffix, extra, task_extra, wrench = ARMS[arm][:5]
    table = TABLE.get(arm, {})
    task = TASKS[args.task] + suffix
    overrides = {"torch_threads": 1, "algo.steps_per_env": args.steps_per_env, "algo.entropy_coef": args.entropy,
                 "algo.learning_rate": args.lr, "algo.schedule": args.schedule, **extra}
    # The thresholds also apply to a resumed run (its stage and window come from the checkpoint): round 6 lowered
    # advance_at to 0.3 on a run that had spent 618k steps at scale 1 below the default 0.6.
    thresholds = curriculum_thresholds(args) if algo.endswith("-privileged") else {}
    overrides.update(thresholds)
    budget = Budget(minutes=args.minutes or None, steps=args.steps or None)
    run_dir = root / f"{arm}_s{seed}"
    if args.resume:
        spec = resume_run_spec(run_dir, algo=algo, task_id=task, budget=budget, algo_overrides=thresholds)
        task_extra = reward_changes(spec.task_cfg, task)  # the reward the run was started with, not this call's
    else:
        task_extra = {**dict(kv.split("=", 1) for kv in args.task_set), **task_extra}
        spec = new_run_spec(algo, task, task_overrides={"backend.num_threads": 1, **task_extra}, algo_overrides=overrides,
                            num_envs=args.num_envs, seed=seed, budget=budget)
        extra_priv = EXTRA_PRIVILEGES.get(arm, ())
        if wrench or table or extra_priv:  # tuple entries, out of reach of dotted overrides; config.json keeps them
            from s2r.sim.tasks.manipulation.privileged import KINDS

            fields = {"virtual_wrench": wrench, "table_collision_off": table}
            priv = tuple(replace(p, **fields[p.kind]) if fields.get(p.kind) else p for p in spec.task_cfg.privileged)
            priv += tuple(KINDS[kind]() for kind in extra_priv)
            spec = replace(spec, task_cfg=replace(spec.task_cfg, privileged=priv))
    t0 = time.perf_counter()
    switch = None
    if arm.startswith("all_at_once_timed"):
        if not args.resume:  # phase 1: scale 1 for the share of the budget
            share = Budget(minutes=args.minutes * args.switch_share or None,
                           steps=int(args.steps * args.switch_share) or None)
            train(replace(spec, budget=share), run_dir, progress=False)
        # phase 2 (or, with --resume, a scale-1 run's folder taken from here on): every privilege at 0. A resumed
        # run's minutes count from its resume, so phase 2 gets what phase 1 left of them.
        ckpt = load_checkpoint(run_dir / "checkpoint.pt")
        switch = int(ckpt["progress"])
        left = Budget(minutes=max(args.minutes - ckpt["wall_time"] / 60, 0.1) if args.minutes else None,
                      steps=args.steps or None)
        spec = resume_run_spec(run_dir, algo=algo, task_id=task, budget=left,
                               algo_overrides={**thresholds, "curriculum.stages": "0.0"})
        summary = train(spec, run_dir, resume=True, progress=False)
    else:
        summary = train(spec, run_dir, resume=args.resume, progress=False)
    wall = time.perf_counter() - t0
    ev = evaluate_success(run_dir, episodes=args.episodes, seed=1000 + seed)
    hist = json.loads((run_dir / "history.json").read_text())
    last = next((r for r in reversed(hist) if "mean_return" in r), hist[-1])  # the last training row
    stage_steps = {k: v for k, v in summary.items() if k.startswith("steps_to_stage_")}
    return {"arm": arm, "seed": seed, "algo": algo, "task": task, "overrides": overrides, "task_overrides": task_extra,
            "run_dir": str(run_dir), "wrench": wrench, "table": table, "switched_to_scale0_at": switch,
            "env_steps": summary["progress"], "train_wall_s": round(wall, 1),
            "success_at_scale0": ev["success_rate"], "eval_episodes": ev["episodes"],
            "privileges": [p.kind for p in spec.task_cfg.privileged],
            "final_privilege_scale": last.get("privilege_scale", 0.0),
            "final_stage": last.get("curriculum_stage"), "fall_backs": last.get("curriculum_fall_backs"),
            "final_training_success": last.get("mean_success"), "steps_to_stage": stage_steps,
            "curve": [{"env_steps": r["progress"], "success": r.get("mean_success"),
                       "scale": r.get("privilege_scale", 0.0), "wrench_scale": r.get("scale_virtual_wrench"),
                       "hold_scale": r.get("scale_relaxed_hold")}
                      for r in hist]}


def _run_job(job: tuple) -> dict:
    return run_arm(*job)


def run_label(result: dict) -> str:
    """A run's legend entry: arm, seed, its task overrides (an arm run with and without `--task-set
    reward.squeeze=0.2` is two different experiments under one arm name) and its success at scale 0."""
    extra = "".join(f" {k.removeprefix('reward.')}={v}" for k, v in sorted(result.get("task_overrides", {}).items()))
    return f"{result['arm']}{extra} s{result['seed']}: scale-0 eval {result['success_at_scale0']:.0%}"


def plot(results: list[dict], path: Path, task: str = TASKS["flatbox"]) -> None:
    """Training success (solid) and privilege scale (dashed) of every run against env steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for r in results:
        x = [c["env_steps"] for c in r["curve"]]
        line = ax.plot(x, [c["success"] if c["success"] is not None else float("nan") for c in r["curve"]],
                       label=run_label(r))[0]
        if r["algo"] == "ppo-privileged":
            ax.plot(x, [c["scale"] for c in r["curve"]], ls="--", color=line.get_color(), alpha=0.7)
    ax.set_xlabel("env steps")
    ax.set_ylabel("training success (solid), privilege scale (dashed)")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8)
    ax.set_title(f"{task}: privileged-action curriculum vs baselines")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=0.0, help="wall-clock budget per arm and seed (0: steps only)")
    p.add_argument("--steps", type=int, default=0, help="env-step budget per arm and seed (0: minutes only)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--task", default="flatbox", choices=list(TASKS), help="flatbox: Panda-Lift-FlatBox; drawer: "
                   "Panda-Drawer-Cube")
    p.add_argument("--arms", nargs="+", default=["curriculum", "none", "all_at_once"], choices=list(ARMS))
    p.add_argument("--num-envs", type=int, default=64)
    p.add_argument("--steps-per-env", type=int, default=32)
    p.add_argument("--entropy", type=float, default=0.002)
    p.add_argument("--window", type=int, default=0, help="curriculum window in episodes (0: the config's default)")
    p.add_argument("--advance-at", type=float, default=0.0,
                   help="windowed training success that advances a stage (0: the config's default, 0.6)")
    p.add_argument("--fall-back-below", type=float, default=0.0,
                   help="windowed training success under which a stage goes back one (0: the config's default, 0.05)")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--lr", type=float, default=3e-4, help="PPO learning rate")
    p.add_argument("--schedule", default="fixed", choices=("fixed", "adaptive"),
                   help="PPO learning-rate schedule: fixed at --lr, or adapted by KL (which sank to 1e-5 here)")
    p.add_argument("--task-set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="task config overrides for every arm, e.g. reward.reach_sharpness=3 (the arms' own come after)")
    p.add_argument("--switch-share", type=float, default=0.5,
                   help="the all_at_once_timed* arms: the share of the budget (steps and minutes) trained at scale 1, in (0, 1)")
    p.add_argument("--jobs", type=int, default=1, choices=(1, 2), help="arms trained at once (a process each)")
    p.add_argument("--resume", action="store_true", help="continue each arm's run folder under --runs")
    p.add_argument("--out", default="bench/results/privileged")
    p.add_argument("--runs", default="/tmp/s2r_privileged_runs")
    p.add_argument("--plot-only", nargs="+", default=[], metavar="JSON",
                   help="no training: plot the runs of these result files together into <out>.png")
    args = p.parse_args()
    if args.plot_only:
        merged = [r for f in args.plot_only for r in json.loads(Path(f).read_text())["results"]]
        plot(merged, Path(args.out).with_suffix(".png"), TASKS[args.task])
        return
    if not (args.minutes or args.steps):
        p.error("give a budget: --steps (env steps per arm, equal for every arm) and/or --minutes")
    flat_only = sorted(FLAT_ONLY & set(args.arms))
    if args.task != "flatbox" and flat_only:
        p.error(f"the arms {', '.join(flat_only)} set the flat box's grasp reward, gates or relaxed hold, which only the "
                "flat-box lift has; use them with --task flatbox")
    if any(a.startswith("all_at_once_timed") for a in args.arms) and not 0.0 < args.switch_share < 1.0:
        p.error(f"--switch-share is the share of the budget trained at scale 1 and must be in (0, 1); got {args.switch_share}")
    bad = [kv for kv in args.task_set if "=" not in kv]
    if bad:
        p.error(f"--task-set takes KEY=VALUE pairs (e.g. reward.reach_sharpness=3); got {' '.join(bad)}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    t0 = time.perf_counter()
    load_before = os.getloadavg()
    jobs = [(arm, seed, args, Path(args.runs)) for seed in args.seeds for arm in args.arms]
    results: list[dict] = []

    def record(result: dict) -> None:
        results.append(result)
        print(json.dumps({k: v for k, v in result.items() if k != "curve"}), flush=True)
        doc = {"command": " ".join([sys.executable, *sys.argv]), "git_commit": commit, "task": TASKS[args.task],
               "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
               "wall_s": round(time.perf_counter() - t0, 1), "cpu_threads": 1, "jobs": args.jobs,
               "note": "shared 2-core machine with other jobs running; one torch thread, one physics thread per arm",
               "goal": ">= 80% at scale 0 with the curriculum, baselines near 0%", "results": results}
        out.with_suffix(".json").write_text(json.dumps(doc, indent=1))
        plot(results, out.with_suffix(".png"), TASKS[args.task])

    if args.jobs == 1:
        for job in jobs:
            record(run_arm(*job))
    else:
        import multiprocessing as mp

        # Spawned workers: fresh interpreters, so each one's torch and physics stay at one thread.
        with mp.get_context("spawn").Pool(args.jobs, maxtasksperchild=1) as pool:
            for result in pool.imap_unordered(_run_job, jobs):
                record(result)


if __name__ == "__main__":
    main()
