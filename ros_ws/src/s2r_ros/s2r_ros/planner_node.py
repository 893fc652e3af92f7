"""planner_node: re-plans a quadrotor trajectory through each waypoint list with the learned planner.

Every nav_msgs/Path on `waypoints` is planned with `s2r.real.planner.Planner` (ONNX timing, minimum snap,
feasibility check and stretch) and, when the plan is feasible, published on `trajectory` as a
trajectory_msgs/MultiDOFJointTrajectory sampled every `sample_dt` seconds (position, velocity and
acceleration of one "base_link" joint; yaw fixed or along the path). A bad Path or an infeasible plan
publishes no trajectory. Either way a std_msgs/String on `planner_status` holds a JSON object:
{"feasible", "stretched", "message", "total_time", "plan_ms", "waypoints", "published", "plan_id", "plan"}.

Plan ids: every published trajectory's `header.stamp` (the time the plan starts) is its id, as integer
nanoseconds `sec * 10**9 + nanosec`, unique per node. The status of a published plan repeats it as "plan_id"
with "plan": {"id", "waypoints": [[x, y, z], ...], "durations": [s, ...]}, so a recording of `planner_status`
holds every plan flown, and flight logs tagged with the id pair with it (`s2r.policies.mfrl.flights`,
`s2r train --resume RUN --flights DIR`). Unpublished plans have "plan_id": null and no "plan".

The node loads and checks the planner at start; a planner that does not fit its settings stops the node
with one line naming the mismatch.
"""

from __future__ import annotations

import json
import math
import time

import numpy as np
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Quaternion, Transform, Twist, Vector3
from nav_msgs.msg import Path
from rclpy.node import Node
from s2r.real.planner import Planner, PlannerConfig, PlanResult
from s2r.real.trajectory import TrajectoryError
from std_msgs.msg import String
from trajectory_msgs.msg import MultiDOFJointTrajectory, MultiDOFJointTrajectoryPoint

from s2r_ros.common import declare_params, qos, run

PARAMS = {
    "policy_dir": "", "frame_id": "world", "joint_name": "base_link", "sample_dt": 0.02, "yaw": "fixed",
    "threads": 1, "feasibility_dt": 0.0, "max_stretch": 4.0, "min_margin": 0.0,
    "waypoints_topic": "waypoints", "trajectory_topic": "trajectory", "status_topic": "planner_status",
    "executor": "single",
}
_MIN_YAW_SPEED = 0.05  # m/s; below it the heading of the velocity is noise, so the last heading is held


def yaw_along(vel: np.ndarray) -> np.ndarray:
    """(n,) heading of the horizontal velocity, holding the last one where the vehicle (nearly) stops."""
    yaw = np.arctan2(vel[:, 1], vel[:, 0])
    moving = np.hypot(vel[:, 0], vel[:, 1]) > _MIN_YAW_SPEED
    if not moving.any():
        return np.zeros(len(vel))
    # Forward-fill the last moving heading; before the first one, use the first (no turn on the spot at take-off).
    idx = np.where(moving, np.arange(len(vel)), 0)
    np.maximum.accumulate(idx, out=idx)
    idx[: np.argmax(moving)] = np.argmax(moving)
    return yaw[idx]


def to_trajectory(res: PlanResult, sample_dt: float, joint: str, yaw_mode: str) -> MultiDOFJointTrajectory:
    """Sample a plan every `sample_dt` seconds (and at its end) into a MultiDOFJointTrajectory (header left to the caller)."""
    total = res.spline.total_time
    t = np.append(np.arange(0.0, total - 1e-9, sample_dt), total)
    pos, vel, acc = res.spline.derivatives(t, (0, 1, 2))
    yaw = yaw_along(vel) if yaw_mode == "path" else np.zeros(len(t))
    msg = MultiDOFJointTrajectory(joint_names=[joint])
    points = []
    for ti, p, v, a, y in zip(t.tolist(), pos.tolist(), vel.tolist(), acc.tolist(), yaw.tolist(), strict=True):
        ns = round(ti * 1e9)
        points.append(MultiDOFJointTrajectoryPoint(
            transforms=[Transform(translation=Vector3(x=p[0], y=p[1], z=p[2]),
                                  rotation=Quaternion(z=math.sin(y / 2), w=math.cos(y / 2)))],
            velocities=[Twist(linear=Vector3(x=v[0], y=v[1], z=v[2]))],
            accelerations=[Twist(linear=Vector3(x=a[0], y=a[1], z=a[2]))],
            time_from_start=Duration(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)))
    msg.points = points
    return msg


class PlannerNode(Node):
    """Waypoints (nav_msgs/Path) -> feasible trajectory (MultiDOFJointTrajectory) + a JSON status."""

    def __init__(self, name: str = "planner", **kwargs: object) -> None:
        super().__init__(name, **kwargs)  # kwargs: context, parameter_overrides (tests, composition)
        p = declare_params(self, PARAMS)
        if not str(p["policy_dir"]):
            raise ValueError("parameter policy_dir is empty: give the planner's run folder (or its policy.onnx)")
        self.sample_dt = float(p["sample_dt"])
        if not self.sample_dt > 0:
            raise ValueError(f"parameter sample_dt must be positive seconds, got {self.sample_dt}")
        if p["yaw"] not in ("fixed", "path"):
            raise ValueError(f"parameter yaw must be 'fixed' or 'path', got '{p['yaw']}'")
        self.frame_id, self.joint, self.yaw_mode = str(p["frame_id"]), str(p["joint_name"]), str(p["yaw"])
        dt = float(p["feasibility_dt"])
        cfg = PlannerConfig(threads=int(p["threads"]), dt=dt if dt > 0 else None, max_stretch=float(p["max_stretch"]),
                            min_margin=float(p["min_margin"]))
        self.planner = Planner(str(p["policy_dir"]), cfg)  # MetadataError (a ValueError) stops the node in run()
        # Reliable and kept: a plan is a one-off message that a late or slow follower must still get.
        self._traj_pub = self.create_publisher(MultiDOFJointTrajectory, str(p["trajectory_topic"]), qos("reliable", 10))
        self._status_pub = self.create_publisher(String, str(p["status_topic"]), qos("reliable", 10))
        self._sub = self.create_subscription(Path, str(p["waypoints_topic"]), self._on_path, qos("reliable", 10))
        self._last_id = 0  # the last plan id (ns), so ids stay strictly increasing
        s = self.planner.settings
        self.get_logger().info(f"planner ready: {self.planner.meta.task_id}, up to {s.max_waypoints} waypoints, "
                               f"feasibility every {self.planner.dt * 1e3:.0f} ms; listening on "
                               f"{self._sub.topic_name}")

    def _on_path(self, msg: Path) -> None:
        t0 = time.perf_counter()
        waypoints = np.array([[q.pose.position.x, q.pose.position.y, q.pose.position.z] for q in msg.poses],
                             dtype=np.float64).reshape(-1, 3)
        try:
            res = self.planner.plan(waypoints)
        except TrajectoryError as exc:
            self._status(False, False, f"rejected waypoints: {exc}", None, t0, len(waypoints), published=False)
            self.get_logger().warning(f"no trajectory: rejected waypoints: {exc}")
            return
        if not res.feasible:
            self._status(False, False, res.message, res.total_time, t0, len(waypoints), published=False)
            self.get_logger().warning(f"no trajectory: {res.message}")
            return
        traj = to_trajectory(res, self.sample_dt, self.joint, self.yaw_mode)
        # The trajectory lives in the waypoints' frame; the parameter only names a frame the Path left empty.
        traj.header.frame_id = msg.header.frame_id or self.frame_id
        stamp = self.get_clock().now().to_msg()
        if stamp.sec * 1_000_000_000 + stamp.nanosec <= self._last_id:  # ids stay unique on a coarse or paused clock
            ns = self._last_id + 1
            stamp.sec, stamp.nanosec = ns // 1_000_000_000, ns % 1_000_000_000
        traj.header.stamp = stamp
        self._last_id = plan_id = stamp.sec * 1_000_000_000 + stamp.nanosec
        self._traj_pub.publish(traj)
        plan = {"id": plan_id, "waypoints": waypoints.tolist(), "durations": res.durations.tolist()}
        self._status(True, res.stretched, res.message, res.total_time, t0, len(waypoints), published=True,
                     plan_ms=res.total_s * 1e3, plan=plan)
        if res.stretched or res.used_heuristic:
            self.get_logger().info(res.message)

    def _status(self, feasible: bool, stretched: bool, message: str, total_time: float | None, t0: float, n: int,
                published: bool, plan_ms: float | None = None, plan: dict | None = None) -> None:
        status = {"feasible": feasible, "stretched": stretched, "message": message, "total_time": total_time,
                  "plan_ms": plan_ms if plan_ms is not None else (time.perf_counter() - t0) * 1e3,
                  "waypoints": n, "published": published, "plan_id": plan["id"] if plan else None}
        if plan:
            status["plan"] = plan
        self._status_pub.publish(String(data=json.dumps(status)))


def main(args: list[str] | None = None) -> int:
    """Entry point: `planner_node --ros-args -p policy_dir:=runs/Crazyflie-Replan-Waypoints/<run>`."""
    return run(PlannerNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
