"""Procedural confined spaces for legged robots: one seed and a difficulty give a reproducible map.

A map is a straight tunnel along +x built from axis-aligned boxes: low ceilings, narrow corridors, overhangs
over part of the width, step-ups under a ceiling and irregular voids (hanging blocks and pillars). The same
boxes become MJCF geoms in the quadruped scene (`add_to_spec`, `load_confined_model`) and a 3D voxel
occupancy grid for the planner (`ConfinedMap.voxels`), so the planner sees exactly what the physics collides
with (a test ray-casts both).

Every random draw is made before the difficulty is applied, so one seed keeps its layout at every
difficulty and only the dimensions tighten: ceilings come down, gaps narrow, steps grow, more voids appear.
Seeds in `EVAL_SEEDS` are held out for evaluation; `train_seed` never returns one of them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import mujoco
import numpy as np
from s2r.real.confined_planner import ConfinedPlanner, UnreachableGoal, save_voxel_map
from s2r.sim.models import model_path

FEATURES = ("open", "ceiling", "corridor", "overhang", "step", "voids")
EVAL_SEEDS = tuple(range(900_000, 900_100))
MAP_GEOM_GROUP = 1  # the robot's geoms are groups 2 and 3, the floor plane group 0: rays pick the map alone


def train_seed(i: int) -> int:
    """The i-th training map seed (never one of `EVAL_SEEDS`)."""
    if i < 0:
        raise ValueError(f"training map index must be >= 0, got {i}")
    return i if i < EVAL_SEEDS[0] else i + len(EVAL_SEEDS)


@dataclass(frozen=True, kw_only=True)
class ConfinedConfig:
    """Size and difficulty ranges of a confined map (metres). Difficulty 0 uses the first value, 1 the second.

    Attributes:
        length: Tunnel length along x.
        width: Tunnel width along y (walls included).
        height: Height of the voxel grid (and of the tallest pillars).
        resolution: Voxel edge.
        wall: Thickness of the boundary walls.
        start_free: Length at each end kept open (spawn and goal areas).
        segment: Range of feature segment lengths along x.
        ceiling: Ceiling height above the floor under it.
        gap: Free width of a narrow corridor.
        step: Height of a step-up.
        voids: Number of blocks in an irregular-voids segment.
        overhang: Share of the width an overhang covers.
    """

    length: float = 8.0
    width: float = 2.0
    height: float = 1.0
    resolution: float = 0.05
    wall: float = 0.1
    start_free: float = 1.0
    segment: tuple[float, float] = (1.2, 2.2)
    ceiling: tuple[float, float] = (0.62, 0.30)
    gap: tuple[float, float] = (1.2, 0.45)
    step: tuple[float, float] = (0.03, 0.12)
    voids: tuple[int, int] = (2, 7)
    overhang: tuple[float, float] = (0.4, 0.7)

    def __post_init__(self) -> None:
        if min(self.length, self.width, self.height, self.resolution) <= 0:
            raise ValueError("ConfinedConfig length, width, height and resolution must be > 0")
        if self.length <= 2 * self.start_free + self.segment[0]:
            raise ValueError(f"ConfinedConfig.length {self.length} leaves no room for a feature between the "
                             f"start and goal areas ({self.start_free} m each); make it longer")


@dataclass(frozen=True)
class ConfinedMap:
    """A generated map: boxes (world frame) plus where to start and where to go.

    Attributes:
        boxes: (n, 6) box centre xyz then half-sizes xyz.
        kinds: Feature name of each box ("wall" for the boundary).
        origin: World position of the voxel grid's lower corner (x, y, z).
        shape: Voxel counts (nx, ny, nz).
        resolution: Voxel edge.
        start: (3,) spawn point on the floor.
        goal: (3,) goal point on the floor.
        seed: Seed it came from.
        difficulty: Difficulty it was made at.
        features: Feature of each segment along x, in order.
    """

    boxes: np.ndarray
    kinds: tuple[str, ...]
    origin: np.ndarray
    shape: tuple[int, int, int]
    resolution: float
    start: np.ndarray
    goal: np.ndarray
    seed: int
    difficulty: float
    features: tuple[str, ...] = field(default=())

    def voxels(self) -> np.ndarray:
        """(nx, ny, nz) bool occupancy: a voxel is occupied when its centre lies inside a box."""
        occ = np.zeros(self.shape, dtype=bool)
        res, n = self.resolution, np.array(self.shape)
        for b in self.boxes:
            lo = (b[:3] - b[3:] - self.origin) / res - 0.5
            hi = (b[:3] + b[3:] - self.origin) / res - 0.5
            i0 = np.clip(np.ceil(lo - 1e-9).astype(int), 0, n)
            i1 = np.clip(np.floor(hi + 1e-9).astype(int) + 1, 0, n)
            occ[i0[0]:i1[0], i0[1]:i1[1], i0[2]:i1[2]] = True
        return occ


def _lerp(r: tuple[float, float], d: float) -> float:
    return r[0] + (r[1] - r[0]) * d


def _box(lo: tuple[float, float, float], hi: tuple[float, float, float]) -> np.ndarray:
    lo_, hi_ = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
    return np.concatenate([(lo_ + hi_) / 2, (hi_ - lo_) / 2])


def generate(seed: int, difficulty: float, cfg: ConfinedConfig | None = None) -> ConfinedMap:
    """Build the map of `seed` at `difficulty` in [0, 1] (same seed: same layout, tighter with difficulty).

    The tunnel runs from x = 0 to `length`, y in [-width/2, width/2], floor at z = 0 (the scene's ground plane).
    """
    cfg = cfg or ConfinedConfig()
    if not 0.0 <= difficulty <= 1.0:
        raise ValueError(f"difficulty must be in [0, 1], got {difficulty}")
    rng = np.random.default_rng(seed)
    d = float(difficulty)
    L, W, H, t = cfg.length, cfg.width, cfg.height, cfg.wall
    y0, y1 = -W / 2 + t, W / 2 - t  # free span between the side walls
    boxes = [_box((0, -W / 2, 0), (L, -W / 2 + t, H)), _box((0, W / 2 - t, 0), (L, W / 2, H)),
             _box((0, -W / 2, 0), (t, W / 2, H)), _box((L - t, -W / 2, 0), (L, W / 2, H))]
    kinds = ["wall"] * 4
    features = []
    x = cfg.start_free
    while x < L - cfg.start_free - cfg.segment[0] + 1e-9:
        # Every draw below happens at every difficulty (fixed count per segment) so layouts match across d.
        seg = min(rng.uniform(*cfg.segment), L - cfg.start_free - x)
        kind = FEATURES[int(rng.integers(len(FEATURES)))]
        u = rng.uniform(size=8)
        blocks = rng.uniform(size=(cfg.voids[1], 5))
        x1 = x + seg
        ceil = _lerp(cfg.ceiling, d) + 0.05 * u[0]
        new: list[np.ndarray] = []
        if kind == "ceiling":
            new.append(_box((x, y0, ceil), (x1, y1, H)))
        elif kind == "corridor":
            gap = _lerp(cfg.gap, d) + 0.1 * u[0]
            c = y0 + gap / 2 + u[1] * max(y1 - y0 - gap, 0.0)
            # Walls stop 0.3 m short of both ends: two corridors in a row with offset gaps stay joined.
            xa, xb = x + 0.3, x1 - 0.3
            new += [_box((xa, y0, 0), (xb, c - gap / 2, H)), _box((xa, c + gap / 2, 0), (xb, y1, H))]
        elif kind == "overhang":
            cover = _lerp(cfg.overhang, d) * (y1 - y0)
            lo = y0 if u[1] < 0.5 else y1 - cover
            new.append(_box((x, lo, ceil), (x1, lo + cover, H)))
        elif kind == "step":
            step = _lerp(cfg.step, d) * (0.8 + 0.4 * u[2])
            # Flat ground under the step's own (higher) ceiling before and after it: the body never straddles
            # the step and a lower ceiling of a neighbouring segment at once.
            xs = x + 0.45 + 0.1 * seg * u[3]
            new += [_box((xs, y0, 0), (x1 - 0.45, y1, step)), _box((x, y0, step + ceil), (x1, y1, H))]
        elif kind == "voids":
            count = round(_lerp(cfg.voids, d))
            for b in blocks[:count]:
                cx, cy = x + b[0] * seg, y0 + b[1] * (y1 - y0)
                hx, hy = 0.1 + 0.15 * b[2], 0.1 + 0.15 * b[3]
                if b[4] < 0.5:  # a pillar, floor to top
                    new.append(_box((cx - hx, cy - hy, 0), (cx + hx, cy + hy, H)))
                else:  # a block hanging to ceiling height
                    new.append(_box((cx - hx, cy - hy, ceil), (cx + hx, cy + hy, H)))
        for b in new:
            boxes.append(b)
            kinds.append(kind)
        features.append(kind)
        x = x1
    res = cfg.resolution
    shape = (round(L / res), round(W / res), round(H / res))
    mid = (cfg.start_free / 2, 0.0, 0.0)
    cmap = ConfinedMap(boxes=np.array(boxes), kinds=tuple(kinds), origin=np.array([0.0, -W / 2, 0.0]), shape=shape,
                       resolution=res, start=np.array(mid), goal=np.array([L - mid[0], 0.0, 0.0]), seed=seed,
                       difficulty=d, features=tuple(features))
    return _passable(cmap)


def _passable(cmap: ConfinedMap) -> ConfinedMap:
    """The map with void blocks removed (last first) until the default body can walk from start to goal.

    Random blocks can seal a corridor's exit; a map the robot cannot cross teaches nothing and scores nothing.
    """
    voids = [i for i, k in enumerate(cmap.kinds) if k == "voids"]
    while True:
        try:
            ConfinedPlanner(cmap.voxels(), cmap.resolution, cmap.origin).plan(cmap.start, cmap.goal)
            return cmap
        except UnreachableGoal:
            if not voids:
                raise RuntimeError(f"confined map seed {cmap.seed} at difficulty {cmap.difficulty} has no walkable "
                                   "path even without void blocks; widen ConfinedConfig.gap or raise ceiling") from None
        keep = np.ones(len(cmap.kinds), dtype=bool)
        keep[voids.pop()] = False
        cmap = dataclasses.replace(cmap, boxes=cmap.boxes[keep], kinds=tuple(np.array(cmap.kinds)[keep]))
        voids = [i - (i > int(np.flatnonzero(~keep)[0])) for i in voids]


def add_to_spec(spec: mujoco.MjSpec, cmap: ConfinedMap, prefix: str = "confined") -> None:
    """Add the map's boxes to a scene as static world geoms in `MAP_GEOM_GROUP` (they collide with the robot)."""
    for i, (b, kind) in enumerate(zip(cmap.boxes, cmap.kinds, strict=True)):
        g = spec.worldbody.add_geom()
        g.name = f"{prefix}_{i}_{kind}"
        g.type = mujoco.mjtGeom.mjGEOM_BOX
        g.pos = b[:3].tolist()
        g.size = b[3:].tolist()
        g.group = MAP_GEOM_GROUP
        g.contype = 1
        g.conaffinity = 1
        g.rgba = [0.45, 0.42, 0.38, 0.5 if kind in ("ceiling", "overhang") else 1.0]


def shifted(cmap: ConfinedMap, dy: float) -> ConfinedMap:
    """The same map moved by `dy` along y (a scene holds several maps side by side)."""
    d = np.array([0.0, dy, 0.0])
    boxes = cmap.boxes.copy()
    boxes[:, 1] += dy
    return dataclasses.replace(cmap, boxes=boxes, origin=cmap.origin + d, start=cmap.start + d, goal=cmap.goal + d)


def load_confined_model(cmap: ConfinedMap, model: str = "go1.xml", limb_contacts: bool = True) -> mujoco.MjModel:
    """A bundled robot scene (flat ground) with the map's boxes added (see `load_confined_scene`)."""
    return load_confined_scene((cmap,), model, limb_contacts)


def load_confined_scene(cmaps: tuple[ConfinedMap, ...] | list[ConfinedMap], model: str = "go1.xml",
                        limb_contacts: bool = True) -> mujoco.MjModel:
    """A bundled robot scene (flat ground) with the boxes of every map added (maps already placed apart).

    Args:
        cmaps: The maps, in world coordinates (see `shifted`).
        model: Robot scene file.
        limb_contacts: Let the robot's non-colliding geoms (Go1's hips, thighs and calves) collide with the map.
            On open ground only feet and trunk need contacts, but in a corridor a leg through a wall is a
            cheat the policy would learn. Limbs get contype bit 2 and the map conaffinity bit 2, so limbs
            still pass through the ground plane, the trunk and each other (no new contacts there).
    """
    spec = mujoco.MjSpec.from_string(model_path(model).read_text())
    for k, cmap in enumerate(cmaps):
        add_to_spec(spec, cmap, "confined" if k == 0 else f"confined_m{k}")
    if limb_contacts:
        for g in spec.geoms:
            if g.name.startswith("confined_"):
                g.conaffinity = 1 | 2
            elif g.contype == 0 and g.conaffinity == 0 and g.group == 2:
                g.contype = 2
    return spec.compile()


def write_voxel_map(cmap: ConfinedMap, path: str) -> None:
    """Save the map's voxels as the .npz `confined_planner_node` reads (its `map_file` parameter)."""
    save_voxel_map(path, cmap.voxels(), cmap.resolution, cmap.origin)


def main(argv: list[str] | None = None) -> int:
    """`python -m s2r.sim.terrain.confined --seed 900000 --difficulty 1 --out map.npz`: a map file for the robot side."""
    import argparse

    p = argparse.ArgumentParser(description="Write a confined map's voxels (.npz) for confined_planner_node.")
    p.add_argument("--seed", type=int, default=EVAL_SEEDS[0])
    p.add_argument("--difficulty", type=float, default=1.0)
    p.add_argument("--length", type=float, default=ConfinedConfig().length)
    p.add_argument("--width", type=float, default=ConfinedConfig().width)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    cmap = generate(args.seed, args.difficulty, ConfinedConfig(length=args.length, width=args.width))
    write_voxel_map(cmap, args.out)
    print(f"{args.out}: {cmap.shape} voxels at {cmap.resolution} m, start {cmap.start.tolist()}, goal {cmap.goal.tolist()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
