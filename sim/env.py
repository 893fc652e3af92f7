"""The batched environment contract every backend and task meets.

An env holds `num_envs` worlds and steps them together. Observations are a dict of *groups*:
`policy` (what the robot can sense) and `privileged` (what only the simulator knows), plus optional
`image`. Algorithms pick groups by name from config (actor reads `policy`, an asymmetric critic reads
`policy` + `privileged`), never by position.

Arrays are numpy on the CPU backend; a GPU backend returns torch tensors on its device with the same
shapes and the same keys, so algorithm code converts with `torch.as_tensor` and nothing else changes.
Envs reset themselves when an episode ends; the observation that ended the episode is kept in
`info["final_obs"]` so value bootstrapping on time-outs sees the right state.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Obs = dict[str, Any]  # group name -> (num_envs, dim) array


@dataclass(frozen=True, kw_only=True)
class ObsTerm:
    """One named slice of an observation group (what `policy.json` records for the robot side).

    Attributes:
        name: Term name, e.g. "base_ang_vel".
        size: Number of values.
        scale: Multiplier applied after the raw value is read (per value, or one for all).
        offset_from_default: True for joint positions reported relative to the default pose.
        noise: Uniform noise half-width (in scaled units) added during training.
    """

    name: str
    size: int
    scale: tuple[float, ...] = (1.0,)
    offset_from_default: bool = False
    noise: float = 0.0


@dataclass(frozen=True, kw_only=True)
class EnvSpec:
    """Static description of a batched env.

    Attributes:
        obs_terms: group name -> ordered terms; the group's vector is their concatenation (per history
            frame, oldest first, when `history_length` > 1 for the `policy` group).
        action_names: One name per action dimension (actuated joints, in order).
        control_dt: Seconds between policy steps.
        max_episode_steps: Time-out in policy steps.
        history_length: Frames of the `policy` group stacked into one observation.
    """

    obs_terms: dict[str, tuple[ObsTerm, ...]]
    action_names: tuple[str, ...]
    control_dt: float
    max_episode_steps: int
    history_length: int = 1
    extras: dict[str, Any] = field(default_factory=dict)

    def group_dim(self, group: str) -> int:
        """Width of one observation group."""
        width = sum(t.size for t in self.obs_terms[group])
        return width * (self.history_length if group == "policy" else 1)

    @property
    def action_dim(self) -> int:
        """Number of action dimensions."""
        return len(self.action_names)


class VecEnv(ABC):
    """Batched env: `reset() -> obs`, `step(actions) -> obs, reward, terminated, truncated, info`."""

    num_envs: int
    spec: EnvSpec
    device: str = "cpu"

    @abstractmethod
    def reset(self, seed: int | None = None) -> Obs:
        """Reset every env and return the first observations."""

    @abstractmethod
    def step(self, actions: Any) -> tuple[Obs, Any, Any, Any, dict[str, Any]]:
        """Apply (num_envs, action_dim) actions for one control period.

        Returns:
            obs: Observation groups after the step (after auto-reset for finished envs).
            reward: (num_envs,) reward.
            terminated: (num_envs,) bool, the episode ended in a failure/terminal state.
            truncated: (num_envs,) bool, the episode hit its time limit.
            info: "final_obs" (groups before auto-reset), "episode" (finished-episode stats), "log".
        """

    def close(self) -> None:
        """Release native resources."""

    @property
    def obs_dims(self) -> dict[str, int]:
        """Group name -> width."""
        return {g: self.spec.group_dim(g) for g in self.spec.obs_terms}


def term_scales(terms: tuple[ObsTerm, ...]) -> np.ndarray:
    """Per-value scale of a group's concatenated terms."""
    return np.concatenate([np.broadcast_to(np.asarray(t.scale, dtype=np.float64), (t.size,)) for t in terms])


def term_noise(terms: tuple[ObsTerm, ...]) -> np.ndarray:
    """Per-value uniform noise half-width of a group's concatenated terms."""
    return np.concatenate([np.full(t.size, t.noise) for t in terms])


def sample_obs(env: VecEnv, steps: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Collect observations from random-action rollouts (used by the export parity check).

    Args:
        env: Env to roll.
        steps: Control steps to take.
        seed: Seed for reset and actions.

    Returns:
        Group name -> (steps * num_envs, dim) float32 array.
    """
    rng = np.random.default_rng(seed)
    obs = env.reset(seed=seed)
    out: dict[str, list[np.ndarray]] = {k: [np.asarray(v)] for k, v in obs.items()}
    for _ in range(steps):
        act = rng.normal(0.0, 0.5, size=(env.num_envs, env.spec.action_dim)).astype(np.float32)
        obs, *_ = env.step(act)
        for k, v in obs.items():
            out[k].append(np.asarray(v))
    return {k: np.concatenate(v).astype(np.float32) for k, v in out.items()}
