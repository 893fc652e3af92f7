"""arm_policy_node: runs an exported end-effector (`ee_delta`) policy on an arm as a ROS 2 lifecycle node.

The lifecycle, e-stop, watchdog timer, latency histogram and diagnostics are policy_node's; the decisions
are `s2r.real.arm_controller.ArmController`'s. A control step runs when the joint state it answers arrives
(with the object pose of the same stamp in lockstep simulation).

Subscribes: sensor_msgs/JointState (arm + finger joints), geometry_msgs/PoseStamped (the tracked object, in
the robot config's base_frame), std_msgs/Bool (e-stop), std_msgs/Empty (e-stop reset; episode start), and
one sensor_msgs/Image (rgb8 or bgr8) per camera that policy.json lists, on `image_topic` with `{camera}`
replaced by the camera's name. Frames are checked and held by the controller: none yet, older than
`image_timeout_s`, or of the wrong size or encoding holds the pose (`camera_holds`, `bad_image`).
Publishes: geometry_msgs/PoseStamped TCP targets (for a Cartesian impedance controller),
std_msgs/Float64MultiArray finger targets (for a forward command controller on the finger joints: half the
gripper width each), and diagnostic_msgs/DiagnosticArray with the Cartesian safety layer's counters (and, for a camera policy,
the age p50/p99 of the frames its steps used, by the sensor clock).
"""

from __future__ import annotations

import logging
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from s2r.real.arm import load_any_robot_config
from s2r.real.arm_controller import ArmCommand, ArmController
from s2r.real.arm_runner import ArmRunner, make_runner
from s2r.real.arm_safety import ArmSafetyConfig, CartesianSafety
from s2r.real.metadata import MetadataError
from s2r.real.robot import RobotConfigError
from s2r.real.runner import RunnerConfig
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Empty, Float64MultiArray

from s2r_ros.common import JointStateMapper, qos, run, sec_to_stamp, stamp_to_sec
from s2r_ros.images import ImageEncodingError, image_to_rgb
from s2r_ros.policy_node import LATENCY_BIN_S, LATENCY_BINS, PolicyNode

PARAMS = {
    "policy": "", "robot": "", "autostart": "inactive", "trigger": "joint_state", "sync_object": False,
    "sensor_qos": "best_effort", "watchdog_timeout_s": 0.1, "object_timeout_s": 0.25,
    "diagnostics_period_s": 0.5, "executor": "events", "prewarm_s": 0.0, "realtime_priority": 0,
    "joint_states_topic": "/joint_states", "object_pose_topic": "/object_pose", "estop_topic": "/estop",
    "estop_reset_topic": "/estop/reset", "episode_start_topic": "/episode/start",
    "target_topic": "/cartesian_impedance_controller/target_pose",
    "gripper_topic": "/gripper_controller/commands", "diagnostics_topic": "/diagnostics",
    "image_topic": "/camera/{camera}/image_raw", "image_timeout_s": 0.5,
}


class ArmPolicyNode(PolicyNode):
    """The arm policy as a lifecycle node."""

    params = PARAMS

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the policy and check it against the arm config; refuse it with one log line."""
        try:
            robot = load_any_robot_config(str(self.p("robot")))
            runner = make_runner(str(self.p("policy")), robot,
                                 RunnerConfig(max_image_age_s=float(self.p("image_timeout_s"))))
        except (MetadataError, RobotConfigError) as exc:
            self.get_logger().error(f"refusing policy: {exc}")
            return TransitionCallbackReturn.FAILURE
        if not isinstance(runner, ArmRunner):
            self.get_logger().error(f"refusing policy: {robot.source} describes a joint-position robot; "
                                    "arm_policy_node drives arms (kind: arm), start policy_node for this one")
            return TransitionCallbackReturn.FAILURE
        log = logging.getLogger(f"s2r.real.safety.{self.get_name()}")
        log.propagate = False
        log.setLevel(logging.INFO)
        log.handlers = [self._log_handler]
        cfg = ArmSafetyConfig(watchdog_timeout_s=float(self.p("watchdog_timeout_s")),
                              object_timeout_s=float(self.p("object_timeout_s")))
        self.ctl = ArmController(runner, CartesianSafety(robot, runner.num_actions, cfg, log),
                                 sync_object=bool(self.p("sync_object")))
        self._arm = robot
        self._mapper = JointStateMapper(robot.all_joint_names)
        self._on_state = True
        self._pose_msg = PoseStamped()
        self._pose_msg.header.frame_id = robot.base_frame
        o = self._pose_msg.pose.orientation
        o.w, o.x, o.y, o.z = robot.tcp_orientation
        self._grip_msg = Float64MultiArray()
        sensor = qos(str(self.p("sensor_qos")), depth=1)
        self._cmd_pub = self.create_lifecycle_publisher(PoseStamped, self.p("target_topic"), qos("reliable", 1))
        self._grip_pub = self.create_lifecycle_publisher(Float64MultiArray, self.p("gripper_topic"), qos("reliable", 1))
        self._diag_pub = self.create_publisher(DiagnosticArray, self.p("diagnostics_topic"), 10)
        self._subs = [
            self.create_subscription(JointState, self.p("joint_states_topic"), self._on_joint_state, sensor),
            self.create_subscription(PoseStamped, self.p("object_pose_topic"), self._on_object, sensor),
            self.create_subscription(Bool, self.p("estop_topic"), self._on_estop, qos("reliable", 10)),
            self.create_subscription(Empty, self.p("estop_reset_topic"), self._on_reset, qos("reliable", 10)),
            self.create_subscription(Empty, self.p("episode_start_topic"), lambda m: self.ctl.restart(),
                                     qos("reliable", 10)),
        ]
        for cam in runner.images.cameras:
            topic = str(self.p("image_topic")).format(camera=cam)
            self._subs.append(self.create_subscription(
                Image, topic, lambda m, c=cam, t=topic: self._on_image(c, t, m), sensor))
        self._diag_timer = self.create_timer(float(self.p("diagnostics_period_s")), self._publish_diagnostics)
        meta = runner.meta
        cams = f", cameras {list(runner.images.cameras)}" if runner.images.inputs else ""
        self.get_logger().info(f"configured: {meta.task_id} {meta.algo} arm policy for '{robot.name}'{cams}, TCP targets "
                               f"on {self.p('target_topic')} every {robot.control_dt * 1e3:.1f} ms; inactive until activated")
        return TransitionCallbackReturn.SUCCESS

    def _teardown(self) -> None:
        if getattr(self, "_grip_pub", None) is not None:
            self.destroy_lifecycle_publisher(self._grip_pub)
            self._grip_pub = None
        super()._teardown()

    def _on_object(self, msg: PoseStamped) -> None:
        t0 = time.perf_counter()
        p, q = msg.pose.position, msg.pose.orientation
        now = time.monotonic()
        if self.ctl.on_object_pose(np.array([p.x, p.y, p.z]), np.array([q.w, q.x, q.y, q.z]), msg.header.frame_id,
                                   stamp_to_sec(msg.header.stamp), now):
            self._publish(self.ctl.step(now), t0)

    def _on_image(self, camera: str, topic: str, msg: Image) -> None:
        t0 = time.perf_counter()
        try:
            frame = image_to_rgb(msg, topic)
        except ImageEncodingError as exc:
            self.ctl.image_refused(camera, str(exc))
            return
        now = time.monotonic()
        if self.ctl.on_image(camera, frame, stamp_to_sec(msg.header.stamp), now):
            self._publish(self.ctl.step(now), t0)

    def _extra_diagnostics(self) -> dict[str, str]:
        if not self.ctl.runner.images.inputs:
            return {}
        p50, p99 = self.ctl.image_age_quantiles(0.5, 0.99)
        return {"image_age_p50_ms": f"{p50 * 1e3:.1f}", "image_age_p99_ms": f"{p99 * 1e3:.1f}"}

    def _publish(self, cmd: ArmCommand | None, t0: float | None = None) -> None:
        if cmd is not None:
            # Stamped with the state it answers, so a lockstep bridge (and a log) can pair them.
            stamp = self.ctl.joint_stamp
            self._pose_msg.header.stamp = sec_to_stamp(stamp) if stamp is not None else self.get_clock().now().to_msg()
            pp = self._pose_msg.pose.position
            pp.x, pp.y, pp.z = float(cmd.position[0]), float(cmd.position[1]), float(cmd.position[2])
            if cmd.gripper_width is not None:
                # Gripper first: the pose target is what a lockstep bridge steps on.
                self._grip_msg.data = [cmd.gripper_width / 2.0] * len(self._arm.gripper_joint_names)
                self._grip_pub.publish(self._grip_msg)
            self._cmd_pub.publish(self._pose_msg)
            if t0 is not None:
                self._latency[min(int((time.perf_counter() - t0) / LATENCY_BIN_S), LATENCY_BINS)] += 1
                if self._warm_timer is not None:
                    self._warm_timer.reset()
        self._check_mode()


def main(args: list[str] | None = None) -> int:
    """Entry point: `arm_policy_node --ros-args -p policy:=... -p robot:=launch/robots/panda.yaml`."""
    return run(ArmPolicyNode, args, on_stop=ArmPolicyNode.stop_safely)


if __name__ == "__main__":
    raise SystemExit(main())
