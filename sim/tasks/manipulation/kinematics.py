"""Panda arm kinematics: TCP pose and Jacobian, the damped-least-squares IK step, and the start-pose solve.

The IK reads kinematics from an arm-only copy of the model: the arm is never randomised, and without the
objects each forward-kinematics call is cheaper.
"""

from __future__ import annotations

import mujoco
import numpy as np
from s2r.sim.models import load_panda
from s2r.sim.tasks.manipulation.configs import ArmControlConfig

ARM_DOF = 7
# Franka's "ready" pose: the null-space attractor of the IK and the seed of the start-pose solve.
HOME_Q = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])
# TCP orientation held by the IK: hand z pointing down, fingers opening along world y (the ready pose's).
R_DOWN = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])
FINGER_MAX = 0.04  # m per finger (Franka Hand stroke 0.08 m)


def yaw_quat(yaw: np.ndarray) -> np.ndarray:
    """(k, 4) w, x, y, z quaternions of rotations by `yaw` about world z."""
    return np.stack([np.cos(yaw / 2), np.zeros_like(yaw), np.zeros_like(yaw), np.sin(yaw / 2)], axis=1)


def rot_error(rot: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(n, 3) small-angle rotation (world frame) that turns rotation matrices `rot` (n, 3, 3) into `target`."""
    return 0.5 * np.cross(rot, target[None], axisa=1, axisb=1, axisc=1).sum(axis=2)


def quat_z_axis(q: np.ndarray) -> np.ndarray:
    """(n, 3) the body z axis in the world for (n, 4) w, x, y, z quaternions."""
    w, x, y, z = q[:, 0], q[:, 1], q[:, 2], q[:, 3]
    return np.stack([2 * (x * z + w * y), 2 * (y * z - w * x), 1 - 2 * (x * x + y * y)], axis=1)


def dls_step(jac: np.ndarray, q: np.ndarray, err: np.ndarray, arm: ArmControlConfig) -> np.ndarray:
    """(n, 7) joint step for (n, 6) task errors: damped least squares plus a null-space pull home.

    Args:
        jac: (n, 6, 7) TCP Jacobians (3 translation rows, 3 rotation rows).
        q: (n, 7) arm joint angles.
        err: (n, 6) position and orientation errors.
        arm: Damping, null-space gain and the largest joint step.
    """
    jt = jac.transpose(0, 2, 1)  # (n, 7, 6)
    a = jac @ jt + (arm.ik_damping**2) * np.eye(6)
    pinv = jt @ np.linalg.inv(a)  # (n, 7, 6)
    dq = (pinv @ err[:, :, None])[:, :, 0]
    null = np.eye(ARM_DOF) - pinv @ jac  # (n, 7, 7)
    dq += (null @ (arm.nullspace_gain * (HOME_Q - q))[:, :, None])[:, :, 0]
    norm = np.abs(dq).max(axis=1, keepdims=True)
    return dq * np.minimum(1.0, arm.max_joint_step / np.maximum(norm, 1e-12))


class ArmKinematics:
    """TCP pose and Jacobian from joint angles, on the arm-only Panda model (one `MjData`, reused)."""

    def __init__(self) -> None:
        self.model = load_panda(())
        self.data = mujoco.MjData(self.model)
        self.tcp = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_SITE, "tcp")
        self._jacp = np.zeros((3, self.model.nv))
        self._jacr = np.zeros((3, self.model.nv))

    def update(self, qpos: np.ndarray, ids: np.ndarray, ee_pos: np.ndarray, ee_rot: np.ndarray, jac: np.ndarray) -> None:
        """Write the TCP position, orientation and Jacobian of worlds `ids` from `qpos` rows into the outputs.

        Args:
            qpos: (num_envs, nq_world) joint positions; the arm's come first.
            ids: Rows to update.
            ee_pos: (num_envs, 3) output.
            ee_rot: (num_envs, 3, 3) output.
            jac: (num_envs, 6, 7) output.
        """
        m, d = self.model, self.data
        for i in ids:
            d.qpos[:] = qpos[i, : m.nq]
            mujoco.mj_kinematics(m, d)
            mujoco.mj_comPos(m, d)
            mujoco.mj_jacSite(m, d, self._jacp, self._jacr, self.tcp)
            ee_pos[i] = d.site_xpos[self.tcp]
            ee_rot[i] = d.site_xmat[self.tcp].reshape(3, 3)
            jac[i, :3] = self._jacp[:, :ARM_DOF]
            jac[i, 3:] = self._jacr[:, :ARM_DOF]

    def solve(self, ee: np.ndarray, seed_q: np.ndarray, iters: int, q_lo: np.ndarray, q_hi: np.ndarray) -> np.ndarray:
        """Joint angles (within [q_lo, q_hi]) that put the TCP at `ee` pointing down (iterated DLS)."""
        m, d = self.model, self.data
        q = seed_q.copy()
        jac = np.zeros((6, ARM_DOF))
        for _ in range(iters):
            d.qpos[:ARM_DOF] = q
            mujoco.mj_kinematics(m, d)
            mujoco.mj_comPos(m, d)
            mujoco.mj_jacSite(m, d, self._jacp, self._jacr, self.tcp)
            jac[:3], jac[3:] = self._jacp[:, :ARM_DOF], self._jacr[:, :ARM_DOF]
            rot = d.site_xmat[self.tcp].reshape(1, 3, 3)
            err = np.concatenate([ee - d.site_xpos[self.tcp], rot_error(rot, R_DOWN)[0]])
            if np.abs(err).max() < 1e-6:
                break
            q = np.clip(q + jac.T @ np.linalg.solve(jac @ jac.T + 1e-4 * np.eye(6), err), q_lo, q_hi)
        return q
