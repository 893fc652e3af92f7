"""policy_node: runs an exported ONNX policy on the robot as a ROS 2 lifecycle node.

configure loads the policy and refuses it (with a log line naming the mismatch) if it does not fit the
robot config; activate starts the loop at the policy rate; deactivate sends a safe stop. A control step
runs as soon as the joint state it answers arrives (paced to the policy period by the state's stamp), so
the command leaves with the least delay; a steady-clock timer at the policy rate runs the watchdog.

Subscribes: sensor_msgs/JointState, sensor_msgs/Imu, geometry_msgs/Twist, std_msgs/Bool (e-stop),
std_msgs/Empty (e-stop reset). A policy whose command kind is `waypoints` (the confined follower) takes a
nav_msgs/Path (the planner node's, latched) and nav_msgs/Odometry (the base pose in the path's frame) instead
of the Twist; its height map comes from the voxel map file `map_file` (`s2r.real.waypoint_follow`).
Publishes: std_msgs/Float64MultiArray joint targets (for a ros2_control forward command controller) and
diagnostic_msgs/DiagnosticArray with the safety layer's counters.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Twist
from nav_msgs.msg import Odometry
from nav_msgs.msg import Path as PathMsg
from rclpy.clock import Clock, ClockType
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from s2r.real.arm import ArmConfig, load_any_robot_config
from s2r.real.controller import PolicyController
from s2r.real.metadata import MetadataError, load_metadata
from s2r.real.robot import RobotConfigError
from s2r.real.runner import PolicyRunner, RunnerConfig, check_robot_kind
from s2r.real.safety import Mode, SafetyConfig, SafetyLayer
from s2r.real.waypoint_follow import MapHeights, WaypointInputs
from sensor_msgs.msg import Imu, JointState
from std_msgs.msg import Bool, Empty, Float64MultiArray

from s2r_ros.common import JointStateMapper, RosLogHandler, declare_params, qos, run, stamp_to_sec

PARAMS = {
    "policy": "", "robot": "", "autostart": "inactive", "trigger": "joint_state", "sync_imu": False,
    "sensor_qos": "best_effort", "ramp_s": 1.0, "watchdog_timeout_s": 0.1, "command_timeout_s": 0.5,
    "pose_timeout_s": 0.5,
    "diagnostics_period_s": 0.5, "executor": "events", "prewarm_s": 0.002, "realtime_priority": 0,
    "joint_states_topic": "/joint_states", "imu_topic": "/imu/data", "cmd_vel_topic": "/cmd_vel",
    "estop_topic": "/estop", "estop_reset_topic": "/estop/reset",
    "command_topic": "/forward_position_controller/commands", "diagnostics_topic": "/diagnostics",
    "path_topic": "/path", "odom_topic": "/odom", "map_file": "", "reach_radius": 0.25,
}
LATENCY_BIN_S, LATENCY_BINS = 2e-6, 10_000
LEVEL = {Mode.RUN: DiagnosticStatus.OK, Mode.INACTIVE: DiagnosticStatus.OK, Mode.DAMPING: DiagnosticStatus.WARN,
         Mode.FAULT: DiagnosticStatus.ERROR, Mode.ESTOP: DiagnosticStatus.ERROR}


class PolicyNode(LifecycleNode):
    """The policy as a lifecycle node; all decisions are taken by `s2r.real.PolicyController`."""

    params: dict[str, object] = PARAMS  # the arm node (arm_policy_node) declares its own

    def __init__(self, name: str = "policy", **kwargs: object) -> None:
        super().__init__(name, **kwargs)  # kwargs: context, parameter_overrides (tests, composition)
        declare_params(self, self.params)
        self.ctl: PolicyController | None = None
        self._timer = self._warm_timer = None
        # Histogram of the time from a sensor callback's entry to publish() returning: 2 us bins up to 20 ms
        # (last bin: longer). O(1) to update and cheap to summarise, so the loop never stalls on statistics.
        self._latency = np.zeros(LATENCY_BINS + 1, dtype=np.int64)
        self._log_handler = RosLogHandler(self)
        self._last_mode = Mode.INACTIVE
        autostart = self.p("autostart")
        if autostart not in ("unconfigured", "inactive", "active"):
            self.get_logger().error(f"parameter autostart must be unconfigured, inactive or active, got '{autostart}'")
        elif autostart != "unconfigured" and self.trigger_configure() == TransitionCallbackReturn.SUCCESS \
                and autostart == "active":
            self.trigger_activate()

    def p(self, name: str) -> object:
        """A parameter's value."""
        return self.get_parameter(name).value

    # ---- lifecycle --------------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the policy and check it against the robot config; refuse it with a clear log line."""
        if self.p("trigger") not in ("joint_state", "timer"):
            self.get_logger().error(f"parameter trigger must be joint_state or timer, got '{self.p('trigger')}'")
            return TransitionCallbackReturn.FAILURE
        try:
            robot = load_any_robot_config(str(self.p("robot")))
            if isinstance(robot, ArmConfig):
                # Names the policy's kind first (an arm config with a joint policy is a mismatch, not a node choice).
                check_robot_kind(load_metadata(Path(str(self.p("policy"))).with_suffix(".json")), robot,
                                 str(self.p("policy")))
                raise RobotConfigError(f"{robot.source} describes an arm (kind: arm); policy_node drives joint-position "
                                       "robots, start arm_policy_node (launch/arm.yaml, launch/arm_sim.yaml) for it")
            runner = PolicyRunner(str(self.p("policy")), robot, RunnerConfig(ramp_s=float(self.p("ramp_s"))))
            waypoints = None
            if runner.meta.command.kind == "waypoints":
                heights = MapHeights.from_file(str(self.p("map_file"))) if self.p("map_file") else None
                waypoints = WaypointInputs(runner.meta, heights, float(self.p("reach_radius")))
        except (MetadataError, RobotConfigError, ValueError) as exc:
            self.get_logger().error(f"refusing policy: {exc}")
            return TransitionCallbackReturn.FAILURE
        if int(self.p("realtime_priority")) > 0:
            self._set_realtime(int(self.p("realtime_priority")))
        log = logging.getLogger(f"s2r.real.safety.{self.get_name()}")
        log.propagate = False
        log.setLevel(logging.INFO)
        log.handlers = [self._log_handler]
        safety = SafetyLayer(robot, SafetyConfig(watchdog_timeout_s=float(self.p("watchdog_timeout_s")),
                                                 command_timeout_s=float(self.p("command_timeout_s")),
                                                 pose_timeout_s=float(self.p("pose_timeout_s"))), log)
        self.ctl = PolicyController(runner, safety, sync_imu=bool(self.p("sync_imu")), waypoints=waypoints)
        self._mapper = JointStateMapper(robot.joint_names)
        self._on_state = self.p("trigger") == "joint_state"  # else the timer steps
        self._cmd_msg = Float64MultiArray()
        sensor = qos(str(self.p("sensor_qos")), depth=1)
        self._cmd_pub = self.create_lifecycle_publisher(Float64MultiArray, self.p("command_topic"), qos("reliable", 1))
        self._diag_pub = self.create_publisher(DiagnosticArray, self.p("diagnostics_topic"), 10)
        self._subs = [
            self.create_subscription(JointState, self.p("joint_states_topic"), self._on_joint_state, sensor),
            self.create_subscription(Imu, self.p("imu_topic"), self._on_imu, sensor),
            self.create_subscription(Twist, self.p("cmd_vel_topic"), self._on_twist, qos("best_effort", 1)),
            self.create_subscription(Bool, self.p("estop_topic"), self._on_estop, qos("reliable", 10)),
            self.create_subscription(Empty, self.p("estop_reset_topic"), self._on_reset, qos("reliable", 10)),
        ]
        if waypoints is not None:
            # Latched: a path published before this node subscribed still arrives.
            latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
            self._subs += [self.create_subscription(PathMsg, self.p("path_topic"), self._on_path, latched),
                           self.create_subscription(Odometry, self.p("odom_topic"), self._on_odom, sensor)]
        self._diag_timer = self.create_timer(float(self.p("diagnostics_period_s")), self._publish_diagnostics)
        meta = runner.meta
        self.get_logger().info(f"configured: {meta.task_id} {meta.algo} policy ({meta.command.kind} command) for '{robot.name}', "
                               f"{robot.num_joints} joints every {robot.control_dt * 1e3:.1f} ms; inactive until activated")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Start the loop: the first step ramps in from the current pose."""
        self.ctl.activate(time.monotonic())
        steady = Clock(clock_type=ClockType.STEADY_TIME)  # safety timing must not stop with a paused sim clock
        self._timer = self.create_timer(self.ctl.dt, self._on_timer, clock=steady)
        lead = float(self.p("prewarm_s"))
        if 0 < lead < self.ctl.dt / 2:
            # Fires `lead` before the next joint state is due (re-armed by every step): see PolicyController.warm.
            self._warm_timer = self.create_timer(self.ctl.dt - lead, self.ctl.warm, clock=steady)
        self.get_logger().info("activated: policy running")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Send a safe stop (damping at the current pose) and stop the loop."""
        self._safe_stop()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Drop the policy and every subscription."""
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Safe stop if running, then tear down."""
        self.stop_safely()
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def _set_realtime(self, priority: int) -> None:
        """SCHED_FIFO for every thread of this process (executor and DDS threads), as robot control loops use."""
        try:
            for tid in os.listdir("/proc/self/task"):
                os.sched_setscheduler(int(tid), os.SCHED_FIFO, os.sched_param(priority))
            self.get_logger().info(f"real-time scheduling: SCHED_FIFO priority {priority}")
        except (OSError, AttributeError) as exc:
            self.get_logger().warning(f"real-time priority {priority} not granted ({exc}); running at normal priority")

    def stop_safely(self) -> None:
        """On process shutdown: send the safe stop if the policy is driving (publishing still works here)."""
        if self.ctl is not None and self.ctl.mode is not Mode.INACTIVE:
            self._safe_stop()

    def _safe_stop(self) -> None:
        for timer in (self._timer, self._warm_timer):
            if timer is not None:
                self.destroy_timer(timer)
        self._timer = self._warm_timer = None
        if self.ctl is not None:
            self._publish(self.ctl.deactivate())
            self.get_logger().info("deactivated: safe stop sent")

    def _teardown(self) -> None:
        for s in getattr(self, "_subs", []):
            self.destroy_subscription(s)
        self._subs = []
        if getattr(self, "_cmd_pub", None) is not None:
            self.destroy_lifecycle_publisher(self._cmd_pub)
            self.destroy_publisher(self._diag_pub)
            self._cmd_pub = self._diag_pub = None
        if getattr(self, "_diag_timer", None) is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        self.ctl = None

    # ---- callbacks --------------------------------------------------------------------------------

    def _on_joint_state(self, msg: JointState) -> None:
        t0 = time.perf_counter()
        mapped = self._mapper(msg.name, msg.position, msg.velocity)
        if isinstance(mapped, str):
            self.ctl.safety.note("bad_joint_state", mapped)
            return
        now = time.monotonic()
        if self.ctl.on_joint_state(mapped[0], mapped[1], stamp_to_sec(msg.header.stamp), now) \
                and self._on_state:
            self._publish(self.ctl.step(now), t0)

    def _on_imu(self, msg: Imu) -> None:
        t0 = time.perf_counter()
        o, w = msg.orientation, msg.angular_velocity
        now = time.monotonic()
        if self.ctl.on_imu(np.array([o.w, o.x, o.y, o.z]), np.array([w.x, w.y, w.z]),
                           stamp_to_sec(msg.header.stamp), now) and self._on_state:
            self._publish(self.ctl.step(now), t0)

    def _on_twist(self, msg: Twist) -> None:
        self.ctl.on_command(msg.linear.x, msg.linear.y, msg.angular.z, time.monotonic())

    def _on_path(self, msg: PathMsg) -> None:
        if msg.poses:
            self.ctl.on_path(np.array([(p.pose.position.x, p.pose.position.y, p.pose.position.z) for p in msg.poses]))
            self.get_logger().info(f"path: {len(msg.poses)} waypoints")

    def _on_odom(self, msg: Odometry) -> None:
        p, o = msg.pose.pose.position, msg.pose.pose.orientation
        self.ctl.on_pose(np.array([p.x, p.y, p.z]), np.array([o.w, o.x, o.y, o.z]), time.monotonic())

    def _on_estop(self, msg: Bool) -> None:
        # Sent from inside the callback so the stop leaves within one control period.
        self._publish(self.ctl.on_estop(bool(msg.data)))

    def _on_reset(self, msg: Empty) -> None:
        self.ctl.reset()
        self._check_mode()

    def _on_timer(self) -> None:
        now = time.monotonic()
        if not self._on_state and self.ctl.mode is Mode.RUN:
            self._publish(self.ctl.step(now))
        else:
            self._publish(self.ctl.tick(now))

    # ---- output -----------------------------------------------------------------------------------

    def _publish(self, target: np.ndarray | None, t0: float | None = None) -> None:
        if target is not None:
            self._cmd_msg.data = target.tolist()
            self._cmd_pub.publish(self._cmd_msg)
            if t0 is not None:
                self._latency[min(int((time.perf_counter() - t0) / LATENCY_BIN_S), LATENCY_BINS)] += 1
                if self._warm_timer is not None:
                    self._warm_timer.reset()
        self._check_mode()

    def _check_mode(self) -> None:
        if self.ctl is not None and self.ctl.mode is not self._last_mode:
            self._last_mode = self.ctl.mode
            self._publish_diagnostics()

    def _extra_diagnostics(self) -> dict[str, str]:
        """Values a subclass adds to the diagnostics (the arm node: camera frame ages)."""
        return {}

    def _publish_diagnostics(self) -> None:
        if self.ctl is None:
            return
        n = int(self._latency.sum())
        cum = np.cumsum(self._latency)
        p50, p99 = ((np.searchsorted(cum, q * n) + 1) * LATENCY_BIN_S * 1e6 if n else 0.0 for q in (0.5, 0.99))
        values = {"mode": self.ctl.mode.value, "ramping": str(self.ctl.runner.ramping),
                  "latency_p50_us": f"{p50:.0f}", "latency_p99_us": f"{p99:.0f}", "latency_samples": str(n),
                  **{k: str(v) for k, v in self.ctl.safety.counters.items()}, **self._extra_diagnostics()}
        status = DiagnosticStatus(level=LEVEL[self.ctl.mode], name=f"{self.get_name()}: safety",
                                  message=self.ctl.mode.value, hardware_id=self.ctl.runner.robot.name,
                                  values=[KeyValue(key=k, value=v) for k, v in values.items()])
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(msg)


def main(args: list[str] | None = None) -> int:
    """Entry point: `policy_node --ros-args -p policy:=... -p robot:=...`."""
    return run(PolicyNode, args, on_stop=PolicyNode.stop_safely)


if __name__ == "__main__":
    raise SystemExit(main())
