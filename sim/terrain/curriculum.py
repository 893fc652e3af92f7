"""A tiled heightfield of terrain types and difficulty levels, and the distance-walked curriculum over it.

One MuJoCo heightfield holds a grid of square tiles: `levels` rows of rising difficulty along world x and one
column per terrain type along world y (slope up, slope down, stairs up, stairs down, random rough ground,
stepping stones with gaps), inside a flat border. Every tile's edge sits at height 0, so neighbouring tiles
meet without a cliff and a robot that walks off its tile lands on the next one. Difficulty d = level /
(levels - 1) in [0, 1] scales the slope gradient, the stair height, the roughness amplitude and the gap width.

Each env owns one tile (its type fixed for life, its level moved by `TerrainCurriculum`) and spawns at the
tile's centre. At the end of an episode, as in legged_gym: walked more than half a tile -> one level up;
walked less than half of what its command asked for over a whole episode -> one level down; beyond the top
level -> a random level (so the top does not fill up with envs that have solved it).

Heights are read straight from the grid (`TerrainGrid.height_at`, bilinear between heightfield vertices):
exact at the vertices and on every planar face, which is what MuJoCo collides with; only across a stair
edge (one cell wide) can MuJoCo's triangle split differ from the bilinear blend.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

APRON = 25.0  # m of flat ground around the map (see load_terrain_model)
TERRAIN_TYPES = ("slope_up", "slope_down", "stairs_up", "stairs_down", "rough", "stepping_gaps")


@dataclass(frozen=True, kw_only=True)
class TerrainGridConfig:
    """The tile grid and how difficulty scales each terrain type.

    Attributes:
        levels: Difficulty levels (tile rows along x).
        types: Terrain types (tile columns along y), from `TERRAIN_TYPES`.
        tile_size: Side of a square tile (m); promotion needs half of it walked.
        resolution: Heightfield vertex spacing (m); stairs and gaps are whole multiples of it.
        border: Flat ground around the grid (m).
        platform: Side of the flat square at a tile's centre where robots spawn (m).
        slope: Gradient (rise over run) of the slopes at levels 0 and max.
        step_height: Stair rise (m) at levels 0 and max; step_width is the tread (m).
        roughness: Peak-to-peak height (m) of the random ground at levels 0 and max.
        gap_width: Gap between stepping stones (m) at levels 0 and max; stone is the stone side (m).
        gap_depth: Depth of a gap (m).
        seed: Seed of the random ground (fixed, so every run and its evaluation see the same map).
    """

    levels: int = 8
    types: tuple[str, ...] = TERRAIN_TYPES
    tile_size: float = 4.0
    resolution: float = 0.05
    border: float = 2.0
    platform: float = 1.0
    slope: tuple[float, float] = (0.0, 0.4)
    step_height: tuple[float, float] = (0.03, 0.18)
    step_width: float = 0.3
    roughness: tuple[float, float] = (0.01, 0.10)
    gap_width: tuple[float, float] = (0.0, 0.25)
    stone: float = 0.5
    gap_depth: float = 0.4
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [t for t in self.types if t not in TERRAIN_TYPES]
        if unknown or not self.types:
            raise ValueError(f"TerrainGridConfig.types {self.types} must name one or more of {', '.join(TERRAIN_TYPES)}")
        if self.levels < 1:
            raise ValueError(f"TerrainGridConfig.levels must be >= 1, got {self.levels}")
        for name in ("tile_size", "border", "platform"):
            if abs(round(getattr(self, name) / self.resolution) * self.resolution - getattr(self, name)) > 1e-9:
                raise ValueError(f"TerrainGridConfig.{name} ({getattr(self, name)}) must be a multiple of resolution "
                                 f"({self.resolution})")
        if not 0 < self.platform < self.tile_size:
            raise ValueError(f"TerrainGridConfig.platform ({self.platform}) must lie in (0, tile_size)")

    def difficulty(self, level: int | np.ndarray) -> np.ndarray:
        """Difficulty in [0, 1] of a level."""
        return np.asarray(level, dtype=np.float64) / max(self.levels - 1, 1)


def _lerp(r: tuple[float, float], d: float) -> float:
    return r[0] + (r[1] - r[0]) * d


def tile_heights(kind: str, d: float, cfg: TerrainGridConfig, rng: np.random.Generator) -> np.ndarray:
    """(m, m) vertex heights (m) of one tile of type `kind` at difficulty `d`; m = tile_size / resolution.

    Rows run along y and columns along x (the heightfield's layout); the edge of every tile sits at 0.
    """
    m = round(cfg.tile_size / cfg.resolution)
    u = (np.arange(m) + 0.5) * cfg.resolution - cfg.tile_size / 2  # vertex offsets from the centre, symmetric
    # Chebyshev distance: square rings around the centre (pyramids of slopes and stairs).
    ring = np.maximum(np.abs(u)[:, None], np.abs(u)[None, :])
    out = np.maximum(ring - cfg.platform / 2, 0.0)  # run from the platform's edge
    edge = cfg.tile_size / 2 - cfg.platform / 2
    if kind in ("slope_up", "slope_down"):
        g = _lerp(cfg.slope, d)
        h = g * (out - edge)  # centre low, edge 0: walking out goes up
        return h if kind == "slope_up" else -h
    if kind in ("stairs_up", "stairs_down"):
        rise = _lerp(cfg.step_height, d)
        steps = np.ceil(out / cfg.step_width - 1e-9)
        h = rise * (steps - steps.max())
        return h if kind == "stairs_up" else -h
    if kind == "rough":
        amp = _lerp(cfg.roughness, d)
        # Uniform noise on a 2-cell lattice, upsampled and box-smoothed once: rubble a few cells wide.
        coarse = rng.uniform(-0.5, 0.5, ((m + 1) // 2 + 1, (m + 1) // 2 + 1))
        h = np.kron(coarse, np.ones((2, 2)))[:m, :m]
        h = (h + np.roll(h, 1, 0) + np.roll(h, 1, 1) + np.roll(h, (1, 1), (0, 1))) / 4.0
        h = h / max(np.ptp(h), 1e-9) * amp
        h -= h.mean()
        return h
    if kind == "stepping_gaps":
        gap = round(_lerp(cfg.gap_width, d) / cfg.resolution) * cfg.resolution
        h = np.zeros((m, m))
        if gap <= 0:
            return h
        period = cfg.stone + gap
        # Stones on a lattice anchored at the platform's edge; a vertex in a gap on either axis is a pit.
        pu = np.mod(np.maximum(np.abs(u) - cfg.platform / 2, 0.0), period)
        in_gap = (pu > cfg.stone) & (np.abs(u) > cfg.platform / 2)
        pit = in_gap[:, None] | in_gap[None, :]
        pit &= ring > cfg.platform / 2
        h[pit] = -cfg.gap_depth
        return h
    raise ValueError(f"unknown terrain type '{kind}'; use one of {', '.join(TERRAIN_TYPES)}")


@dataclass(frozen=True)
class TerrainGrid:
    """The assembled map: vertex heights (m) and where each tile lies.

    Attributes:
        cfg: The config it was built from.
        heights: (ny, nx) vertex heights (m); vertex (r, c) is at (x0 + c * resolution, y0 + r * resolution).
        x0: World x of column 0.
        y0: World y of row 0.
    """

    cfg: TerrainGridConfig
    heights: np.ndarray
    x0: float
    y0: float

    def tile_centre(self, level: np.ndarray, kind: np.ndarray) -> np.ndarray:
        """(n, 2) world xy of the centres of tiles (level[i], kind[i]) (kind: column index into cfg.types)."""
        c = self.cfg
        # Tile i covers vertices b + i*m .. b + (i+1)*m - 1 (b, m: border and tile in cells): its centre is half a
        # cell short of border + (i + 0.5) * tile_size.
        x = self.x0 + c.border + (np.asarray(level) + 0.5) * c.tile_size - c.resolution / 2
        y = self.y0 + c.border + (np.asarray(kind) + 0.5) * c.tile_size - c.resolution / 2
        return np.stack([x, y], axis=-1)

    def height_at(self, xy: np.ndarray) -> np.ndarray:
        """Terrain height (m) under world points xy (..., 2), bilinear between vertices; clamped at the map edge."""
        res = self.cfg.resolution
        ny, nx = self.heights.shape
        fx = np.clip((xy[..., 0] - self.x0) / res, 0.0, nx - 1.000001)
        fy = np.clip((xy[..., 1] - self.y0) / res, 0.0, ny - 1.000001)
        cx, cy = np.floor(fx).astype(np.int64), np.floor(fy).astype(np.int64)
        tx, ty = fx - cx, fy - cy
        h = self.heights
        h00, h01 = h[cy, cx], h[cy, cx + 1]
        h10, h11 = h[cy + 1, cx], h[cy + 1, cx + 1]
        return (h00 * (1 - tx) + h01 * tx) * (1 - ty) + (h10 * (1 - tx) + h11 * tx) * ty


def build_grid(cfg: TerrainGridConfig) -> TerrainGrid:
    """Lay out every (level, type) tile inside the flat border (see the module docstring)."""
    rng = np.random.default_rng(cfg.seed)
    m = round(cfg.tile_size / cfg.resolution)
    b = round(cfg.border / cfg.resolution)
    nx, ny = cfg.levels * m + 2 * b, len(cfg.types) * m + 2 * b
    heights = np.zeros((ny, nx))
    for i in range(cfg.levels):
        d = float(cfg.difficulty(i))
        for j, kind in enumerate(cfg.types):
            heights[b + j * m : b + (j + 1) * m, b + i * m : b + (i + 1) * m] = tile_heights(kind, d, cfg, rng)
    # Vertex (r, c) sits at (x0 + c * resolution, y0 + r * resolution); the map is centred on the world origin.
    return TerrainGrid(cfg=cfg, heights=heights, x0=-(nx - 1) * cfg.resolution / 2, y0=-(ny - 1) * cfg.resolution / 2)


def load_terrain_model(model_name: str, grid: TerrainGrid) -> mujoco.MjModel:
    """A bundled robot MJCF with its floor plane replaced by the grid as one heightfield geom.

    The floor plane goes: it would cover every pit below height 0 (stairs up, slopes up, gaps).
    """
    from s2r.sim.models import model_path

    spec = mujoco.MjSpec.from_file(str(model_path(model_name)))
    floor = spec.geom("floor")
    if floor is not None:
        spec.delete(floor)
    h = grid.heights
    ny, nx = h.shape
    lo, hi = float(h.min()), float(h.max())
    zrange = max(hi - lo, 1e-3)
    res = grid.cfg.resolution
    half_x, half_y = (nx - 1) * res / 2, (ny - 1) * res / 2
    data = ((h - lo) / zrange).astype(np.float32)
    # MuJoCo height = geom z + data * zrange; the data's first row is the map's lowest y (-half_y).
    spec.add_hfield(name="terrain", nrow=ny, ncol=nx, size=[half_x, half_y, zrange, 0.1], userdata=data.ravel())
    centre = (grid.x0 + half_x, grid.y0 + half_y)
    spec.worldbody.add_geom(name="terrain", type=mujoco.mjtGeom.mjGEOM_HFIELD, hfieldname="terrain",
                            pos=[centre[0], centre[1], lo], material="grid", contype=1, conaffinity=1,
                            friction=[1.0, 0.02, 0.01])
    # Flat ground at height 0 (the border's) all round the map, APRON m wide: without it a robot that walks off
    # the map's edge drops into the void and counts as a fall. A 20 s episode at 1 m/s from a tile next to the edge
    # (level 0 backwards, level 7 forwards, the outer types sideways) reaches it, so training punished tracking such
    # commands and evaluation counted those episodes as falls. Boxes, not a plane: a plane would fill the pits.
    t = 0.5  # half-thickness (m); the top face is at z = 0
    for name, pos, half in (("apron_px", (half_x + APRON / 2, 0.0), (APRON / 2, half_y + APRON)),
                            ("apron_nx", (-half_x - APRON / 2, 0.0), (APRON / 2, half_y + APRON)),
                            ("apron_py", (0.0, half_y + APRON / 2), (half_x, APRON / 2)),
                            ("apron_ny", (0.0, -half_y - APRON / 2), (half_x, APRON / 2))):
        spec.worldbody.add_geom(name=name, type=mujoco.mjtGeom.mjGEOM_BOX, size=[half[0], half[1], t],
                                pos=[centre[0] + pos[0], centre[1] + pos[1], -t], material="grid", contype=1,
                                conaffinity=1, friction=[1.0, 0.02, 0.01])
    return spec.compile()


@dataclass(frozen=True, kw_only=True)
class CurriculumConfig:
    """Where envs start and how they move between levels.

    Attributes:
        init_max_level: Envs start at a uniformly drawn level in 0..init_max_level.
        fixed_level: >= 0 puts every env at this level and never moves it (evaluation); -1 runs the curriculum.
        spawn_jitter: Half-width (m) of the uniform offset of a spawn from its tile's centre.
        promote_fraction: Share of tile_size to walk for a promotion.
        demote_fraction: Share of the commanded distance (speed * episode_s) under which an env is demoted.
    """

    init_max_level: int = 3
    fixed_level: int = -1
    spawn_jitter: float = 0.2
    promote_fraction: float = 0.5
    demote_fraction: float = 0.5


class TerrainCurriculum:
    """Per-env (level, type) assignment over a `TerrainGrid`, moved at episode ends by distance walked."""

    def __init__(self, grid_cfg: TerrainGridConfig, cfg: CurriculumConfig, num_envs: int,
                 rng: np.random.Generator) -> None:
        top = grid_cfg.levels - 1
        if cfg.fixed_level > top or not 0 <= cfg.init_max_level <= top:
            raise ValueError(f"curriculum.fixed_level ({cfg.fixed_level}) and curriculum.init_max_level "
                             f"({cfg.init_max_level}) must lie in 0..{top} (the grid's levels - 1)")
        self.grid_cfg, self.cfg, self.rng = grid_cfg, cfg, rng
        self.types = np.arange(num_envs) % len(grid_cfg.types)  # fixed for life: every type gets its share
        if cfg.fixed_level >= 0:
            self.levels = np.full(num_envs, cfg.fixed_level, dtype=np.int64)
        else:
            self.levels = rng.integers(0, cfg.init_max_level + 1, size=num_envs)

    def update(self, ids: np.ndarray, walked: np.ndarray, commanded: np.ndarray) -> None:
        """Move envs `ids` by the distance they walked (m) against the distance their command asked for (m).

        NaN distances (a world that blew up) count as nothing walked.
        """
        if self.cfg.fixed_level >= 0 or len(ids) == 0:
            return
        walked = np.nan_to_num(np.asarray(walked, dtype=np.float64), nan=0.0)
        up = walked > self.cfg.promote_fraction * self.grid_cfg.tile_size
        down = (walked < self.cfg.demote_fraction * np.asarray(commanded)) & ~up
        lv = self.levels[ids] + up.astype(np.int64) - down.astype(np.int64)
        top = self.grid_cfg.levels
        beyond = lv >= top
        # Solved the top level: somewhere random, so the top does not fill up (legged_gym does the same).
        lv[beyond] = self.rng.integers(0, top, size=int(beyond.sum()))
        self.levels[ids] = np.maximum(lv, 0)

    def mean_level(self) -> float:
        """Mean level over every env."""
        return float(self.levels.mean())
