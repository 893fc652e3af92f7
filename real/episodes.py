"""Episodes on disk: the one format for demonstrations, teleop corrections and interventions.

Numpy only, so the robot computer can write it while a human drives (the same files feed the learner).

Format (version 2; version 1 is the same without image groups) — a directory::

    <root>/meta.json            {"format": "s2r-episodes", "version": 2, "task": "Panda-Lift-Cube",
                                 "obs_dims": {"policy": 20, "privileged": 9}, "action_dim": 4,
                                 "image_shapes": {"image": [84, 84, 3]},
                                 "action_names": [...], "control_dt": 0.05}
    <root>/episode_000000.npz   one finished episode, written to a temporary name and renamed, so a
    <root>/episode_000001.npz   killed writer leaves whole episodes or nothing (never half a file)

Each episode file holds, for T steps:

    obs.<group>    (T+1, dim) float32  observation before each action; the last row is the one after the
                                       final action (the observation that ended the episode)
    obs.<image>    (T+1, H, W, C) uint8  the same for an image group (a named camera)
    actions        (T, action_dim) float32, in the env's normalised action space ([-1, 1])
    rewards        (T,) float32
    terminated     ()  bool   True when the last step reached a terminal state (success or failure),
                              False when the episode was cut by the time limit (bootstrap from the last obs)
    success        ()  bool
    intervention   (T,) bool  True where a human (teleop) chose the action instead of the policy
    source         ()  str    who acted: "expert", "teleop", "policy", "intervention", ...

A directory without image groups is written as version 1, byte for byte as before (older readers read
it). With image groups every file is written with `np.savez_compressed` (deflate): rendered frames with
flat regions shrink several times over, and the file stays a plain `.npz`.

Reading checks every file against meta.json and against what the caller expects (task, dims, image
shapes), and names the file and the field that differ.
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "s2r-episodes"
VERSION = 2  # what an image directory is written as; vector-only directories stay version 1
_META = "meta.json"


class EpisodeFormatError(ValueError):
    """An episode directory or file that is missing, truncated or written for something else."""


@dataclass(frozen=True, kw_only=True)
class EpisodeMeta:
    """What every episode in a directory shares.

    Attributes:
        task: Registered task id the episodes were recorded on.
        obs_dims: Float32 vector group name -> width.
        action_dim: Width of the action.
        action_names: One name per action dimension.
        control_dt: Seconds between steps.
        image_shapes: uint8 image group name -> (height, width, channels).
    """

    task: str
    obs_dims: dict[str, int]
    action_dim: int
    action_names: tuple[str, ...] = ()
    control_dt: float = 0.0
    image_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def obs_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every group's shape per step: (dim,) for vectors, (H, W, C) for images."""
        return {**{g: (d,) for g, d in self.obs_dims.items()}, **self.image_shapes}

    @property
    def obs_dtypes(self) -> dict[str, str]:
        """Every group's dtype: "float32" for vectors, "uint8" for images."""
        return {**{g: "float32" for g in self.obs_dims}, **{g: "uint8" for g in self.image_shapes}}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict including the format tag and version (1 without image groups, as before)."""
        out = {"format": FORMAT, "version": VERSION if self.image_shapes else 1, "task": self.task,
               "obs_dims": dict(self.obs_dims), "action_dim": self.action_dim}
        if self.image_shapes:
            out["image_shapes"] = {g: list(s) for g, s in self.image_shapes.items()}
        return {**out, "action_names": list(self.action_names), "control_dt": self.control_dt}


@dataclass(frozen=True, kw_only=True)
class Episode:
    """One finished episode (see the module docstring for shapes)."""

    obs: dict[str, np.ndarray]
    actions: np.ndarray
    rewards: np.ndarray
    terminated: bool
    success: bool
    source: str = "unknown"
    intervention: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    @property
    def length(self) -> int:
        """Number of steps (actions) in the episode."""
        return int(self.actions.shape[0])


def _read_meta(root: Path) -> EpisodeMeta:
    path = root / _META
    if not root.is_dir():
        raise EpisodeFormatError(f"episode directory {root} does not exist (record some with `s2r demos collect <task>`)")
    if not path.is_file():
        raise EpisodeFormatError(f"{path} is missing: {root} is not an episode directory (record demos with `s2r demos collect`)")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise EpisodeFormatError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise EpisodeFormatError(f"{path} is not an s2r episode directory (format should be '{FORMAT}')")
    if raw.get("version") not in (1, VERSION):
        raise EpisodeFormatError(f"{path} has episode format version {raw.get('version')}; this s2r reads versions "
                                 f"1 to {VERSION}")
    try:
        images = {str(k): tuple(int(x) for x in v) for k, v in raw.get("image_shapes", {}).items()}
        meta = EpisodeMeta(task=str(raw["task"]), obs_dims={str(k): int(v) for k, v in raw["obs_dims"].items()},
                           action_dim=int(raw["action_dim"]), action_names=tuple(raw.get("action_names", ())),
                           control_dt=float(raw.get("control_dt", 0.0)), image_shapes=images)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise EpisodeFormatError(f"{path} lacks or mistypes a field ({e})") from None
    bad = [g for g, shape in meta.image_shapes.items() if len(shape) != 3 or min(shape) < 1]
    if bad:
        raise EpisodeFormatError(f"{path}: image group '{bad[0]}' has shape {list(meta.image_shapes[bad[0]])}; "
                                 "image_shapes must be [height, width, channels]")
    return meta


def _atomic_write(path: Path, write: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class EpisodeWriter:
    """Writes finished episodes into a directory, one atomically renamed file each.

    Opening an existing directory appends after its last episode; its meta.json must match.
    """

    def __init__(self, root: str | Path, meta: EpisodeMeta) -> None:
        self.root = Path(root)
        self.meta = meta
        if (self.root / _META).exists():
            old = _read_meta(self.root)
            key = (meta.task, meta.obs_dims, meta.action_dim, {g: tuple(s) for g, s in meta.image_shapes.items()})
            if (old.task, old.obs_dims, old.action_dim, old.image_shapes) != key:
                raise EpisodeFormatError(
                    f"{self.root} holds episodes of {old.task} (obs {old.obs_shapes}, action {old.action_dim}); "
                    f"refusing to append episodes of {meta.task} (obs {meta.obs_shapes}, action {meta.action_dim}). "
                    "Choose another directory."
                )
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            _atomic_write(self.root / _META, lambda f: f.write(json.dumps(meta.to_dict(), indent=2).encode()))
        self._next = len(_episode_files(self.root))

    def add(self, episode: Episode) -> Path:
        """Check and write one episode; returns its path."""
        _check_episode(episode, self.meta, f"episode {self._next}")
        path = self.root / f"episode_{self._next:06d}.npz"
        arrays = {f"obs.{g}": v if g in self.meta.image_shapes else np.asarray(v, dtype=np.float32)
                  for g, v in episode.obs.items()}
        intervention = episode.intervention if episode.intervention.size else np.zeros(episode.length, dtype=bool)
        arrays.update(actions=np.asarray(episode.actions, dtype=np.float32),
                      rewards=np.asarray(episode.rewards, dtype=np.float32),
                      terminated=np.asarray(bool(episode.terminated)), success=np.asarray(bool(episode.success)),
                      intervention=np.asarray(intervention, dtype=bool), source=np.asarray(episode.source))
        save = np.savez_compressed if self.meta.image_shapes else np.savez
        _atomic_write(path, lambda f: save(f, **arrays))
        self._next += 1
        return path

    def __len__(self) -> int:
        return self._next


class EpisodeRecorder:
    """Collects steps of `num_envs` lockstep envs and writes each env's episode when it ends."""

    def __init__(self, writer: EpisodeWriter, num_envs: int, source: str) -> None:
        self.writer = writer
        self.num_envs = num_envs
        self.source = source
        self._steps: list[dict[str, list[Any]]] = [self._empty() for _ in range(num_envs)]

    @staticmethod
    def _empty() -> dict[str, list[Any]]:
        return {"obs": [], "actions": [], "rewards": [], "intervention": []}

    def step(self, obs: Mapping[str, np.ndarray], actions: np.ndarray, rewards: np.ndarray, next_obs: Mapping[str, np.ndarray],
             terminated: np.ndarray, truncated: np.ndarray, success: np.ndarray,
             final_obs: Mapping[str, np.ndarray] | None = None, intervention: np.ndarray | None = None) -> list[Episode]:
        """Record one batched step; returns the episodes that finished (already written).

        Args:
            obs: Observations the actions were chosen from, group -> (num_envs, dim).
            actions: (num_envs, action_dim).
            rewards: (num_envs,).
            next_obs: Observations after the step (after auto-reset for finished envs).
            terminated: (num_envs,) bool.
            truncated: (num_envs,) bool.
            success: (num_envs,) bool, read for finished envs.
            final_obs: Observations before auto-reset (the env's info["final_obs"]); defaults to next_obs.
            intervention: (num_envs,) bool, True where a human chose the action.
        """
        final_obs = final_obs if final_obs is not None else next_obs
        done = np.logical_or(terminated, truncated)
        finished = []
        for i in range(self.num_envs):
            s = self._steps[i]
            s["obs"].append({g: np.asarray(v[i]) for g, v in obs.items()})
            s["actions"].append(np.asarray(actions[i]))
            s["rewards"].append(float(rewards[i]))
            s["intervention"].append(bool(intervention[i]) if intervention is not None else False)
            if done[i]:
                last = {g: np.asarray(v[i]) for g, v in final_obs.items()}
                ep = Episode(
                    obs={g: np.stack([o[g] for o in s["obs"]] + [last[g]]) for g in last},
                    actions=np.stack(s["actions"]), rewards=np.asarray(s["rewards"], dtype=np.float32),
                    terminated=bool(terminated[i]), success=bool(success[i]), source=self.source,
                    intervention=np.asarray(s["intervention"], dtype=bool),
                )
                self.writer.add(ep)
                finished.append(ep)
                self._steps[i] = self._empty()
        return finished


def _episode_files(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("episode_*.npz"))


def _check_episode(ep: Episode, meta: EpisodeMeta, where: str) -> None:
    t = ep.actions.shape[0] if ep.actions.ndim == 2 else -1
    if t < 1 or ep.actions.shape[1] != meta.action_dim:
        raise EpisodeFormatError(f"{where}: actions have shape {ep.actions.shape}, expected (T>=1, {meta.action_dim})")
    if set(ep.obs) != set(meta.obs_shapes):
        raise EpisodeFormatError(f"{where}: observation groups {sorted(ep.obs)} differ from {sorted(meta.obs_shapes)}")
    for g, dim in meta.obs_dims.items():
        if ep.obs[g].shape != (t + 1, dim):
            raise EpisodeFormatError(f"{where}: obs group '{g}' has shape {ep.obs[g].shape}, expected ({t + 1}, {dim})")
    for g, shape in meta.image_shapes.items():
        x = ep.obs[g]
        if x.shape != (t + 1, *shape) or x.dtype != np.uint8:
            raise EpisodeFormatError(f"{where}: image group '{g}' is {x.shape} {x.dtype}, expected "
                                     f"{(t + 1, *shape)} uint8")
    if ep.rewards.shape != (t,):
        raise EpisodeFormatError(f"{where}: rewards have shape {ep.rewards.shape}, expected ({t},)")
    if ep.intervention.size and ep.intervention.shape != (t,):
        raise EpisodeFormatError(f"{where}: intervention has shape {ep.intervention.shape}, expected ({t},)")


def load_episode(path: str | Path, meta: EpisodeMeta) -> Episode:
    """Read and check one episode file."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise EpisodeFormatError(f"{path} is truncated or not an episode file ({e})") from None
    missing = [k for k in ("actions", "rewards", "terminated", "success") if k not in data]
    if missing:
        raise EpisodeFormatError(f"{path} lacks {', '.join(missing)}")
    ep = Episode(
        obs={k[4:]: v for k, v in data.items() if k.startswith("obs.")},
        actions=data["actions"], rewards=data["rewards"], terminated=bool(data["terminated"]), success=bool(data["success"]),
        source=str(data.get("source", "unknown")), intervention=data.get("intervention", np.zeros(0, dtype=bool)),
    )
    _check_episode(ep, meta, str(path))
    return ep


def read_episodes(root: str | Path, *, task: str | None = None, obs_dims: Mapping[str, int] | None = None,
                  action_dim: int | None = None, obs_shapes: Mapping[str, tuple[int, ...]] | None = None,
                  obs_dtypes: Mapping[str, str] | None = None) -> tuple[EpisodeMeta, list[Episode]]:
    """Read every episode of a directory, checked against what the caller expects.

    Args:
        root: Episode directory.
        task: Expected task id (None: any).
        obs_dims: Expected vector group widths; groups the caller needs must exist with these widths.
        action_dim: Expected action width.
        obs_shapes: Expected shapes of any groups, (dim,) or (H, W, C) (e.g. an env's `obs_shapes`).
        obs_dtypes: Expected dtypes ("float32" or "uint8") of the groups it names that `obs_shapes` names too
            (None: not checked).

    Returns:
        The directory's meta and its episodes in recording order.

    Raises:
        EpisodeFormatError: naming the file and what differs.
    """
    root = Path(root)
    meta = _read_meta(root)
    where = root / _META
    if task is not None and meta.task != task:
        raise EpisodeFormatError(f"{where}: episodes were recorded on task '{meta.task}', not '{task}'")
    if action_dim is not None and meta.action_dim != action_dim:
        raise EpisodeFormatError(f"{where}: action width {meta.action_dim}, expected {action_dim}")
    for g, dim in (obs_dims or {}).items():
        if g not in meta.obs_dims:
            raise EpisodeFormatError(f"{where}: no observation group '{g}' (has {sorted(meta.obs_dims)})")
        if meta.obs_dims[g] != dim:
            raise EpisodeFormatError(f"{where}: observation group '{g}' has width {meta.obs_dims[g]}, expected {dim}")
    shapes, dtypes = meta.obs_shapes, meta.obs_dtypes
    for g, shape in (obs_shapes or {}).items():
        want = (tuple(shape), (obs_dtypes or {}).get(g, dtypes.get(g)))
        if g not in shapes:
            raise EpisodeFormatError(f"{where}: no observation group '{g}' (has {sorted(shapes)})")
        if (shapes[g], dtypes[g]) != want:
            raise EpisodeFormatError(f"{where}: observation group '{g}' is {shapes[g]} {dtypes[g]}, expected "
                                     f"{want[0]} {want[1]}")
    files = _episode_files(root)
    if not files:
        raise EpisodeFormatError(f"{root} holds no episodes")
    for stale in root.glob("*.tmp"):
        warnings.warn(f"ignoring {stale}: an episode whose write was interrupted", stacklevel=2)
    return meta, [load_episode(p, meta) for p in files]
