"""Waypoints for a legged robot through a confined 3D space, planned on a voxel occupancy grid.

The grid's columns become a 2.5D map: for each (x, y) cell the floor the body stands on (top of the occupied
voxels resting on the ground) and the free height above it (up to the next occupied voxel). Inflated by the
body's footprint (a disc of `body_radius`), a cell is walkable when at least `crouch_height` is free and the
floor under the footprint is even to within `max_step`; where less than `stand_height` is free only a crouch
fits and the cell costs `crouch_cost` times more, and cells near obstacles cost more (`clearance`).

Why Dijkstra from the goal rather than A*: one search over the whole grid (scipy's compiled
`csgraph.dijkstra`) gives every cell its cost-to-go and its next cell toward the goal, so a re-plan from
wherever the robot has strayed is a walk down that tree (no new search). A* from the start would be
cheaper once and then cost a full search per re-plan. The raw cell path is shortened by line-of-sight
shortcuts that never cost more than the part they replace (the cost-to-go gives that cost exactly), so a
shortcut cannot cut under a low ceiling the search went around, and is resampled to waypoints every
`waypoint_spacing` metres, each with the body height and posture (crouch or stand) its cell allows.

Limits: one walkable level per column (a bridge over a tunnel is read as its lower floor's ceiling); the map
is static between `set_goal` calls. Numpy and SciPy only: this runs on the robot.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np


def _scipy() -> tuple[Any, Any, Any]:
    """SciPy's ndimage, csr_matrix and dijkstra, imported on first use: importing s2r.real stays numpy-only
    (tests/real/test_import_rule.py), and only a robot that plans needs SciPy installed."""
    try:
        from scipy import ndimage
        from scipy.sparse import csr_matrix
        from scipy.sparse.csgraph import dijkstra
    except ImportError as exc:
        raise ImportError("the confined planner needs SciPy; install it with `pip install s2r[confined]` (or scipy)") from exc
    return ndimage, csr_matrix, dijkstra


_DIRS = ((1, 0), (0, 1), (1, 1), (1, -1))  # each undirected neighbour pair once
_STRUCTURES: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


def _pair_slices(nx: int, ny: int, dx: int, dy: int) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """Slices of the cells a and their neighbours b = a + (dx, dy) that are both on the grid."""
    return ((slice(0, nx - dx), slice(max(0, -dy), ny - max(0, dy))),
            (slice(dx, nx), slice(max(0, dy), ny - max(0, -dy))))


def _grid_structure(nx: int, ny: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR indices and indptr of all neighbour pairs of an nx x ny grid, and the permutation from the
    pairs in `_DIRS` order to CSR order (cached: building it is most of the cost of a graph)."""
    key = (nx, ny)
    if key not in _STRUCTURES:
        idx = np.arange(nx * ny).reshape(nx, ny)
        pairs = [_pair_slices(nx, ny, dx, dy) for dx, dy in _DIRS]
        rows = np.concatenate([idx[a].ravel() for a, _ in pairs])
        cols = np.concatenate([idx[b].ravel() for _, b in pairs])
        order = np.lexsort((cols, rows))
        indptr = np.searchsorted(rows[order], np.arange(nx * ny + 1)).astype(np.int32)
        _STRUCTURES.clear()  # one map size at a time on a robot; do not grow without bound
        _STRUCTURES[key] = (cols[order].astype(np.int32), indptr, order)
    return _STRUCTURES[key]


def floor_and_ceiling(occ: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column of (nx, ny, nz) voxels: the floor index k0 (voxels stacked on the ground; nz for a solid
    column) and the ceiling index k1 (first occupied voxel above k0; nz + 1000 for open sky, nz when solid)."""
    nx, ny, nz = occ.shape
    if nz > 62:
        occ8 = occ.view(np.uint8)
        k0 = np.argmin(occ8, axis=2)
        k0[np.take_along_axis(occ8, k0[..., None], 2)[..., 0] > 0] = nz
        above = occ8 * (np.arange(nz) >= k0[..., None])
        k1 = np.argmax(above, axis=2)
        k1 = np.where(np.take_along_axis(above, k1[..., None], 2)[..., 0] > 0, k1, nz + 1000)
    else:
        # Each column as the bits of one integer (bit k = voxel k): the lowest set bit is found with
        # x & -x and log2, on nx * ny integers instead of nx * ny * nz voxels.
        nb = -(-nz // 8)
        if nz % 8:  # whole bytes per column, so one flat packbits (10x faster than along an axis) keeps columns
            occ = np.concatenate([occ, np.zeros((nx, ny, 8 * nb - nz), dtype=bool)], axis=2)
        packed = np.packbits(np.ascontiguousarray(occ).reshape(-1), bitorder="little").reshape(nx, ny, nb)
        buf = np.zeros((nx, ny, 8), dtype=np.uint8)
        buf[..., :nb] = packed
        bits = buf.view("<u8")[..., 0]
        free = ~bits & np.uint64((1 << nz) - 1)
        k0 = np.where(free > 0, _lowest_bit(free), nz)
        above = bits & ~(np.left_shift(np.uint64(1), k0.astype(np.uint64)) - np.uint64(1))
        k1 = np.where(above > 0, _lowest_bit(above), nz + 1000)
    k1[k0 >= nz] = nz  # the top of a solid column is no floor: nothing above the map is known
    return k0, k1


def _lowest_bit(x: np.ndarray) -> np.ndarray:
    """Index of the lowest set bit of each non-zero uint64 (garbage for zeros: mask them)."""
    with np.errstate(divide="ignore"):
        return np.log2((x & (~x + np.uint64(1))).astype(np.float64)).clip(0).astype(np.int64)


class ConfinedPlanError(ValueError):
    """A map, start or goal the planner cannot use; the message is one sentence naming it and the fix."""


class UnreachableGoal(ConfinedPlanError):
    """No walkable path joins the start and the goal."""


@dataclass(frozen=True, kw_only=True)
class ConfinedPlannerConfig:
    """Body size, costs and waypoint settings (metres unless stated).

    Attributes:
        stand_height: Free height the body needs to walk upright.
        crouch_height: Least free height the body passes through crouched.
        body_radius: Radius of the footprint disc the free height and floor are checked over.
        max_step: Largest floor change between neighbouring cells (and under one footprint).
        crouch_cost: Cost multiplier of cells where only a crouch fits.
        clearance: Distance from the nearest unwalkable cell below which cost grows.
        clearance_cost: Extra cost at zero clearance (linear to 0 at `clearance`).
        stand_body_z: Body height above the floor in waypoints where standing fits.
        crouch_body_z: Body height above the floor in waypoints that need a crouch.
        waypoint_spacing: Distance between waypoints along the smoothed path.
        shortcut_length: Longest straight shortcut the smoother tries.
        stray_distance: Distance from the path beyond which `replan` plans again.
        snap_radius: A start up to this far from a walkable cell is moved onto it.
    """

    stand_height: float = 0.42
    crouch_height: float = 0.28
    body_radius: float = 0.2
    max_step: float = 0.15
    crouch_cost: float = 3.0
    clearance: float = 0.25
    clearance_cost: float = 1.0
    stand_body_z: float = 0.28
    crouch_body_z: float = 0.2
    waypoint_spacing: float = 0.4
    shortcut_length: float = 3.0
    stray_distance: float = 0.5
    snap_radius: float = 0.3

    def __post_init__(self) -> None:
        if not 0 < self.crouch_height <= self.stand_height:
            raise ConfinedPlanError(f"ConfinedPlannerConfig needs 0 < crouch_height <= stand_height, got "
                                    f"{self.crouch_height} and {self.stand_height}")
        if self.waypoint_spacing <= 0 or self.crouch_cost < 1:
            raise ConfinedPlanError("ConfinedPlannerConfig needs waypoint_spacing > 0 and crouch_cost >= 1")


@dataclass(frozen=True)
class ConfinedPath:
    """A plan: waypoints (n, 3) world x, y and body z, `crouch` (n,) posture flags, its cost and length."""

    waypoints: np.ndarray
    crouch: np.ndarray
    polyline: np.ndarray  # (k, 2) smoothed corners, start first
    cost: float
    length: float
    plan_ms: float


class ConfinedPlanner:
    """Plans from any start to one goal on a voxel map (see the module docstring).

    Args:
        occupancy: (nx, ny, nz) bool voxels, index (0, 0, 0) at `origin`; below the grid is ground.
        resolution: Voxel edge in metres.
        origin: World position (x, y, z) of the grid's lower corner.
        cfg: Body and cost settings.
    """

    def __init__(self, occupancy: np.ndarray, resolution: float, origin: np.ndarray | tuple[float, float, float],
                 cfg: ConfinedPlannerConfig | None = None) -> None:
        occ = np.asarray(occupancy)
        if occ.ndim != 3 or occ.dtype != bool or min(occ.shape) < 2:
            raise ConfinedPlanError(f"occupancy must be a 3D bool array of at least 2 voxels a side, got "
                                    f"{occ.dtype} with shape {occ.shape}")
        if not resolution > 0:
            raise ConfinedPlanError(f"map resolution must be > 0 m, got {resolution}")
        self.cfg = cfg or ConfinedPlannerConfig()
        self.res = float(resolution)
        self.origin = np.asarray(origin, dtype=float).reshape(3)
        self.shape = occ.shape
        self._build_columns(occ)
        self._goal_cell: int | None = None

    # ---- map -> walkable cells and costs ---------------------------------------------------------

    def _build_columns(self, occ: np.ndarray) -> None:
        cfg, res = self.cfg, self.res
        ndimage = _scipy()[0]
        k0, k1 = floor_and_ceiling(occ)
        floor, ceil = k0 * res, k1 * res
        # The footprint disc as a union of centred rectangles: separable filters, a few times faster than a disc.
        rects = disc_rectangles(max(1, round(cfg.body_radius / res)))
        floor_hi = np.maximum.reduce([ndimage.maximum_filter(floor, size=sz, mode="nearest") for sz in rects])
        ceil_lo = np.minimum.reduce([ndimage.minimum_filter(ceil, size=sz, mode="nearest") for sz in rects])
        free = ceil_lo - floor_hi
        # Under the footprint nothing may rise more than a step above the cell's own floor (walls, pillars and
        # tall steps are out); the ground never drops below z = 0, so no lower bound is needed.
        walk = (free >= cfg.crouch_height - 1e-9) & (floor_hi - floor <= cfg.max_step + 1e-9)
        # Chessboard distance (up to 29 % short of Euclidean on diagonals) is enough for a soft clearance cost,
        # at a third of the time of the exact transform.
        near = ndimage.distance_transform_cdt(walk, metric="chessboard") * res
        cost = 1.0 + cfg.clearance_cost * np.clip(1.0 - near / cfg.clearance, 0.0, 1.0)
        crouch = free < cfg.stand_height - 1e-9
        cost = np.where(crouch, cost * cfg.crouch_cost, cost)
        self.floor, self.free, self.walkable, self.crouch_only = floor_hi, free, walk, walk & crouch
        self.cell_cost = np.where(walk, cost, np.inf)
        self._graph = self._edges(walk, floor_hi, cost)

    def _edges(self, walk: np.ndarray, floor: np.ndarray, cost: np.ndarray) -> Any:
        """8-connected edges between walkable cells with a floor change <= max_step; weight = length x mean cost.

        Every neighbour pair of the grid is an entry of one sparse structure cached per grid shape; a pair
        that is no edge weighs inf (which the search never relaxes), so a new map only fills in weights.
        """
        nx, ny = walk.shape
        indices, indptr, perm = _grid_structure(nx, ny)
        w = []
        for dx, dy in _DIRS:
            a, b = _pair_slices(nx, ny, dx, dy)
            ok = walk[a] & walk[b] & (np.abs(floor[a] - floor[b]) <= self.cfg.max_step + 1e-9)
            if dx and dy:  # no corner cutting: both cells beside a diagonal move must be walkable too
                ok &= walk[(slice(dx, nx), a[1])] & walk[(a[0], b[1])]
            w.append(np.where(ok, np.hypot(dx, dy) * self.res * 0.5 * (cost[a] + cost[b]), np.inf).ravel())
        return _scipy()[1]((np.concatenate(w)[perm], indices, indptr), shape=(nx * ny, nx * ny))

    # ---- queries -----------------------------------------------------------------------------------

    def cell_of(self, point: np.ndarray | tuple[float, ...], what: str) -> tuple[int, int]:
        """Grid cell (i, j) of a world point; raises ConfinedPlanError naming `what` when it is off the map."""
        p = np.asarray(point, dtype=float).reshape(-1)
        if p.size not in (2, 3) or not np.isfinite(p).all():
            raise ConfinedPlanError(f"{what} must be a finite (x, y) or (x, y, z) point, got {p.tolist()}")
        ij = np.floor((p[:2] - self.origin[:2]) / self.res).astype(int)
        if not (0 <= ij[0] < self.shape[0] and 0 <= ij[1] < self.shape[1]):
            hi = self.origin[:2] + np.array(self.shape[:2]) * self.res
            raise ConfinedPlanError(f"{what} {np.round(p, 3).tolist()} is outside the map (x in [{self.origin[0]:g}, "
                                    f"{hi[0]:g}], y in [{self.origin[1]:g}, {hi[1]:g}]); give a point inside it")
        return int(ij[0]), int(ij[1])

    def set_goal(self, goal: np.ndarray | tuple[float, ...]) -> float:
        """Search from `goal` once (cost-to-go of every cell); returns the search time in ms."""
        i, j = self.cell_of(goal, "goal")
        if not self.walkable[i, j]:
            raise ConfinedPlanError(
                f"goal {np.round(np.asarray(goal, dtype=float), 3).tolist()} is inside or too close to an obstacle "
                f"(free height {max(self.free[i, j], 0.0):.2f} m, the body needs {self.cfg.crouch_height} m over a "
                f"{self.cfg.body_radius} m radius); move the goal into open space")
        t0 = time.perf_counter()
        g = i * self.shape[1] + j
        self._ctg, self._next = _scipy()[2](self._graph, directed=False, indices=g, return_predecessors=True)
        self._goal_cell = g
        self._goal_xy = np.asarray(goal, dtype=float).reshape(-1)[:2]
        return (time.perf_counter() - t0) * 1e3

    def plan(self, start: np.ndarray | tuple[float, ...], goal: np.ndarray | tuple[float, ...] | None = None) -> ConfinedPath:
        """Waypoints from `start` to the goal (a new `goal` runs `set_goal` first).

        Raises:
            ConfinedPlanError: start or goal off the map or in an obstacle.
            UnreachableGoal: no walkable path joins them.
        """
        t0 = time.perf_counter()
        if goal is not None:
            self.set_goal(goal)
        if self._goal_cell is None:
            raise ConfinedPlanError("no goal set; call set_goal(goal) or pass goal= to plan")
        s = self._start_cell(start)
        cells = [s]
        nxt = self._next
        while cells[-1] != self._goal_cell:
            cells.append(int(nxt[cells[-1]]))
        ij = np.array(np.divmod(np.array(cells), self.shape[1])).T  # (m, 2)
        corners = self._shortcut(ij)
        return self._waypoints(corners, float(self._ctg[s]), t0)

    def replan(self, position: np.ndarray | tuple[float, ...], path: ConfinedPath) -> ConfinedPath | None:
        """A new plan from `position` when it is more than `stray_distance` from `path`, else None."""
        if distance_to_polyline(np.asarray(position, dtype=float).reshape(-1)[:2], path.polyline) <= self.cfg.stray_distance:
            return None
        return self.plan(position)

    # ---- internals ---------------------------------------------------------------------------------

    def _start_cell(self, start: np.ndarray | tuple[float, ...]) -> int:
        i, j = self.cell_of(start, "start")
        ny = self.shape[1]
        if np.isfinite(self._ctg[i * ny + j]):
            return i * ny + j
        # A robot pressed against a wall sits in an inflated cell: start from the nearest reachable one.
        r = int(np.ceil(self.cfg.snap_radius / self.res))
        i0, j0 = max(0, i - r), max(0, j - r)
        win = self._ctg.reshape(self.shape[:2])[i0 : i + r + 1, j0 : j + r + 1]
        di, dj = np.mgrid[i0 - i : i0 - i + win.shape[0], j0 - j : j0 - j + win.shape[1]]
        d2 = np.where(np.isfinite(win), di * di + dj * dj, np.inf)
        k = int(np.argmin(d2))
        p = np.round(np.asarray(start, dtype=float), 3).tolist()
        if not np.isfinite(d2.flat[k]) or d2.flat[k] > r * r:
            walk = self.walkable[i0 : i + r + 1, j0 : j + r + 1] & (di * di + dj * dj <= r * r)
            if walk.any():
                raise UnreachableGoal(f"no walkable path from start {p} to goal {np.round(self._goal_xy, 3).tolist()}: "
                                      f"every way is blocked or lower than crouch_height {self.cfg.crouch_height} m")
            raise ConfinedPlanError(f"start {p} is inside or too close to an obstacle (no walkable cell within "
                                    f"snap_radius {self.cfg.snap_radius} m); move the start into open space")
        return (i0 + k // win.shape[1]) * ny + j0 + k % win.shape[1]

    def _shortcut(self, ij: np.ndarray) -> np.ndarray:
        """Greedy line-of-sight shortcuts over the cell path, each no costlier than the cells it replaces."""
        m = len(ij)
        ctg = self._ctg.reshape(self.shape[:2])[ij[:, 0], ij[:, 1]]
        look = max(2, int(self.cfg.shortcut_length / self.res))
        out, a = [0], 0
        ny = self.shape[1]
        cost, floor = self.cell_cost.ravel(), self.floor.ravel()
        # About one sample per cell along the longest line: the footprint inflation already keeps a margin.
        t = np.linspace(0.0, 1.0, look + 2)[None, :]
        step = self.cfg.max_step + 1e-9
        while a < m - 1:
            # Every second cell as a candidate end (the next cell first: always a valid one-cell step).
            hi = min(m, a + look + 1)
            js = np.arange(a + 1, hi, 2)
            if js[-1] != hi - 1:
                js = np.append(js, hi - 1)
            seg = ij[js] - ij[a]  # (k, 2)
            rows = np.rint(ij[a, 0] + t * seg[:, :1]).astype(np.int64)  # (k, samples)
            cols = np.rint(ij[a, 1] + t * seg[:, 1:]).astype(np.int64)
            flat = rows * ny + cols
            c, f = cost[flat], floor[flat]
            line_cost = c.mean(1) * (np.hypot(seg[:, 0], seg[:, 1]) * self.res)  # inf where a sample is blocked
            ok = (np.abs(np.diff(f, axis=1)) <= step).all(1) & (line_cost <= (ctg[a] - ctg[js]) * (1 + 1e-3) + 1e-9)
            good = np.flatnonzero(ok)
            a = int(js[good[-1]]) if len(good) else a + 1
            out.append(a)
        return ij[out]

    def _waypoints(self, corners: np.ndarray, cost: float, t0: float) -> ConfinedPath:
        xy = self.origin[:2] + (corners + 0.5) * self.res
        seg = np.hypot(*np.diff(xy, axis=0).T) if len(xy) > 1 else np.zeros(0)
        s = np.concatenate([[0.0], np.cumsum(seg)])
        total = float(s[-1])
        n = max(1, int(np.ceil(total / self.cfg.waypoint_spacing - 1e-9)))
        q = np.linspace(0.0, total, n + 1)[1:] if total > 0 else np.zeros(1)
        wx, wy = np.interp(q, s, xy[:, 0]), np.interp(q, s, xy[:, 1])
        i = np.clip(((wx - self.origin[0]) / self.res).astype(int), 0, self.shape[0] - 1)
        j = np.clip(((wy - self.origin[1]) / self.res).astype(int), 0, self.shape[1] - 1)
        crouch = self.free[i, j] < self.cfg.stand_height - 1e-9
        z = self.origin[2] + self.floor[i, j] + np.where(crouch, self.cfg.crouch_body_z, self.cfg.stand_body_z)
        return ConfinedPath(waypoints=np.stack([wx, wy, z], axis=1), crouch=crouch, polyline=xy, cost=cost,
                            length=total, plan_ms=(time.perf_counter() - t0) * 1e3)


def disc_rectangles(r: int) -> list[tuple[int, int]]:
    """Sizes of centred rectangles whose union is the disc of radius r cells (x^2 + y^2 <= r^2)."""
    half = [int(np.floor(np.sqrt(r * r - k * k) + 1e-9)) for k in range(r + 1)]
    return [(2 * half[k] + 1, 2 * k + 1) for k in range(r + 1) if k == r or half[k + 1] < half[k]]


def distance_to_polyline(p: np.ndarray, line: np.ndarray) -> float:
    """Shortest distance from point p (2,) to the polyline `line` (k, 2)."""
    if len(line) == 1:
        return float(np.hypot(*(p - line[0])))
    a, b = line[:-1], line[1:]
    ab = b - a
    t = np.clip(((p - a) * ab).sum(1) / np.maximum((ab * ab).sum(1), 1e-12), 0.0, 1.0)
    d = a + t[:, None] * ab - p
    return float(np.sqrt((d * d).sum(1).min()))


def save_voxel_map(path: str, occupancy: np.ndarray, resolution: float, origin: np.ndarray | tuple[float, ...]) -> None:
    """Write a voxel map as .npz (`occupancy` bool (nx, ny, nz), `resolution` m, `origin` xyz m), bit-packed."""
    occ = np.asarray(occupancy, dtype=bool)
    np.savez_compressed(path, occupancy_bits=np.packbits(occ.ravel()), shape=np.array(occ.shape),
                        resolution=np.float64(resolution), origin=np.asarray(origin, dtype=np.float64))


def load_voxel_map(path: str) -> tuple[np.ndarray, float, np.ndarray]:
    """Read a map written by `save_voxel_map`; raises ConfinedPlanError naming the file and what is wrong."""
    try:
        with np.load(path) as f:
            missing = {"occupancy_bits", "shape", "resolution", "origin"} - set(f.files)
            if missing:
                raise ConfinedPlanError(f"voxel map {path} lacks {sorted(missing)}; write it with save_voxel_map")
            shape = tuple(int(v) for v in f["shape"])
            occ = np.unpackbits(f["occupancy_bits"], count=int(np.prod(shape))).astype(bool).reshape(shape)
            return occ, float(f["resolution"]), np.asarray(f["origin"], dtype=np.float64).reshape(3)
    except (OSError, ValueError) as exc:
        if isinstance(exc, ConfinedPlanError):
            raise
        raise ConfinedPlanError(f"voxel map {path} cannot be read ({exc}); give an .npz from save_voxel_map") from None
