"""A local floor and ceiling height map around a legged robot's body from MuJoCo ray casting.

Two fans of rays leave a point on the body (like a depth sensor on the trunk): one down towards a grid of
points at the nominal floor level around the body, one up towards the same grid at a nominal ceiling
level, each fan one batched
`mujoco.mj_multiRay` call per env. A ray stops at the first map geom or the ground (`MAP_GEOM_GROUP` and the
floor plane's group 0; the robot's own geoms are in other groups), so an obstacle between the sensor and a
grid point hides what is behind it, as it would on the robot. Heights come back relative to the sensor:
`drop` (sensor minus floor hit, >= 0) and `headroom` (ceiling hit minus sensor, capped at `max_range`).
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np
from s2r.real.waypoint_follow import GRID_XS, GRID_YS
from s2r.sim.terrain.confined import MAP_GEOM_GROUP


@dataclass(frozen=True, kw_only=True)
class HeightMapConfig:
    """The sampling grid in the body's heading frame (x forward, y left), metres.

    Attributes:
        xs: Forward offsets of the grid rows.
        ys: Lateral offsets of the grid columns.
        aim_down: The down fan aims at the grid points this far below the sensor (the nominal floor).
        aim_up: The up fan aims at the grid points this far above the sensor (the nominal ceiling).
        max_range: Height reported where a ray hits nothing (open sky), and the cap on both heights.
        noise: Uniform noise half-width added to every height during training (m).
    """

    # The robot side computes the same grid from a map (s2r.real.waypoint_follow): one definition for both.
    xs: tuple[float, ...] = GRID_XS
    ys: tuple[float, ...] = GRID_YS
    aim_down: float = 0.3
    aim_up: float = 0.3
    max_range: float = 1.0
    noise: float = 0.02

    @property
    def points(self) -> int:
        """Grid points (each gives a drop and a headroom)."""
        return len(self.xs) * len(self.ys)


class RayHeightMap:
    """Casts the two fans for a batch of sensor poses in one static scene.

    Args:
        model: The scene (robot and map); only static world geoms in groups 0 and `MAP_GEOM_GROUP` are hit.
        cfg: Grid and noise.
    """

    def __init__(self, model: mujoco.MjModel, cfg: HeightMapConfig | None = None) -> None:
        self.cfg = cfg or HeightMapConfig()
        self.model = model
        self.data = mujoco.MjData(model)
        mujoco.mj_kinematics(model, self.data)  # world geoms' poses: the map never moves
        self.group = np.zeros(6, dtype=np.uint8)
        self.group[[0, MAP_GEOM_GROUP]] = 1
        gx, gy = np.meshgrid(np.asarray(self.cfg.xs), np.asarray(self.cfg.ys), indexing="ij")
        self.offsets = np.stack([gx.ravel(), gy.ravel()], axis=1)  # (k, 2)
        k = len(self.offsets)
        self._geomid = np.zeros(k, dtype=np.int32)
        self._dist = np.zeros(k)

    def cast(self, sensor: np.ndarray, yaw: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """(n, 2k) drop then headroom at each grid point for sensors at (n, 3) world points facing `yaw` (n,).

        With `rng`, uniform noise of +-`noise` is added (training); without, the values are exact.
        """
        cfg, k = self.cfg, len(self.offsets)
        n = len(sensor)
        out = np.empty((n, 2 * k))
        c, s = np.cos(yaw), np.sin(yaw)
        for e in range(n):
            dx = c[e] * self.offsets[:, 0] - s[e] * self.offsets[:, 1]
            dy = s[e] * self.offsets[:, 0] + c[e] * self.offsets[:, 1]
            for sign, col, aim in ((-1.0, 0, cfg.aim_down), (1.0, k, cfg.aim_up)):
                vec = np.stack([dx, dy, np.full(k, sign * aim)], axis=1)
                unit = vec / np.linalg.norm(vec, axis=1, keepdims=True)
                mujoco.mj_multiRay(self.model, self.data, sensor[e], unit.ravel(), self.group, 1, -1,
                                   self._geomid, self._dist, None, k, cfg.max_range * 4)
                # Height of the hit above (or below) the sensor along z; a miss is open space.
                dz = np.where(self._dist >= 0, self._dist * unit[:, 2], sign * cfg.max_range)
                out[e, col : col + k] = np.minimum(np.abs(dz), cfg.max_range)
        if rng is not None and cfg.noise > 0:
            out += rng.uniform(-cfg.noise, cfg.noise, out.shape)
        return out
