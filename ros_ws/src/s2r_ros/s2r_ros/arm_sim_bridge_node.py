"""arm_sim_bridge_node: the arm stand-in. The Panda task behind the topics a real arm's drivers would use.

Takes TCP targets as a Cartesian impedance controller would (geometry_msgs/PoseStamped in the base frame)
and finger targets as a forward command controller would (std_msgs/Float64MultiArray, one per finger),
moves the arm through the task's own differential IK, and publishes sensor_msgs/JointState (arm and finger
joints), the object's geometry_msgs/PoseStamped (what a tracker reports) and rosgraph_msgs/Clock, stamped
with simulated time. Episodes end as the task's do (success, object dropped, time limit) or on an Empty
on `reset_topic`; each new episode is announced on `episode_start_topic` before its first state, and each
finished one on `episode_topic` as [index, success, steps, return].

For a policy that reads cameras (policy.json lists them) it also renders each camera at the size the
policy takes and publishes it as an rgb8 sensor_msgs/Image on `image_topic` (`{camera}` replaced by the
camera's name) every 1/`camera_rate_hz` s of wall-clock time (0: no camera at all), stamped with simulated time
like the joint states; a real camera runs on its own clock, not the controller's. In lockstep each state
comes with one frame of it instead (same stamp, published before the joint states), so a lockstep run
sees exactly what `s2r eval` feeds the policy and repeats exactly.

Free-running (default) it steps one control period per wall-clock period with the latest targets. In
lockstep it steps once it has a new TCP target and (with a gripper) a new finger command, then publishes
the new state; until then it re-publishes the current state every `lockstep_timeout_s`.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rosgraph_msgs.msg import Clock as ClockMsg
from s2r.real.arm import load_any_robot_config
from s2r.real.metadata import load_metadata
from s2r.sim.arm_sim import JOINT_NAMES, ArmSim
from s2r.sim.registry import task_config
from s2r.sim.robot_sim import task_config_for_run
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Empty, Float64MultiArray

from s2r_ros.common import declare_params, qos, run, sec_to_stamp
from s2r_ros.images import rgb_to_image

PARAMS = {
    "policy": "", "task": "Panda-Lift-Cube", "robot": "", "lockstep": False, "lockstep_timeout_s": 0.1,
    "seed": 0, "executor": "events", "base_frame": "world", "joint_states_topic": "/joint_states",
    "object_pose_topic": "/object_pose", "target_topic": "/cartesian_impedance_controller/target_pose",
    "gripper_topic": "/gripper_controller/commands", "reset_topic": "/arm_sim/reset",
    "episode_start_topic": "/episode/start", "episode_topic": "/arm_sim/episodes",
    "camera_rate_hz": 20.0, "image_topic": "/camera/{camera}/image_raw",
}


class ArmSimBridge(Node):
    """MuJoCo Panda task <-> ROS topics."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__("arm_sim_bridge", **kwargs)  # kwargs: context, parameter_overrides (tests)
        declare_params(self, PARAMS)
        p = lambda k: self.get_parameter(k).value  # noqa: E731
        policy = str(p("policy"))
        try:
            task, tcfg = task_config_for_run(policy) if policy else (str(p("task")), task_config(str(p("task"))))
        except (KeyError, FileNotFoundError) as exc:
            raise ValueError(f"arm sim bridge cannot pick its task: {exc}") from exc
        if getattr(tcfg, "image", False):
            # The camera is rendered on its own timer below, not inside every physics step.
            tcfg = dataclasses.replace(tcfg, image=False)
        self.sim = ArmSim(task, tcfg, seed=int(p("seed")))
        self.frame = str(p("base_frame"))
        if p("robot"):
            arm = load_any_robot_config(str(p("robot")))
            self.frame = getattr(arm, "base_frame", self.frame)
            missing = [j for j in getattr(arm, "all_joint_names", arm.joint_names) if j not in JOINT_NAMES]
            if missing:
                raise ValueError(f"robot config joints {missing} are not joints of the '{task}' arm {list(JOINT_NAMES)}")
        self._target, self._finger = self.sim.hold_target()
        self._new_target = self._new_finger = False
        self.lockstep = bool(p("lockstep"))
        self._timeout = float(p("lockstep_timeout_s"))
        rel = qos("reliable", 10)
        self._js_pub = self.create_publisher(JointState, p("joint_states_topic"), rel)
        self._obj_pub = self.create_publisher(PoseStamped, p("object_pose_topic"), rel)
        self._clock_pub = self.create_publisher(ClockMsg, "/clock", rel)
        self._start_pub = self.create_publisher(Empty, p("episode_start_topic"), rel)
        self._ep_pub = self.create_publisher(Float64MultiArray, p("episode_topic"), qos("reliable", 100))
        self.create_subscription(PoseStamped, p("target_topic"), self._on_target, rel)
        self.create_subscription(Float64MultiArray, p("gripper_topic"), self._on_gripper, rel)
        self.create_subscription(Empty, p("reset_topic"), self._on_reset, rel)
        self._js = JointState(name=list(JOINT_NAMES))
        self._obj = PoseStamped()
        self._obj.header.frame_id = self.frame
        self._last_pub = 0.0
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(self._timeout if self.lockstep else self.sim.control_dt, self._on_timer, clock=steady)
        # Cameras the policy reads: (name, height, width, publisher, reusable message).
        path = Path(policy) / "policy.onnx" if policy and Path(policy).is_dir() else Path(policy)
        rate = float(p("camera_rate_hz"))
        read = load_metadata(path.with_suffix(".json")).observation if policy and rate > 0 else ()
        cams = [o for o in read if o.is_image]
        self._cams = [(o.camera, o.shape[0], o.shape[1], self.create_publisher(
            Image, str(p("image_topic")).format(camera=o.camera), qos("reliable", 1)), Image()) for o in cams]
        self.frames_published = 0
        if self._cams and not self.lockstep:
            self.create_timer(1.0 / rate, self._on_camera_timer, clock=steady)
        for name, h, w, _, _ in self._cams:
            self.sim.render(name, h, w)  # an unknown camera fails here, at start-up, not in a timer
        every = "with every state" if self.lockstep else f"at {rate:g} Hz"
        cams = f", cameras {[c[0] for c in self._cams]} {every}" if self._cams else ""
        self.get_logger().info(f"arm sim bridge: {task}, {'lockstep' if self.lockstep else 'real time'}, control "
                               f"period {self.sim.control_dt * 1e3:.0f} ms{cams}, TCP targets on {p('target_topic')}")
        self._publish()

    def _on_target(self, msg: PoseStamped) -> None:
        p = msg.pose.position
        target = np.array([p.x, p.y, p.z])
        if msg.header.frame_id != self.frame or not np.isfinite(target).all():
            # A real controller rejects a target in an unknown frame; keep holding the last one.
            self.get_logger().error(f"ignoring TCP target in frame '{msg.header.frame_id}' (expected '{self.frame}') "
                                    "or with non-finite values", throttle_duration_sec=1.0)
            return
        self._target, self._new_target = target, True
        self._maybe_step()

    def _on_gripper(self, msg: Float64MultiArray) -> None:
        data = np.asarray(msg.data, dtype=np.float64)
        if data.size != 2 or not np.isfinite(data).all():
            self.get_logger().error(f"ignoring finger command with {data.size} values (expected 2) or non-finite "
                                    "values", throttle_duration_sec=1.0)
            return
        self._finger, self._new_finger = float(data.mean()), True
        self._maybe_step()

    def _on_reset(self, msg: Empty) -> None:
        self.sim.reset()
        self._target, self._finger = self.sim.hold_target()
        self._announce_episode()
        self._publish()

    def _maybe_step(self) -> None:
        if self.lockstep and self._new_target and self._new_finger:
            self._step()

    def _step(self) -> None:
        self._new_target = self._new_finger = False
        ep = self.sim.step(self._target, self._finger)
        if ep is not None:
            self._ep_pub.publish(Float64MultiArray(data=[float(ep.index), float(ep.success), float(ep.steps), ep.ret]))
            self._target, self._finger = self.sim.hold_target()
            self._announce_episode()
        self._publish()

    def _announce_episode(self) -> None:
        self._start_pub.publish(Empty())
        if self.lockstep:
            # DDS orders messages per topic only: give the announcement a head start over the new episode's
            # first state, so the policy restarts before it answers that state (lockstep runs then repeat).
            time.sleep(0.005)

    def _on_timer(self) -> None:
        if not self.lockstep:
            self._step()
        elif time.monotonic() - self._last_pub > self._timeout:
            self._publish()  # nobody answered (yet): offer the same state again

    def _on_camera_timer(self) -> None:
        self._publish_frames(sec_to_stamp(self.sim.time))

    def _publish_frames(self, stamp: object) -> None:
        for name, h, w, pub, msg in self._cams:
            pub.publish(rgb_to_image(self.sim.render(name, h, w), stamp, f"{name}_optical_frame", msg))
        self.frames_published += 1

    def _publish(self) -> None:
        stamp = sec_to_stamp(self.sim.time)
        self._clock_pub.publish(ClockMsg(clock=stamp))
        pos, quat = self.sim.object_pose()
        self._obj.header.stamp = stamp
        op, oq = self._obj.pose.position, self._obj.pose.orientation
        op.x, op.y, op.z = pos.tolist()
        oq.w, oq.x, oq.y, oq.z = quat.tolist()
        self._obj_pub.publish(self._obj)
        if self.lockstep and self._cams:
            self._publish_frames(stamp)
        # Joint states last: they trigger the policy's step, which should see this instant's object pose too.
        q, qd = self.sim.joint_state()
        self._js.header.stamp = stamp
        self._js.position, self._js.velocity = q.tolist(), qd.tolist()
        self._js_pub.publish(self._js)
        self._last_pub = time.monotonic()


def main(args: list[str] | None = None) -> int:
    """Entry point: `arm_sim_bridge_node --ros-args -p policy:=runs/.../policy.onnx -p lockstep:=true`."""
    return run(ArmSimBridge, args)


if __name__ == "__main__":
    raise SystemExit(main())
