"""The robot config (`robot.yaml`): what the hardware is, independent of any policy.

A policy is checked against it before it may run (`s2r.real.runner.check_compatibility`): joint names and
order, control period and gains must agree. The safety layer takes its limits from here, never from the
policy, because the policy file comes from training and the robot file describes the machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from s2r.real.documents import read_document


class RobotConfigError(ValueError):
    """A robot.yaml that is missing, malformed or inconsistent."""


@dataclass(frozen=True, kw_only=True)
class RobotConfig:
    """Joint layout, timing and hard limits of one robot.

    Attributes:
        name: Robot name, e.g. "go1"; compared with the policy's `robot` field.
        joint_names: Actuated joints in the order the command array uses.
        control_dt: Seconds between policy steps the robot's controller expects.
        joint_lower: Lower position limit per joint (rad).
        joint_upper: Upper position limit per joint (rad).
        velocity_limit: Largest commanded target speed per joint (rad/s).
        max_target_delta: Largest change of any joint target in one control step (rad).
        kp: Position gain per joint of the robot's joint controller, if known (checked against the policy).
        kv: Damping gain per joint, if known.
        gain_tolerance: Relative gain difference tolerated before a policy is refused.
        source: File the config was read from (for messages).
    """

    name: str
    joint_names: tuple[str, ...]
    control_dt: float
    joint_lower: tuple[float, ...]
    joint_upper: tuple[float, ...]
    velocity_limit: tuple[float, ...]
    max_target_delta: float
    kp: tuple[float, ...] | None = None
    kv: tuple[float, ...] | None = None
    gain_tolerance: float = 0.05
    source: str = "<robot config>"

    @property
    def num_joints(self) -> int:
        """Number of actuated joints."""
        return len(self.joint_names)

    def validate(self) -> None:
        """Check internal consistency; raises RobotConfigError naming the field."""
        n = self.num_joints
        if n == 0:
            raise RobotConfigError(f"{self.source}: 'joint_names' is empty")
        if len(set(self.joint_names)) != n:
            raise RobotConfigError(f"{self.source}: 'joint_names' lists a joint twice")
        for name in ("joint_lower", "joint_upper", "velocity_limit", "kp", "kv"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise RobotConfigError(f"{self.source}: '{name}' has {len(value)} values for {n} joints")
        for j, lo, hi in zip(self.joint_names, self.joint_lower, self.joint_upper, strict=True):
            if not lo < hi:
                raise RobotConfigError(f"{self.source}: joint '{j}' has lower limit {lo} >= upper limit {hi}")
        if not (self.control_dt > 0 and math.isfinite(self.control_dt)):
            raise RobotConfigError(f"{self.source}: 'control_dt' must be a positive number, got {self.control_dt}")
        if not self.max_target_delta > 0 or any(not v > 0 for v in self.velocity_limit):
            raise RobotConfigError(f"{self.source}: 'max_target_delta' and 'velocity_limit' must be positive")


def robot_config_from_dict(raw: dict[str, Any], source: str = "<robot config>") -> RobotConfig:
    """Build a RobotConfig from plain data; a scalar `velocity_limit` applies to every joint.

    Raises:
        RobotConfigError: Unknown or missing keys, or inconsistent values.
    """
    if not isinstance(raw, dict):
        raise RobotConfigError(f"{source}: expected a mapping of robot settings, got {type(raw).__name__}")
    known = {f.name for f in fields(RobotConfig)} - {"source"}
    unknown = set(raw) - known
    if unknown:
        raise RobotConfigError(f"{source}: unknown keys {sorted(unknown)}; known keys are {sorted(known)}")
    missing = {"name", "joint_names", "control_dt", "joint_lower", "joint_upper", "velocity_limit",
               "max_target_delta"} - set(raw)
    if missing:
        raise RobotConfigError(f"{source}: missing keys {sorted(missing)}")
    n = len(raw["joint_names"])
    kw: dict[str, Any] = {}
    try:
        for key, value in raw.items():
            if key == "velocity_limit" and not isinstance(value, list | tuple):
                kw[key] = (float(value),) * n
            elif key == "joint_names":
                kw[key] = tuple(str(v) for v in value)
            elif isinstance(value, list | tuple):
                kw[key] = tuple(float(v) for v in value)
            elif key in ("control_dt", "max_target_delta", "gain_tolerance"):
                kw[key] = float(value)
            else:
                kw[key] = value
    except (TypeError, ValueError) as exc:
        raise RobotConfigError(f"{source}: malformed value: {exc}") from exc
    cfg = RobotConfig(source=source, **kw)
    cfg.validate()
    return cfg


def load_robot_config(path: str | Path) -> RobotConfig:
    """Read and validate a robot.yaml.

    Raises:
        RobotConfigError: Missing file, bad YAML, or bad contents (the message names the file and field).
    """
    raw = read_document(path, RobotConfigError, "robot config", "(see launch/robots/ for examples)")
    return robot_config_from_dict(raw, source=str(path))
