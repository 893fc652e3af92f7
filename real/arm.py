"""An arm's robot config (`kind: arm`), its forward kinematics and the observation terms it reports.

A manipulation policy sees the tool centre point (TCP), the gripper and a tracked object. On a robot these
come from different places: joint encoders (`sensor_msgs/JointState`), forward kinematics through the
kinematic chain written in the robot config, and an object tracker (`geometry_msgs/PoseStamped`). This
module turns those into the terms the training task declared (`ARM_TERMS`), numpy only.

The chain is written the way MuJoCo nests bodies: each entry is a frame at `pos`/`quat` (w, x, y, z) in its
parent's frame and, if it names a joint, turned about its own z axis by that joint's angle. Fixed entries
(no joint) after the last joint carry the flange, the hand and the TCP.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from s2r.real.documents import read_document
from s2r.real.robot import RobotConfig, RobotConfigError, robot_config_from_dict


@dataclass(frozen=True, kw_only=True)
class ChainLink:
    """One frame of the kinematic chain: `pos`/`quat` in its parent, turned about z by `joint` if named."""

    pos: tuple[float, float, float]
    quat: tuple[float, float, float, float] = (1.0, 0.0, 0.0, 0.0)
    joint: str | None = None


@dataclass(frozen=True, kw_only=True)
class ArmConfig:
    """Joint layout, kinematics, timing and Cartesian limits of one arm (the safety layer's limits).

    Attributes:
        name: Robot name, e.g. "panda"; compared with the policy's `robot` field.
        joint_names: Arm joints, in the order of the kinematic chain.
        gripper_joint_names: Finger joints; the gripper width is the sum of their positions (m), and the
            gripper command sends half the width to each.
        control_dt: Seconds between policy steps the arm's controller expects.
        base_frame: Frame id of Cartesian targets and of tracked object poses (the chain's root).
        kinematic_chain: Base -> TCP frames (see the module docstring).
        tcp_orientation: w, x, y, z orientation the Cartesian target holds (policies move the TCP only).
        workspace_low: Lowest TCP target (x, y, z) in m, base frame; the target never leaves the box.
        workspace_high: Highest TCP target.
        max_target_step: Largest change of the TCP target in one control period (m, Euclidean).
        max_speed: Largest TCP target speed (m/s); with `control_dt` a second bound on the step.
        max_lead: Largest distance (m, per axis) of the target from the measured TCP: a target pushed into
            an obstacle never winds up further than this.
        gripper_width: Smallest and largest commanded gripper width (m).
        source: File the config was read from (for messages).
    """

    name: str
    kind: str = "arm"
    joint_names: tuple[str, ...]
    gripper_joint_names: tuple[str, ...] = ()
    control_dt: float
    base_frame: str = "world"
    kinematic_chain: tuple[ChainLink, ...]
    tcp_orientation: tuple[float, float, float, float] = (1.0, 0.0, 0.0, 0.0)
    workspace_low: tuple[float, float, float]
    workspace_high: tuple[float, float, float]
    max_target_step: float
    max_speed: float
    max_lead: float = 0.05
    gripper_width: tuple[float, float] = (0.0, 0.08)
    source: str = field(default="<robot config>", compare=False)

    @property
    def num_joints(self) -> int:
        """Arm joints (fingers not counted)."""
        return len(self.joint_names)

    @property
    def all_joint_names(self) -> tuple[str, ...]:
        """Arm joints then finger joints: the order a joint state is mapped into."""
        return self.joint_names + self.gripper_joint_names

    def validate(self) -> None:
        """Check internal consistency; raises RobotConfigError naming the file and field."""
        src = self.source
        if self.kind != "arm":
            raise RobotConfigError(f"{src}: an arm config has kind 'arm', got {self.kind!r}")
        names = self.all_joint_names
        if not self.joint_names or len(set(names)) != len(names):
            raise RobotConfigError(f"{src}: 'joint_names' and 'gripper_joint_names' must name distinct joints, "
                                   "at least one arm joint")
        chained = [link.joint for link in self.kinematic_chain if link.joint is not None]
        if tuple(chained) != self.joint_names:
            raise RobotConfigError(f"{src}: 'kinematic_chain' turns joints {chained} but 'joint_names' lists "
                                   f"{list(self.joint_names)}; list every arm joint once, base to tip")
        for lo, hi, axis in zip(self.workspace_low, self.workspace_high, "xyz", strict=True):
            if not lo < hi:
                raise RobotConfigError(f"{src}: workspace {axis} range [{lo}, {hi}] is empty")
        for key in ("control_dt", "max_target_step", "max_speed", "max_lead"):
            v = getattr(self, key)
            if not (v > 0 and math.isfinite(v)):
                raise RobotConfigError(f"{src}: '{key}' must be a positive number, got {v}")
        lo, hi = self.gripper_width
        if not 0 <= lo < hi:
            raise RobotConfigError(f"{src}: 'gripper_width' [{lo}, {hi}] must be an increasing pair of widths >= 0")


def _tuple(value: Any, n: int | None, key: str, src: str) -> tuple[float, ...]:
    if not isinstance(value, list | tuple) or (n is not None and len(value) != n):
        raise RobotConfigError(f"{src}: '{key}' must be a list of {n} numbers, got {value!r}")
    try:
        return tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise RobotConfigError(f"{src}: '{key}' must hold numbers, got {value!r}") from None


def arm_config_from_dict(raw: dict[str, Any], source: str = "<robot config>") -> ArmConfig:
    """Build an ArmConfig from plain data (a robot YAML with `kind: arm`).

    Raises:
        RobotConfigError: Unknown or missing keys, or inconsistent values (one sentence naming the field).
    """
    known = {f.name for f in fields(ArmConfig)} - {"source"}
    unknown = set(raw) - known
    if unknown:
        raise RobotConfigError(f"{source}: unknown keys {sorted(unknown)} for an arm; known keys are {sorted(known)}")
    missing = {"name", "joint_names", "control_dt", "kinematic_chain", "workspace_low", "workspace_high",
               "max_target_step", "max_speed"} - set(raw)
    if missing:
        raise RobotConfigError(f"{source}: missing keys {sorted(missing)}")
    chain = []
    for i, link in enumerate(raw["kinematic_chain"] or []):
        if not isinstance(link, dict) or not set(link) <= {"pos", "quat", "joint"} or "pos" not in link:
            raise RobotConfigError(f"{source}: kinematic_chain[{i}] must be a mapping with 'pos' and optional "
                                   f"'quat' and 'joint', got {link!r}")
        chain.append(ChainLink(pos=_tuple(link["pos"], 3, f"kinematic_chain[{i}].pos", source),
                               quat=_tuple(link.get("quat", [1, 0, 0, 0]), 4, f"kinematic_chain[{i}].quat", source),
                               joint=None if link.get("joint") is None else str(link["joint"])))
    kw: dict[str, Any] = {"kinematic_chain": tuple(chain)}
    for key, value in raw.items():
        if key in ("joint_names", "gripper_joint_names"):
            kw[key] = tuple(str(v) for v in value)
        elif key in ("workspace_low", "workspace_high"):
            kw[key] = _tuple(value, 3, key, source)
        elif key == "tcp_orientation":
            kw[key] = _tuple(value, 4, key, source)
        elif key == "gripper_width":
            kw[key] = _tuple(value, 2, key, source)
        elif key in ("control_dt", "max_target_step", "max_speed", "max_lead"):
            try:
                kw[key] = float(value)
            except (TypeError, ValueError):
                raise RobotConfigError(f"{source}: '{key}' must be a number, got {value!r}") from None
        elif key in ("name", "kind", "base_frame"):
            kw[key] = str(value)
    cfg = ArmConfig(source=source, **kw)
    cfg.validate()
    return cfg


def load_any_robot_config(path: str | Path) -> RobotConfig | ArmConfig:
    """Read a robot YAML: `kind: arm` gives an ArmConfig, no kind (a joint-position robot) a RobotConfig.

    Raises:
        RobotConfigError: Missing file, bad YAML, an unknown kind or bad contents.
    """
    raw = read_document(path, RobotConfigError, "robot config", "(see launch/robots/ for examples)")
    if not isinstance(raw, dict):
        raise RobotConfigError(f"{path}: expected a mapping of robot settings, got {type(raw).__name__}")
    kind = raw.get("kind", "joint")
    if kind == "arm":
        return arm_config_from_dict(raw, str(path))
    if kind != "joint":
        raise RobotConfigError(f"{path}: 'kind' is {kind!r}; robot configs are 'joint' (the default) or 'arm'")
    return robot_config_from_dict({k: v for k, v in raw.items() if k != "kind"}, str(path))


# ---- kinematics ---------------------------------------------------------------------------------


def quat_to_mat(q: np.ndarray) -> np.ndarray:
    """(3, 3) rotation matrix of a w, x, y, z quaternion (normalised first, as MuJoCo does)."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


class ArmKinematics:
    """TCP pose and translational Jacobian from joint angles, through the robot config's chain.

    Args:
        chain: Base -> TCP frames; joints turn about their frame's z axis.
    """

    def __init__(self, chain: tuple[ChainLink, ...]) -> None:
        # Each link as plain floats (rotation rows, offset, has-joint): at 7-9 links, scalar Python beats
        # numpy's per-call overhead several times over, and this runs on every joint state.
        self._links: list[tuple[tuple[tuple[float, ...], ...], tuple[float, ...], bool]] = []
        for link in chain:
            r = quat_to_mat(np.asarray(link.quat))
            self._links.append((tuple(tuple(float(v) for v in row) for row in r), tuple(float(v) for v in link.pos),
                                link.joint is not None))
        self.num_joints = sum(j for _, _, j in self._links)

    def forward(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """TCP position (3,), orientation (3, 3) and translational Jacobian (3, num_joints) at angles `q`."""
        r00, r01, r02, r10, r11, r12, r20, r21, r22 = 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0
        px = py = pz = 0.0
        axes, origins = [], []
        k = 0
        for (f0, f1, f2), (ox, oy, oz), has_joint in self._links:
            px, py, pz = (px + r00 * ox + r01 * oy + r02 * oz, py + r10 * ox + r11 * oy + r12 * oz,
                          pz + r20 * ox + r21 * oy + r22 * oz)
            r00, r01, r02, r10, r11, r12, r20, r21, r22 = (
                r00 * f0[0] + r01 * f1[0] + r02 * f2[0], r00 * f0[1] + r01 * f1[1] + r02 * f2[1],
                r00 * f0[2] + r01 * f1[2] + r02 * f2[2],
                r10 * f0[0] + r11 * f1[0] + r12 * f2[0], r10 * f0[1] + r11 * f1[1] + r12 * f2[1],
                r10 * f0[2] + r11 * f1[2] + r12 * f2[2],
                r20 * f0[0] + r21 * f1[0] + r22 * f2[0], r20 * f0[1] + r21 * f1[1] + r22 * f2[1],
                r20 * f0[2] + r21 * f1[2] + r22 * f2[2])
            if has_joint:
                c, s = math.cos(q[k]), math.sin(q[k])
                # R Rz(q): the first two columns turn, the z column (the joint axis) stays.
                r00, r01 = c * r00 + s * r01, c * r01 - s * r00
                r10, r11 = c * r10 + s * r11, c * r11 - s * r10
                r20, r21 = c * r20 + s * r21, c * r21 - s * r20
                axes.append((r02, r12, r22))
                origins.append((px, py, pz))
                k += 1
        jac = np.empty((3, k))
        for i, ((ax, ay, az), (ox, oy, oz)) in enumerate(zip(axes, origins, strict=True)):
            dx, dy, dz = px - ox, py - oy, pz - oz  # revolute joint: z_i x (p_tcp - o_i)
            jac[0, i], jac[1, i], jac[2, i] = ay * dz - az * dy, az * dx - ax * dz, ax * dy - ay * dx
        rot = np.array([[r00, r01, r02], [r10, r11, r12], [r20, r21, r22]])
        return np.array([px, py, pz]), rot, jac


# ---- observation terms --------------------------------------------------------------------------


@dataclass
class ArmState:
    """One snapshot of what an arm reports, arm joints in the robot config's order.

    Attributes:
        joint_pos: (num_joints,) arm joint angles (rad).
        joint_vel: (num_joints,) arm joint speeds (rad/s).
        finger_pos: (num_fingers,) finger joint positions (m).
        finger_vel: (num_fingers,) finger joint speeds (m/s).
        ee_pos: (3,) TCP position (forward kinematics), base frame.
        ee_vel: (3,) TCP linear velocity (Jacobian times joint speeds).
        object_pos: (3,) tracked object position, base frame.
        object_quat: (4,) its orientation, w, x, y, z.
        target_pos: (3,) goal point of tasks that have one (zeros otherwise).
    """

    joint_pos: np.ndarray
    joint_vel: np.ndarray
    finger_pos: np.ndarray
    finger_vel: np.ndarray
    ee_pos: np.ndarray = field(default_factory=lambda: np.zeros(3))
    ee_vel: np.ndarray = field(default_factory=lambda: np.zeros(3))
    object_pos: np.ndarray = field(default_factory=lambda: np.zeros(3))
    object_quat: np.ndarray = field(default_factory=lambda: np.array([1.0, 0.0, 0.0, 0.0]))
    target_pos: np.ndarray = field(default_factory=lambda: np.zeros(3))

    @classmethod
    def zeros(cls, num_joints: int, num_fingers: int) -> ArmState:
        """A state with every value zero (identity object orientation)."""
        return cls(np.zeros(num_joints), np.zeros(num_joints), np.zeros(num_fingers), np.zeros(num_fingers))

    def update_kinematics(self, kin: ArmKinematics) -> None:
        """Recompute the TCP position and velocity from the joint state."""
        pos, _, jac = kin.forward(self.joint_pos)
        self.ee_pos[:] = pos
        self.ee_vel[:] = jac @ self.joint_vel

    @property
    def gripper_width(self) -> float:
        """Distance between the finger pads (m): the sum of the finger positions."""
        return float(self.finger_pos.sum())


# name -> (size given num_joints, function(state, command, last_action) -> values); the names and meanings
# are the Panda tasks' policy terms (s2r.sim.tasks.manipulation.terms.OBS_TERMS).
ARM_TERMS = {
    "ee_pos": (lambda nj: 3, lambda s, c, a: s.ee_pos),
    "ee_vel": (lambda nj: 3, lambda s, c, a: s.ee_vel),
    "gripper_opening": (lambda nj: 1, lambda s, c, a: s.finger_pos.sum()),
    "gripper_vel": (lambda nj: 1, lambda s, c, a: s.finger_vel.sum()),
    "object_pos": (lambda nj: 3, lambda s, c, a: s.object_pos),
    "object_rel_ee": (lambda nj: 3, lambda s, c, a: s.object_pos - s.ee_pos),
    "target_pos": (lambda nj: 3, lambda s, c, a: s.target_pos),
    "target_rel_object": (lambda nj: 3, lambda s, c, a: s.target_pos - s.object_pos),
    "object_quat": (lambda nj: 4, lambda s, c, a: s.object_quat),
}
