"""One simulated robot for the robot side to talk to: the MuJoCo stand-in behind the ROS sim bridge.

It builds the same model, default pose and control period as a registered task, runs PD control at
physics rate (MuJoCo position actuators, the gains the policy was trained with), and reads what a real
robot's drivers report: joint encoders, an IMU at the `imu` site (orientation, body-frame gyro,
accelerometer) and the base pose for odometry. No ROS here; `s2r_ros.sim_bridge_node` wraps it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mujoco
import numpy as np
from s2r.sim.config import from_dict
from s2r.sim.models import load_model, terrain_height_at
from s2r.sim.registry import task_config

_FULL = mujoco.mjtState.mjSTATE_FULLPHYSICS


@dataclass(frozen=True, kw_only=True)
class RobotSimConfig:
    """Where and how the simulated robot starts.

    Attributes:
        task: Registered task whose model, terrain, default pose and control period are used.
        settle_s: Seconds of holding the default pose after spawning, so it stands when a policy starts.
        spawn_xy: Start position on the ground (m); in a confined task's map, relative to the map's start.
        spawn_yaw: Start heading (rad).
        terrain_seed: Seed of rough terrain (unused on flat ground).
        terrain_level: On a curriculum-terrain task (`Go1-Velocity-Terrain`), the level of the tile to stand on;
            -1 takes the task's `curriculum.fixed_level`, or the grid's middle level when that is unset.
        terrain_type: On a curriculum-terrain task, the type of that tile (one of the grid's `types`); empty
            takes "rough" (the grid's first type if it has no rough tiles).
    """

    task: str = "Go1-Velocity-Flat"
    settle_s: float = 0.5
    spawn_xy: tuple[float, float] = (0.0, 0.0)
    spawn_yaw: float = 0.0
    terrain_seed: int = 0
    terrain_level: int = -1
    terrain_type: str = ""


def terrain_tile(task: str, task_cfg: Any, level: int, kind: str) -> tuple[int, int]:
    """(level, type index) of the curriculum tile a sim robot stands on; defaults as in `RobotSimConfig`.

    Raises:
        ValueError: A level or type given for a task without the curriculum grid, a level outside the grid, or a
            type the grid does not hold (one sentence naming the field and the fix).
    """
    grid = getattr(task_cfg, "grid", None)
    if grid is None:
        if level >= 0 or kind:
            raise ValueError(f"terrain_level/terrain_type need a curriculum-terrain task (e.g. Go1-Velocity-Terrain); "
                             f"'{task}' has no terrain grid: leave them unset")
        return -1, -1
    if level < 0:
        fixed = task_cfg.curriculum.fixed_level
        level = fixed if fixed >= 0 else grid.levels // 2
    if level >= grid.levels:
        raise ValueError(f"terrain_level {level} is outside '{task}''s grid of {grid.levels} levels; pick 0.."
                         f"{grid.levels - 1} (-1: the middle level)")
    kind = kind or ("rough" if "rough" in grid.types else grid.types[0])
    if kind not in grid.types:
        raise ValueError(f"terrain_type '{kind}' is not a tile type of '{task}''s grid; pick one of "
                         f"{', '.join(grid.types)}")
    return int(level), grid.types.index(kind)


def task_config_for_run(policy_path: str | Path, overrides: dict[str, Any] | None = None) -> tuple[str, Any]:
    """The task id and config an exported policy was trained with (policy.json + its run's config.json).

    The one reader of a run's task config, for `s2r eval`/`play` and the ROS sim bridge alike.
    """
    from s2r.real.metadata import load_metadata
    from s2r.sim.config import apply_overrides

    path = Path(policy_path)
    path = path / "policy.onnx" if path.is_dir() else path
    task_id = load_metadata(path.with_suffix(".json")).task_id
    cfg = task_config(task_id)
    run_cfg = path.parent / "config.json"
    if run_cfg.is_file():
        cfg = from_dict(type(cfg), json.loads(run_cfg.read_text())["task"])
    # An exported policy never has privileged (sim-only) action dimensions: it runs on the task without them.
    strip = getattr(cfg, "without_privileges", None)
    if strip is not None:
        cfg = strip()
    return task_id, apply_overrides(cfg, overrides or {})


class RobotSim:
    """A single MuJoCo robot stepped in control periods with PD at physics rate.

    Args:
        cfg: Start settings.
        task_cfg: The task's config (e.g. from `task_config_for_run`); defaults to the registered one.
    """

    def __init__(self, cfg: RobotSimConfig | None = None, task_cfg: Any = None) -> None:
        self.cfg = cfg or RobotSimConfig()
        tc = task_cfg if task_cfg is not None else task_config(self.cfg.task)
        self.task_cfg = tc
        self.cmap = None
        self.grid = None  # the curriculum terrain's grid, on a terrain task
        self.tile = terrain_tile(self.cfg.task, tc, self.cfg.terrain_level, self.cfg.terrain_type)
        self._spawn_xy = np.asarray(self.cfg.spawn_xy, dtype=np.float64)
        if hasattr(tc, "map_seeds"):  # a confined task: one of its maps (a held-out one unless it names one)
            from s2r.sim.terrain.confined import EVAL_SEEDS, generate, load_confined_model

            seed = tc.map_seeds[0] if tc.map_seeds else tc.map_seed if tc.map_seed >= 0 else EVAL_SEEDS[0]
            self.cmap = generate(seed, tc.difficulty, tc.map)
            self.model = load_confined_model(self.cmap, tc.model)
            from s2r.sim.tasks.confined import SPAWN_AHEAD

            # spawn_xy is an offset from where the task spawns (clear of the back wall).
            self._spawn_xy = self.cmap.start[:2] + (np.mean(SPAWN_AHEAD), 0.0) + self._spawn_xy
        elif self.tile[0] >= 0:
            # The curriculum terrain: the very heightfield the task trains on (same grid config and seed), the
            # robot on one tile's centre; spawn_xy is an offset from there.
            from s2r.sim.terrain.curriculum import build_grid, load_terrain_model

            self.grid = build_grid(tc.grid)
            self.model = load_terrain_model(tc.model, self.grid)
            self._spawn_xy = self.grid.tile_centre(np.array([self.tile[0]]), np.array([self.tile[1]]))[0] + self._spawn_xy
        else:
            self.model = load_model(tc.model, terrain=tc.terrain, terrain_height=tc.terrain_height,
                                    terrain_seed=self.cfg.terrain_seed)
        m = self.model
        self.data = mujoco.MjData(m)
        self.control_dt = float(tc.control_dt)
        self.substeps = max(1, round(self.control_dt / m.opt.timestep))
        jids = m.actuator_trnid[:, 0]
        self.joint_names = tuple(mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_JOINT, j) for j in jids)
        self._qadr = m.jnt_qposadr[jids]
        self._vadr = m.jnt_dofadr[jids]
        self.default_joint_pos = np.asarray(tc.default_joint_pos, dtype=np.float64)
        self._imu = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, "imu")
        if self._imu < 0:
            raise ValueError(f"model '{tc.model}' has no site named 'imu' for the simulated IMU")
        self._res6 = np.zeros(6)
        self.reset()

    @property
    def time(self) -> float:
        """Simulated seconds since reset."""
        return float(self.data.time)

    def reset(self) -> None:
        """Spawn at the default pose above the ground and settle for `settle_s` holding it."""
        m, d, cfg = self.model, self.data, self.cfg
        mujoco.mj_resetData(m, d)
        xy = self._spawn_xy
        if self.grid is not None:
            # As the terrain task spawns: above the highest ground under a footprint wider than the body.
            corners = np.array([[dx, dy] for dx in (-0.3, 0.0, 0.3) for dy in (-0.3, 0.0, 0.3)])
            ground = float(self.ground_height(xy[None] + corners).max())
        else:
            ground = float(terrain_height_at(m, xy[None])[0])
        d.qpos[0:2] = xy
        d.qpos[2] = ground + self.task_cfg.spawn_height
        d.qpos[3:7] = (np.cos(cfg.spawn_yaw / 2), 0.0, 0.0, np.sin(cfg.spawn_yaw / 2))
        d.qpos[self._qadr] = self.default_joint_pos
        mujoco.mj_forward(m, d)
        self.step(self.default_joint_pos, round(cfg.settle_s / self.control_dt))
        d.time = 0.0

    def step(self, targets: np.ndarray, periods: int = 1) -> None:
        """Hold joint position targets (actuator order) for `periods` control periods."""
        self.data.ctrl[:] = targets
        for _ in range(periods * self.substeps):
            mujoco.mj_step(self.model, self.data)

    def joint_state(self) -> tuple[np.ndarray, np.ndarray]:
        """Joint positions and velocities in actuator order (copies)."""
        return self.data.qpos[self._qadr].copy(), self.data.qvel[self._vadr].copy()

    def imu(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What an IMU at the `imu` site reads: orientation (w, x, y, z), gyro and accelerometer (body frame).

        The accelerometer reads proper acceleration (+9.81 m/s^2 up when at rest), as real ones do.
        """
        m, d = self.model, self.data
        quat = np.zeros(4)
        mujoco.mju_mat2Quat(quat, d.site_xmat[self._imu])
        mujoco.mj_objectVelocity(m, d, mujoco.mjtObj.mjOBJ_SITE, self._imu, self._res6, 1)
        gyro = self._res6[:3].copy()
        mujoco.mj_rnePostConstraint(m, d)
        mujoco.mj_objectAcceleration(m, d, mujoco.mjtObj.mjOBJ_SITE, self._imu, self._res6, 1)
        return quat, gyro, self._res6[3:].copy()

    def ground_height(self, xy: np.ndarray) -> np.ndarray:
        """Terrain height (m) under world points xy (n, 2): the curriculum grid's, else the model's heightfield."""
        if self.grid is not None:
            return self.grid.height_at(np.asarray(xy, dtype=np.float64))
        return terrain_height_at(self.model, np.asarray(xy, dtype=np.float64))

    def base_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """Base position (world) and orientation (w, x, y, z)."""
        return self.data.qpos[0:3].copy(), self.data.qpos[3:7].copy()

    def base_twist(self) -> tuple[np.ndarray, np.ndarray]:
        """Base linear and angular velocity in the body frame (what odometry's twist reports)."""
        d = self.data
        rot = np.zeros(9)
        mujoco.mju_quat2Mat(rot, d.qpos[3:7])
        return rot.reshape(3, 3).T @ d.qvel[0:3], d.qvel[3:6].copy()

    def set_state(self, full_state: np.ndarray) -> None:
        """Load a full physics state (as the batched backend stores it) and recompute derived quantities."""
        mujoco.mj_setState(self.model, self.data, full_state, _FULL)
        mujoco.mj_forward(self.model, self.data)
