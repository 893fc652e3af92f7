"""Go1 velocity tracking over the curriculum terrain, with wide dynamics randomisation and a height scan.

`TerrainVelocityEnv` is the flat task (`LocomotionEnv`: same `policy` group, rewards and step) on the tiled
map of `s2r.sim.terrain.curriculum`: each env owns a (level, type) tile, spawns at its centre and moves up or
down a level at each episode end by the distance it walked. Its `privileged` group carries, besides the flat
task's base velocity, height and foot contacts, the 16 sampled dynamics values (`WIDE_PARAMS`) and a height
scan: `height_scan.xs` x `height_scan.ys` points around the base in its yaw frame, each the base's height
above the terrain there (m), read straight from the heightfield grid (no ray casts; see `TerrainGrid`).

Finished episodes report `terrain_level` (the env's level after the curriculum moved it), which PPO logs as
`mean_terrain_level`; `info["log"]["terrain_level"]` is the mean level over every env after each step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import mujoco
import numpy as np
from s2r.sim.backends import check_fields
from s2r.sim.env import Obs, ObsTerm
from s2r.sim.tasks import terms as T
from s2r.sim.tasks.locomotion import POLICY_TERMS, LocomotionConfig, LocomotionEnv
from s2r.sim.tasks.wide_randomization import (
    WIDE_PARAM_SCALES,
    WIDE_PARAMS,
    WideRandomizationConfig,
    backend_values,
    sample_wide,
    wide_fields,
)
from s2r.sim.terrain.curriculum import (
    CurriculumConfig,
    TerrainCurriculum,
    TerrainGrid,
    TerrainGridConfig,
    build_grid,
    load_terrain_model,
)

_P = {name: i for i, name in enumerate(WIDE_PARAMS)}


@dataclass(frozen=True, kw_only=True)
class HeightScanConfig:
    """Scan points in the base's yaw frame (x forward, y left), metres; heights are clipped to +-clip."""

    xs: tuple[float, ...] = tuple(round(-0.5 + 0.1 * i, 2) for i in range(11))
    ys: tuple[float, ...] = tuple(round(-0.3 + 0.1 * i, 2) for i in range(7))
    clip: float = 1.0

    @property
    def points(self) -> int:
        """Number of scan points."""
        return len(self.xs) * len(self.ys)


@dataclass(frozen=True, kw_only=True)
class TerrainVelocityConfig(LocomotionConfig):
    """The terrain task: a `LocomotionConfig` on the curriculum grid with wide randomisation.

    Attributes:
        grid: The tile grid (levels, types, sizes, how difficulty scales).
        curriculum: Start levels, promotion and demotion, or one fixed level for evaluation.
        height_scan: The privileged height scan's points.
        footprint: Half-extents (m) of the body footprint whose mean ground height is the base-height reference.
        randomization: Wide dynamics randomisation (training ranges; OOD_RANDOMIZATION for evaluation).
    """

    terrain: str = "curriculum"
    grid: TerrainGridConfig = field(default_factory=TerrainGridConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    height_scan: HeightScanConfig = field(default_factory=HeightScanConfig)
    footprint: tuple[float, float] = (0.2, 0.1)
    randomization: WideRandomizationConfig = field(default_factory=WideRandomizationConfig)


def privileged_terms(cfg: TerrainVelocityConfig) -> tuple[ObsTerm, ...]:
    """The `privileged` group: base velocity, height and contacts, the 16 dynamics draws, the height scan."""
    return (
        ObsTerm(name="base_lin_vel", size=3, scale=(2.0,)),
        ObsTerm(name="base_height", size=1),
        ObsTerm(name="foot_contact", size=4),
        ObsTerm(name="randomization", size=len(WIDE_PARAMS), scale=WIDE_PARAM_SCALES),
        ObsTerm(name="height_scan", size=cfg.height_scan.points),
    )


def _yaw(quat: np.ndarray) -> np.ndarray:
    w, x, y, z = quat[:, 0], quat[:, 1], quat[:, 2], quat[:, 3]
    return np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


def _around(xy: np.ndarray, yaw: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(n, k, 2) world points at body-yaw-frame `offsets` (k, 2) around (n, 2) points `xy`."""
    c, s = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
    ox, oy = offsets[:, 0][None], offsets[:, 1][None]
    return np.stack([xy[:, 0:1] + c * ox - s * oy, xy[:, 1:2] + s * ox + c * oy], axis=-1)


def footprint_offsets(half: tuple[float, float]) -> np.ndarray:
    """(9, 2) body-frame points: the corners, edge midpoints and centre of a footprint of half-extents `half`."""
    fx, fy = half
    return np.array([[x, y] for x in (-fx, 0.0, fx) for y in (-fy, 0.0, fy)])


def mean_ground(grid: TerrainGrid, qpos: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(n,) mean ground height under the body footprint `offsets`, turned with each base's yaw.

    The base height is measured from it, so a stair edge under the trunk's centre does not read as a fall (nor a
    gap as a jump)."""
    return grid.height_at(_around(qpos[:, :2], _yaw(qpos[:, 3:7]), offsets)).mean(axis=1)


def spawn_ground(grid: TerrainGrid, xy: np.ndarray) -> np.ndarray:
    """(n,) highest ground under a footprint a little wider than the body, whatever the yaw: no foot starts inside."""
    return grid.height_at(xy[:, None, :] + _SPAWN_FOOTPRINT[None]).max(axis=1)


_SPAWN_FOOTPRINT = footprint_offsets((0.3, 0.3))


class TerrainVelocityEnv(LocomotionEnv):
    """Go1 velocity tracking on the curriculum terrain (see the module docstring)."""

    grid: TerrainGrid

    def _load_model(self, cfg: TerrainVelocityConfig, seed: int) -> mujoco.MjModel:
        self.grid = build_grid(cfg.grid)
        return load_terrain_model(cfg.model, self.grid)

    def __init__(self, cfg: TerrainVelocityConfig, num_envs: int = 1, seed: int = 0) -> None:
        if not isinstance(cfg.randomization, WideRandomizationConfig):
            raise ValueError("TerrainVelocityConfig.randomization must be a WideRandomizationConfig "
                             f"(got {type(cfg.randomization).__name__}); build it with WideRandomizationConfig(...)")
        super().__init__(cfg, num_envs, seed)
        n = num_envs
        self.dr_fields = wide_fields(cfg.randomization, self._trunk)
        check_fields(self.model, self.dr_fields)
        self.dr_params = np.zeros((n, len(WIDE_PARAMS)))
        self.curriculum = TerrainCurriculum(cfg.grid, cfg.curriculum, n, np.random.default_rng(seed + 1))
        self._spawn_xy = np.zeros((n, 2))
        gx, gy = np.meshgrid(np.asarray(cfg.height_scan.xs), np.asarray(cfg.height_scan.ys), indexing="ij")
        self.scan_offsets = np.stack([gx.ravel(), gy.ravel()], axis=1)  # (points, 2), x-major
        self._foot_offsets = footprint_offsets(cfg.footprint)
        self._grid_fresh = True
        self._declare(POLICY_TERMS, privileged_terms(cfg), self.joint_names, {
            **self.spec.extras, "terrain_types": list(cfg.grid.types), "terrain_levels": cfg.grid.levels})
        # Columns of the IMU terms in a policy frame, where the per-episode biases are added.
        starts = np.cumsum([0] + [t.size for t in POLICY_TERMS])
        names = [t.name for t in POLICY_TERMS]
        self._gyro_cols = slice(starts[names.index("base_ang_vel")], starts[names.index("base_ang_vel")] + 3)
        self._grav_cols = slice(starts[names.index("projected_gravity")], starts[names.index("projected_gravity")] + 3)

    # ---- curriculum -------------------------------------------------------------------------------

    def reset(self, seed: int | None = None) -> Obs:
        """Reset every env (levels are kept: a full reset is not an episode end)."""
        self._grid_fresh = True
        try:
            return super().reset(seed)
        finally:
            self._grid_fresh = False

    def step(self, actions: Any) -> tuple[Obs, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """`LocomotionEnv.step`, plus each finished episode's terrain level and the mean level in `info["log"]`."""
        obs, rew, term, trunc, info = super().step(actions)
        if "episode" in info:
            info["episode"]["terrain_level"] = self.curriculum.levels[info["episode"]["env_ids"]].astype(np.float64)
        info["log"]["terrain_level"] = self.curriculum.mean_level()
        return obs, rew, term, trunc, info

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must keep for a resumed run to continue the curriculum: every env's level."""
        return {"terrain_levels": self.curriculum.levels.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the levels of `state_dict`; the envs take them at their next reset."""
        levels = np.asarray(state["terrain_levels"], dtype=np.int64)
        if levels.shape != (self.num_envs,) or levels.min() < 0 or levels.max() >= self.cfg.grid.levels:
            raise ValueError(f"terrain_levels in the checkpoint hold {levels.shape[0]} levels in "
                             f"{levels.min()}..{levels.max()}; this env has {self.num_envs} envs and levels "
                             f"0..{self.cfg.grid.levels - 1}: resume with the run's own num_envs and grid")
        self.curriculum.levels[:] = levels

    def walked(self, ids: np.ndarray) -> np.ndarray:
        """(k,) horizontal distance (m) of the envs `ids` from where they spawned."""
        return np.hypot(*(self.backend.qpos[ids, :2] - self._spawn_xy[ids]).T)

    def _reset_envs(self, ids: np.ndarray) -> None:
        k = len(ids)
        if k == 0:
            return
        if not self._grid_fresh:
            # The episode's end: the curriculum moves the env before it respawns on its (new) tile, judged against
            # the distance its command asked for over the time it actually ran (a randomised start shortens it).
            ran_s = np.minimum(self.steps_run[ids] * self.cfg.control_dt, self.cfg.episode_s)
            asked = np.hypot(self.command[ids, 0], self.command[ids, 1]) * ran_s
            self.curriculum.update(ids, self.walked(ids), asked)
        params = sample_wide(self.rng, self.cfg.randomization, k)  # (k, 16)
        self.dr_params[ids] = params
        self.backend.randomize(ids, self.dr_fields, backend_values(self.dr_fields, params))
        self._reset_state(ids)

    def _draw_latency(self, ids: np.ndarray) -> None:
        self.latency[ids] = self.dr_params[ids, _P["latency"]].astype(np.int64)

    def _spawn_points(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        j = self.cfg.curriculum.spawn_jitter
        xy = self.grid.tile_centre(self.curriculum.levels[ids], self.curriculum.types[ids])
        xy = xy + self.rng.uniform(-j, j, (len(ids), 2))
        self._spawn_xy[ids] = xy
        return xy, spawn_ground(self.grid, xy)

    # ---- state and observations -------------------------------------------------------------------

    def _step_state(self) -> T.LocoState:
        self.ground_z[:] = mean_ground(self.grid, self.backend.qpos, self._foot_offsets)
        return super()._step_state()

    def _torques(self, q: np.ndarray, qd: np.ndarray, targets: np.ndarray, rows: np.ndarray | slice) -> np.ndarray:
        p = self.dr_params[rows]
        strength = p[:, _P["motor_strength"], None]
        kp = self._kp * (strength * p[:, _P["kp"], None])
        kv = self._kv * (strength * p[:, _P["kd"], None])
        return np.clip(kp * (targets - q) - kv * qd, self._force[:, 0] * strength, self._force[:, 1] * strength)

    def height_scan(self, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
        """(m, points) height of the base above the terrain at each scan point (m), clipped to +-clip."""
        qpos = self.backend.qpos[rows]
        pts = _around(qpos[:, :2], _yaw(qpos[:, 3:7]), self.scan_offsets)
        c = self.cfg.height_scan.clip
        return np.clip(qpos[:, 2:3] - self.grid.height_at(pts), -c, c)

    def _frame(self, s: T.LocoState, rows: np.ndarray | slice = slice(None)) -> tuple[np.ndarray, np.ndarray]:
        pol = np.concatenate([T.OBS_TERMS[t.name](s) for t in POLICY_TERMS], axis=1)
        p = self.dr_params[rows]
        # IMU biases: constant over an episode, added to what the robot measures (not to what rewards read).
        pol[:, self._gyro_cols] += p[:, _P["gyro_bias_x"] : _P["gyro_bias_z"] + 1]
        pol[:, self._grav_cols] += p[:, _P["gravity_bias_x"] : _P["gravity_bias_z"] + 1]
        pol *= self._policy_scale
        noise = self.cfg.randomization.observation_noise
        if noise > 0:
            pol += self.rng.uniform(-1.0, 1.0, pol.shape) * (self._policy_noise * noise)
        priv = [T.OBS_TERMS[name](s) for name in ("base_lin_vel", "base_height", "foot_contact")]
        priv = np.concatenate([*priv, p, self.height_scan(rows)], axis=1) * self._priv_scale
        return pol, priv
