"""Which privilege carries a privileged PPO run's success? Its full actor (task and privileged columns) from the
checkpoint, run at chosen per-privilege scales, with sampled and with mean actions.

    OMP_NUM_THREADS=1 python bench/privileged_probe.py <run folder> --scale 0.25 [--ablate] [--episodes 64]

Flat box (Panda-Lift-FlatBox-Privileged): per setting, success, turned >= 80 deg, grasped, lifted >= 1 cm and the
mean largest lift of failed episodes. `--ablate` adds each privilege at 0 with the others at `--scale`, and the
wrench alone. Drawer (Panda-Drawer-Cube-Privileged): steps until the drawer is open, the hand-to-cube distance over
the episode and how far the cube moved. Prints one JSON line per setting.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def load(run: Path, n: int, seed: int):
    """(env, model) of a run: its task with privileges, its full actor-critic from the checkpoint."""
    from s2r.policies.driver import load_checkpoint, resume_run_spec
    from s2r.policies.networks import ActorCritic
    from s2r.policies.ppo import _critic_without_missing_privileged
    from s2r.sim import make

    spec = resume_run_spec(run)
    env = make(spec.task_id, n, cfg=spec.task_cfg, seed=seed)
    model = ActorCritic(env.obs_dims, env.spec.action_dim,
                        _critic_without_missing_privileged(spec.cfg.algo, env.obs_dims).policy)
    model.load_state_dict(load_checkpoint(run / "checkpoint.pt")["state"]["algo"]["model"])
    return env, model.eval()


def actions(model, obs: dict, sample: bool, gen: torch.Generator) -> np.ndarray:
    with torch.no_grad():
        d = model.distribution(model.actor_input({k: torch.as_tensor(v) for k, v in obs.items()}))
        return (d.mean + d.stddev * torch.randn(d.mean.shape, generator=gen) if sample else d.mean).numpy()


def flatbox(env, model, sample: bool, seed: int) -> dict[str, float]:
    """One episode per env: success, turned, grasped, lifted (see the module docstring)."""
    n = env.num_envs
    obs, gen = env.reset(seed=seed), torch.Generator().manual_seed(seed)
    done = np.zeros(n, bool)
    succ, grasp, turn, lift = np.zeros(n, bool), np.zeros(n, bool), np.zeros(n), np.zeros(n)
    while not done.all():
        obs, _, term, trunc, info = env.step(actions(model, obs, sample, gen))
        ended = term | trunc
        live = ~done & ~ended  # ended envs were reset inside step(): their state is the next episode's
        b = env.behaviour()
        turn[live] = np.maximum(turn[live], b["turn_deg"][live])
        grasp[live] |= b["grasped"][live]
        lift[live] = np.maximum(lift[live], b["lift"][live])
        succ[ended & ~done] = np.asarray(info["success"])[ended & ~done]
        done |= ended
    failed = lift[~succ]
    return {"success": float(succ.mean()), "turned_80": float((turn >= 80).mean()), "grasped": float(grasp.mean()),
            "lifted_1cm": float(((lift >= 0.01) | succ).mean()),
            "mean_max_lift_cm_failed": float(100 * failed.mean()) if len(failed) else 0.0}


def drawer(env, model, sample: bool, seed: int) -> dict[str, float]:
    """One full-length episode per env: when the drawer opened, how near the hand came to the cube."""
    n = env.num_envs
    obs, gen = env.reset(seed=seed), torch.Generator().manual_seed(seed)
    cube0 = env.backend.qpos[:, 9:12].copy()
    opened = np.full(n, -1)
    dist = []
    for t in range(env.cfg.max_episode_steps - 1):
        obs = env.step(actions(model, obs, sample, gen))[0]  # no success here: the episode runs to its end
        opened[(opened < 0) & (env.opening >= env.cfg.open_distance)] = t
        dist.append(np.linalg.norm(env.backend.qpos[:, 9:12] - env.ee_pos, axis=1))
    d, did = np.array(dist), opened >= 0
    return {"opened": float(did.mean()), "mean_steps_to_open": float(opened[did].mean()) if did.any() else None,
            "mean_hand_cube_m_last_half": float(d[len(d) // 2:].mean()), "min_hand_cube_m": float(d.min()),
            "steps_within_8cm": float((d < 0.08).mean()),
            "mean_cube_moved_m": float(np.linalg.norm(env.backend.qpos[:, 9:12] - cube0, axis=1).mean())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("--scale", type=float, default=1.0, help="scale of every privilege in the first setting")
    p.add_argument("--ablate", action="store_true", help="also each privilege at 0 (others at --scale), the wrench alone")
    p.add_argument("--episodes", type=int, default=64)
    p.add_argument("--seed", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(1)
    env, model = load(args.run, args.episodes, 1234)
    probe = drawer if hasattr(env, "opening") else flatbox
    kinds = [p.kind for p in env.cfg.privileged]
    settings = [("all", dict.fromkeys(kinds, args.scale))]
    if args.ablate:
        settings += [(f"no_{k}", {**dict.fromkeys(kinds, args.scale), k: 0.0}) for k in kinds]
        settings.append(("wrench_only", {k: args.scale if k == "virtual_wrench" else 0.0 for k in kinds}))
    settings.append(("zero", dict.fromkeys(kinds, 0.0)))
    try:
        for name, scales in settings:
            env.set_privilege_scale(scales)
            for sample in (True, False):
                row = {"setting": name, "scales": scales, "actions": "sampled" if sample else "mean",
                       **probe(env, model, sample, args.seed)}
                print(json.dumps(row), flush=True)
    finally:
        env.close()


if __name__ == "__main__":
    main()
