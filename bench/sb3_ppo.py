"""Stable-Baselines3 PPO on the same gymnasium-registered task, for the same wall-clock budget.

    python bench/sb3_ppo.py --minutes 30 --out bench/results/sb3_ppo

SB3 trains on `gymnasium.make("s2r/Go1-Velocity-Flat-v0")` (the `policy` group; no privileged critic) in a
vector env of one-env wrappers with VecNormalize, then its deterministic policy is judged by the same
walking criterion as ours (bench/walk_eval.py). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from walk_eval import walk_eval


def main() -> None:
    import gymnasium as gym
    import torch
    from s2r.sim import gym_id, task_config
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecNormalize

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="Go1-Velocity-Flat")
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--n-envs", type=int, default=16)
    p.add_argument("--vec", choices=["dummy", "subproc"], default="dummy")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--out", default="bench/results/sb3_ppo")
    args = p.parse_args()

    gid = gym_id(args.task)
    fns = [lambda i=i: gym.make(gid) for i in range(args.n_envs)]
    venv = SubprocVecEnv(fns) if args.vec == "subproc" else DummyVecEnv(fns)
    venv = VecNormalize(venv, norm_obs=True, norm_reward=True, gamma=0.99)
    venv.seed(args.seed)
    model = PPO(
        "MlpPolicy", venv, seed=args.seed, n_steps=256, batch_size=1024, n_epochs=5, learning_rate=3e-4,
        gamma=0.99, gae_lambda=0.95, ent_coef=0.0, clip_range=0.2, max_grad_norm=1.0, verbose=0,
        policy_kwargs={"net_arch": {"pi": [256, 128, 64], "vf": [256, 128, 64]}, "activation_fn": torch.nn.ELU,
                       "log_std_init": 0.0},
    )
    deadline = time.monotonic() + args.minutes * 60

    class Deadline(BaseCallback):
        def _on_step(self) -> bool:
            return time.monotonic() < deadline

    t0 = time.perf_counter()
    model.learn(total_timesteps=10**10, callback=Deadline())
    wall = time.perf_counter() - t0
    steps = int(model.num_timesteps)

    def act(obs: np.ndarray) -> np.ndarray:
        a, _ = model.predict(venv.normalize_obs(obs), deterministic=True)
        return a

    ev = walk_eval(act, args.task, task_config(args.task), episodes=args.episodes)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"bench": "sb3_ppo", "task": args.task, "n_envs": args.n_envs, "vec": args.vec, "seed": args.seed,
              "train_minutes": round(wall / 60, 2), "env_steps": steps, "env_steps_per_s": steps / wall, **ev}
    (out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
