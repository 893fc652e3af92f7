"""The waypoint follower's inputs on the robot: the next waypoints in the body frame, and a local height map.

A policy whose metadata command kind is `waypoints` (the confined follower) reads, instead of a velocity
command, the next `k` waypoints of the planner's path relative to its base in the body frame, switching to
the next waypoint when the base comes within `reach_radius` of the current one horizontally, as the training
task (`s2r.sim.tasks.confined`) does. `WaypointTracker` keeps that state from a path (nav_msgs/Path) and the
base pose (odometry).

`MapHeights` gives the `height_map` term from the same voxel map the planner reads: at each grid point
around the body (heading frame), the drop to the floor and the headroom to the ceiling above the base, capped
at `max_range`. In simulation the policy was trained on fans of rays aimed at those points; reading the
columns straight down and up is the same where floor and ceiling are flat, which the confined maps are
between box edges. A robot with a depth camera or lidar would fill the same term from its own scans.
"""

from __future__ import annotations

import numpy as np
from s2r.real.confined_planner import floor_and_ceiling, load_voxel_map

# The training task's height-map grid (s2r.sim.terrain.heightmap.HeightMapConfig defaults, read from here).
GRID_XS = (-0.2, 0.1, 0.4, 0.7, 1.0)
GRID_YS = (-0.25, 0.0, 0.25)
MAX_RANGE = 1.0


def _rotate_inv(quat_wxyz: np.ndarray, v: np.ndarray) -> np.ndarray:
    """World vectors (n, 3) into the body frame of one orientation (w, x, y, z)."""
    w, x, y, z = np.asarray(quat_wxyz, dtype=np.float64) / np.linalg.norm(quat_wxyz)
    r = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                  [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                  [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])
    return v @ r  # v @ R = (R^T v^T)^T


def yaw_of(quat_wxyz: np.ndarray) -> float:
    """Heading (rad) of an orientation (w, x, y, z)."""
    w, x, y, z = quat_wxyz
    return float(np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z)))


class WaypointTracker:
    """The current path and which waypoint is next, as the training task switches them.

    Args:
        observed: Waypoints in the policy's input (the current one first; the last repeats at the end).
        reach_radius: Horizontal distance (m) at which the current waypoint counts as reached.
    """

    def __init__(self, observed: int, reach_radius: float = 0.25) -> None:
        if observed < 1 or reach_radius <= 0:
            raise ValueError(f"WaypointTracker needs observed >= 1 and reach_radius > 0, got {observed}, {reach_radius}")
        self.observed = observed
        self.reach_radius = reach_radius
        self.path: np.ndarray | None = None  # (m, 3) world x, y and body z
        self.index = 0

    def set_path(self, waypoints: np.ndarray) -> None:
        """A new path (e.g. a re-plan): its first waypoint becomes the current one."""
        wp = np.asarray(waypoints, dtype=np.float64).reshape(-1, 3)
        if len(wp) == 0 or not np.isfinite(wp).all():
            raise ValueError(f"a path needs at least one finite (x, y, z) waypoint, got {len(wp)}")
        self.path, self.index = wp, 0

    @property
    def at_goal(self) -> bool:
        """The last waypoint is the current one."""
        return self.path is not None and self.index >= len(self.path) - 1

    def observe(self, position: np.ndarray, quat_wxyz: np.ndarray) -> np.ndarray:
        """(3 * observed,) the next waypoints relative to the base in its body frame; advances past a reached one.

        Without a path, zeros (the target is where the robot stands).
        """
        if self.path is None:
            return np.zeros(3 * self.observed)
        p = np.asarray(position, dtype=np.float64)
        last = len(self.path) - 1
        if self.index < last and np.hypot(*(self.path[self.index, :2] - p[:2])) < self.reach_radius:
            self.index += 1
        idx = np.minimum(self.index + np.arange(self.observed), last)
        return _rotate_inv(quat_wxyz, self.path[idx] - p).reshape(-1)


class MapHeights:
    """Drop to the floor and headroom to the ceiling at grid points around the base, from a voxel map.

    Args:
        occupancy: (nx, ny, nz) bool voxels; `resolution` and `origin` as `load_voxel_map` returns them.
        xs, ys: The grid in the heading frame (forward, left), metres.
        max_range: Cap on both heights (and the value over open sky).
    """

    def __init__(self, occupancy: np.ndarray, resolution: float, origin: np.ndarray,
                 xs: tuple[float, ...] = GRID_XS, ys: tuple[float, ...] = GRID_YS, max_range: float = MAX_RANGE) -> None:
        k0, k1 = floor_and_ceiling(occupancy)
        nz = occupancy.shape[2]
        self.floor = k0 * resolution + origin[2]
        # Open sky (or a solid column's unknown top) reads as max_range, as a ray that hits nothing does.
        self.ceil = np.where(k1 >= nz, np.inf, k1 * resolution + origin[2])
        self.res, self.origin = float(resolution), np.asarray(origin, dtype=np.float64)
        gx, gy = np.meshgrid(np.asarray(xs), np.asarray(ys), indexing="ij")
        self.offsets = np.stack([gx.ravel(), gy.ravel()], axis=1)
        self.max_range = max_range

    @classmethod
    def from_file(cls, path: str) -> MapHeights:
        """From an .npz written by `save_voxel_map` (the planner node's `map_file`)."""
        occ, res, origin = load_voxel_map(path)
        return cls(occ, res, origin)

    @property
    def size(self) -> int:
        """Values of the term: a drop and a headroom per grid point."""
        return 2 * len(self.offsets)

    def observe(self, position: np.ndarray, quat_wxyz: np.ndarray) -> np.ndarray:
        """(2k,) drops then headrooms (m) for the base at `position` with orientation `quat_wxyz`."""
        p = np.asarray(position, dtype=np.float64)
        yaw = yaw_of(quat_wxyz)
        c, s = np.cos(yaw), np.sin(yaw)
        px = p[0] + c * self.offsets[:, 0] - s * self.offsets[:, 1]
        py = p[1] + s * self.offsets[:, 0] + c * self.offsets[:, 1]
        i = np.clip(np.floor((px - self.origin[0]) / self.res).astype(int), 0, self.floor.shape[0] - 1)
        j = np.clip(np.floor((py - self.origin[1]) / self.res).astype(int), 0, self.floor.shape[1] - 1)
        drop = np.clip(p[2] - self.floor[i, j], 0.0, self.max_range)
        head = np.clip(self.ceil[i, j] - p[2], 0.0, self.max_range)
        return np.concatenate([drop, head])


class WaypointInputs:
    """Fills a `RobotState`'s `waypoints` (and `height_map`) for a `waypoints`-command policy from the base pose.

    Args:
        meta: The policy's metadata: its `waypoints` term sets how many waypoints it sees; a `height_map` term
            needs `heights`, of the same size.
        heights: The local height map source (None: the policy has no `height_map` term).
        reach_radius: As in training (`ConfinedWaypointConfig.reach_radius`).

    Raises:
        MetadataError: The policy has no `waypoints` term, or needs a height map of another size or none is given.
    """

    def __init__(self, meta: object, heights: MapHeights | None = None, reach_radius: float = 0.25) -> None:
        from s2r.real.metadata import MetadataError

        sizes = {t.name: t.size for t in meta.obs.terms}
        if "waypoints" not in sizes or sizes["waypoints"] % 3:
            raise MetadataError(f"policy {meta.task_id} has command kind '{meta.command.kind}' but no waypoints term "
                                "of 3 values per waypoint; it cannot follow a path")
        if "height_map" in sizes:
            if heights is None:
                raise MetadataError(f"policy {meta.task_id} reads a height_map; give the voxel map (the planner's "
                                    "map_file .npz) so the robot side can compute it")
            if heights.size != sizes["height_map"]:
                raise MetadataError(f"policy {meta.task_id} reads a height_map of {sizes['height_map']} values; the "
                                    f"robot side's grid gives {heights.size} (change GRID_XS/GRID_YS to the training grid)")
        self.tracker = WaypointTracker(sizes["waypoints"] // 3, reach_radius)
        self.heights = heights if "height_map" in sizes else None
        self.position = np.zeros(3)
        self.orientation = np.array([1.0, 0.0, 0.0, 0.0])
        self.pose_rx = -np.inf  # arrival time of the latest pose (`now` clock), -inf before the first

    def on_pose(self, position: np.ndarray, quat_wxyz: np.ndarray, now: float) -> None:
        """The base pose in the map frame (odometry), arrived at `now` (a monotonic clock of this computer)."""
        self.position[:] = position
        self.orientation[:] = quat_wxyz
        self.pose_rx = now

    def missing(self, now: float, pose_timeout_s: float) -> str | None:
        """What the policy lacks to act (no path, no pose, a pose older than `pose_timeout_s`), or None."""
        if self.tracker.path is None:
            return "no path yet"
        if self.pose_rx == -np.inf:
            return "no base pose (odometry) yet"
        if now - self.pose_rx > pose_timeout_s:
            return f"odometry {(now - self.pose_rx) * 1e3:.0f} ms old (limit {pose_timeout_s * 1e3:.0f} ms)"
        return None

    def fill(self, state: object) -> None:
        """Set `state.waypoints` (and `state.height_map`) for the latest pose."""
        state.waypoints = self.tracker.observe(self.position, self.orientation)
        if self.heights is not None:
            state.height_map = self.heights.observe(self.position, self.orientation)
