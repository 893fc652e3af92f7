"""Why a cube policy fails: per episode, was the cube never raised, raised then dropped, or held but short?

    python bench/cube_failures.py runs/<work>/Panda-Lift-Cube/bc --episodes 100 --seed 1 [--out failures.json]

Runs a run folder's exported policy (ONNX, as `s2r eval` does) on Panda-Lift-Cube or Panda-PickPlace-Cube and
traces every episode from the policy observations alone (cube height above its start, gripper opening, the
policy's gripper command while the cube is off the table, the cube's distance to the target at the end on
pick-place). Used to decide what a residual has to correct: a grasp miss needs a different approach, a drop needs
a firmer gripper command (`action[3]`: -1 open ... +1 closed, a finger *position* target), which a residual of
scale s can move by at most s.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

RAISED_M = 0.01  # the cube counts as raised once it is this far above where it started
DROP_FRACTION = 0.5  # ... and as dropped when it ends below this fraction of its highest rise
CLASSES = ("success", "never_raised", "dropped", "held_short")


def trace_episodes(act: Callable[[np.ndarray], np.ndarray], env, seed: int,
                   reset: Callable[[np.ndarray], None] | None = None) -> dict[str, np.ndarray]:
    """One episode per env: (n,) arrays "success", "rise_max", "rise_last", "grip_cmd_raised", "opening_min",
    "target_dist_last" (NaN on tasks without a target), "length"."""
    from s2r.sim.tasks.manipulation.terms import ROBOT_TERMS, TARGET_TERMS, obs_slices

    n = env.num_envs
    obs = env.reset(seed=seed)
    if reset is not None:
        reset(np.arange(n))
    cols = obs_slices((*ROBOT_TERMS, *TARGET_TERMS))
    has_target = obs["policy"].shape[1] >= cols["target_rel_object"].stop
    z0 = obs["policy"][:, cols["object_pos"]][:, 2].copy()
    out = {k: np.zeros(n) for k in ("rise_max", "rise_last", "length")}
    out["success"] = np.zeros(n, dtype=bool)
    out["opening_min"] = np.full(n, np.inf)
    out["target_dist_last"] = np.full(n, np.nan)
    grip_sum, grip_cnt = np.zeros(n), np.zeros(n)
    done = np.zeros(n, dtype=bool)
    while not done.all():
        o = obs["policy"]
        live = ~done
        rise = o[:, cols["object_pos"]][:, 2] - z0
        out["rise_max"][live] = np.maximum(out["rise_max"][live], rise[live])
        out["rise_last"][live] = rise[live]
        out["opening_min"][live] = np.minimum(out["opening_min"][live], o[live, cols["gripper_opening"]][:, 0])
        if has_target:
            out["target_dist_last"][live] = np.linalg.norm(o[live, cols["target_rel_object"]], axis=1)
        a = np.asarray(act(obs if getattr(act, "reads_groups", False) else o))
        up = live & (rise > RAISED_M / 2)
        grip_sum[up] += a[up, 3]
        grip_cnt[up] += 1
        obs, _, term, trunc, info = env.step(a)
        ended = np.logical_or(term, trunc)
        out["success"][ended & live] = np.asarray(info["success"])[ended & live]
        out["length"][live] += 1
        done |= ended
        if reset is not None and ended.any():
            reset(np.flatnonzero(ended))
    out["grip_cmd_raised"] = np.where(grip_cnt > 0, grip_sum / np.maximum(grip_cnt, 1), np.nan)
    return out


def classify(tr: dict[str, np.ndarray]) -> np.ndarray:
    """(n,) labels from `CLASSES`: success; never_raised (a grasp miss or a slip at once); dropped (raised, then
    ended below half its highest rise, e.g. back on the table); held_short (raised and kept up, but not high
    enough / not on the target)."""
    dropped = tr["rise_last"] < DROP_FRACTION * tr["rise_max"]
    return np.where(tr["success"], "success", np.where(tr["rise_max"] < RAISED_M, "never_raised",
                                                       np.where(dropped, "dropped", "held_short")))


def summarise(tr: dict[str, np.ndarray]) -> dict:
    """Counts per class and, per class, the mean gripper command while raised and the smallest opening."""
    labels = classify(tr)
    res: dict = {"episodes": len(labels), "success_rate": float(tr["success"].mean())}
    for c in CLASSES:
        m = labels == c
        g = tr["grip_cmd_raised"][m]
        res[c] = {"count": int(m.sum()),
                  "grip_cmd_while_raised_mean": float(np.nanmean(g)) if np.isfinite(g).any() else None,
                  "opening_min_mean": float(tr["opening_min"][m].mean()) if m.any() else None,
                  "rise_max_mean": float(tr["rise_max"][m].mean()) if m.any() else None}
        if np.isfinite(tr["target_dist_last"]).any() and m.any():
            res[c]["target_dist_last_mean"] = float(tr["target_dist_last"][m].mean())
    return res


def main() -> None:
    from s2r.policies.evaluate import OnnxPolicy, run_task_config
    from s2r.sim import make

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="a run folder with policy.onnx (a BC base or a residual run)")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default=None, help="also write the summary here (JSON)")
    args = p.parse_args()
    policy = OnnxPolicy(Path(args.run))
    task_id, cfg = run_task_config(Path(args.run))
    env = make(task_id, args.episodes, cfg=cfg, seed=args.seed)
    try:
        res = {"run": args.run, "task": task_id, "seed": args.seed,
               **summarise(trace_episodes(policy, env, args.seed, reset=policy.reset))}
    finally:
        env.close()
    print(json.dumps(res))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
