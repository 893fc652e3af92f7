"""The arm's control loop without ROS: joint states and object poses in, one safe Cartesian command out.

`ArmController` is `PolicyController` with an arm's inputs and outputs: the tracked object pose takes the
IMU's place as the second input a step waits for (in lockstep simulation both carry the same stamp), the
watchdog holds the pose when either goes stale, and a step returns an `ArmCommand` (TCP target + gripper
width) instead of joint targets. Pacing, e-stop latching, reset and lifecycle are the joint controller's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from s2r.real.arm import ArmState
from s2r.real.arm_runner import ArmRunner
from s2r.real.arm_safety import CartesianSafety
from s2r.real.controller import PolicyController
from s2r.real.safety import Mode


@dataclass(frozen=True)
class ArmCommand:
    """One command to the arm: TCP target (base frame) with the config's orientation, and a gripper width.

    Attributes:
        position: (3,) TCP target position (m).
        orientation: w, x, y, z TCP target orientation.
        gripper_width: Commanded distance between the fingers (m); None: the arm has no gripper.
    """

    position: np.ndarray
    orientation: tuple[float, float, float, float]
    gripper_width: float | None


class ArmController(PolicyController):
    """Arm runner + Cartesian safety + input bookkeeping.

    Args:
        runner: A loaded, checked arm policy.
        safety: The Cartesian safety layer for the same arm.
        sync_object: Step only when the object pose carries the same stamp as the joint state (lockstep
            simulation); off on hardware, where the tracker runs on its own clock.
    """

    runner: ArmRunner
    safety: CartesianSafety

    def __init__(self, runner: ArmRunner, safety: CartesianSafety, sync_object: bool = False) -> None:
        super().__init__(runner, safety, sync_imu=sync_object)  # type: ignore[arg-type]
        arm = runner.robot
        self.arm = arm
        self.state = ArmState.zeros(arm.num_joints, len(arm.gripper_joint_names))  # type: ignore[assignment]
        self.command = np.zeros(0)
        self.object_stamp: float | None = None
        self.last_target: np.ndarray | None = None
        self.last_gripper: float | None = None

    # ---- inputs -----------------------------------------------------------------------------------

    def on_joint_state(self, pos: np.ndarray, vel: np.ndarray, stamp: float, now: float) -> bool:
        """Store a joint state (arm joints then fingers, the config's order); True when a step is due now."""
        if not self.safety.inputs_finite(pos, vel, what="joint state"):
            return False
        n, s = self.arm.num_joints, self.state
        s.joint_pos[:], s.joint_vel[:] = pos[:n], vel[:n]
        s.finger_pos[:], s.finger_vel[:] = pos[n:], vel[n:]
        s.update_kinematics(self.runner.kinematics)
        if self.joint_stamp is not None and stamp > self.joint_stamp:
            self._input_dt = stamp - self.joint_stamp
        self.joint_stamp, self._joint_rx = stamp, now
        return self.due()

    def on_object_pose(self, pos: np.ndarray, quat_wxyz: np.ndarray, frame_id: str, stamp: float,
                       now: float) -> bool:
        """Store a tracked object pose; True when a step is due now (lockstep: the pose came second).

        A pose in another frame than the config's `base_frame` is refused (counted, logged) rather than
        guessed at: the object would appear somewhere else and the arm would reach for it there.
        """
        if frame_id != self.arm.base_frame:
            self.safety.note("bad_object_frame", f"object pose in frame '{frame_id}' but {self.arm.source} "
                                                 f"expects base_frame '{self.arm.base_frame}'; the pose is ignored "
                                                 "(transform it into the base frame before publishing)")
            return False
        if not self.safety.inputs_finite(pos, quat_wxyz, what="object pose"):
            return False
        self.state.object_pos[:] = pos
        self.state.object_quat[:] = quat_wxyz
        # The object pose is the second input of a step: it uses the IMU's slots of the joint controller.
        self.object_stamp = self.imu_stamp = stamp
        self._imu_rx = now
        return self.sync_imu and self.due()

    def restart(self) -> None:
        """A new episode (the operator or the sim bridge reset the scene): the next step starts afresh."""
        self._restart = True

    # ---- control ----------------------------------------------------------------------------------

    def warm(self) -> None:
        """Run the graph once without effect (see `PolicyController.warm`)."""
        if self.mode is Mode.RUN and self.joint_stamp is not None:
            self.runner.dry_run(self.state, self.command)

    def _watchdog(self, now: float) -> None:
        s, cfg = self.safety, self.safety.cfg
        joint_age = now - max(self._active_since, self._joint_rx)
        object_age = now - max(self._active_since, self._imu_rx)
        joint_stale, object_stale = joint_age > cfg.watchdog_timeout_s, object_age > cfg.object_timeout_s
        if (joint_stale or object_stale) and self.mode is Mode.RUN:
            s.counters["watchdog_trips"] += 1
            if joint_stale:
                why = f"no fresh joint state for {joint_age * 1e3:.0f} ms (limit {cfg.watchdog_timeout_s * 1e3:.0f} ms)"
            else:
                s.counters["object_timeouts"] += 1
                why = f"no fresh object pose for {object_age * 1e3:.0f} ms (limit {cfg.object_timeout_s * 1e3:.0f} ms)"
            s.set_mode(Mode.DAMPING, f"watchdog: {why}; holding the current pose")
        elif not (joint_stale or object_stale) and self.mode is Mode.DAMPING:
            s.counters["watchdog_recoveries"] += 1
            s.set_mode(Mode.RUN, "watchdog: joint state and object pose are fresh again; the policy restarts")
            self._restart = True

    def _policy_step(self, now: float) -> ArmCommand:
        s, r, st = self.safety, self.runner, self.state
        if self._restart or self.last_target is None:
            r.reset()
            self.last_target = s.hold(st.ee_pos)
            self._restart = False
        try:
            action = np.asarray(r.infer(st, self.command))
        except Exception as exc:  # onnxruntime errors are not a common type; any of them must stop the policy
            s.note("policy_error", f"policy inference failed: {exc}", logging.ERROR)
            action = None
        if action is None or not s.action_ok(action):
            self._latched = Mode.FAULT
            s.set_mode(Mode.FAULT, "unusable policy output; holding the pose until reset")
            return self._hold()
        s.counters["steps_run"] += 1
        proposed, width = r.propose(action, self.last_target)
        self.last_target = s.limit(proposed, self.last_target, st.ee_pos)
        if width is not None:
            self.last_gripper = s.gripper(width)
        return self._command()

    def _hold(self) -> ArmCommand:
        s = self.safety
        key = {Mode.DAMPING: "steps_damping", Mode.FAULT: "steps_fault", Mode.ESTOP: "steps_estop"}.get(s.mode)
        if key:
            s.counters[key] += 1
        self.last_target = s.hold(self.state.ee_pos)
        self._restart = True  # the policy's own target restarts from wherever the arm is when it resumes
        return self._command()

    def _command(self) -> ArmCommand:
        width = self.last_gripper
        if width is None and self.arm.gripper_joint_names:
            width = self.safety.gripper(self.state.gripper_width)
        return ArmCommand(self.last_target.copy(), self.arm.tcp_orientation, width)
