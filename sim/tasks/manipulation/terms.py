"""What a Panda term reads (`PandaState`), the observation terms and groups, and the pure success tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from s2r.sim.env import ObsTerm

# The table top's centre (x, y) and half extents (m), as in panda.xml; an object beyond them has fallen off.
TABLE_CENTER, TABLE_HALF = np.array([0.35, 0.0]), np.array([0.75, 0.6])



@dataclass
class PandaState:
    """What an observation or success term may read, for one control step. Shapes are (num_envs, ...)."""

    ee_pos: np.ndarray  # (n, 3) TCP position, world frame
    ee_vel: np.ndarray  # (n, 3) TCP linear velocity
    gripper: np.ndarray  # (n, 1) distance between the finger pads (m)
    gripper_vel: np.ndarray  # (n, 1) its rate (m/s)
    obj_pos: np.ndarray  # (n, 3) object centre
    obj_quat: np.ndarray  # (n, 4) w, x, y, z
    obj_linvel: np.ndarray  # (n, 3) world frame
    obj_angvel: np.ndarray  # (n, 3) object frame (MuJoCo's free-joint convention)
    target: np.ndarray  # (n, 3) goal point: pick-place target, socket hole top centre; zeros for lift
    params: np.ndarray  # (n, k) randomised parameters, in the order of the task's `PARAM_NAMES`


OBS_TERMS = {
    "ee_pos": lambda s: s.ee_pos,
    "ee_vel": lambda s: s.ee_vel,
    "gripper_opening": lambda s: s.gripper,
    "gripper_vel": lambda s: s.gripper_vel,
    "object_pos": lambda s: s.obj_pos,
    "object_rel_ee": lambda s: s.obj_pos - s.ee_pos,
    "target_pos": lambda s: s.target,
    "target_rel_object": lambda s: s.target - s.obj_pos,
    "object_quat": lambda s: s.obj_quat,
    "object_lin_vel": lambda s: s.obj_linvel,
    "object_ang_vel": lambda s: s.obj_angvel,
}

ROBOT_TERMS = (
    ObsTerm(name="ee_pos", size=3),
    ObsTerm(name="ee_vel", size=3),
    ObsTerm(name="gripper_opening", size=1),
    ObsTerm(name="gripper_vel", size=1),
    ObsTerm(name="object_pos", size=3),
    ObsTerm(name="object_rel_ee", size=3),
)
OBJECT_STATE_TERMS = (
    ObsTerm(name="object_quat", size=4),
    ObsTerm(name="object_lin_vel", size=3),
    ObsTerm(name="object_ang_vel", size=3),
)
TARGET_TERMS = (ObsTerm(name="target_pos", size=3), ObsTerm(name="target_rel_object", size=3))


def obs_slices(terms: tuple[ObsTerm, ...]) -> dict[str, slice]:
    """Term name -> its columns in the group's vector (for code that reads terms by name, like experts)."""
    out, start = {}, 0
    for t in terms:
        out[t.name] = slice(start, start + t.size)
        start += t.size
    return out



def lift_success(obj_pos: np.ndarray, half_size: np.ndarray, height: float) -> np.ndarray:
    """(n,) True where the cube's bottom is at least `height` above the table (z = 0)."""
    return obj_pos[:, 2] - half_size >= height


def reach_success(obj_pos: np.ndarray, target: np.ndarray, radius: float) -> np.ndarray:
    """(n,) True where the object's centre is within `radius` of the target."""
    return np.linalg.norm(obj_pos - target, axis=1) <= radius


def insert_success(peg_bottom: np.ndarray, socket_top: np.ndarray, socket_yaw: np.ndarray, hole_half: np.ndarray,
                   depth: float) -> np.ndarray:
    """(n,) True where the peg's bottom centre is inside the hole and `depth` below its top.

    Args:
        peg_bottom: (n, 3) centre of the peg's bottom face.
        socket_top: (n, 3) centre of the hole's opening.
        socket_yaw: (n,) socket yaw (rad).
        hole_half: (n,) half of the hole's side (m).
        depth: Required depth below the opening (m).
    """
    d = peg_bottom - socket_top
    c, s = np.cos(socket_yaw), np.sin(socket_yaw)
    local_x, local_y = c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]
    inside = (np.abs(local_x) <= hole_half) & (np.abs(local_y) <= hole_half)
    return inside & (d[:, 2] <= -depth)
