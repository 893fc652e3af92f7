"""Wide dynamics randomisation for legged sim-to-real, and a held-out out-of-distribution set for evaluation.

`WideRandomizationConfig` extends the Go1 task's `RandomizationConfig` (pushes, observation noise, action
latency keep their meaning) with ranges for contact restitution, the trunk's centre of mass, separate Kp and
Kd scales and IMU biases. Everything that lives in the model is a declared `FieldRandomization` that the
backend writes (`wide_fields`); the IMU biases and the latency act in the task. One env's draws form the
16 numbers the `privileged` group carries (`WIDE_PARAMS`, in that order).

Motor strength, Kp and Kd act on the same position servo: strength scales the whole torque (gain, both bias
terms and the force limit), Kp and Kd scale the stiffness and damping on top. The backend writes each model
entry once from its nominal value, so the servo's gain is written with the product strength * Kp and its
damping with strength * Kd (draws "kp_total", "kd_total"); the privileged group carries the three factors.

Restitution: MuJoCo contacts have no coefficient of restitution; a contact's bounce comes from its solver
reference (`geom_solref` = time constant, damping ratio). A damping ratio under 1 is an under-damped spring,
so a foot rebounds; the draw sets the ratio of every geom (MuJoCo averages the two geoms of a contact).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from s2r.sim.backends import FieldRandomization
from s2r.sim.tasks.locomotion import RandomizationConfig

# The privileged `randomization` term of the terrain task: one column per draw, in this order.
WIDE_PARAMS = ("friction", "restitution", "added_mass", "com_x", "com_y", "com_z", "motor_strength", "kp", "kd",
               "latency", "gyro_bias_x", "gyro_bias_y", "gyro_bias_z", "gravity_bias_x", "gravity_bias_y",
               "gravity_bias_z")
# Scales that bring each privileged value to O(1) (centimetres of CoM offset, hundredths of IMU bias).
WIDE_PARAM_SCALES = (1.0, 1.0, 0.5, 10.0, 10.0, 10.0, 1.0, 1.0, 1.0, 0.5) + (10.0,) * 6


@dataclass(frozen=True, kw_only=True)
class WideRandomizationConfig(RandomizationConfig):
    """Training ranges of the wide randomisation (uniform draws per env and episode).

    Attributes:
        friction: Scale of every geom's sliding friction.
        restitution: Contact damping ratio set on every geom (1: no bounce; lower bounces more).
        added_mass: kg added to the trunk.
        com_offset: m added to the trunk's centre of mass, drawn per axis (x, y, z).
        motor_strength: Scale of the whole servo torque (gain, bias and force limit).
        kp: Scale of the servo stiffness on top of motor_strength.
        kd: Scale of the servo damping on top of motor_strength.
        action_latency_steps: Control steps (inclusive range) between an action and its effect.
        gyro_bias: rad/s added to each axis of the measured angular velocity for a whole episode.
        gravity_bias: Added to each component of the measured gravity direction for a whole episode.
    """

    friction: tuple[float, float] = (0.4, 1.25)
    restitution: tuple[float, float] = (0.6, 1.0)
    added_mass: tuple[float, float] = (-1.0, 3.0)
    com_offset: tuple[float, float] = (-0.03, 0.03)
    motor_strength: tuple[float, float] = (0.85, 1.15)
    kp: tuple[float, float] = (0.85, 1.15)
    kd: tuple[float, float] = (0.8, 1.2)
    action_latency_steps: tuple[int, int] = (0, 2)
    gyro_bias: tuple[float, float] = (-0.05, 0.05)
    gravity_bias: tuple[float, float] = (-0.04, 0.04)

    def __post_init__(self) -> None:
        if self.model_pool:
            raise ValueError("randomization.model_pool is not supported with the wide randomisation (every draw "
                             "is per env and episode); set it to 0")
        for name in ("friction", "restitution", "added_mass", "com_offset", "motor_strength", "kp", "kd",
                     "action_latency_steps", "gyro_bias", "gravity_bias"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"randomization.{name} {getattr(self, name)} has low > high; swap them")
        if self.restitution[0] <= 0 or min(self.friction[0], self.motor_strength[0], self.kp[0], self.kd[0]) <= 0:
            raise ValueError("randomization.restitution, friction, motor_strength, kp and kd must stay > 0")
        if self.action_latency_steps[0] < 0:
            raise ValueError(f"randomization.action_latency_steps {self.action_latency_steps} must be >= 0")

    def ranges(self) -> dict[str, tuple[float, float]]:
        """Draw name (WIDE_PARAMS) -> its (low, high)."""
        per = {"friction": self.friction, "restitution": self.restitution, "added_mass": self.added_mass,
               "motor_strength": self.motor_strength, "kp": self.kp, "kd": self.kd,
               "latency": tuple(float(v) for v in self.action_latency_steps)}
        for axis in "xyz":
            per[f"com_{axis}"] = self.com_offset
            per[f"gyro_bias_{axis}"] = self.gyro_bias
            per[f"gravity_bias_{axis}"] = self.gravity_bias
        return {name: per[name] for name in WIDE_PARAMS}


# Held out for evaluation only, each range outside its training range on the harder side: slipperier, bouncier,
# heavier, CoM further off, weaker and softer servos, slower, more biased IMU. Never train on these.
OOD_RANDOMIZATION = WideRandomizationConfig(
    friction=(0.2, 0.35),
    restitution=(0.3, 0.5),
    added_mass=(3.5, 5.0),
    com_offset=(0.04, 0.06),
    motor_strength=(0.65, 0.8),
    kp=(0.6, 0.8),
    kd=(0.5, 0.75),
    action_latency_steps=(3, 4),
    gyro_bias=(0.07, 0.1),
    gravity_bias=(0.06, 0.08),
)


def wide_fields(r: WideRandomizationConfig, trunk: int) -> tuple[FieldRandomization, ...]:
    """The model fields the backend writes for `r` (ranges of the product draws are the products' ranges)."""
    kp_total = (r.motor_strength[0] * r.kp[0], r.motor_strength[1] * r.kp[1])
    kd_total = (r.motor_strength[0] * r.kd[0], r.motor_strength[1] * r.kd[1])
    com = [FieldRandomization(field="body_ipos", rows=(trunk,), cols=(i,), range=r.com_offset, op="add",
                              draw=f"com_{axis}") for i, axis in enumerate("xyz")]
    return (
        FieldRandomization(field="geom_friction", cols=(0,), range=r.friction, op="scale", draw="friction"),
        FieldRandomization(field="geom_solref", cols=(1,), range=r.restitution, op="set", draw="restitution"),
        FieldRandomization(field="body_mass", rows=(trunk,), range=r.added_mass, op="add", draw="added_mass"),
        *com,
        # Servo: force = gain * target + bias1 * q + bias2 * qdot, gain = kp, bias1 = -kp, bias2 = -kv.
        FieldRandomization(field="actuator_gainprm", cols=(0,), range=kp_total, op="scale", draw="kp_total"),
        FieldRandomization(field="actuator_biasprm", cols=(1,), range=kp_total, op="scale", draw="kp_total"),
        FieldRandomization(field="actuator_biasprm", cols=(2,), range=kd_total, op="scale", draw="kd_total"),
        FieldRandomization(field="actuator_forcerange", range=r.motor_strength, op="scale", draw="motor_strength"),
    )


def sample_wide(rng: np.random.Generator, r: WideRandomizationConfig, k: int) -> np.ndarray:
    """(k, 16) draws in WIDE_PARAMS order; latency is a whole number of steps."""
    lo, hi = zip(*r.ranges().values(), strict=True)
    out = rng.uniform(lo, hi, size=(k, len(WIDE_PARAMS)))
    j = WIDE_PARAMS.index("latency")
    a, b = r.action_latency_steps
    out[:, j] = rng.integers(a, b + 1, size=k)
    return out


def backend_values(fields: tuple[FieldRandomization, ...], params: np.ndarray) -> np.ndarray:
    """(k, n_draws) columns for `backend.randomize(ids, fields, ...)` from (k, 16) WIDE_PARAMS draws."""
    from s2r.sim.backends import draw_names

    col = {name: params[:, i] for i, name in enumerate(WIDE_PARAMS)}
    col["kp_total"] = col["motor_strength"] * col["kp"]
    col["kd_total"] = col["motor_strength"] * col["kd"]
    return np.stack([col[name] for name in draw_names(fields)], axis=1)


def ood_config(r: WideRandomizationConfig) -> WideRandomizationConfig:
    """`r` with every held-out range of OOD_RANDOMIZATION (pushes, noise and calibration kept from `r`)."""
    names = ("friction", "restitution", "added_mass", "com_offset", "motor_strength", "kp", "kd",
             "action_latency_steps", "gyro_bias", "gravity_bias")
    return dataclasses.replace(r, **{n: getattr(OOD_RANDOMIZATION, n) for n in names})
