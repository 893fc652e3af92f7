"""The safety layer between the policy and the joint command topic.

It owns the limits (from the robot config, never from the policy), the operating mode, and a counter for
every decision it takes. Targets are clamped to joint limits, to a largest per-step change and to a joint
speed; non-finite or wrongly shaped policy output never passes; stale sensor input switches to damping;
an e-stop latches until an explicit reset.

"Damping" with a position interface means commanding the measured joint positions: the P term of the
joint's PD controller is then zero and only its D term acts, so the robot settles under gravity without
being driven anywhere (the position-controlled equivalent of kp = 0). That holds for a joint past its
limit too: it is held where it is, not pulled to the limit. A stop (e-stop, fault, stale input) must not
drive any joint: the operator pressed it because something is wrong, and a P term pulling an overshot
joint back (kp x overshoot) could move a leg into whatever forced it there. The joint limits bound what
the policy may ask for; a hold asks for nothing.
"""

from __future__ import annotations

import enum
import logging
import time
from dataclasses import dataclass

import numpy as np
from s2r.real.robot import RobotConfig


class Mode(str, enum.Enum):
    """What the controller commands."""

    INACTIVE = "inactive"  # not started: nothing is published
    RUN = "run"  # the policy drives (the first `ramp_s` blend in from the start pose)
    DAMPING = "damping"  # inputs are stale: hold the last measured pose; leaves when inputs return
    FAULT = "fault"  # the policy produced unusable output: damping, latched until reset
    ESTOP = "estop"  # emergency stop: damping, latched until reset


LATCHED = (Mode.FAULT, Mode.ESTOP)

COUNTERS = (
    "steps_run", "steps_ramp", "steps_damping", "steps_fault", "steps_estop",
    "clamp_position", "clamp_delta", "clamp_velocity",
    "nonfinite_action", "bad_action_shape", "policy_error", "nonfinite_input", "bad_joint_state",
    "watchdog_trips", "watchdog_recoveries", "command_timeouts",
    "estop_triggers", "resets", "reset_refused", "missed_periods", "hold_outside_limits", "waypoint_holds",
)


@dataclass(frozen=True, kw_only=True)
class SafetyConfig:
    """Timeouts of the safety layer.

    Attributes:
        watchdog_timeout_s: Joint state or IMU older than this (by arrival time) switches to damping.
        command_timeout_s: A velocity command older than this is replaced by zero (stand still).
        pose_timeout_s: For a waypoints-command policy: odometry older than this (by arrival time) makes the
            controller hold the pose, as with no odometry at all (waypoints in the body frame of a pose that
            is no longer where the robot is would steer it blind).
        log_interval_s: Repeated decisions of one kind are logged at most this often (all are counted).
    """

    watchdog_timeout_s: float = 0.1
    command_timeout_s: float = 0.5
    pose_timeout_s: float = 0.5
    log_interval_s: float = 1.0


class DecisionLog:
    """Operating mode, decision counters and throttled logging, shared by the joint and Cartesian layers.

    Args:
        counters: Names of the counters this layer keeps (diagnostics publish every one).
        num_actions: Values one policy output must hold.
        cfg: Timeouts and log throttling.
        logger: Where decisions are logged (the ROS node forwards this to its own logger).
    """

    def __init__(self, counters: tuple[str, ...], num_actions: int, cfg: SafetyConfig,
                 logger: logging.Logger | None = None) -> None:
        self.cfg = cfg
        self.num_actions = num_actions
        self.log = logger or logging.getLogger("s2r.real.safety")
        self.mode = Mode.INACTIVE
        self.counters = dict.fromkeys(counters, 0)
        self._last_log: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}

    # ---- bookkeeping ------------------------------------------------------------------------------

    def note(self, kind: str, detail: str, level: int = logging.WARNING) -> None:
        """Count one decision and log it (throttled per kind to `log_interval_s`, with the count since)."""
        self.counters[kind] += 1
        now = time.monotonic()
        last = self._last_log.get(kind)
        if last is not None and now - last < self.cfg.log_interval_s:
            self._unlogged[kind] = self._unlogged.get(kind, 0) + 1
            return
        extra = self._unlogged.pop(kind, 0)
        more = f" (+{extra} more since last report)" if extra else ""
        self.log.log(level, f"safety: {kind}: {detail}{more} [total {self.counters[kind]}]")
        self._last_log[kind] = now

    def set_mode(self, mode: Mode, reason: str) -> None:
        """Switch mode; every switch is logged (errors for latched faults)."""
        if mode is self.mode:
            return
        level = logging.ERROR if mode in LATCHED else logging.WARNING if mode is Mode.DAMPING else logging.INFO
        self.log.log(level, f"safety: mode {self.mode.value} -> {mode.value}: {reason}")
        self.mode = mode

    # ---- checks -----------------------------------------------------------------------------------

    def action_ok(self, action: np.ndarray) -> bool:
        """True if the policy output has one finite value per action; counts and logs a refusal."""
        n = self.num_actions
        if action.size != n:
            self.note("bad_action_shape", f"policy output has shape {tuple(action.shape)}, expected {n} values",
                      logging.ERROR)
            return False
        if not np.isfinite(action).all():
            self.note("nonfinite_action", "policy output holds NaN or inf; it is not sent", logging.ERROR)
            return False
        return True

    def inputs_finite(self, *arrays: np.ndarray, what: str) -> bool:
        """True if every value is finite; otherwise counts a `nonfinite_input` naming `what`."""
        if all(np.isfinite(a).all() for a in arrays):
            return True
        self.note("nonfinite_input", f"{what} holds NaN or inf; the message is ignored")
        return False


class SafetyLayer(DecisionLog):
    """Joint limits on top of the shared mode and counters.

    Args:
        robot: Limits and joint order.
        cfg: Timeouts.
        logger: Where decisions are logged (the ROS node forwards this to its own logger).
    """

    def __init__(self, robot: RobotConfig, cfg: SafetyConfig | None = None,
                 logger: logging.Logger | None = None) -> None:
        super().__init__(COUNTERS, robot.num_joints, cfg or SafetyConfig(), logger)
        self.robot = robot
        self.lower = np.asarray(robot.joint_lower, dtype=np.float64)
        self.upper = np.asarray(robot.joint_upper, dtype=np.float64)
        self.max_step = np.minimum(robot.max_target_delta, np.asarray(robot.velocity_limit) * robot.control_dt)
        self._vel_step = np.asarray(robot.velocity_limit) * robot.control_dt

    # ---- targets ----------------------------------------------------------------------------------

    def limit(self, target: np.ndarray, previous: np.ndarray | None) -> np.ndarray:
        """Clamp a policy target: per-step change and joint speed against `previous`, then joint limits."""
        out = target
        if previous is not None:
            step = out - previous
            if (np.abs(step) > self.robot.max_target_delta).any():
                self.note("clamp_delta", f"target change up to {np.abs(step).max():.3f} rad in one step "
                                         f"limited to {self.robot.max_target_delta} rad", logging.INFO)
            if (np.abs(step) > self._vel_step).any():
                j = int(np.argmax(np.abs(step) - self._vel_step))
                self.note("clamp_velocity", f"joint '{self.robot.joint_names[j]}' target speed "
                                            f"{abs(step[j]) / self.robot.control_dt:.1f} rad/s over its limit",
                          logging.INFO)
            out = previous + np.clip(step, -self.max_step, self.max_step)
        if ((out < self.lower) | (out > self.upper)).any():
            j = int(np.argmax(np.maximum(self.lower - out, out - self.upper)))
            self.note("clamp_position", f"joint '{self.robot.joint_names[j]}' target {out[j]:.3f} outside "
                                        f"[{self.lower[j]:.3f}, {self.upper[j]:.3f}]", logging.INFO)
            out = np.clip(out, self.lower, self.upper)
        return out

    def hold(self, measured: np.ndarray) -> np.ndarray:
        """Damping target: the measured pose as it is, so only the D term acts on every joint.

        A joint past its limit is held there too (counted as `hold_outside_limits`): clipping the target
        to the limit would make the P term push it (see the module docstring).
        """
        out = (measured < self.lower) | (measured > self.upper)
        if out.any():
            j = int(np.argmax(np.maximum(self.lower - measured, measured - self.upper)))
            self.note("hold_outside_limits", f"joint '{self.robot.joint_names[j]}' at {measured[j]:.3f} is outside "
                                             f"[{self.lower[j]:.3f}, {self.upper[j]:.3f}]; held where it is "
                                             "(damping only, not pushed to the limit)", logging.INFO)
        return np.array(measured, dtype=np.float64, copy=True)
