"""Observation and reward terms as pure functions: `f(state, **params) -> (num_envs,) or (num_envs, k)`.

They use only operations that numpy arrays and torch tensors share (arithmetic, `.sum(-1)`, `xp.exp`,
`xp.abs`, `xp.where`), taking the array namespace `xp` explicitly, so the same terms run on the CPU
backend (numpy) and a GPU backend (torch) unchanged. Weights and parameters live in the task config as
`RewardTerm(func, weight, params)` entries, computed as `func(state, **params) * weight * dt`.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

Array = Any


@dataclass(frozen=True, kw_only=True)
class RewardTerm:
    """One reward term of a task config: `REWARD_TERMS[func](state, **params) * weight * control_dt`.

    `--set rewards.<name>.weight=W` and `--set rewards.<name>.params.<p>=V` override it; the shorthand
    `--set rewards.<name>=W` sets the weight (the form older commands used).

    Attributes:
        func: Name of the term function in `REWARD_TERMS`.
        weight: Multiplier (0 disables the term: it is not computed at all).
        params: Keyword arguments of the function (the function's defaults apply to the others).
    """

    SHORTHAND_FIELD: ClassVar[str] = "weight"

    func: str
    weight: float = 0.0
    params: dict[str, float] = field(default_factory=dict)


def reward_field(func: str, weight: float, **params: float) -> Any:
    """A config field whose default is `RewardTerm(func, weight, params)` (a fresh params dict each time)."""
    return field(default_factory=lambda: RewardTerm(func=func, weight=weight, params=dict(params)))


def reward_terms(rewards: Any) -> list[tuple[Callable[..., Array], float, dict[str, float]]]:
    """(function, weight, params) of every non-zero `RewardTerm` field of a rewards config, in field order.

    Raises:
        ValueError: A term names no registered function (the message names the close ones).
    """
    out = []
    for f in dataclasses.fields(rewards):
        term = getattr(rewards, f.name)
        if not isinstance(term, RewardTerm) or term.weight == 0.0:
            continue
        if term.func not in REWARD_TERMS:
            close = difflib.get_close_matches(term.func, list(REWARD_TERMS), n=3)
            hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(sorted(REWARD_TERMS))}"
            raise ValueError(f"rewards.{f.name}.func '{term.func}' is not a reward term; {hint}")
        out.append((REWARD_TERMS[term.func], term.weight, dict(term.params)))
    return out


def upgrade_rewards_dict(defaults: Any, data: dict[str, Any], moved: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    """Convert a rewards section saved before `RewardTerm` (name -> weight, shared parameters) to today's.

    Args:
        defaults: Today's default rewards config (supplies each term's function and other parameters).
        data: The saved section.
        moved: Old top-level parameter key -> "term.param" places it now lives in.

    Returns:
        The section in today's layout (a section already in it comes back unchanged).
    """
    out = dict(data)
    for key, places in moved.items():
        if key in out:
            value = out.pop(key)
            for place in places:
                term, param = place.split(".")
                cur = out.get(term)
                if not isinstance(cur, dict):
                    cur = out[term] = dataclasses.asdict(dataclasses.replace(
                        getattr(defaults, term), weight=float(cur if cur is not None else getattr(defaults, term).weight)))
                cur["params"] = {**cur.get("params", {}), param: value}
    for k, v in list(out.items()):
        if isinstance(v, (int, float)) and isinstance(getattr(defaults, k, None), RewardTerm):
            out[k] = dataclasses.asdict(dataclasses.replace(getattr(defaults, k), weight=float(v)))
    return out


@dataclass
class LocoState:
    """Everything a locomotion term may read, for one control step. Shapes are (num_envs, ...)."""

    xp: Any  # numpy or torch
    base_lin_vel: Array  # (n, 3) body frame
    base_ang_vel: Array  # (n, 3) body frame
    projected_gravity: Array  # (n, 3) gravity direction in the body frame
    base_height: Array  # (n,) above the ground under the robot
    joint_pos: Array  # (n, nj)
    joint_vel: Array  # (n, nj)
    joint_vel_prev: Array  # (n, nj)
    default_joint_pos: Array  # (nj,)
    joint_lower: Array  # (nj,)
    joint_upper: Array  # (nj,)
    torques: Array  # (n, nj) estimated actuator torques
    action: Array  # (n, nj)
    action_prev: Array  # (n, nj)
    command: Array  # (n, 3) vx, vy, wz
    foot_contact: Array  # (n, 4) bool
    first_contact: Array  # (n, 4) bool, touched down this step
    air_time_at_touchdown: Array  # (n, 4) seconds in the air before this touchdown
    foot_vel_xy: Array  # (n, 4) horizontal foot speed
    dt: float


# ---- observations -------------------------------------------------------------------------------


def obs_base_ang_vel(s: LocoState) -> Array:
    """Gyro reading, body frame (rad/s)."""
    return s.base_ang_vel


def obs_projected_gravity(s: LocoState) -> Array:
    """Unit gravity vector in the body frame (what an IMU's orientation gives)."""
    return s.projected_gravity


def obs_velocity_command(s: LocoState) -> Array:
    """Commanded vx, vy (m/s) and yaw rate (rad/s)."""
    return s.command


def obs_joint_pos(s: LocoState) -> Array:
    """Joint angles relative to the default pose."""
    return s.joint_pos - s.default_joint_pos


def obs_joint_vel(s: LocoState) -> Array:
    """Joint speeds."""
    return s.joint_vel


def obs_last_action(s: LocoState) -> Array:
    """The previous policy output (before scaling)."""
    return s.action


def obs_base_lin_vel(s: LocoState) -> Array:
    """Body-frame linear velocity: privileged, a real robot only estimates it."""
    return s.base_lin_vel


def obs_base_height(s: LocoState) -> Array:
    """Base height above the ground: privileged."""
    return s.base_height[:, None]


def obs_foot_contact(s: LocoState) -> Array:
    """Foot contact flags: privileged."""
    return s.foot_contact * 1.0


# ---- rewards ------------------------------------------------------------------------------------


def rew_track_lin_vel_xy(s: LocoState, sigma: float = 0.25) -> Array:
    """exp(-|v_cmd - v|^2 / sigma) over the horizontal body velocity."""
    err = ((s.command[:, :2] - s.base_lin_vel[:, :2]) ** 2).sum(-1)
    return s.xp.exp(-err / sigma)


def rew_track_ang_vel_z(s: LocoState, sigma: float = 0.25) -> Array:
    """exp(-(w_cmd - w)^2 / sigma) on the yaw rate."""
    err = (s.command[:, 2] - s.base_ang_vel[:, 2]) ** 2
    return s.xp.exp(-err / sigma)


def rew_lin_vel_z(s: LocoState) -> Array:
    """Vertical base speed squared (bouncing)."""
    return s.base_lin_vel[:, 2] ** 2


def rew_ang_vel_xy(s: LocoState) -> Array:
    """Roll and pitch rates squared (wobbling)."""
    return (s.base_ang_vel[:, :2] ** 2).sum(-1)


def rew_orientation(s: LocoState) -> Array:
    """Tilt: horizontal part of gravity in the body frame, squared."""
    return (s.projected_gravity[:, :2] ** 2).sum(-1)


def rew_base_height(s: LocoState, target: float = 0.27) -> Array:
    """Squared deviation from a nominal base height."""
    return (s.base_height - target) ** 2


def rew_torques(s: LocoState) -> Array:
    """Sum of squared joint torques (energy)."""
    return (s.torques**2).sum(-1)


def rew_joint_acc(s: LocoState) -> Array:
    """Sum of squared joint accelerations (jerky motion)."""
    return (((s.joint_vel - s.joint_vel_prev) / s.dt) ** 2).sum(-1)


def rew_action_rate(s: LocoState) -> Array:
    """Squared change of the action between steps (smoothness)."""
    return ((s.action - s.action_prev) ** 2).sum(-1)


def rew_joint_limits(s: LocoState, soft: float = 0.9) -> Array:
    """How far joints go past a soft fraction of their range."""
    mid = (s.joint_upper + s.joint_lower) / 2
    half = (s.joint_upper - s.joint_lower) / 2 * soft
    lo, hi = mid - half, mid + half
    xp = s.xp
    return (xp.clip(lo - s.joint_pos, 0.0, None) + xp.clip(s.joint_pos - hi, 0.0, None)).sum(-1)


def rew_feet_air_time(s: LocoState, target: float = 0.5, min_command: float = 0.1) -> Array:
    """Reward long steps: at touchdown, air time minus `target`; only while asked to move."""
    moving = (s.command[:, :2] ** 2).sum(-1) > min_command**2
    return ((s.air_time_at_touchdown - target) * s.first_contact).sum(-1) * moving


def rew_foot_slip(s: LocoState) -> Array:
    """Horizontal foot speed while in contact."""
    return (s.foot_vel_xy**2 * s.foot_contact).sum(-1)


def rew_stand_still(s: LocoState, min_command: float = 0.1) -> Array:
    """Joint motion away from the default pose when the command is (near) zero."""
    still = (s.command**2).sum(-1) < min_command**2
    return s.xp.abs(s.joint_pos - s.default_joint_pos).sum(-1) * still


REWARD_TERMS = {
    "track_lin_vel_xy": rew_track_lin_vel_xy,
    "track_ang_vel_z": rew_track_ang_vel_z,
    "lin_vel_z": rew_lin_vel_z,
    "ang_vel_xy": rew_ang_vel_xy,
    "orientation": rew_orientation,
    "base_height": rew_base_height,
    "torques": rew_torques,
    "joint_acc": rew_joint_acc,
    "action_rate": rew_action_rate,
    "joint_limits": rew_joint_limits,
    "feet_air_time": rew_feet_air_time,
    "foot_slip": rew_foot_slip,
    "stand_still": rew_stand_still,
}

OBS_TERMS = {
    "base_ang_vel": obs_base_ang_vel,
    "projected_gravity": obs_projected_gravity,
    "velocity_command": obs_velocity_command,
    "joint_pos": obs_joint_pos,
    "joint_vel": obs_joint_vel,
    "last_action": obs_last_action,
    "base_lin_vel": obs_base_lin_vel,
    "base_height": obs_base_height,
    "foot_contact": obs_foot_contact,
}
