"""Shared walking criterion: forward commands in [-1, 1] m/s, 20 s episodes, mean tracking error and falls.

Used by bench/time_to_walk.py (our PPO) and bench/sb3_ppo.py (Stable-Baselines3 PPO) so both are judged
by the same code on the same batched env.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from s2r.policies.evaluate import one_episode_each
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
    try:
        ep = one_episode_each(act, env, seed)
    finally:
        env.close()
    out = {"mean_vel_error": float(ep["vel_error"].mean()), "fall_rate": float(ep["fell"].mean()),
           "mean_return": float(ep["return"].mean())}
    out["walks"] = float(out["mean_vel_error"] <= MAX_ERROR and out["fall_rate"] < MAX_FALL_RATE)
    return out
