"""The batched environment contract every backend and task meets.

An env holds `num_envs` worlds and steps them together. Observations are a dict of *groups*:
`policy` (what the robot can sense) and `privileged` (what only the simulator knows), plus optional
`image` groups. Each group declares its own spec (`GroupSpec`): a vector of terms stacked over its own
history length (float32), or a camera image (uint8 H x W x C). Algorithms pick groups by name from
config (actor reads `policy`, an asymmetric critic reads `policy` + `privileged`), never by position.

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

Obs = dict[str, Any]  # group name -> (num_envs, dim) float32 array, or (num_envs, H, W, C) uint8 for images


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
class ImageSpec:
    """A camera image observation: uint8 H x W x C from a named MJCF camera.

    Attributes:
        camera: MJCF camera name.
        height: Rows in pixels.
        width: Columns in pixels.
        channels: Colour channels (3: RGB).
    """

    camera: str
    height: int
    width: int
    channels: int = 3


@dataclass(frozen=True, kw_only=True)
class GroupSpec:
    """One observation group: a vector of terms stacked over `history` frames, or a camera image.

    Attributes:
        terms: Vector group: one frame is the concatenation of these terms.
        history: Frames stacked into one observation, oldest first (vector groups only).
        image: Set for an image group (which then has no terms).
    """

    terms: tuple[ObsTerm, ...] = ()
    history: int = 1
    image: ImageSpec | None = None

    def __post_init__(self) -> None:
        if self.history < 1:
            raise ValueError(f"GroupSpec.history must be >= 1, got {self.history}")
        if self.image is not None and (self.terms or self.history != 1):
            raise ValueError("an image GroupSpec takes no terms and no history; declare vectors in their own group")

    @property
    def is_image(self) -> bool:
        """True for an image group."""
        return self.image is not None

    @property
    def frame_dim(self) -> int:
        """Values in one frame of a vector group (0 for an image group)."""
        return sum(t.size for t in self.terms)

    @property
    def shape(self) -> tuple[int, ...]:
        """Per-env shape: (history * frame_dim,) for a vector group, (H, W, C) for an image group."""
        if self.image is not None:
            return (self.image.height, self.image.width, self.image.channels)
        return (self.history * self.frame_dim,)

    @property
    def dtype(self) -> str:
        """"uint8" for an image group, "float32" for a vector group."""
        return "uint8" if self.image is not None else "float32"


@dataclass(frozen=True, kw_only=True)
class EnvSpec:
    """Static description of a batched env.

    Attributes:
        groups: Observation group name -> its spec (terms and history, or a camera image).
        action_names: One name per action dimension (actuated joints, in order).
        control_dt: Seconds between policy steps.
        max_episode_steps: Time-out in policy steps.
        extras: Task facts the export and the robot side read (action scale, default pose, ...).
    """

    groups: dict[str, GroupSpec]
    action_names: tuple[str, ...]
    control_dt: float
    max_episode_steps: int
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def obs_terms(self) -> dict[str, tuple[ObsTerm, ...]]:
        """Vector group name -> ordered terms (image groups left out)."""
        return {g: s.terms for g, s in self.groups.items() if not s.is_image}

    @property
    def history_length(self) -> int:
        """Frames of the `policy` group stacked into one observation (what `policy.json` records)."""
        return self.groups["policy"].history if "policy" in self.groups else 1

    def _group(self, group: str) -> GroupSpec:
        try:
            return self.groups[group]
        except KeyError:
            raise KeyError(f"observation group '{group}' is not declared (the env has {sorted(self.groups)})") from None

    def group_dim(self, group: str) -> int:
        """Flat width of a vector group (history * frame width); raises ValueError for an image group."""
        spec = self._group(group)
        if spec.is_image:
            raise ValueError(f"observation group '{group}' is an image of shape {spec.shape}, not a vector: "
                             "read its shape with group_shape() or pick a vector group")
        return spec.shape[0]

    def group_shape(self, group: str) -> tuple[int, ...]:
        """Per-env shape of a group: (width,) or (H, W, C)."""
        return self._group(group).shape

    def group_dtype(self, group: str) -> str:
        """"float32" for a vector group, "uint8" for an image group."""
        return self._group(group).dtype

    @property
    def action_dim(self) -> int:
        """Number of action dimensions."""
        return len(self.action_names)


class ObsHistory:
    """Stacks the frames of every vector group with `history` > 1, oldest first, one buffer per group.

    Each group keeps a (num_envs, history, frame_dim) buffer. `push` slides every env's window by one
    frame; `reset_rows` restarts the windows of just-reset envs with copies of their new frame; after
    `clear` (a full reset) the next `push` fills every window with copies of its frame. Groups with one
    frame and image groups pass through unchanged.
    """

    def __init__(self, groups: dict[str, GroupSpec], num_envs: int) -> None:
        self.num_envs = num_envs
        self.lengths = {g: s.history for g, s in groups.items() if not s.is_image and s.history > 1}
        self._buf: dict[str, np.ndarray] = {}

    def clear(self) -> None:
        """Forget every window; the next `push` starts each from copies of its frame."""
        self._buf = {}

    def push(self, frames: Obs) -> Obs:
        """Append one frame per env to each stacked group.

        Args:
            frames: Group name -> (num_envs, frame_dim) newest frame (other groups are returned as given).

        Returns:
            The same groups, stacked ones as (num_envs, history * frame_dim) views of the buffers.
        """
        out = dict(frames)
        for g, h in self.lengths.items():
            frame = frames[g]
            buf = self._buf.get(g)
            if buf is None:
                buf = self._buf[g] = np.repeat(frame[:, None, :], h, axis=1)
            else:
                buf[:, :-1] = buf[:, 1:]
                buf[:, -1] = frame
            out[g] = buf.reshape(self.num_envs, -1)
        return out

    def reset_rows(self, frames: Obs, ids: np.ndarray) -> Obs:
        """Restart the windows of envs `ids` from their new frames.

        Args:
            frames: Group name -> (len(ids), frame_dim) first frame of each reset env.
            ids: Rows to restart.

        Returns:
            The same groups, stacked ones as (len(ids), history * frame_dim).
        """
        out = dict(frames)
        for g in self.lengths:
            buf = self._buf[g]
            buf[ids] = frames[g][:, None, :]
            out[g] = buf[ids].reshape(len(ids), -1)
        return out


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
        """Vector group name -> flat width (image groups are left out; see `obs_shapes`)."""
        return {g: self.spec.group_dim(g) for g, s in self.spec.groups.items() if not s.is_image}

    @property
    def obs_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every group name -> per-env shape: (width,) or (H, W, C)."""
        return {g: s.shape for g, s in self.spec.groups.items()}

    @property
    def obs_dtypes(self) -> dict[str, str]:
        """Every group name -> "float32" (vector) or "uint8" (image)."""
        return {g: s.dtype for g, s in self.spec.groups.items()}


def control_substeps(timestep: float, control_dt: float) -> int:
    """Physics steps per control step; raises ValueError when `control_dt` is not a multiple of `timestep`."""
    substeps = max(1, round(control_dt / timestep))
    if abs(substeps * timestep - control_dt) > 1e-9:
        raise ValueError(f"control_dt {control_dt} is not a multiple of the model timestep {timestep}")
    return substeps


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
        Group name -> (steps * num_envs, *shape) array: float32 for vector groups, uint8 for image groups.
    """
    rng = np.random.default_rng(seed)
    obs = env.reset(seed=seed)
    out: dict[str, list[np.ndarray]] = {k: [np.asarray(v)] for k, v in obs.items()}
    for _ in range(steps):
        act = rng.normal(0.0, 0.5, size=(env.num_envs, env.spec.action_dim)).astype(np.float32)
        obs, *_ = env.step(act)
        for k, v in obs.items():
            out[k].append(np.asarray(v))
    dtypes = env.obs_dtypes
    return {k: np.concatenate(v).astype(dtypes.get(k, "float32")) for k, v in out.items()}
