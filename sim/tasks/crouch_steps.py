"""The crouching walker on ground with random step-ups: a warm start that crouches AND climbs.

`Go1-Velocity-Height-Flat` (the confined policies' warm start, `s2r.sim.tasks.crouch_walk`) only ever saw flat
ground, and the follower trained from it fell mostly on the confined maps with a step (53 of 84 falls on the 9
of 25 maps with one, issue 18). This task is the same walker, inputs and rewards on a field of flat-topped
blocks: random rectangles 0.03-0.15 m high (the confined maps' step-ups reach 0.144 m at difficulty 1), with
flat floor between them, so a crouch command meets step-ups and step-downs as it does under the tunnels' ceilings.

The base height (for the height reward and the fall check) is measured from the mean ground under the body's
footprint, as in `s2r.sim.tasks.terrain`: a step edge under the trunk reads as a gradual change of floor, not as
a fall or a jump. The field is one heightfield (`load_terrain_model`), fixed per env seed.

Measured (issue 18, round 3, bench/results/README.md): PPO from the flat crouch walker on this field drifts
towards standing still (the registered field, or 0.02-0.10 / 0.02-0.06 m steps: no forward speed left after
300k steps); a sparser field (25 blocks of 0.02-0.12 m), pushes off, a smaller initial action std and a heavier
velocity-tracking term kept it walking; its 184k-step checkpoint is tests/data/go1_crouch_steps_walk.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mujoco
import numpy as np
from s2r.sim.tasks import terms as T
from s2r.sim.tasks.crouch_walk import CrouchWalkConfig, CrouchWalkEnv
from s2r.sim.tasks.terrain import footprint_offsets, mean_ground, spawn_ground
from s2r.sim.terrain.curriculum import TerrainGrid, TerrainGridConfig, load_terrain_model


@dataclass(frozen=True, kw_only=True)
class StepFieldConfig:
    """The block field.

    Attributes:
        size: Side of the square field (m), centred on the origin; flat apron ground all round it.
        resolution: Heightfield vertex spacing (m).
        blocks: Number of rectangles laid down (later ones overwrite earlier ones where they overlap).
        block_side: Range of a rectangle's sides (m).
        step: Range of a rectangle's height above the floor (m).
        spawn: Half-width (m) of the square spawns are drawn from (inside the field).
    """

    size: float = 12.0
    resolution: float = 0.05
    blocks: int = 70
    block_side: tuple[float, float] = (0.5, 2.0)
    step: tuple[float, float] = (0.03, 0.15)
    spawn: float = 4.5

    def __post_init__(self) -> None:
        if not 0 < self.block_side[0] <= self.block_side[1] < self.size:
            raise ValueError(f"StepFieldConfig.block_side {self.block_side} must be ordered, > 0 and below size "
                             f"{self.size}")
        if not 0 <= self.step[0] <= self.step[1]:
            raise ValueError(f"StepFieldConfig.step {self.step} must be ordered and >= 0")
        if not 0 < self.spawn <= self.size / 2:
            raise ValueError(f"StepFieldConfig.spawn {self.spawn} must be in (0, size / 2 = {self.size / 2}]")


@dataclass(frozen=True, kw_only=True)
class CrouchStepsConfig(CrouchWalkConfig):
    """`CrouchWalkConfig` on a step field.

    Attributes:
        field: The block field.
        footprint: Half-extents (m) of the body footprint whose mean ground height is the base-height reference.
    """

    field: StepFieldConfig = field(default_factory=StepFieldConfig)
    footprint: tuple[float, float] = (0.2, 0.1)


def step_field(cfg: StepFieldConfig, seed: int) -> TerrainGrid:
    """The block field's heights as a `TerrainGrid` (only its resolution is read from the grid config)."""
    rng = np.random.default_rng(seed)
    res = cfg.resolution
    n = round(cfg.size / res) + 1
    h = np.zeros((n, n))
    for _ in range(cfg.blocks):
        sx, sy = (rng.uniform(*cfg.block_side, 2) / res).round().astype(int)
        cx, cy = rng.integers(0, n, 2)
        h[max(cy - sy // 2, 0): cy + sy // 2 + 1, max(cx - sx // 2, 0): cx + sx // 2 + 1] = rng.uniform(*cfg.step)
    # The field's edge vertices at 0: the heightfield meets the flat apron around it without a wall.
    h[0], h[-1], h[:, 0], h[:, -1] = 0.0, 0.0, 0.0, 0.0
    half = (n - 1) * res / 2
    return TerrainGrid(cfg=TerrainGridConfig(levels=1, types=("rough",), resolution=res), heights=h, x0=-half, y0=-half)


class CrouchStepsEnv(CrouchWalkEnv):
    """Go1 tracks a velocity and a body-height command over random step-ups (see the module docstring)."""

    def _load_model(self, cfg: CrouchStepsConfig, seed: int) -> mujoco.MjModel:
        self.grid = step_field(cfg.field, seed)
        self._foot_offsets = footprint_offsets(cfg.footprint)
        return load_terrain_model(cfg.model, self.grid)

    def _spawn_points(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = self.cfg.field.spawn
        xy = self.rng.uniform(-s, s, (len(ids), 2))
        return xy, spawn_ground(self.grid, xy)

    def _step_state(self) -> T.LocoState:
        self.ground_z[:] = mean_ground(self.grid, self.backend.qpos, self._foot_offsets)
        return super()._step_state()
