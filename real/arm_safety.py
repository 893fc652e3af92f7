"""The Cartesian safety layer between an arm policy and the Cartesian impedance controller.

It owns the limits (from the arm config, never from the policy): the TCP target never leaves the workspace
box, moves at most `max_target_step` per period and `max_speed`, and stays within `max_lead` of the measured
TCP; the gripper width stays within the hand's stroke. Every clamp is counted. Non-finite or wrongly shaped
policy output never passes (a latched fault that holds the pose); stale joint states or object poses hold
the current pose; an e-stop latches until an explicit reset (modes and counters as `s2r.real.safety`).

"Hold" with a Cartesian interface means commanding the measured TCP position: the impedance controller's
spring is then relaxed and the arm stays where it is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from s2r.real.arm import ArmConfig
from s2r.real.safety import DecisionLog, SafetyConfig

ARM_COUNTERS = (
    "steps_run", "steps_damping", "steps_fault", "steps_estop",
    "clamp_step", "clamp_speed", "clamp_lead", "clamp_workspace", "clamp_gripper",
    "nonfinite_action", "bad_action_shape", "policy_error", "nonfinite_input", "bad_joint_state",
    "bad_object_frame", "watchdog_trips", "object_timeouts", "watchdog_recoveries",
    "estop_triggers", "resets", "reset_refused", "missed_periods", "command_timeouts",
    "camera_holds", "bad_image",
)


@dataclass(frozen=True, kw_only=True)
class ArmSafetyConfig(SafetyConfig):
    """Timeouts of the Cartesian layer.

    Attributes:
        object_timeout_s: An object pose older than this (by arrival time) holds the pose: the policy would
            otherwise reach for where the object was.
    """

    object_timeout_s: float = 0.25


class CartesianSafety(DecisionLog):
    """Cartesian limits, mode and decision counters for one arm.

    Args:
        arm: Limits and frames.
        num_actions: Values one policy output holds.
        cfg: Timeouts.
        logger: Where decisions are logged.
    """

    def __init__(self, arm: ArmConfig, num_actions: int, cfg: ArmSafetyConfig | None = None,
                 logger: logging.Logger | None = None) -> None:
        super().__init__(ARM_COUNTERS, num_actions, cfg or ArmSafetyConfig(), logger)
        self.arm = arm
        self.low = np.asarray(arm.workspace_low, dtype=np.float64)
        self.high = np.asarray(arm.workspace_high, dtype=np.float64)
        self.max_step = min(arm.max_target_step, arm.max_speed * arm.control_dt)

    def limit(self, target: np.ndarray, previous: np.ndarray, measured: np.ndarray) -> np.ndarray:
        """Clamp a proposed TCP target: step and speed from `previous`, lead over `measured`, then the box."""
        arm = self.arm
        step = target - previous
        norm = float(np.linalg.norm(step))
        out = target
        if norm > self.max_step:
            if norm > arm.max_target_step:
                self.note("clamp_step", f"TCP target step {norm * 1e3:.1f} mm limited to "
                                        f"{arm.max_target_step * 1e3:.1f} mm", logging.INFO)
            if norm / arm.control_dt > arm.max_speed:
                self.note("clamp_speed", f"TCP target speed {norm / arm.control_dt:.2f} m/s limited to "
                                         f"{arm.max_speed} m/s", logging.INFO)
            out = previous + step * (self.max_step / norm)
        lead = np.clip(out, measured - arm.max_lead, measured + arm.max_lead)
        if (lead != out).any():
            self.note("clamp_lead", f"TCP target more than {arm.max_lead} m ahead of the measured TCP", logging.INFO)
            out = lead
        return self.in_box(out)

    def in_box(self, target: np.ndarray) -> np.ndarray:
        """The target clipped into the workspace box (counted when it was outside)."""
        if ((target < self.low) | (target > self.high)).any():
            self.note("clamp_workspace", f"TCP target {np.round(target, 3).tolist()} outside the workspace box "
                                         f"{self.low.tolist()} .. {self.high.tolist()} of {self.arm.source}; clipped",
                      logging.INFO)
            return np.clip(target, self.low, self.high)
        return target

    def gripper(self, width: float) -> float:
        """A gripper width inside the hand's stroke (counted when it was outside)."""
        lo, hi = self.arm.gripper_width
        if not lo <= width <= hi:
            self.note("clamp_gripper", f"gripper width {width:.4f} m outside [{lo}, {hi}] m; clipped", logging.INFO)
            return min(max(width, lo), hi)
        return width

    def hold(self, measured: np.ndarray) -> np.ndarray:
        """Hold target: the measured TCP, inside the box."""
        return np.clip(measured, self.low, self.high)
