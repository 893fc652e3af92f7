"""The maps of one confined scene: several maps side by side, each with its planner and its floor/ceiling columns.

All envs of a task instance share one MJCF scene. With one map in it every env would learn (and overfit) the
same tunnel, so a scene holds `len(maps)` maps placed apart along y (boundary walls keep each robot in its
own) and every env is assigned a map at each reset. Lookups take a slot index per env.
"""

from __future__ import annotations

import numpy as np
from s2r.real.confined_planner import ConfinedPlanner, ConfinedPlannerConfig, floor_and_ceiling
from s2r.sim.terrain.confined import ConfinedMap, shifted

MAP_GAP = 0.5  # m of open ground between neighbouring maps
# Body footprint points (x, y in the body frame) whose lowest floor is the body's ground: the trunk's corners
# and middle reach the feet (Go1's feet sit about 0.19 m forward/back and 0.13 m out of the trunk's centre).
FOOTPRINT = np.array([(dx, dy) for dx in (-0.25, 0.0, 0.25) for dy in (-0.15, 0.0, 0.15)])


class SceneMaps:
    """`maps` (generated at the origin) placed side by side, with one planner per map (its goal set).

    Attributes:
        maps: The maps in world coordinates (map k moved by k * (width + MAP_GAP) along y).
        planners: One planner per map.
        floor_z: (m, nx, ny) raw floor height of every column (world z; no footprint filter).
        ceil_z: (m, nx, ny) ceiling height of every column (world z; open sky a metre above the map).
    """

    def __init__(self, maps: list[ConfinedMap], planner_cfg: ConfinedPlannerConfig) -> None:
        if not maps:
            raise ValueError("a confined scene needs at least one map")
        if len({m.shape for m in maps}) != 1:
            raise ValueError(f"the maps of one scene must share a voxel shape, got {sorted({m.shape for m in maps})}")
        width = maps[0].shape[1] * maps[0].resolution
        self.maps = [shifted(m, k * (width + MAP_GAP)) for k, m in enumerate(maps)]
        self.res = maps[0].resolution
        self.planners: list[ConfinedPlanner] = []
        floors, ceils = [], []
        for m in self.maps:
            occ = m.voxels()
            k0, k1 = floor_and_ceiling(occ)
            floors.append(k0 * self.res + m.origin[2])
            ceils.append(np.minimum(k1, occ.shape[2] + 20) * self.res + m.origin[2])
            p = ConfinedPlanner(occ, self.res, m.origin, planner_cfg)
            p.set_goal(m.goal)
            self.planners.append(p)
        self.floor_z, self.ceil_z = np.stack(floors), np.stack(ceils)
        self.origins = np.stack([m.origin for m in self.maps])  # (m, 3)
        self.starts = np.stack([m.start for m in self.maps])
        self.goals = np.stack([m.goal for m in self.maps])

    def __len__(self) -> int:
        return len(self.maps)

    def column(self, slots: np.ndarray, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Column indices (i, j) of points `xy` (n, 2) in the maps `slots` (n,), clipped to the grid."""
        ij = np.floor((xy - self.origins[slots, :2]) / self.res).astype(int)
        _, nx, ny = self.floor_z.shape
        return np.clip(ij[:, 0], 0, nx - 1), np.clip(ij[:, 1], 0, ny - 1)

    def lowest_floor(self, slots: np.ndarray, xy: np.ndarray, yaw: np.ndarray) -> np.ndarray:
        """(n,) lowest floor under the body footprint: what a fall is measured from.

        The column under the base alone mis-reads a body straddling a step edge (the base over the step, the
        hind feet below it) as sunk into the floor.
        """
        c, s = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
        px = xy[:, :1] + c * FOOTPRINT[:, 0] - s * FOOTPRINT[:, 1]  # (n, k)
        py = xy[:, 1:2] + s * FOOTPRINT[:, 0] + c * FOOTPRINT[:, 1]
        k = len(FOOTPRINT)
        i, j = self.column(np.repeat(slots, k), np.stack([px.ravel(), py.ravel()], axis=1))
        return self.floor_z[np.repeat(slots, k), i, j].reshape(-1, k).min(axis=1)

    def ceiling(self, slots: np.ndarray, xy: np.ndarray) -> np.ndarray:
        """(n,) ceiling height over the base's column."""
        i, j = self.column(slots, xy)
        return self.ceil_z[slots, i, j]

    def lowest_ceiling(self, slots: np.ndarray, xy: np.ndarray, yaw: np.ndarray, points: np.ndarray) -> np.ndarray:
        """(n,) lowest ceiling over `points` (k, 2) given in the body's heading frame (x forward, y left).

        Solid columns (walls, pillars) read the map's top, not a ceiling: the body cannot be under them.
        """
        c, s = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
        px = xy[:, :1] + c * points[:, 0] - s * points[:, 1]  # (n, k)
        py = xy[:, 1:2] + s * points[:, 0] + c * points[:, 1]
        k = len(points)
        i, j = self.column(np.repeat(slots, k), np.stack([px.ravel(), py.ravel()], axis=1))
        return self.ceil_z[np.repeat(slots, k), i, j].reshape(-1, k).min(axis=1)
