"""What every velocity-command task shares: the command, scheduled pushes, finished-episode statistics.

The Go1 locomotion task and the puck task both track a commanded (vx, vy, yaw rate); keeping these
pieces here means a change to how commands are drawn or episodes are reported happens once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True, kw_only=True)
class CommandConfig:
    """Ranges the velocity command is drawn from (uniform), and how often it changes."""

    lin_vel_x: tuple[float, float] = (-1.0, 1.0)
    lin_vel_y: tuple[float, float] = (0.0, 0.0)
    ang_vel_z: tuple[float, float] = (-0.5, 0.5)
    resample_s: float = 10.0
    zero_fraction: float = 0.05  # share of commands that ask to stand still


def sample_commands(rng: np.random.Generator, c: CommandConfig, k: int) -> np.ndarray:
    """(k, 3) commands vx, vy, wz; a `zero_fraction` share of them is zero (stand still)."""
    cmd = np.stack([rng.uniform(*c.lin_vel_x, k), rng.uniform(*c.lin_vel_y, k), rng.uniform(*c.ang_vel_z, k)], axis=1)
    cmd[rng.random(k) < c.zero_fraction] = 0.0
    return cmd


def push_bases(qvel: np.ndarray, due: np.ndarray, velocity: float, rng: np.random.Generator) -> None:
    """Add a uniform horizontal velocity of up to `velocity` m/s to the free base of the `due` envs."""
    if velocity > 0 and due.any():
        qvel[due, :2] += rng.uniform(-1, 1, (int(due.sum()), 2)) * velocity


def episode_stats(ids: np.ndarray, returns: np.ndarray, steps: np.ndarray, tracking: np.ndarray,
                  terminated: np.ndarray) -> dict[str, Any]:
    """`info["episode"]` for the envs `ids` that just finished (copies, taken before their reset)."""
    return {
        "env_ids": ids,
        "return": returns[ids].copy(),
        "length": steps[ids].copy(),
        "vel_error": tracking[ids] / np.maximum(steps[ids], 1),
        "fell": terminated[ids].copy(),
    }
