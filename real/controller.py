"""The control loop without ROS: sensor input in, one safe joint-target vector out per control period.

`PolicyController` joins the runner and the safety layer. A transport (the ROS node, a test, a benchmark)
hands it joint states, IMU readings, velocity commands and e-stop events with their timestamps, and asks
for targets: `step()` when a new joint state makes a control step due (lowest latency: the command leaves
as soon as the state that it answers arrives), `tick()` from a timer at the policy rate so damping
commands keep flowing when the inputs stop. Times: `stamp` is the sensor's own clock (sim time in
simulation), used to pace steps; `now` is a monotonic clock of this computer, used for staleness.
"""

from __future__ import annotations

import logging

import numpy as np
from s2r.real.observation import RobotState
from s2r.real.runner import PolicyRunner
from s2r.real.safety import LATCHED, Mode, SafetyLayer
from s2r.real.waypoint_follow import WaypointInputs


class PolicyController:
    """Runner + safety layer + input bookkeeping.

    Args:
        runner: A loaded, checked policy.
        safety: The safety layer for the same robot.
        sync_imu: Step only when the IMU sample carries the same stamp as the joint state (lockstep
            simulation, where both come from one physics state); off on hardware with separate drivers.
        waypoints: For a `waypoints`-command policy: the path and pose inputs that fill its waypoint (and
            height-map) terms each step (`on_path`, `on_pose`).
    """

    def __init__(self, runner: PolicyRunner, safety: SafetyLayer, sync_imu: bool = False,
                 waypoints: WaypointInputs | None = None) -> None:
        self.runner = runner
        self.safety = safety
        self.sync_imu = sync_imu
        n = runner.num_actions
        self.dt = runner.robot.control_dt
        self.state = RobotState(np.zeros(n), np.zeros(n), np.array([1.0, 0.0, 0.0, 0.0]), np.zeros(3))
        self.command = np.zeros(3)
        self.joint_stamp: float | None = None
        self.imu_stamp: float | None = None
        self._joint_rx = self._imu_rx = self._cmd_rx = -np.inf
        self._cmd_timed_out = True
        self._estop_pressed = False
        self._latched: Mode | None = None  # ESTOP or FAULT until reset, across deactivation too
        self._next_due: float | None = None
        self._input_dt = np.inf  # interval between the last two joint-state stamps
        self._stepped_stamp: float | None = None
        self._last_step = -np.inf
        self._restart = False
        self._active_since = -np.inf
        self.last_target: np.ndarray | None = None
        self.waypoints = waypoints
        if waypoints is not None:
            waypoints.fill(self.state)

    @property
    def mode(self) -> Mode:
        """The current operating mode."""
        return self.safety.mode

    # ---- inputs -----------------------------------------------------------------------------------

    def on_joint_state(self, pos: np.ndarray, vel: np.ndarray, stamp: float, now: float) -> bool:
        """Store a joint state (robot order); returns True when a control step is due now."""
        if not self.safety.inputs_finite(pos, vel, what="joint state"):
            return False
        self.state.joint_pos[:] = pos
        self.state.joint_vel[:] = vel
        if self.joint_stamp is not None and stamp > self.joint_stamp:
            self._input_dt = stamp - self.joint_stamp
        self.joint_stamp, self._joint_rx = stamp, now
        return self.due()

    def on_imu(self, quat_wxyz: np.ndarray, gyro: np.ndarray, stamp: float, now: float) -> bool:
        """Store an IMU sample; returns True when a control step is due now (lockstep: IMU came second)."""
        if not self.safety.inputs_finite(quat_wxyz, gyro, what="IMU sample"):
            return False
        self.state.orientation[:] = quat_wxyz
        self.state.gyro[:] = gyro
        self.imu_stamp, self._imu_rx = stamp, now
        return self.sync_imu and self.due()

    def on_command(self, vx: float, vy: float, wz: float, now: float) -> None:
        """Store a velocity command (body frame: m/s, m/s, rad/s)."""
        cmd = np.array([vx, vy, wz])
        if self.safety.inputs_finite(cmd, what="velocity command"):
            self.command[:] = cmd
            self._cmd_rx = now
            self._cmd_timed_out = False

    def on_path(self, waypoints: np.ndarray) -> None:
        """A new path (n, 3) world x, y and body z for a `waypoints`-command policy; its first point is next."""
        if self.waypoints is not None and self.safety.inputs_finite(np.asarray(waypoints), what="path"):
            self.waypoints.tracker.set_path(waypoints)

    def on_pose(self, position: np.ndarray, quat_wxyz: np.ndarray, now: float) -> None:
        """The base pose in the path's frame (odometry), for a `waypoints`-command policy."""
        if self.waypoints is not None and self.safety.inputs_finite(position, quat_wxyz, what="pose"):
            self.waypoints.on_pose(position, quat_wxyz, now)

    def due(self) -> bool:
        """True if the newest joint state should get a control step (paced by the sensor's stamps)."""
        stamp = self.joint_stamp
        if stamp is None or self.imu_stamp is None or self.mode is Mode.INACTIVE or stamp == self._stepped_stamp:
            return False
        if self.sync_imu and self.imu_stamp != stamp:
            return False
        # A state stamped a little before the due time is taken rather than waiting a whole input interval:
        # up to half an input interval early (inputs faster than the policy rate are decimated on the
        # policy's grid), at most a quarter period (jittery inputs at the policy rate).
        margin = min(0.25 * self.dt, 0.5 * self._input_dt)
        return self._next_due is None or stamp >= self._next_due - margin

    # ---- e-stop and lifecycle ---------------------------------------------------------------------

    def on_estop(self, pressed: bool) -> np.ndarray | None:
        """E-stop input. Pressing latches ESTOP and returns damping targets to send at once."""
        self._estop_pressed = pressed
        if not pressed:
            return None
        self.safety.counters["estop_triggers"] += 1
        self._latched = Mode.ESTOP
        if self.mode is Mode.INACTIVE:  # remembered: activation will start in ESTOP
            self.safety.log.error("safety: e-stop pressed while inactive; latched until reset")
            return None
        self.safety.set_mode(Mode.ESTOP, "e-stop pressed; latched until reset")
        return self._hold() if self.joint_stamp is not None else None

    def reset(self) -> bool:
        """Clear a latched e-stop or fault; refused while the e-stop is still pressed."""
        if self._latched is None:
            return False
        if self._estop_pressed:
            self.safety.note("reset_refused", "reset refused: the e-stop is still pressed", logging.ERROR)
            return False
        self.safety.counters["resets"] += 1
        self._latched = None
        if self.mode in LATCHED:
            self.safety.set_mode(Mode.RUN, "reset: the policy restarts, ramping in from the current pose")
            self._restart = True
        else:
            self.safety.log.info("safety: reset: latch cleared")
        return True

    def activate(self, now: float) -> None:
        """Start driving: the first step ramps in from the pose measured then (or stay latched).

        A latched e-stop or fault survives deactivate/activate; only `reset()` clears it. The watchdog
        counts input age from activation at the earliest, so inputs that stopped while the node was
        inactive trip it one timeout after activation, not at once.
        """
        self._active_since = now
        self.safety.set_mode(self._latched or Mode.RUN, "activated" + (" (still latched)" if self._latched else ""))
        self._restart = True
        self._next_due = None

    def deactivate(self) -> np.ndarray | None:
        """Stop driving; returns the safe-stop (damping) targets to send last, if the pose is known."""
        target = self._hold() if self.joint_stamp is not None else None
        self.safety.set_mode(Mode.INACTIVE, "deactivated: safe stop sent")
        return target

    # ---- control ----------------------------------------------------------------------------------

    def step(self, now: float) -> np.ndarray | None:
        """One control step for the newest joint state; returns the targets to publish (None: nothing)."""
        if self.mode is Mode.INACTIVE or self.joint_stamp is None or self.imu_stamp is None:
            return None
        self._pace(self.joint_stamp)
        self._watchdog(now)
        target = self._policy_step(now) if self.mode is Mode.RUN else self._hold()
        self._last_step = now
        return target

    def tick(self, now: float) -> np.ndarray | None:
        """Timer callback at the policy rate: the watchdog, and damping targets while no step runs."""
        if self.mode is Mode.INACTIVE:
            return None
        self._watchdog(now)
        # Steps still answer joint states (e.g. only the IMU is stale): they carry the damping commands.
        if self.mode is Mode.RUN or now - self._last_step < 1.5 * self.dt or self.joint_stamp is None:
            return None
        return self._hold()

    def warm(self) -> None:
        """Run the step's computations once without effect, to bring the policy back into the CPU caches.

        On a busy computer the policy's weights and code are evicted between periods, which can make a
        step several times slower than back to back; a dry run shortly before the next state is due
        makes that step fast again. Nothing is stored, counted or returned.
        """
        if self.mode is not Mode.RUN or self.joint_stamp is None:
            return
        if self.waypoints is not None:
            self.waypoints.fill(self.state)
        self.runner.dry_run(self.state, self.command)
        if self.last_target is not None:
            np.clip(self.last_target, self.safety.lower, self.safety.upper)

    # ---- internals --------------------------------------------------------------------------------

    def _pace(self, stamp: float) -> None:
        if self._next_due is not None and stamp - self._next_due > 0.75 * self.dt:
            missed = int((stamp - self._next_due) / self.dt + 0.25)
            self.safety.counters["missed_periods"] += missed
            self._next_due = stamp + self.dt
        else:
            self._next_due = (stamp if self._next_due is None else self._next_due) + self.dt
        self._stepped_stamp = stamp

    def _watchdog(self, now: float) -> None:
        s = self.safety
        since = max(self._active_since, min(self._joint_rx, self._imu_rx))
        stale = now - since > s.cfg.watchdog_timeout_s
        if stale and self.mode is Mode.RUN:
            s.counters["watchdog_trips"] += 1
            what = "joint state" if self._joint_rx <= self._imu_rx else "IMU"
            s.set_mode(Mode.DAMPING, f"watchdog: no fresh {what} for {(now - since) * 1e3:.0f} ms "
                                     f"(limit {s.cfg.watchdog_timeout_s * 1e3:.0f} ms)")
        elif not stale and self.mode is Mode.DAMPING:
            s.counters["watchdog_recoveries"] += 1
            s.set_mode(Mode.RUN, "watchdog: sensor input is fresh again; ramping in from the current pose")
            self._restart = True
        if not self._cmd_timed_out and now - self._cmd_rx > s.cfg.command_timeout_s:
            self._cmd_timed_out = True
            self.command[:] = 0.0
            s.note("command_timeouts", f"no velocity command for {s.cfg.command_timeout_s} s: standing still")

    def _policy_step(self, now: float) -> np.ndarray:
        s, r = self.safety, self.runner
        if self._restart:
            r.reset(self.state.joint_pos)
            self.last_target = None
            self._restart = False
        if self.waypoints is not None:
            missing = self.waypoints.missing(now, s.cfg.pose_timeout_s)
            if missing:  # zero waypoints at the map origin are nothing the policy was trained on: hold
                s.note("waypoint_holds", f"waypoints policy has {missing}: holding the pose")
                self._restart = True  # ramp in from the pose it holds once path and pose arrive
                self.last_target = s.hold(self.state.joint_pos)
                return self.last_target
            self.waypoints.fill(self.state)
        try:
            action = np.asarray(r.infer(self.state, self.command))
        except Exception as exc:  # onnxruntime errors are not a common type; any of them must stop the policy
            s.note("policy_error", f"policy inference failed: {exc}", logging.ERROR)
            action = None
        if action is None or not s.action_ok(action):
            self._latched = Mode.FAULT
            s.set_mode(Mode.FAULT, "unusable policy output; damping until reset")
            return self._hold()
        s.counters["steps_ramp" if r.ramping else "steps_run"] += 1
        target = s.limit(r.accept(action), self.last_target)
        self.last_target = target
        return target

    def _hold(self) -> np.ndarray:
        s = self.safety
        key = {Mode.DAMPING: "steps_damping", Mode.FAULT: "steps_fault", Mode.ESTOP: "steps_estop"}.get(s.mode)
        if key:
            s.counters[key] += 1
        target = s.hold(self.state.joint_pos)
        self.last_target = target
        return target
