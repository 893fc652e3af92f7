"""SE(3) geometric tracking control for many quadrotors at once (numpy, batched over vehicles).

After T. Lee, M. Leok, N. H. McClamroch, "Geometric tracking control of a quadrotor UAV on SE(3)", CDC 2010,
written for a z-up world: position and velocity errors give a desired force, the force direction and the
reference yaw give a desired attitude, attitude and body-rate errors give body torques, and a mixer turns
(thrust, torques) into four motor thrusts within their limits. The desired body rate is fed forward from
the reference jerk (differential flatness), which is what lets the vehicle keep up on aggressive segments.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np


@dataclass(frozen=True, kw_only=True)
class QuadrotorParams:
    """Physical parameters the controller assumes (defaults: the Crazyflie model in crazyflie.xml).

    Attributes:
        mass: kg.
        gravity: m/s^2.
        inertia: (Ixx, Iyy, Izz) kg m^2.
        motor_xy: Rotor centre (x, y) per motor in the body frame, m.
        motor_yaw: Reaction torque about body z per newton of that motor's thrust, m (signed).
        max_motor_thrust: N per motor.
    """

    mass: float = 0.027
    gravity: float = 9.81
    inertia: tuple[float, float, float] = (1.66e-5, 1.67e-5, 2.93e-5)
    motor_xy: tuple[tuple[float, float], ...] = ((0.0325, -0.0325), (-0.0325, -0.0325), (-0.0325, 0.0325), (0.0325, 0.0325))
    motor_yaw: tuple[float, ...] = (-0.0251, 0.0251, -0.0251, 0.0251)
    max_motor_thrust: float = 0.1457


def params_from_model(model: mujoco.MjModel, body: str = "crazyflie", prefix: str = "") -> QuadrotorParams:
    """Read `QuadrotorParams` from a compiled quadrotor model (one vehicle, actuators `<prefix>m1..m4`)."""
    bid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, prefix + body)
    if bid < 0:
        raise ValueError(f"model has no body '{prefix + body}'")
    ids = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_ACTUATOR, f"{prefix}m{k}") for k in range(1, 5)]
    if min(ids) < 0:
        raise ValueError(f"model has no actuators '{prefix}m1'..'{prefix}m4'")
    sites = model.actuator_trnid[ids, 0]
    gear = model.actuator_gear[ids]
    return QuadrotorParams(
        mass=float(model.body_mass[bid]),
        gravity=float(-model.opt.gravity[2]),
        inertia=tuple(float(v) for v in model.body_inertia[bid]),
        motor_xy=tuple((float(p[0]), float(p[1])) for p in model.site_pos[sites]),
        motor_yaw=tuple(float(g[5] / g[2]) for g in gear),
        max_motor_thrust=float(model.actuator_ctrlrange[ids[0], 1] * gear[0, 2]),
    )


@dataclass(frozen=True, kw_only=True)
class SE3ControllerConfig:
    """Gains of the SE(3) controller, normalised by mass and inertia so they read as bandwidths.

    Attributes:
        kx: Position gain, (m/s^2) per m of error (natural frequency sqrt(kx) rad/s).
        kv: Velocity gain, (m/s^2) per m/s.
        k_rot: Attitude gain, (rad/s^2) per rad.
        k_rate: Body-rate gain, (rad/s^2) per rad/s.
        max_tilt: rad; the desired force is tilted at most this far from vertical, so a large error cannot
            ask the vehicle to lie on its side.
        feedforward_rates: Feed the body rates implied by the reference jerk forward.
    """

    kx: tuple[float, float, float] = (30.0, 30.0, 40.0)
    kv: tuple[float, float, float] = (10.0, 10.0, 12.0)
    k_rot: tuple[float, float, float] = (500.0, 500.0, 150.0)
    k_rate: tuple[float, float, float] = (40.0, 40.0, 20.0)
    max_tilt: float = 1.45
    feedforward_rates: bool = True


def quat_to_mat(q: np.ndarray) -> np.ndarray:
    """(n, 4) unit quaternions (w, x, y, z), MuJoCo's order, to (n, 3, 3) rotation matrices (body -> world)."""
    w, x, y, z = q[:, 0], q[:, 1], q[:, 2], q[:, 3]
    R = np.empty((len(q), 3, 3))
    R[:, 0, 0] = 1 - 2 * (y * y + z * z)
    R[:, 0, 1] = 2 * (x * y - w * z)
    R[:, 0, 2] = 2 * (x * z + w * y)
    R[:, 1, 0] = 2 * (x * y + w * z)
    R[:, 1, 1] = 1 - 2 * (x * x + z * z)
    R[:, 1, 2] = 2 * (y * z - w * x)
    R[:, 2, 0] = 2 * (x * z - w * y)
    R[:, 2, 1] = 2 * (y * z + w * x)
    R[:, 2, 2] = 1 - 2 * (x * x + y * y)
    return R


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.sqrt(np.einsum("ni,ni->n", v, v)), 1e-9)[:, None]


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cross product of (n, 3) arrays; np.cross costs several times more on small batches."""
    out = np.empty_like(a)
    out[:, 0] = a[:, 1] * b[:, 2] - a[:, 2] * b[:, 1]
    out[:, 1] = a[:, 2] * b[:, 0] - a[:, 0] * b[:, 2]
    out[:, 2] = a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]
    return out


class SE3Controller:
    """Batched SE(3) tracking controller: states and references in, motor thrusts out."""

    def __init__(self, cfg: SE3ControllerConfig | None = None, params: QuadrotorParams | None = None) -> None:
        self.cfg = cfg or SE3ControllerConfig()
        self.params = params or QuadrotorParams()
        p = self.params
        self.inertia = np.asarray(p.inertia, dtype=np.float64)
        xy = np.asarray(p.motor_xy, dtype=np.float64)
        # [thrust, Mx, My, Mz] = mix @ motor_thrusts; roll torque from +y rotors, pitch from -x rotors.
        self.mix = np.stack([np.ones(len(xy)), xy[:, 1], -xy[:, 0], np.asarray(p.motor_yaw, dtype=np.float64)])
        self.unmix = np.linalg.inv(self.mix)
        self._kx, self._kv = np.asarray(self.cfg.kx), np.asarray(self.cfg.kv)
        self._kR, self._kw = np.asarray(self.cfg.k_rot), np.asarray(self.cfg.k_rate)

    def __call__(
        self,
        pos: np.ndarray,
        vel: np.ndarray,
        quat: np.ndarray,
        omega: np.ndarray,
        ref_pos: np.ndarray,
        ref_vel: np.ndarray,
        ref_acc: np.ndarray,
        ref_jerk: np.ndarray | None = None,
        ref_yaw: np.ndarray | None = None,
        mass: np.ndarray | float | None = None,
    ) -> np.ndarray:
        """Motor thrusts for n vehicles.

        Args:
            pos: (n, 3) world position, m.
            vel: (n, 3) world velocity, m/s.
            quat: (n, 4) attitude (w, x, y, z), body -> world.
            omega: (n, 3) body-frame angular velocity, rad/s.
            ref_pos: (n, 3) reference position.
            ref_vel: (n, 3) reference velocity.
            ref_acc: (n, 3) reference acceleration.
            ref_jerk: (n, 3) reference jerk for the body-rate feedforward (None: no feedforward).
            ref_yaw: (n,) reference yaw, rad (None: 0).
            mass: Mass the controller assumes, per vehicle or one for all (None: params.mass).

        Returns:
            (n, 4) motor thrusts in [0, max_motor_thrust], N.
        """
        cfg, p = self.cfg, self.params
        n = len(pos)
        m = np.broadcast_to(np.asarray(p.mass if mass is None else mass, dtype=np.float64), (n,))[:, None]
        R = quat_to_mat(quat)
        acc_cmd = -self._kx * (pos - ref_pos) - self._kv * (vel - ref_vel) + ref_acc
        acc_cmd[:, 2] += p.gravity
        # Keep the commanded force upright enough: bound the horizontal part relative to the vertical one.
        acc_cmd[:, 2] = np.maximum(acc_cmd[:, 2], 0.2 * p.gravity)
        horiz = np.hypot(acc_cmd[:, 0], acc_cmd[:, 1])
        cap = acc_cmd[:, 2] * np.tan(cfg.max_tilt)
        acc_cmd[:, :2] *= np.minimum(1.0, cap / np.maximum(horiz, 1e-9))[:, None]
        force = m * acc_cmd  # (n, 3) desired force, world frame

        b3d = _unit(force)
        yaw = np.zeros(n) if ref_yaw is None else np.asarray(ref_yaw, dtype=np.float64)
        b1c = np.zeros((n, 3))
        b1c[:, 0], b1c[:, 1] = np.cos(yaw), np.sin(yaw)
        b2d = _unit(_cross(b3d, b1c))
        b1d = _cross(b2d, b3d)
        Rd = np.empty((n, 3, 3))  # columns are the desired body axes
        Rd[:, :, 0], Rd[:, :, 1], Rd[:, :, 2] = b1d, b2d, b3d

        thrust = np.einsum("ni,ni->n", force, R[:, :, 2])  # project onto the current body z axis (Lee et al.)
        omega_d = np.zeros((n, 3))
        if cfg.feedforward_rates and ref_jerk is not None:
            # The thrust axis turns at d(b3)/dt = (j - (b3.j) b3) / |a| = omega_y b1 - omega_x b2.
            along = np.einsum("ni,ni->n", ref_jerk, b3d)[:, None]
            h = (ref_jerk - along * b3d) / np.sqrt(np.einsum("ni,ni->n", acc_cmd, acc_cmd))[:, None]
            omega_d[:, 0] = -np.einsum("ni,ni->n", h, b2d)
            omega_d[:, 1] = np.einsum("ni,ni->n", h, b1d)

        RdT_R = np.einsum("nji,njk->nik", Rd, R)
        S = RdT_R
        e_R = np.empty((n, 3))  # vee(Rd^T R - R^T Rd) / 2
        e_R[:, 0] = 0.5 * (S[:, 2, 1] - S[:, 1, 2])
        e_R[:, 1] = 0.5 * (S[:, 0, 2] - S[:, 2, 0])
        e_R[:, 2] = 0.5 * (S[:, 1, 0] - S[:, 0, 1])
        e_w = omega - np.einsum("nji,nj->ni", RdT_R, omega_d)  # R^T Rd omega_d
        J = self.inertia
        torque = J * (-self._kR * e_R - self._kw * e_w) + _cross(omega, omega * J)

        u = np.concatenate([thrust[:, None], torque], axis=1)  # (n, 4) [f, Mx, My, Mz]
        return self.allocate(u)

    def allocate(self, u: np.ndarray) -> np.ndarray:
        """(n, 4) [thrust, Mx, My, Mz] to (n, 4) motor thrusts, keeping the torques when a motor saturates.

        Adding the same thrust to every motor changes only the collective (the rotor positions and the
        yaw signs each sum to zero), so a saturated command is first shifted into range; only a command
        whose spread exceeds the range is clipped.
        """
        fmax = self.params.max_motor_thrust
        t = u @ self.unmix.T
        lo, hi = t.min(axis=1), t.max(axis=1)
        fits = hi - lo <= fmax
        shift = np.where(fits, np.clip(0.0, -lo, fmax - hi), 0.5 * (fmax - hi - lo))
        return np.clip(t + shift[:, None], 0.0, fmax)
