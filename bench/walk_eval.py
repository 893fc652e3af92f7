"""Shared walking criterion: forward commands in [-1, 1] m/s, 20 s episodes, mean tracking error and falls.

Used by bench/time_to_walk.py (our PPO) and bench/sb3_ppo.py (Stable-Baselines3 PPO) so both are judged
by the same code on the same batched env.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from s2r.sim import make
from s2r.sim.config import apply_overrides

# The criterion of issue 2: commanded forward speeds in [-1, 1] m/s, no sideways or turning command.
FORWARD_ONLY = {
    "commands.lin_vel_x": (-1.0, 1.0),
    "commands.lin_vel_y": (0.0, 0.0),
    "commands.ang_vel_z": (0.0, 0.0),
    "commands.zero_fraction": 0.0,
}
MAX_ERROR = 0.25
MAX_FALL_RATE = 0.05


def walk_eval(act: Callable[[np.ndarray], np.ndarray], task_id: str, task_cfg: Any, episodes: int = 100,
              seed: int = 777) -> dict[str, float]:
    """Run `episodes` envs for one 20 s episode each with `act(policy_obs) -> actions`.

    Returns:
        mean_vel_error (m/s, per-episode mean of |v_cmd - v| over the horizontal plane), fall_rate,
        mean_return, walks (1.0 when both thresholds are met).
    """
    cfg = apply_overrides(task_cfg, FORWARD_ONLY)
    env = make(task_id, episodes, cfg=cfg, seed=seed)
    obs = env.reset(seed=seed)
    done = np.zeros(episodes, dtype=bool)
    err = np.zeros(episodes)
    fell = np.zeros(episodes, dtype=bool)
    ret = np.zeros(episodes)
    while not done.all():
        obs, _, _, _, info = env.step(act(obs["policy"]))
        if "episode" in info:
            e = info["episode"]
            for j, i in enumerate(e["env_ids"]):
                if not done[i]:
                    done[i] = True
                    err[i], fell[i], ret[i] = e["vel_error"][j], e["fell"][j], e["return"][j]
    env.close()
    out = {"mean_vel_error": float(err.mean()), "fall_rate": float(fell.mean()), "mean_return": float(ret.mean())}
    out["walks"] = float(out["mean_vel_error"] <= MAX_ERROR and out["fall_rate"] < MAX_FALL_RATE)
    return out
