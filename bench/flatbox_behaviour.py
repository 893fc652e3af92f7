"""How far each policy gets on the flat-box lift: does it turn the box, grasp it, lift it?

    OMP_NUM_THREADS=1 python bench/flatbox_behaviour.py --episodes 100 --seeds 0 1 \\
        --runs /tmp/s2r_privileged_runs/curriculum_s0 ... --out bench/results/flatbox_behaviour

Scripted references first: `FlatBoxExpert` (push the ledge-side end until the box has turned >= 80 deg, grasp
the short side, lift) and the top-down grasp baseline (the same script without the turn), on `--episodes`
episodes per seed. Then each run folder's exported ONNX policy at scale 0 (Panda-Lift-FlatBox, no privileged
actions). Per episode it records the largest turn angle (deg between the box's long axis and the ledge's
normal), whether the hand was ever in `_grasped`'s pose across the short side ("grasped"), whether both finger
pads ever touched the box ("held", from MuJoCo's contacts), whether they both touched it on the step before the
success step ("held_at_success": a lift in the hand, not a flick), and the highest lowest-corner height; the
JSON holds the rates (turned >= 80 deg, grasped, held, held at success, lifted >= 1 cm, success) and means.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

TASK = "Panda-Lift-FlatBox"


def episodes(act: Callable[[dict[str, np.ndarray]], np.ndarray], env, seed: int,
             reset: Callable[[np.ndarray], None] | None = None) -> dict[str, np.ndarray]:
    """One episode per env; per episode "success", "turn_deg" (max), "grasped" and "held" (ever), "held_at_success"
    (both pads on the box on the last step before the success step: a hold, not a flick) and "lift" (max, m)."""
    n = env.num_envs
    obs = env.reset(seed=seed)
    if reset is not None:
        reset(np.arange(n))
    done = np.zeros(n, dtype=bool)
    out = {"success": np.zeros(n, bool), "turn_deg": np.zeros(n), "grasped": np.zeros(n, bool), "held": np.zeros(n, bool),
           "held_at_success": np.zeros(n, bool), "lift": np.zeros(n)}
    held_now = np.zeros(n, bool)
    while not done.all():
        obs, _, term, trunc, info = env.step(act(obs))
        ended = np.logical_or(term, trunc)
        # Envs that ended were reset inside step(): their state is the next episode's, so skip them this step.
        live = ~done & ~ended
        b = env.behaviour()
        out["turn_deg"][live] = np.maximum(out["turn_deg"][live], b["turn_deg"][live])
        out["grasped"][live] |= b["grasped"][live]
        out["held"][live] |= b["held"][live]
        held_now[live] = b["held"][live]
        out["lift"][live] = np.maximum(out["lift"][live], b["lift"][live])
        first = ended & ~done
        out["success"][first] = np.asarray(info["success"])[first]
        out["held_at_success"][first] = out["success"][first] & held_now[first]
        done |= ended
        if reset is not None and ended.any():
            reset(np.flatnonzero(ended))
    out["lift"][out["success"]] = np.maximum(out["lift"][out["success"]], env.cfg.lift_height)
    return out


def summarise(ep: dict[str, np.ndarray]) -> dict[str, float]:
    """Rates and means of `episodes()` output."""
    return {"episodes": len(ep["success"]), "success": float(ep["success"].mean()),
            "turned_80": float((ep["turn_deg"] >= 80.0).mean()), "mean_turn_deg": float(ep["turn_deg"].mean()),
            "grasped": float(ep["grasped"].mean()), "held": float(ep["held"].mean()),
            "held_at_success": float(ep["held_at_success"].mean()), "lifted_1cm": float((ep["lift"] >= 0.01).mean()),
            "mean_max_lift_m": float(ep["lift"].mean())}


def _task_set(success_hold: int | None) -> dict:
    return {"backend.num_threads": 1, **({} if success_hold is None else {"success_hold": success_hold})}


def scripted(turn: bool, n: int, seed: int, success_hold: int | None = None) -> dict[str, float]:
    """The expert (`turn`) or the top-down grasp baseline (not `turn`) on `n` episodes."""
    from s2r.sim import make, task_config
    from s2r.sim.tasks.experts import FlatBoxExpert
    from s2r.sim.tasks.manipulation import FlatBoxLiftEnv

    env = make(TASK, n, cfg=task_config(TASK, _task_set(success_hold)), seed=seed)
    try:
        expert = FlatBoxExpert(env.cfg, FlatBoxLiftEnv, n, 0.0, 0.0, seed, turn=turn)
        return summarise(episodes(expert.act, env, seed, reset=expert.reset))
    finally:
        env.close()


def learned(run_dir: Path, n: int, seed: int, success_hold: int | None = None) -> dict[str, float]:
    """A run's exported ONNX policy at scale 0 on `n` episodes of the plain task."""
    from s2r.policies.evaluate import OnnxPolicy, run_task_config
    from s2r.sim import make

    policy = OnnxPolicy(run_dir)
    task_id, cfg = run_task_config(run_dir, _task_set(success_hold))
    if cfg.privileged:
        raise ValueError(f"{run_dir}/policy.json describes a task with privileged actions; export it without them")
    env = make(task_id, n, cfg=cfg, seed=seed)
    try:
        return summarise(episodes(policy, env, seed, reset=policy.reset))  # it picks its groups from the dict
    finally:
        env.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--seeds", type=int, nargs="*", default=[0, 1], help="seeds of the scripted references (none: skip them)")
    p.add_argument("--runs", nargs="*", default=[], help="run folders whose policy.onnx to evaluate (seed 1000)")
    p.add_argument("--out", default="bench/results/flatbox_behaviour")
    p.add_argument("--success-hold", type=int, default=None,
                   help="the task's success_hold (default: the task's own, a held lift; 0: the instant height test of "
                        "rounds 1-6)")
    args = p.parse_args()

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    t0, load_before = time.perf_counter(), os.getloadavg()
    doc: dict = {"command": " ".join([sys.executable, *sys.argv]), "git_commit": commit, "loadavg_before": load_before,
                 "success_hold": args.success_hold, "expert": {}, "top_down_grasp": {}, "learned": {}}
    for seed in args.seeds:
        doc["expert"][f"seed{seed}"] = scripted(True, args.episodes, seed, args.success_hold)
        doc["top_down_grasp"][f"seed{seed}"] = scripted(False, args.episodes, seed, args.success_hold)
        print(json.dumps({"seed": seed, "expert": doc["expert"][f"seed{seed}"],
                          "top_down_grasp": doc["top_down_grasp"][f"seed{seed}"]}), flush=True)
    for run in args.runs:
        doc["learned"][Path(run).name] = learned(Path(run), args.episodes, 1000, args.success_hold)
        print(json.dumps({"run": run, **doc["learned"][Path(run).name]}), flush=True)
    doc.update({"loadavg_after": os.getloadavg(), "wall_s": round(time.perf_counter() - t0, 1)})
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
