"""sim_bridge_node: the robot stand-in. MuJoCo behind the topics a real robot's drivers would use.

Takes the joint targets a ros2_control forward command controller would (std_msgs/Float64MultiArray, in
the robot config's joint order), runs PD at physics rate, and publishes sensor_msgs/JointState,
sensor_msgs/Imu, nav_msgs/Odometry and rosgraph_msgs/Clock, all stamped with simulated time.

In a confined task it loads one map: `map_seed` (e.g. a held-out one) at `difficulty`. On the curriculum
terrain (`Go1-Velocity-Terrain`) it loads the training heightfield and stands the robot on the centre of the
tile `terrain_level` x `terrain_type` (-1 / empty: the middle level, rough ground); a level outside the grid or
an unknown type stops it with one sentence.

Free-running (default) it steps one control period per wall-clock period. In lockstep it steps exactly
one control period per command received and publishes the new state, so a run depends only on what the
policy computes, never on scheduling; until the first command (and whenever none comes within
`lockstep_timeout_s`) it re-publishes the current state without stepping.
"""

from __future__ import annotations

import time

import numpy as np
from nav_msgs.msg import Odometry
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rosgraph_msgs.msg import Clock as ClockMsg
from s2r.real.robot import load_robot_config
from s2r.sim.registry import task_config
from s2r.sim.robot_sim import RobotSim, RobotSimConfig, task_config_for_run
from s2r.sim.tasks.confined import held_out_config
from sensor_msgs.msg import Imu, JointState
from std_msgs.msg import Float64MultiArray

from s2r_ros.common import declare_params, qos, run, sec_to_stamp

STATE_DEPTH = 1000

PARAMS = {
    "policy": "", "task": "Go1-Velocity-Flat", "robot": "", "lockstep": False, "lockstep_timeout_s": 0.1,
    "settle_s": 1.0, "spawn_yaw": 0.0, "executor": "events", "base_frame": "base", "odom_frame": "odom",
    "imu_frame": "imu", "joint_states_topic": "/joint_states", "imu_topic": "/imu/data", "odom_topic": "/odom",
    "command_topic": "/forward_position_controller/commands", "map_seed": -1, "difficulty": -1.0,
    "terrain_level": -1, "terrain_type": "",
}


class SimBridge(Node):
    """MuJoCo robot <-> ROS topics."""

    def __init__(self, **kwargs: object) -> None:
        # kwargs (context, parameter_overrides) let tests run the bridge in-process, as they do the arm's.
        super().__init__("sim_bridge", **kwargs)
        declare_params(self, PARAMS)
        p = lambda k: self.get_parameter(k).value  # noqa: E731
        policy = str(p("policy"))
        try:
            task, tcfg = task_config_for_run(policy) if policy else (str(p("task")), task_config(str(p("task"))))
        except (KeyError, FileNotFoundError) as exc:  # unknown task id, missing policy.json
            raise ValueError(f"sim bridge cannot pick its task: {exc}") from exc
        if int(p("map_seed")) >= 0 or float(p("difficulty")) >= 0:
            # A confined task: which map (e.g. a held-out EVAL_SEEDS one) at which difficulty.
            if not hasattr(tcfg, "map_seeds"):
                raise ValueError(f"parameters map_seed/difficulty need a confined task; '{task}' has no maps")
            seeds = (int(p("map_seed")),) if int(p("map_seed")) >= 0 else tcfg.map_seeds
            level = float(p("difficulty")) if float(p("difficulty")) >= 0 else tcfg.difficulty
            tcfg = held_out_config(tcfg, seeds, level)
        self.sim = RobotSim(RobotSimConfig(task=task, settle_s=float(p("settle_s")), spawn_yaw=float(p("spawn_yaw")),
                                           terrain_level=int(p("terrain_level")), terrain_type=str(p("terrain_type"))),
                            tcfg)
        names = load_robot_config(str(p("robot"))).joint_names if p("robot") else self.sim.joint_names
        missing = [j for j in names if j not in self.sim.joint_names]
        if missing:
            raise ValueError(f"robot config joints {missing} are not actuated in the '{task}' model")
        # Command element i drives actuator _to_act[i].
        self._to_act = np.array([self.sim.joint_names.index(j) for j in names])
        self._target = self.sim.default_joint_pos.copy()
        self.lockstep = bool(p("lockstep"))
        self._timeout = float(p("lockstep_timeout_s"))
        self._frames = (str(p("base_frame")), str(p("odom_frame")), str(p("imu_frame")))
        # State topics keep a deep history: a reliable keep-last writer overwrites what a slow reader has not
        # acknowledged, and in lockstep the sim can outrun a Python recorder on a busy machine. The policy
        # reads the newest state either way.
        rel = qos("reliable", STATE_DEPTH)
        self._js_pub = self.create_publisher(JointState, p("joint_states_topic"), rel)
        self._imu_pub = self.create_publisher(Imu, p("imu_topic"), rel)
        self._odom_pub = self.create_publisher(Odometry, p("odom_topic"), rel)
        self._clock_pub = self.create_publisher(ClockMsg, "/clock", rel)
        self.create_subscription(Float64MultiArray, p("command_topic"), self._on_command, qos("reliable", 10))
        self.commands = 0
        self._last_pub = 0.0
        self._js = JointState(name=list(self.sim.joint_names))
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        period = self._timeout if self.lockstep else self.sim.control_dt
        self.create_timer(period, self._on_timer, clock=steady)
        where = ""
        if self.sim.grid is not None:
            where = f", terrain level {self.sim.tile[0]} {self.sim.grid.cfg.types[self.sim.tile[1]]}"
        self.get_logger().info(f"sim bridge: {task}{where}, {'lockstep' if self.lockstep else 'real time'}, "
                               f"control period {self.sim.control_dt * 1e3:.0f} ms, commands on {p('command_topic')}")
        self._publish()

    def _on_command(self, msg: Float64MultiArray) -> None:
        data = np.asarray(msg.data, dtype=np.float64)
        if data.shape != self._to_act.shape or not np.isfinite(data).all():
            # A real forward controller rejects a wrong-sized command; keep holding the last target.
            self.get_logger().error(f"ignoring command with {data.size} values (expected {self._to_act.size}) "
                                    "or non-finite values", throttle_duration_sec=1.0)
            return
        self._target[self._to_act] = data
        self.commands += 1
        if self.lockstep:
            self.sim.step(self._target)
            self._publish()

    def _on_timer(self) -> None:
        if not self.lockstep:
            self.sim.step(self._target)
            self._publish()
        elif time.monotonic() - self._last_pub > self._timeout:
            self._publish()  # nobody answered (yet): offer the same state again

    def _publish(self) -> None:
        sim = self.sim
        stamp = sec_to_stamp(sim.time)
        base, odom_frame, imu_frame = self._frames
        self._clock_pub.publish(ClockMsg(clock=stamp))
        quat, gyro, acc = sim.imu()
        imu = Imu()
        imu.header.stamp, imu.header.frame_id = stamp, imu_frame
        imu.orientation.w, imu.orientation.x, imu.orientation.y, imu.orientation.z = quat.tolist()
        imu.angular_velocity.x, imu.angular_velocity.y, imu.angular_velocity.z = gyro.tolist()
        imu.linear_acceleration.x, imu.linear_acceleration.y, imu.linear_acceleration.z = acc.tolist()
        self._imu_pub.publish(imu)
        pos, q = sim.base_pose()
        lin, ang = sim.base_twist()
        odom = Odometry(child_frame_id=base)
        odom.header.stamp, odom.header.frame_id = stamp, odom_frame
        pp, po = odom.pose.pose.position, odom.pose.pose.orientation
        pp.x, pp.y, pp.z = pos.tolist()
        po.w, po.x, po.y, po.z = q.tolist()
        tl, ta = odom.twist.twist.linear, odom.twist.twist.angular
        tl.x, tl.y, tl.z = lin.tolist()
        ta.x, ta.y, ta.z = ang.tolist()
        self._odom_pub.publish(odom)
        # Joint states last: they trigger the policy's step, which should see this instant's IMU too.
        qpos, qvel = sim.joint_state()
        self._js.header.stamp = stamp
        self._js.position, self._js.velocity = qpos.tolist(), qvel.tolist()
        self._js_pub.publish(self._js)
        self._last_pub = time.monotonic()


def main(args: list[str] | None = None) -> int:
    """Entry point: `sim_bridge_node --ros-args -p policy:=runs/.../policy.onnx -p lockstep:=true`."""
    return run(SimBridge, args)


if __name__ == "__main__":
    raise SystemExit(main())
