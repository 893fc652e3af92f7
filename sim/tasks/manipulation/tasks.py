"""The Panda tasks: lift a cube, pick-and-place it, insert a peg (object, goal and success of each)."""

from __future__ import annotations

import mujoco
import numpy as np
from s2r.sim.env import ObsTerm
from s2r.sim.tasks.manipulation.base import FINGERS, OBJ_POS, OBJ_QUAT, PandaEnv
from s2r.sim.tasks.manipulation.configs import InsertConfig, PickPlaceConfig
from s2r.sim.tasks.manipulation.geometry import refit_bvh, set_box
from s2r.sim.tasks.manipulation.kinematics import quat_z_axis, yaw_quat
from s2r.sim.tasks.manipulation.terms import (
    OBJECT_STATE_TERMS,
    ROBOT_TERMS,
    TARGET_TERMS,
    PandaState,
    insert_success,
    lift_success,
    reach_success,
)


class _CubeEnv(PandaEnv):
    """A cube on the table, randomised in pose, size, friction and mass."""

    OBJECTS = ("cube",)
    OBJECT_BODY = "cube"
    PARAM_NAMES = ("object_half_size", "object_friction", "object_mass")

    def _reset_cube(self, ids: np.ndarray) -> None:
        r, rng, k = self.cfg.randomization, self.rng, len(ids)
        half = rng.uniform(*r.half_size, k)
        fric = rng.uniform(*r.friction, k)
        mass = rng.uniform(*r.mass, k)
        for i, h, ms in zip(ids, half, mass, strict=True):
            m = self.backend.models[i]
            set_box(m, self._geom, np.full(3, h))
            m.body_inertia[self._body] = 2.0 / 3.0 * ms * h * h  # solid cube, side 2h
            refit_bvh(m, self._body)
        self.backend.randomize(ids, self.object_fields, np.stack([fric, mass], axis=1))
        xy = np.asarray(r.center) + rng.uniform(-r.spawn_half, r.spawn_half, (k, 2))
        self.backend.qpos[ids, 9:11] = xy
        self.backend.qpos[ids, 11] = half + 1e-4  # resting on the table, not in it
        self.backend.qpos[ids, OBJ_QUAT] = yaw_quat(rng.uniform(*r.yaw, k))
        self.params[ids, :3] = np.stack([half, fric, mass], axis=1)  # a subclass may add its own after these


class LiftEnv(_CubeEnv):
    """Panda-Lift-Cube: grasp the cube and lift its bottom `lift_height` above the table."""

    POLICY_TERMS = ROBOT_TERMS
    PRIVILEGED_TERMS = (*OBJECT_STATE_TERMS, *(ObsTerm(name=p, size=1) for p in _CubeEnv.PARAM_NAMES))

    def _reset_task(self, ids: np.ndarray) -> None:
        self._reset_cube(ids)
        # The "goal" is the cube's success height above where it starts (used for goal_distance only).
        self.target[ids] = self.backend.qpos[ids, OBJ_POS]
        self.target[ids, 2] += self.cfg.lift_height

    def _success(self, s: PandaState) -> np.ndarray:
        return lift_success(s.obj_pos, s.params[:, 0], self.cfg.lift_height)

    def _goal_distance(self, s: PandaState) -> np.ndarray:
        return np.maximum(0.0, self.cfg.lift_height - (s.obj_pos[:, 2] - s.params[:, 0]))


class PickPlaceEnv(_CubeEnv):
    """Panda-PickPlace-Cube: bring the cube's centre within `success_radius` of a random target point."""

    OBJECTS = ("cube", "target")
    POLICY_TERMS = (*ROBOT_TERMS, *TARGET_TERMS)
    PRIVILEGED_TERMS = LiftEnv.PRIVILEGED_TERMS

    def __init__(self, cfg: PickPlaceConfig, num_envs: int = 1, seed: int = 0) -> None:
        super().__init__(cfg, num_envs, seed)
        self._site = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_SITE, "target")

    def _reset_task(self, ids: np.ndarray) -> None:
        cfg, rng, k = self.cfg, self.rng, len(ids)
        self._reset_cube(ids)
        xy = np.asarray(cfg.target_center) + rng.uniform(-cfg.target_half, cfg.target_half, (k, 2))
        z = self.params[ids, 0] + rng.uniform(*cfg.target_height, k)
        self.target[ids] = np.concatenate([xy, z[:, None]], axis=1)
        for i in ids:
            self.backend.models[i].site_pos[self._site] = self.target[i]  # drawn in images

    def _success(self, s: PandaState) -> np.ndarray:
        return reach_success(s.obj_pos, s.target, self.cfg.success_radius)


class InsertEnv(PandaEnv):
    """Panda-Insert-Peg: the square peg starts in the closed hand; push it `insert_depth` into the socket."""

    OBJECTS = ("peg", "socket")
    OBJECT_BODY = "peg"
    PARAM_NAMES = ("object_half_size", "object_friction", "object_mass", "socket_yaw", "clearance")
    POLICY_TERMS = (*ROBOT_TERMS, *TARGET_TERMS)
    PRIVILEGED_TERMS = (*OBJECT_STATE_TERMS, *(ObsTerm(name=p, size=1) for p in PARAM_NAMES))

    def __init__(self, cfg: InsertConfig, num_envs: int = 1, seed: int = 0) -> None:
        super().__init__(cfg, num_envs, seed)
        name = lambda kind, n: mujoco.mj_name2id(self.model, kind, n)  # noqa: E731
        self._socket = name(mujoco.mjtObj.mjOBJ_BODY, "socket")
        self._walls = [name(mujoco.mjtObj.mjOBJ_GEOM, f"socket_{w}") for w in ("px", "nx", "py", "ny")]

    def _reset_task(self, ids: np.ndarray) -> None:
        cfg, r, rng, k = self.cfg, self.cfg.randomization, self.rng, len(ids)
        half = rng.uniform(*r.half_width, k)
        fric = rng.uniform(*r.friction, k)
        mass = rng.uniform(*r.mass, k)
        yaw = rng.uniform(*r.socket_yaw, k)
        clear = rng.uniform(*r.clearance, k)
        sock = np.asarray(r.socket_center) + rng.uniform(-r.socket_half, r.socket_half, (k, 2))
        offset = rng.uniform(-r.grasp_offset, r.grasp_offset, k)
        top = rng.uniform(*r.grasp_height, k)
        L, t, hh = cfg.peg_half_length, cfg.socket_wall / 2, cfg.socket_height / 2
        for j, i in enumerate(ids):
            m = self.backend.models[i]
            w = half[j]
            set_box(m, self._geom, np.array([w, w, L]))
            m.body_inertia[self._body] = mass[j] / 3.0 * np.array([w * w + L * L, w * w + L * L, 2 * w * w])
            # Walls around a hole of side 2 * hole: x walls span the full outer width, y walls fit between.
            hole = w + clear[j] / 2
            px, nx, py, ny = self._walls
            set_box(m, px, np.array([t, hole + 2 * t, hh]), np.array([hole + t, 0.0, hh]))
            set_box(m, nx, np.array([t, hole + 2 * t, hh]), np.array([-hole - t, 0.0, hh]))
            set_box(m, py, np.array([hole, t, hh]), np.array([0.0, hole + t, hh]))
            set_box(m, ny, np.array([hole, t, hh]), np.array([0.0, -hole - t, hh]))
            m.body_pos[self._socket] = [sock[j, 0], sock[j, 1], 0.0]
            m.body_quat[self._socket] = yaw_quat(yaw[j : j + 1])[0]
            refit_bvh(m, self._body)
            refit_bvh(m, self._socket)
        self.backend.randomize(ids, self.object_fields, np.stack([fric, mass], axis=1))
        # The peg hangs in the closed hand, upright, its top `top` above the TCP, shifted along the pads.
        peg = self.ee_pos[ids].copy()
        peg[:, 0] += offset
        peg[:, 2] += top - L
        self.backend.qpos[ids, OBJ_POS] = peg
        self.backend.qpos[ids, OBJ_QUAT] = [1.0, 0.0, 0.0, 0.0]
        # Pads just touching the peg with the servo already closing: the grasp holds from the first step.
        self.backend.qpos[ids, FINGERS] = half[:, None] - 3e-4
        self.finger_target[ids] = 0.0
        self.target[ids] = np.concatenate([sock, np.full((k, 1), cfg.socket_height)], axis=1)
        self.params[ids] = np.stack([half, fric, mass, yaw, clear], axis=1)

    def peg_bottom(self, s: PandaState) -> np.ndarray:
        """(n, 3) centre of the peg's bottom face."""
        return s.obj_pos - self.cfg.peg_half_length * quat_z_axis(s.obj_quat)

    def _success(self, s: PandaState) -> np.ndarray:
        hole = s.params[:, 0] + s.params[:, 4] / 2
        return insert_success(self.peg_bottom(s), s.target, s.params[:, 3], hole, self.cfg.insert_depth)

    def _goal_distance(self, s: PandaState) -> np.ndarray:
        d = self.peg_bottom(s) - s.target
        d[:, 2] += self.cfg.insert_depth
        return np.linalg.norm(d, axis=1)
