"""The arm's control loop without ROS: joint states and object poses in, one safe Cartesian command out.

`ArmController` is `PolicyController` with an arm's inputs and outputs: the tracked object pose takes the
IMU's place as the second input a step waits for (in lockstep simulation both carry the same stamp), the
watchdog holds the pose when either goes stale, and a step returns an `ArmCommand` (TCP target + gripper
width) instead of joint targets. Pacing, e-stop latching, reset and lifecycle are the joint controller's.

A policy that reads cameras (policy.json lists them) also waits for their frames: no frame yet, a frame
older than the runner's `max_image_age_s` (by arrival time), or a refused frame (wrong size) as the newest
one holds the pose like a stale sensor does (mode damping, counted in `camera_holds`), and the policy
restarts from the measured TCP once every camera is fresh again, so the target never jumps.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from s2r.real.arm import ArmState
from s2r.real.arm_runner import ArmRunner
from s2r.real.arm_safety import CartesianSafety
from s2r.real.controller import PolicyController
from s2r.real.observation import CameraError
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


IMAGE_AGE_BIN_S, IMAGE_AGE_BINS = 1e-3, 2000


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
        self._bad_image: dict[str, str] = {}  # camera -> why its newest frame was refused
        self._image_stamp: dict[str, float] = {}  # camera -> sensor stamp of the frame held
        self._camera_why: str | None = None  # why the pose is held for a camera (None: not for a camera)
        # Age of the oldest frame a step used, by the sensor clock (joint-state stamp - frame stamp):
        # 1 ms bins up to 2 s (last bin: older). What the policy saw against the state it answered.
        self.image_age_hist = np.zeros(IMAGE_AGE_BINS + 1, dtype=np.int64)

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

    def on_image(self, camera: str, frame: np.ndarray, stamp: float, now: float) -> bool:
        """Store a camera frame ((H, W, 3) uint8 RGB) taken at `stamp` (sensor clock); True when a step is due now
        (lockstep: the frame came last of the state's inputs).

        A frame of another size or type than policy.json says is counted and logged (`bad_image`), and the
        pose is held until the camera sends a usable frame: the policy never acts on a picture it was not
        trained on, nor on the last good one while the camera sends bad ones.
        """
        try:
            self.runner.set_image(camera, frame, now)  # arrival time: staleness is judged on this computer's clock
        except CameraError as exc:
            self.image_refused(camera, str(exc))
            return False
        self._bad_image.pop(camera, None)
        self._image_stamp[camera] = stamp
        return self.sync_imu and self.due()

    def image_refused(self, camera: str, why: str) -> None:
        """A frame of `camera` that could not be used (e.g. an encoding the transport cannot read): count it
        (`bad_image`), log it (throttled) and hold the pose until the camera sends a usable one."""
        self._bad_image[camera] = why
        self.safety.note("bad_image", f"{why}; holding the pose")

    def due(self) -> bool:
        """As `PolicyController.due`; in lockstep (`sync_object`) also every camera's frame of the same stamp."""
        if self.sync_imu and any(self._image_stamp.get(c) != self.joint_stamp for c in self.runner.images.cameras):
            return False
        return super().due()

    def image_age_quantiles(self, *qs: float) -> list[float]:
        """Quantiles (s) of the frame age at the steps run so far (0.0 before any)."""
        n = int(self.image_age_hist.sum())
        cum = np.cumsum(self.image_age_hist)
        return [float((np.searchsorted(cum, q * n) + 0.5) * IMAGE_AGE_BIN_S) if n else 0.0 for q in qs]

    def restart(self) -> None:
        """A new episode (the operator or the sim bridge reset the scene): the next step starts afresh."""
        self._restart = True

    # ---- control ----------------------------------------------------------------------------------

    def warm(self) -> None:
        """Run the graph once without effect (see `PolicyController.warm`)."""
        if self.mode is Mode.RUN and self.joint_stamp is not None:
            self.runner.dry_run(self.state, self.command)

    def _camera_problem(self, now: float) -> str | None:
        """Why the cameras stop the policy now (one sentence), or None (also for a policy without cameras)."""
        if not self.runner.images.inputs:
            return None
        if self._bad_image:
            return next(iter(self._bad_image.values()))
        return self.runner.images.problem(now)

    def _watchdog(self, now: float) -> None:
        s, cfg = self.safety, self.safety.cfg
        joint_age = now - max(self._active_since, self._joint_rx)
        object_age = now - max(self._active_since, self._imu_rx)
        joint_stale, object_stale = joint_age > cfg.watchdog_timeout_s, object_age > cfg.object_timeout_s
        camera = self._camera_problem(now)
        if (joint_stale or object_stale or camera) and self.mode is Mode.RUN:
            if joint_stale:
                s.counters["watchdog_trips"] += 1
                why = f"no fresh joint state for {joint_age * 1e3:.0f} ms (limit {cfg.watchdog_timeout_s * 1e3:.0f} ms)"
            elif object_stale:
                s.counters["watchdog_trips"] += 1
                s.counters["object_timeouts"] += 1
                why = f"no fresh object pose for {object_age * 1e3:.0f} ms (limit {cfg.object_timeout_s * 1e3:.0f} ms)"
            else:
                why = camera
            s.set_mode(Mode.DAMPING, f"watchdog: {why}; holding the current pose")
        elif not (joint_stale or object_stale or camera) and self.mode is Mode.DAMPING:
            s.counters["watchdog_recoveries"] += 1
            what = "joint state, object pose and camera frames are" if self.runner.images.inputs else \
                "joint state and object pose are"
            s.set_mode(Mode.RUN, f"watchdog: {what} fresh again; the policy restarts")
            self._restart = True
        self._camera_why = camera if self.mode is Mode.DAMPING else None

    def _policy_step(self, now: float) -> ArmCommand:
        s, r, st = self.safety, self.runner, self.state
        if self._restart or self.last_target is None:
            r.reset()
            self.last_target = s.hold(st.ee_pos)
            self._restart = False
        try:
            action = np.asarray(r.infer(st, self.command, now))
        except CameraError as exc:  # the watchdog checked the cameras at this `now`; kept as a safety net
            self._camera_why = str(exc)
            s.set_mode(Mode.DAMPING, f"{exc}; holding the current pose")
            return self._hold()
        except Exception as exc:  # onnxruntime errors are not a common type; any of them must stop the policy
            s.note("policy_error", f"policy inference failed: {exc}", logging.ERROR)
            action = None
        if action is None or not s.action_ok(action):
            self._latched = Mode.FAULT
            s.set_mode(Mode.FAULT, "unusable policy output; holding the pose until reset")
            return self._hold()
        s.counters["steps_run"] += 1
        if self._image_stamp and self.joint_stamp is not None:
            age = self.joint_stamp - min(self._image_stamp.values())
            self.image_age_hist[min(max(int(age / IMAGE_AGE_BIN_S), 0), IMAGE_AGE_BINS)] += 1
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
        if self._camera_why is not None and s.mode is Mode.DAMPING:
            s.counters["camera_holds"] += 1
        self.last_target = s.hold(self.state.ee_pos)
        self._restart = True  # the policy's own target restarts from wherever the arm is when it resumes
        return self._command()

    def _command(self) -> ArmCommand:
        width = self.last_gripper
        if width is None and self.arm.gripper_joint_names:
            width = self.safety.gripper(self.state.gripper_width)
        return ArmCommand(self.last_target.copy(), self.arm.tcp_orientation, width)
