"""Panda-Drawer-Cube: open a drawer, then put a cube in it. Two stages, a few reward terms, privileged variant.

A small cabinet (`cabinet` in panda.xml: 21 cm deep, 19.2 cm wide, 8.7 cm high, a tray with an 18 x 15 cm inside
and 5.5 cm walls) stands on the table with its front towards the robot; its drawer slides out towards the
robot on a damped slide joint with a range, and has a 5 cm pull tab the fingers grip from above. A cube lies
on the table beside the cabinet. While the drawer is shut its tray is under the cabinet's top, so the cube
cannot go in: the policy must first pull the drawer at least `open_distance` open (stage 1), then pick the
cube up, carry it over the opened tray and let go (stage 2).

Success: the cube rests inside the tray (its centre within the tray's inside footprint less its half size,
its bottom within 1 cm of the tray's floor, slower than 5 cm/s) and the hand no longer holds it. Closing the
drawer again is *not* required: the cube would then be hidden under the cabinet's top, where only the
simulator sees it, and a third stage adds horizon without adding a new kind of skill; the tray fits the
largest cube under the top, so a later variant can ask for it.

The reward is a few terms, the same shape as the flat-box lift's (Mao et al. 2025): reach (the handle until
the drawer is open, then the cube), drawer opening progress, cube over the opened drawer, cube in the drawer,
and a success bonus that ends the episode. The cube's pose, size, mass and friction, the cabinet's position
and the drawer's damping are drawn at every reset.

Privileged actions (`DRAWER_PRIVILEGES`): the virtual wrench on the cube, a force along the drawer's slide
(`FixtureForce`), the table relaxation (the hand then also passes through the cabinet and the tray's walls;
it still touches the cube and the pull tab) and reduced gravity on the cube.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import mujoco
import numpy as np
from s2r.sim.env import ObsTerm
from s2r.sim.tasks.manipulation.configs import CubeRandomizationConfig, PandaTaskConfig
from s2r.sim.tasks.manipulation.privileged import FixtureForce, ReducedGravity, TableCollisionOff, VirtualWrench
from s2r.sim.tasks.manipulation.tasks import _CubeEnv
from s2r.sim.tasks.manipulation.terms import OBJECT_STATE_TERMS, ROBOT_TERMS, TARGET_TERMS, PandaState

# The drawer's geometry in its own frame (origin on the front panel's middle plane, at table level, +x into the
# cabinet), as written in panda.xml; the env checks the model against these at start-up.
TRAY_X = (0.006, 0.186)  # inside of the tray along x (m): front panel's inner face to the back wall's
TRAY_HALF_Y = 0.075  # half of the tray's inside width (m)
FLOOR_Z = 0.010  # top of the tray's floor above the table (m)
UNDER_TOP_Z = 0.075  # underside of the cabinet's top (m): a cube taller than this minus FLOOR_Z never fits
HANDLE = (-0.031, 0.0, 0.06)  # centre of the pull tab (m)
CABINET_HALF_Y = 0.096  # half of the cabinet's outer width (m)
# qpos / qvel index of the drawer's slide: after the arm (7), the fingers (2) and the cube's free joint (7 / 6).
DRAWER_Q, DRAWER_V = 16, 15


@dataclass(frozen=True, kw_only=True)
class DrawerRandomizationConfig:
    """Per-episode randomisation of the cabinet and its drawer (uniform ranges).

    Attributes:
        front_x: x of the cabinet's front edge (m).
        center_y: y of the cabinet's middle (m).
        damping: The drawer slide's viscous damping (N s/m).
    """

    front_x: tuple[float, float] = (0.50, 0.54)
    center_y: tuple[float, float] = (0.04, 0.10)
    damping: tuple[float, float] = (5.0, 15.0)


@dataclass(frozen=True, kw_only=True)
class DrawerCubeRewardConfig:
    """A few reward terms, per step unless said: reach, open the drawer, cube over it, cube in it, success.

    Attributes:
        reach: Weight of 1 - tanh(reach_sharpness * d), d the TCP's distance to the handle while the drawer is
            under `open_distance`, to the cube after.
        reach_sharpness: 1/m.
        open: Weight of the drawer's opening as a fraction of `open_distance` (clipped to [0, 1]).
        over: Weight of 1 - tanh(reach_sharpness * horizontal cube-to-slot distance), once the drawer is open.
        inside: Weight of the cube being in the tray (held or not).
        success: Reward on the success step (which ends the episode). It must exceed what the shaping can pay
            over an endless episode, (reach + open + over + inside) / (1 - gamma) = 120 at gamma 0.99 (a time-out
            bootstraps from the value), or not succeeding pays more than succeeding. Before 150 it was 10
            (`--task-set reward.success=10` reproduces the older runs).
    """

    reach: float = 0.1
    reach_sharpness: float = 10.0
    open: float = 0.3
    over: float = 0.3
    inside: float = 0.5
    success: float = 150.0


@dataclass(frozen=True, kw_only=True)
class DrawerCubeConfig(PandaTaskConfig):
    """Panda-Drawer-Cube: pull the drawer `open_distance` open, then put the cube in it (module docstring).

    Attributes:
        open_distance: How far the drawer must be open for stage 2 (m); what it exposes must take the cube.
        drawer_range: The slide's range (m): 0 is shut, the upper end is its stop.
        randomization: Cube randomisation. Its spawn area lies beside the cabinet (-y of it) and far enough off that
            the hand, 20 cm wide along y, grasps the cube without knocking into the open drawer.
        drawer: Cabinet and drawer randomisation.
        reward: Reward terms.
    """

    max_episode_steps: int = 150
    open_distance: float = 0.10
    drawer_range: tuple[float, float] = (0.0, 0.16)
    randomization: CubeRandomizationConfig = field(
        default_factory=lambda: CubeRandomizationConfig(center=(0.44, -0.22), spawn_half=0.04))
    drawer: DrawerRandomizationConfig = field(default_factory=DrawerRandomizationConfig)
    reward: DrawerCubeRewardConfig = field(default_factory=DrawerCubeRewardConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        lo, hi = self.drawer_range
        if lo != 0.0 or hi <= 0.0:
            raise ValueError(f"DrawerCubeConfig.drawer_range {self.drawer_range} must run from 0 (shut) to a positive "
                             "stop in m, e.g. (0.0, 0.16)")
        if not 0.0 < self.open_distance <= min(hi, TRAY_X[1]):
            raise ValueError(f"DrawerCubeConfig.open_distance {self.open_distance} must lie in (0, {min(hi, TRAY_X[1])}] "
                             "m: the drawer cannot open further than its stop (drawer_range) or its tray is long")
        side = 2.0 * self.randomization.half_size[1]
        room = min(self.open_distance - TRAY_X[0], 2 * TRAY_HALF_Y, UNDER_TOP_Z - FLOOR_Z)
        if side >= room:
            raise ValueError(f"DrawerCubeConfig.randomization.half_size {self.randomization.half_size} gives cubes up to "
                             f"{side * 100:.1f} cm, larger than the {room * 100:.1f} cm of tray the drawer exposes at "
                             "open_distance: use smaller cubes or a larger open_distance")
        if min(self.drawer.damping) < 0.0:
            raise ValueError(f"DrawerCubeConfig.drawer.damping {self.drawer.damping} must not be negative")
        r = self.randomization
        cube_far_y = r.center[1] + r.spawn_half + np.sqrt(2.0) * r.half_size[1]
        if cube_far_y >= self.drawer.center_y[0] - CABINET_HALF_Y:
            raise ValueError(f"DrawerCubeConfig.randomization spawns cubes up to y = {cube_far_y:.3f} m, onto the "
                             f"cabinet (from y = {self.drawer.center_y[0] - CABINET_HALF_Y:.3f} m): move its centre "
                             "further to -y or the cabinet (drawer.center_y) to +y")


# The drawer task's training variant: every privilege that applies to it, at full scale.
DRAWER_PRIVILEGES = (VirtualWrench(), FixtureForce(), TableCollisionOff(), ReducedGravity())


def opening_term(opening: np.ndarray, open_distance: float) -> np.ndarray:
    """(n,) the drawer's opening as a fraction of `open_distance`, clipped to [0, 1]."""
    return np.clip(opening / open_distance, 0.0, 1.0)


def closeness(d: np.ndarray, sharpness: float) -> np.ndarray:
    """(n,) 1 - tanh(sharpness * d): 1 at distance 0, towards 0 far away."""
    return 1.0 - np.tanh(sharpness * d)


def in_tray(cube_pos: np.ndarray, half: np.ndarray, drawer_origin: np.ndarray) -> np.ndarray:
    """(n,) True where the cube lies in the tray: centre inside the tray's footprint less the cube's half size
    (2 mm slack for a yawed cube against a wall), bottom at most 1 cm above the tray's floor.

    Args:
        cube_pos: (n, 3) cube centres (world).
        half: (n,) cube half sizes.
        drawer_origin: (n, 3) the drawer frame's origin (world; the frame is not rotated).
    """
    local = cube_pos - drawer_origin
    slack = 0.002
    inside_x = (local[:, 0] >= TRAY_X[0] + half - slack) & (local[:, 0] <= TRAY_X[1] - half + slack)
    inside_y = np.abs(local[:, 1]) <= TRAY_HALF_Y - half + slack
    bottom = local[:, 2] - half
    return inside_x & inside_y & (bottom >= FLOOR_Z - 0.005) & (bottom <= FLOOR_Z + 0.01)


class DrawerCubeEnv(_CubeEnv):
    """Panda-Drawer-Cube (module docstring); `cfg.privileged` adds the sim-only powers."""

    OBJECTS = ("cube", "cabinet")
    OBJECT_BODY = "cube"
    FIXTURE_BODY = "drawer"
    FIXTURE_GEOMS = ("drawer_handle",)
    PARAM_NAMES = ("object_half_size", "object_friction", "object_mass", "drawer_damping", "cabinet_x", "cabinet_y")
    # The drawer's opening and the handle's position are what an articulated-object tracker gives a robot;
    # target_pos is the slot in the tray the cube goes to (it moves with the drawer).
    POLICY_TERMS = (*ROBOT_TERMS, *TARGET_TERMS, ObsTerm(name="drawer_opening", size=1),
                    ObsTerm(name="handle_rel_ee", size=3))
    PRIVILEGED_TERMS = (*OBJECT_STATE_TERMS, ObsTerm(name="drawer_vel", size=1),
                        *(ObsTerm(name=p, size=1) for p in PARAM_NAMES))

    def __init__(self, cfg: DrawerCubeConfig, num_envs: int = 1, seed: int = 0) -> None:
        super().__init__(cfg, num_envs, seed)
        m = self.model
        joint = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, "drawer")
        self._cabinet = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "cabinet")
        self._dof = int(m.jnt_dofadr[joint])
        if int(m.jnt_qposadr[joint]) != DRAWER_Q or self._dof != DRAWER_V:
            raise RuntimeError(f"panda.xml: the drawer's slide sits at qpos {m.jnt_qposadr[joint]}, qvel {self._dof}; "
                               f"drawer.py expects {DRAWER_Q}, {DRAWER_V} (the cube's free joint must come first)")
        self._check_geometry(m)
        for wm in self.backend.models:
            wm.jnt_range[joint] = cfg.drawer_range
        self.cabinet_pos = np.zeros((num_envs, 3))  # (n, 3) the cabinet's (and the shut drawer's) frame origin
        self._slot_x = (TRAY_X[0] + cfg.open_distance) / 2  # middle of what open_distance exposes, drawer frame

    @staticmethod
    def _check_geometry(m: mujoco.MjModel) -> None:
        """The tray constants above must describe panda.xml's drawer, or success would be judged on the wrong box."""
        geom = lambda n: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, n)  # noqa: E731
        floor, left, front, back = geom("drawer_floor"), geom("drawer_left"), geom("drawer_front"), geom("drawer_back")
        got = (m.geom_pos[front, 0] + m.geom_size[front, 0], m.geom_pos[back, 0] - m.geom_size[back, 0],
               m.geom_pos[left, 1] - m.geom_size[left, 1], m.geom_pos[floor, 2] + m.geom_size[floor, 2])
        if not np.allclose(got, (*TRAY_X, TRAY_HALF_Y, FLOOR_Z), atol=1e-6):
            raise RuntimeError(f"panda.xml's drawer tray (x {got[:2]}, half width {got[2]}, floor {got[3]}) no longer "
                               "matches TRAY_X / TRAY_HALF_Y / FLOOR_Z in drawer.py: update them together")

    # ---- drawer state -----------------------------------------------------------------------------

    @property
    def opening(self) -> np.ndarray:
        """(n,) how far each drawer is open (m); 0 is shut."""
        return self.backend.qpos[:, DRAWER_Q]

    def drawer_origin(self) -> np.ndarray:
        """(n, 3) the drawer frame's origin in the world (it slides out along -x)."""
        out = self.cabinet_pos.copy()
        out[:, 0] -= self.opening
        return out

    def handle_pos(self) -> np.ndarray:
        """(n, 3) centre of the pull tab in the world."""
        return self.drawer_origin() + HANDLE

    def _fixture_distance(self) -> np.ndarray:
        return np.linalg.norm(self.handle_pos() - self.ee_pos, axis=1)

    # ---- task hooks -------------------------------------------------------------------------------

    def _reset_task(self, ids: np.ndarray) -> None:
        d, rng, k = self.cfg.drawer, self.rng, len(ids)
        self._reset_cube(ids)
        x = rng.uniform(*d.front_x, k)
        y = rng.uniform(*d.center_y, k)
        damping = rng.uniform(*d.damping, k)
        for i, xi, yi, di in zip(ids, x, y, damping, strict=True):
            m = self.backend.models[i]
            m.body_pos[self._cabinet] = [xi, yi, 0.0]
            m.dof_damping[self._dof] = di
        self.cabinet_pos[ids] = np.stack([x, y, np.zeros(k)], axis=1)
        self.backend.qpos[ids, DRAWER_Q] = 0.0  # shut
        self.params[ids, 3:] = np.stack([damping, x, y], axis=1)

    def _state(self) -> PandaState:
        # The slot the cube goes to moves with the drawer: refresh it before anything reads `target`.
        self.target[:] = self.drawer_origin() + [self._slot_x, 0.0, FLOOR_Z]
        self.target[:, 2] += self.params[:, 0]
        return super()._state()

    def _term(self, s: PandaState, name: str) -> np.ndarray:
        if name == "drawer_opening":
            return self.opening[:, None]
        if name == "handle_rel_ee":
            return self.handle_pos() - s.ee_pos
        if name == "drawer_vel":
            return self.backend.qvel[:, DRAWER_V : DRAWER_V + 1]
        return super()._term(s, name)

    def _in_tray(self, s: PandaState) -> np.ndarray:
        return in_tray(s.obj_pos, s.params[:, 0], self.drawer_origin())

    def _held(self, s: PandaState) -> np.ndarray:
        """(n,) bool: the cube between the finger pads (within 2 cm of the TCP) and the hand closed on about its side."""
        near = np.linalg.norm(s.obj_pos - s.ee_pos, axis=1) < 0.02
        return near & (np.abs(s.gripper[:, 0] - 2 * s.params[:, 0]) < 0.008)

    def _success(self, s: PandaState) -> np.ndarray:
        resting = np.linalg.norm(s.obj_linvel, axis=1) < 0.05
        return self._in_tray(s) & resting & ~self._held(s)

    def _reward(self, s: PandaState, success: np.ndarray) -> np.ndarray:
        rw, cfg = self.cfg.reward, self.cfg
        is_open = self.opening >= cfg.open_distance
        reach_to = np.where(is_open[:, None], s.obj_pos, self.handle_pos())
        over = is_open * closeness(np.linalg.norm(s.obj_pos[:, :2] - s.target[:, :2], axis=1), rw.reach_sharpness)
        r = (rw.reach * closeness(np.linalg.norm(reach_to - s.ee_pos, axis=1), rw.reach_sharpness)
             + rw.open * opening_term(self.opening, cfg.open_distance) + rw.over * over
             + rw.inside * self._in_tray(s) + rw.success * success)
        return r.astype(np.float32)

    def _goal_distance(self, s: PandaState) -> np.ndarray:
        return np.linalg.norm(s.target - s.obj_pos, axis=1) + np.maximum(0.0, self.cfg.open_distance - self.opening)

    def behaviour(self) -> dict[str, Any]:
        """How far each env's episode has got, now (for benchmarks): "opening" (n,) m, "over" (n,) horizontal
        cube-to-slot distance (m), "in_tray" (n,) bool, "held" (n,) bool."""
        s = self._state()
        return {"opening": self.opening.copy(), "over": np.linalg.norm(s.obj_pos[:, :2] - s.target[:, :2], axis=1),
                "in_tray": self._in_tray(s), "held": self._held(s)}
